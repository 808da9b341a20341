#!/usr/bin/env python3
"""Independent Blob client for the integration tests (azure-storage-blob).

Run it with the venv that `scripts/ensure-tools python` makes:

    .cache/venv/bin/python tests/support/pyblob.py CONN get CONTAINER BLOB LOCAL_FILE
    .cache/venv/bin/python tests/support/pyblob.py CONN put CONTAINER BLOB LOCAL_FILE \
        [--content-type X] [--metadata k=v ...]
    .cache/venv/bin/python tests/support/pyblob.py CONN create-container CONTAINER
    .cache/venv/bin/python tests/support/pyblob.py CONN list CONTAINER [PREFIX]
    .cache/venv/bin/python tests/support/pyblob.py CONN tags CONTAINER BLOB
    .cache/venv/bin/python tests/support/pyblob.py CONN sas CONTAINER [--permission racwdl]

CONN is a storage connection string, e.g. for Azurite:
    DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=...;
    BlobEndpoint=http://127.0.0.1:PORT/devstoreaccount1;

The SDK's default x-ms-version (2026-10-06 for 12.31.1) is newer than
Azurite 3.37.0 knows, so requests use PYBLOB_API_VERSION (default 2025-11-05).
For HTTPS with a self-signed cert, set REQUESTS_CA_BUNDLE=/path/cert.pem.

`get` writes the blob to LOCAL_FILE and prints its properties as JSON;
`put` prints the uploaded blob's properties as JSON; `create-container`
prints {"created": true|false} (false: it already existed); `list` prints a
JSON array of blob names; `tags` prints the blob's index tags (Get Blob Tags)
as a JSON object. On error: the message on stderr, exit status 1
(2 for bad usage).
"""

import argparse
import base64
import json
import os
import sys

API_VERSION = os.environ.get("PYBLOB_API_VERSION", "2025-11-05")


def _props_json(props):
    settings = props.content_settings
    md5 = settings.content_md5
    tier = props.blob_tier
    return {
        "name": props.name,
        "size": props.size,
        "content_type": settings.content_type,
        "content_md5": base64.b64encode(bytes(md5)).decode() if md5 else None,
        "metadata": dict(props.metadata or {}),
        "cache_control": settings.cache_control,
        "content_encoding": settings.content_encoding,
        "content_disposition": settings.content_disposition,
        "content_language": settings.content_language,
        "access_tier": str(tier.value if hasattr(tier, "value") else tier) if tier else None,
        "blob_type": str(getattr(props.blob_type, "value", props.blob_type)),
        "etag": props.etag,
    }


def _metadata(pairs):
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--metadata wants k=v, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k] = v
    return out


def main(argv):
    ap = argparse.ArgumentParser(prog="pyblob.py", description=__doc__.split("\n")[0])
    ap.add_argument("connection_string")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("container")
    g.add_argument("blob")
    g.add_argument("local_file")
    p = sub.add_parser("put")
    p.add_argument("container")
    p.add_argument("blob")
    p.add_argument("local_file")
    p.add_argument("--content-type")
    p.add_argument("--metadata", action="append", metavar="K=V")
    p.add_argument("--chunk-size", type=int,
                   help="force a staged (Put Block) upload with blocks of this size: no Content-MD5 is stored")
    s_ = sub.add_parser("sas")
    s_.add_argument("container")
    s_.add_argument("--permission", default="racwdl")
    c = sub.add_parser("create-container")
    c.add_argument("container")
    l = sub.add_parser("list")
    l.add_argument("container")
    l.add_argument("prefix", nargs="?")
    t = sub.add_parser("tags")
    t.add_argument("container")
    t.add_argument("blob")
    args = ap.parse_args(argv)

    try:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient, ContentSettings

        kw = {}
        if getattr(args, "chunk_size", None):
            kw = {"max_single_put_size": args.chunk_size, "max_block_size": args.chunk_size}
        svc = BlobServiceClient.from_connection_string(args.connection_string,
                                                      api_version=API_VERSION, **kw)
        if args.cmd == "get":
            bc = svc.get_blob_client(args.container, args.blob)
            downloader = bc.download_blob()
            with open(args.local_file, "wb") as f:
                downloader.readinto(f)
            # download_blob's properties lack the tier; ask HEAD for everything.
            out = _props_json(bc.get_blob_properties())
        elif args.cmd == "put":
            bc = svc.get_blob_client(args.container, args.blob)
            settings = ContentSettings(content_type=args.content_type) if args.content_type else None
            with open(args.local_file, "rb") as f:
                bc.upload_blob(f, overwrite=True, content_settings=settings,
                               metadata=_metadata(args.metadata) or None)
            out = _props_json(bc.get_blob_properties())
        elif args.cmd == "create-container":
            try:
                svc.create_container(args.container)
                out = {"created": True}
            except ResourceExistsError:
                out = {"created": False}
        elif args.cmd == "sas":
            import datetime
            from azure.storage.blob import ContainerSasPermissions, generate_container_sas
            token = generate_container_sas(
                svc.account_name, args.container, account_key=svc.credential.account_key,
                permission=ContainerSasPermissions.from_string(args.permission),
                expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2))
            out = {"sas": token}
        elif args.cmd == "tags":
            out = dict(svc.get_blob_client(args.container, args.blob).get_blob_tags() or {})
        elif args.cmd == "list":
            cc = svc.get_container_client(args.container)
            out = [b.name for b in cc.list_blobs(name_starts_with=args.prefix)]
        else:  # argparse guards this
            raise ValueError(f"unknown command {args.cmd}")
    except Exception as e:  # noqa: BLE001 - a CLI for tests: report anything
        code = getattr(e, "error_code", None)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"pyblob: {args.cmd}: {type(e).__name__}" + (f" [{code}]" if code else "") + f": {msg}",
              file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
