import base64, hmac, hashlib, http.client, ssl, sys, urllib.parse, email.utils, json, time
ACCOUNT = "devstoreaccount1"
KEY = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")

def crc64nvme(data: bytes) -> bytes:
    poly = 0x9A6C9329AC4BC9B5
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return (crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
assert crc64nvme(b"123456789") == (0xAE8B14860A799888).to_bytes(8, "little")
def b64(x): return base64.b64encode(x).decode()

def sign(method, path, query, headers):
    h = {k.lower(): v for k, v in headers.items()}
    cl = h.get("content-length", "")
    if cl == "0": cl = ""
    parts = [method, h.get("content-encoding", ""), h.get("content-language", ""), cl,
             h.get("content-md5", ""), h.get("content-type", ""), "", h.get("if-modified-since", ""),
             h.get("if-match", ""), h.get("if-none-match", ""), h.get("if-unmodified-since", ""), h.get("range", "")]
    canon_h = "".join(f"{k}:{h[k].strip()}\n" for k in sorted(h) if k.startswith("x-ms-"))
    res = f"/{ACCOUNT}{urllib.parse.quote(path)}"
    q = {}
    for k, v in query:
        q.setdefault(k.lower(), []).append(v)
    for k in sorted(q):
        res += f"\n{k}:{','.join(sorted(q[k]))}"
    sts = "\n".join(parts) + "\n" + canon_h + res
    sig = b64(hmac.new(KEY, sts.encode(), hashlib.sha256).digest())
    return f"SharedKey {ACCOUNT}:{sig}"

def req(port, method, path, query=(), headers=None, body=b"", version="2025-01-05", https=False, auth="sharedkey", raw_query=None):
    headers = dict(headers or {})
    headers.setdefault("x-ms-date", email.utils.formatdate(usegmt=True))
    if version is not None:
        headers.setdefault("x-ms-version", version)
    headers["Content-Length"] = str(len(body))
    full = f"/{ACCOUNT}{path}"
    if auth == "sharedkey":
        headers["Authorization"] = sign(method, full, query, headers)
    elif auth:
        headers["Authorization"] = auth
    qs = raw_query if raw_query is not None else urllib.parse.urlencode(list(query))
    url = urllib.parse.quote(full) + ("?" + qs if qs else "")
    if https:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context())
    else:
        c = http.client.HTTPConnection("127.0.0.1", port)
    c.request(method, url, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
