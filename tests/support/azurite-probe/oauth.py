import os, sk, json, base64, time, hmac, hashlib
from sk import req
p = int(os.environ['AZURITE_HTTPS_PORT'])
def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def jwt(claims, alg="none", sig=b"fakesig"):
    h = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode()); c = b64u(json.dumps(claims).encode())
    if alg == "none": return f"{h}.{c}."
    return f"{h}.{c}.{b64u(sig)}"
now = int(time.time())
T = "72f988bf-86f1-41af-91ab-2d7cd011db47"
base = {"iss": f"https://sts.windows.net/{T}/", "aud": "https://storage.azure.com", "iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": "o", "tid": T}
def t(name, claims, alg="hs", method="PUT", path="/oct/b1", version="2025-01-05", body=b"hi", **kw):
    tok = jwt(claims, "none") if alg == "none" else jwt(claims, "HS256", b"x" * 32)
    h = {"x-ms-blob-type": "BlockBlob"} if method == "PUT" else {}
    r = req(p, method, path, headers=h, body=body if method == "PUT" else b"", version=version, https=True, auth=f"Bearer {tok}", **kw)
    print(f"{name}: {r[0]} {r[1].get('x-ms-error-code') or ''} {r[2][:0]!r}" + ("" if r[0] < 300 else " " + (r[2].split(b'<Message>')[-1].split(b'\n')[0].decode() if b'<Message>' in r[2] else '')))
    return r
t("create container HS256", base, path="/oct", query=[("restype", "container")], body=b"")
t("put blob HS256", base)
r = t("get blob HS256", base, method="GET"); print("   body", r[2])
t("put blob alg none", base, alg="none", path="/oct/b2")
t("get blob alg none", base, alg="none", method="GET", path="/oct/b2")
t("no x-ms-version", base, version=None)
for v in ["2019-12-12", "2021-12-02", "2025-11-05", "2026-06-06", "2017-11-09", "2017-04-17"]:
    t(f"x-ms-version {v}", base, version=v)
for iss in [f"https://login.microsoftonline.com/{T}/v2.0", f"https://sts.windows.net/{T}", "https://sts.windows.net/", "https://sts.windows-ppe.net/x/", "https://sts.windows.netevil/", "http://sts.windows.net/x/"]:
    t(f"iss {iss}", {**base, "iss": iss})
for aud in ["https://storage.azure.com/", "https://storage.azure.com/.default", "e406a681-f3d4-42a8-90b6-c2b029497af1", "https://devstoreaccount1.blob.core.windows.net", "https://devstoreaccount1.blob.core.windows.net/", "https://other.blob.core.windows.net", "api://x", ["https://storage.azure.com"]]:
    t(f"aud {aud}", {**base, "aud": aud})
for miss in ["iat", "nbf", "exp", "iss", "aud"]:
    c = dict(base); del c[miss]; t(f"missing {miss}", c)
t("expired", {**base, "exp": now - 10})
t("nbf in future", {**base, "nbf": now + 600})
r = req(p, "GET", "/oct/b1", https=True, auth="Bearer not.a.jwt"); print("garbage token:", r[0], r[1].get('x-ms-error-code'))
r = req(p, "GET", "/oct/b1", https=True); print("shared key on same https instance:", r[0], r[1].get('x-ms-error-code'))
r = req(p, "GET", "/oct/b1", https=True, auth=None); print("anonymous:", r[0], r[1].get('x-ms-error-code'))
