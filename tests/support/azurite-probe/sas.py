# SAS probe: account / container / blob SAS made by the Python SDK, used raw in the query string.
import datetime as dt, os, urllib.request, urllib.error
from azure.storage.blob import (generate_account_sas, generate_container_sas, generate_blob_sas,
    ResourceTypes, AccountSasPermissions, ContainerSasPermissions, BlobSasPermissions, BlobClient, BlobServiceClient)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
p = int(os.environ['AZURITE_PORT']); base = f"http://127.0.0.1:{p}/devstoreaccount1"
BlobServiceClient(base, credential={"account_name": "devstoreaccount1", "account_key": KEY}, api_version="2025-11-05").get_container_client("sasct").create_container()
exp = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
def http(method, url, body=None, headers={}):
    r = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r) as resp: return resp.status, resp.read()[:40]
    except urllib.error.HTTPError as e: return e.code, e.headers.get('x-ms-error-code')
acct = generate_account_sas("devstoreaccount1", KEY, ResourceTypes(service=True, container=True, object=True), AccountSasPermissions(read=True, write=True, list=True, create=True, add=True), exp)
print("account sas:", acct)
print(" put", http("PUT", f"{base}/sasct/sas1?{acct}", b"sasdata", {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2025-11-05"}))
print(" get", http("GET", f"{base}/sasct/sas1?{acct}", headers={"x-ms-version": "2025-11-05"}))
print(" list", http("GET", f"{base}/sasct?restype=container&comp=list&{acct}")[0])
print(" get without x-ms-version", http("GET", f"{base}/sasct/sas1?{acct}"))
csas = generate_container_sas("devstoreaccount1", "sasct", account_key=KEY, permission=ContainerSasPermissions(read=True, write=True, list=True, create=True), expiry=exp)
print("container sas:", csas)
print(" put", http("PUT", f"{base}/sasct/sas2?{csas}", b"x", {"x-ms-blob-type": "BlockBlob"}))
print(" get", http("GET", f"{base}/sasct/sas2?{csas}"))
print(" list", http("GET", f"{base}/sasct?restype=container&comp=list&{csas}")[0])
bsas = generate_blob_sas("devstoreaccount1", "sasct", "sas3", account_key=KEY, permission=BlobSasPermissions(read=True, write=True, create=True), expiry=exp)
print(" blob sas put", http("PUT", f"{base}/sasct/sas3?{bsas}", b"x", {"x-ms-blob-type": "BlockBlob"}))
print(" blob sas used on another blob (expect 403)", http("GET", f"{base}/sasct/sas2?{bsas}"))
ro = generate_container_sas("devstoreaccount1", "sasct", account_key=KEY, permission=ContainerSasPermissions(read=True), expiry=exp)
print(" read-only sas put (expect 403)", http("PUT", f"{base}/sasct/sas4?{ro}", b"x", {"x-ms-blob-type": "BlockBlob"}))
print(" tampered sig", http("GET", f"{base}/sasct/sas2?{csas.replace('sig=', 'sig=AAAA')}"))
old = generate_container_sas("devstoreaccount1", "sasct", account_key=KEY, permission=ContainerSasPermissions(read=True), expiry=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5))
print(" expired", http("GET", f"{base}/sasct/sas2?{old}"))
bc = BlobClient.from_blob_url(f"{base}/sasct/sas5?{csas}", api_version="2025-11-05"); bc.upload_blob(b"abc"); print(" sdk client via sas url:", bc.download_blob().readall())
