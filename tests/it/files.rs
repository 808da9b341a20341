//! Azure Files through the real binary, against the in-memory fake (`files_fake.rs`),
//! and the fake's own refusals (so a plugin that breaks a rule cannot pass by accident).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest as _, Md5};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::files_fake::{account_key, account_sas, file_sas, hmac_b64, shared_key_string_to_sign, FilesFake, ACCOUNT};
use crate::support::*;

fn md5_b64(data: &[u8]) -> String {
    B64.encode(Md5::digest(data))
}

/// The plugin pointed at a fake share with the account key.
fn files(dir: &std::path::Path, fake: &FilesFake, share: &str) -> Plugin {
    plugin(dir)
        .set("service", "file")
        .set("share", share)
        .set("endpoint", fake.endpoint())
        .set("account_key", account_key())
}

fn no_temp_files(fake: &FilesFake, share: &str) {
    let left: Vec<String> = fake.files(share).into_iter().filter(|f| f.contains(".azpart-")).collect();
    assert!(left.is_empty(), "temporary upload files left in the share: {left:?}");
}

// ---------------------------------------------------------------------------------------
// The fake refuses what Azure refuses.

enum Auth {
    SharedKey,
    BadKey,
    Bearer { intent: bool },
}

struct Raw {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(fake: &FilesFake) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Raw { rt, client: reqwest::Client::new(), base: fake.endpoint() }
    }

    /// Sends a request signed here (test code, not the crate's signer); returns (status, error code).
    fn send(&self, method: &str, path_q: &str, headers: &[(&str, &str)], body: Vec<u8>, auth: Auth) -> (u16, String) {
        let url = url::Url::parse(&format!("{}/{path_q}", self.base)).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-ms-date", HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())).unwrap());
        h.insert("x-ms-version", HeaderValue::from_static("2025-11-05"));
        for (k, v) in headers {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h.insert("content-length", HeaderValue::from(body.len()));
        match auth {
            Auth::SharedKey | Auth::BadKey => {
                let sts = shared_key_string_to_sign(ACCOUNT, method, url.path(), url.query().unwrap_or(""), &h);
                let key = match auth {
                    Auth::SharedKey => account_key(),
                    _ => B64.encode([7u8; 64]),
                };
                let v = format!("SharedKey {ACCOUNT}:{}", hmac_b64(&key, &sts));
                h.insert("authorization", HeaderValue::from_str(&v).unwrap());
            }
            Auth::Bearer { intent } => {
                h.insert("authorization", HeaderValue::from_static("Bearer some-token"));
                if intent {
                    h.insert("x-ms-file-request-intent", HeaderValue::from_static("backup"));
                }
            }
        }
        let req = self.client.request(method.parse().unwrap(), url).headers(h).body(body);
        self.rt.block_on(async {
            let r = req.send().await.unwrap();
            let code = r.headers().get("x-ms-error-code").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (r.status().as_u16(), code)
        })
    }
}

#[test]
fn the_fake_refuses_what_azure_files_refuses() {
    let fake = FilesFake::start();
    let raw = Raw::new(&fake);
    let sk = || Auth::SharedKey;
    assert_eq!(raw.send("PUT", "rules?restype=share", &[], vec![], sk()), (201, String::new()));
    // Signatures are checked with the account key.
    assert_eq!(raw.send("PUT", "rules/d?restype=directory", &[], vec![], Auth::BadKey).1, "AuthenticationFailed");
    // Too old an x-ms-version for OAuth-era Files.
    let (s, _) = raw.send("PUT", "rules/d?restype=directory", &[("x-ms-version", "2021-12-02")], vec![], sk());
    assert_eq!(s, 400);
    // Parents must exist; "already exists" is a 409.
    assert_eq!(raw.send("PUT", "rules/d/e?restype=directory", &[], vec![], sk()), (404, "ParentNotFound".into()));
    assert_eq!(raw.send("PUT", "rules/d?restype=directory", &[], vec![], sk()).0, 201);
    assert_eq!(raw.send("PUT", "rules/D?restype=directory", &[], vec![], sk()), (409, "ResourceAlreadyExists".into()));
    // Create File needs x-ms-type and a parent.
    let create = [("x-ms-type", "file"), ("x-ms-content-length", "10")];
    assert_eq!(raw.send("PUT", "rules/d/f", &[("x-ms-content-length", "10")], vec![], sk()).0, 400);
    assert_eq!(raw.send("PUT", "rules/nope/f", &create, vec![], sk()), (404, "ParentNotFound".into()));
    let big = [("x-ms-type", "file"), ("x-ms-content-length", "6291456")];
    assert_eq!(raw.send("PUT", "rules/d/f", &big, vec![], sk()).0, 201);
    // Put Range: x-ms-write, at most 4 MiB, inside the length, MD5 checked.
    let five = vec![1u8; 5 << 20];
    let r = [("x-ms-range", "bytes=0-5242879"), ("x-ms-write", "update")];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=range", &r, five, sk()), (413, "RequestBodyTooLarge".into()));
    let r = [("x-ms-range", "bytes=0-9")];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=range", &r, vec![1; 10], sk()).0, 400);
    let r = [("x-ms-range", "bytes=6291450-6291459"), ("x-ms-write", "update")];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=range", &r, vec![1; 10], sk()), (416, "InvalidRange".into()));
    let wrong = md5_b64(b"something else");
    let r = [("x-ms-range", "bytes=0-9"), ("x-ms-write", "update"), ("content-md5", wrong.as_str())];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=range", &r, vec![1; 10], sk()), (400, "Md5Mismatch".into()));
    let right = md5_b64(&[1; 10]);
    let r = [("x-ms-range", "bytes=0-9"), ("x-ms-write", "update"), ("content-md5", right.as_str())];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=range", &r, vec![1; 10], sk()).0, 201);
    // Rename onto an existing name without replace-if-exists is a 409.
    assert_eq!(raw.send("PUT", "rules/d/g", &create, vec![], sk()).0, 201);
    let src = format!("{}/rules/d/g", fake.endpoint());
    let r = [("x-ms-file-rename-source", src.as_str())];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=rename", &r, vec![], sk()), (409, "ResourceAlreadyExists".into()));
    let r = [("x-ms-file-rename-source", src.as_str()), ("x-ms-file-rename-replace-if-exists", "true")];
    assert_eq!(raw.send("PUT", "rules/d/f?comp=rename", &r, vec![], sk()).0, 200);
    assert_eq!(fake.file("rules", "d/f").unwrap().data.len(), 10);
    // A bearer token needs the backup intent.
    let (s, code) = raw.send("GET", "rules/d/f", &[], vec![], Auth::Bearer { intent: false });
    assert_eq!((s, code.as_str()), (403, "AuthorizationFailure"));
    assert_eq!(raw.send("GET", "rules/d/f", &[], vec![], Auth::Bearer { intent: true }).0, 200);
}

/// The fake's File service SAS check (what `link_expiry` links on Files rely on): a SAS
/// signed here for one file reads it with a plain GET and no headers; one for another file,
/// expired, tampered, without `r`, or used to write, is refused 403; no SAS at all is 401.
#[test]
fn the_fake_checks_file_service_sas_as_azure_files_does() {
    let fake = FilesFake::start();
    fake.plant("links", "d/a b.txt", b"shared", &[]);
    fake.plant("links", "d/other.txt", b"private", &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let send = |method: &str, path: &str, q: &str| -> u16 {
        let url = format!("{}/links/{path}?{q}", fake.endpoint());
        rt.block_on(client.request(method.parse().unwrap(), url).send()).unwrap().status().as_u16()
    };
    let good = file_sas("links", "d/a b.txt", "r", "2099-01-01T00:00:00Z");
    assert_eq!(send("GET", "d/a%20b.txt", &good), 200);
    assert_eq!(send("HEAD", "d/a%20b.txt", &good), 200);
    assert_eq!(send("GET", "d/other.txt", &good), 403, "a SAS for one file read another");
    assert_eq!(send("PUT", "d/a%20b.txt?comp=range", &good), 403, "a read SAS wrote");
    let expired = file_sas("links", "d/a b.txt", "r", "2020-01-01T00:00:00Z");
    assert_eq!(send("GET", "d/a%20b.txt", &expired), 403);
    let no_read = file_sas("links", "d/a b.txt", "w", "2099-01-01T00:00:00Z");
    assert_eq!(send("GET", "d/a%20b.txt", &no_read), 403);
    let tampered = good.replace("sp=r", "sp=rw");
    assert_eq!(send("GET", "d/a%20b.txt", &tampered), 403);
    assert_eq!(send("GET", "d/a%20b.txt", ""), 401, "an anonymous read without a SAS");
}

// ---------------------------------------------------------------------------------------
// Round trips through the real binary.

#[test]
fn a_tree_round_trips_in_ranges_of_at_most_4_mib_and_appears_only_when_complete() {
    let fake = FilesFake::start();
    fake.create_share("trees");
    let ws = tempfile::tempdir().unwrap();
    let big = bytes(9 * 1024 * 1024 + 12_345, 1);
    let files_in: Vec<(&str, Vec<u8>)> = vec![
        ("big.bin", big.clone()),
        ("empty.txt", vec![]),
        ("a/b/c/deep.json", b"{\"deep\":true}".to_vec()),
        ("a/b/other.txt", bytes(70_000, 2)),
        ("a/x.txt", b"x".to_vec()),
        ("with space/é.txt", b"unicode".to_vec()),
    ];
    for (n, d) in &files_in {
        write(ws.path(), &format!("src/{n}"), d);
    }
    let out = files(ws.path(), &fake, "trees")
        .set("source", "src/**")
        .set("strip_prefix", "src")
        .set("target", "rel/v1")
        .set("concurrency", "8")
        .set("content_md5", "true")
        .set("manifest", "manifest.json")
        .run();
    out.assert_ok().assert_contains("share `trees`").assert_contains(&format!("{:<16}{:>8}", "transferred", 6));
    let mut want: Vec<String> = files_in.iter().map(|(n, _)| format!("rel/v1/{n}")).collect();
    want.sort();
    assert_eq!(fake.files("trees"), want);
    for (n, d) in &files_in {
        let f = fake.file("trees", &format!("rel/v1/{n}")).unwrap();
        assert!(f.data == *d, "{n}: content differs");
        assert_eq!(f.metadata.get("sha256"), Some(&sha256_hex(d)), "{n}");
        assert_eq!(f.content_md5.as_deref(), Some(md5_b64(d).as_str()), "{n}: whole-file Content-MD5");
    }
    assert_eq!(fake.file("trees", "rel/v1/a/b/c/deep.json").unwrap().content_type.as_deref(), Some("application/json"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path().join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.to_string().contains("\"service\":\"file\""), "{manifest}");

    let log = fake.log();
    // Each directory is created once, whatever the number of files in it.
    let dirs: Vec<&str> = log.iter().filter(|l| l.op == "Create Directory").map(|l| l.path.as_str()).collect();
    assert_eq!(dirs.len(), 6, "{dirs:?}");
    // Bytes only ever go to temporary names; the final names appear by rename.
    for l in
        log.iter().filter(|l| matches!(l.op, "Create File" | "Put Range" | "Set File Properties" | "Set File Metadata"))
    {
        let base = l.path.rsplit('/').next().unwrap();
        assert!(base.starts_with('.') && base.contains(".azpart-"), "{} wrote to a final name: {}", l.op, l.path);
    }
    assert_eq!(fake.count("Rename File"), 6);
    // 9 MiB + a bit: three ranges (4 + 4 + 1), each checked ≤ 4 MiB with its MD5 by the fake.
    let big_ranges = log.iter().filter(|l| l.op == "Put Range" && l.path.contains(".big.bin.azpart-")).count();
    assert_eq!(big_ranges, 3);
    assert!(log.iter().filter(|l| l.op == "Put Range").all(|l| l.md5), "every range carries its Content-MD5");
    assert_eq!(log.iter().filter(|l| l.op == "Put Range" && l.path.contains(".empty.txt.")).count(), 0);

    // Download the tree back, ranged, verified.
    fake.clear_log();
    let out = files(ws.path(), &fake, "trees")
        .set("action", "download")
        .set("source", "rel/v1/")
        .set("strip_prefix", "rel/v1")
        .set("target", "back")
        .set("block_size", "1MiB")
        .run();
    out.assert_ok();
    let mut names: Vec<&str> = files_in.iter().map(|(n, _)| *n).collect();
    names.sort();
    assert_eq!(tree(&ws.path().join("back")), names);
    for (n, d) in &files_in {
        assert!(std::fs::read(ws.path().join("back").join(n)).unwrap() == *d, "{n}");
    }
    assert!(fake.count("Get File") >= 10, "expected ranged reads of 1 MiB");
    no_temp_files(&fake, "trees");
}

#[test]
fn overwrite_modes_and_a_race_lost_to_another_writer() {
    let fake = FilesFake::start();
    fake.create_share("modes");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "a.txt", b"a v1");
    write(ws.path(), "b.txt", b"b v1");
    files(ws.path(), &fake, "modes").set("source", "a.txt,b.txt").run().assert_ok();

    // false: an existing name fails (per file), a new one goes up.
    write(ws.path(), "a.txt", b"a v2");
    write(ws.path(), "c.txt", b"c v1");
    let out = files(ws.path(), &fake, "modes").set("source", "a.txt,c.txt").set("overwrite", "false").run();
    out.assert_code(1).assert_contains("already exists (overwrite: false)").assert_contains("1 failed");
    assert_eq!(fake.file("modes", "a.txt").unwrap().data, b"a v1");
    assert_eq!(fake.file("modes", "c.txt").unwrap().data, b"c v1");
    no_temp_files(&fake, "modes");

    // skip: existing names are left alone.
    files(ws.path(), &fake, "modes")
        .set("source", "a.txt")
        .set("overwrite", "skip")
        .run()
        .assert_ok()
        .assert_contains("exists (overwrite: skip)");
    assert_eq!(fake.file("modes", "a.txt").unwrap().data, b"a v1");

    // changed: compares the stored sha256 (from Get File Properties).
    write(ws.path(), "a.txt", b"a v1");
    write(ws.path(), "b.txt", b"b v2");
    let out = files(ws.path(), &fake, "modes").set("source", "a.txt,b.txt").set("overwrite", "changed").run();
    out.assert_ok().assert_contains("unchanged (overwrite: changed)");
    assert_eq!(fake.file("modes", "b.txt").unwrap().data, b"b v2");

    // true (default): replaced.
    write(ws.path(), "a.txt", b"a v3");
    files(ws.path(), &fake, "modes").set("source", "a.txt").run().assert_ok();
    assert_eq!(fake.file("modes", "a.txt").unwrap().data, b"a v3");

    // false, and another writer creates the name after the pre-check, before the rename:
    // the rename (replace-if-exists: false) refuses, the other writer's file stands.
    let big = bytes(5 * 1024 * 1024 + 3, 7);
    write(ws.path(), "big.bin", &big);
    fake.race_on_rename("modes", "big.bin", b"the other writer");
    let out = files(ws.path(), &fake, "modes").set("source", "big.bin").set("overwrite", "false").run();
    out.assert_code(1).assert_contains("already exists (overwrite: false)");
    assert_eq!(fake.file("modes", "big.bin").unwrap().data, b"the other writer");
    no_temp_files(&fake, "modes");
}

#[test]
fn downloads_refuse_hostile_names_corrupt_bodies_and_unverifiable_files() {
    let fake = FilesFake::start();
    fake.create_share("dls");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "up/good.txt", b"good");
    write(ws.path(), "up/sub/bad.bin", &bytes(300_000, 3));
    files(ws.path(), &fake, "dls").set("source", "up/**").set("strip_prefix", "up").run().assert_ok();

    // Another run's upload in flight (a temporary name) is not listed, so not downloaded.
    fake.plant("dls", "sub/.inflight.bin.azpart-0a1b2c3d", b"partial", &[]);
    // A listing naming `../escape.txt`: refused, the rest downloads, nothing escapes.
    fake.plant_hostile("dls", "", "../escape.txt", false);
    let root = tempfile::tempdir().unwrap();
    let inner = root.path().join("ws");
    std::fs::create_dir(&inner).unwrap();
    let out = files(&inner, &fake, "dls").set("action", "download").set("source", "**").set("target", "out").run();
    out.assert_code(1).assert_contains("`..` component").assert_contains("1 failed");
    assert_eq!(tree(root.path()), vec!["ws/out/good.txt", "ws/out/sub/bad.bin"]);

    // A directory entry named `..` is never walked.
    fake.plant_hostile("dls", "sub", "..", true);
    let out = files(&inner, &fake, "dls").set("action", "download").set("source", "sub/").set("target", "o2").run();
    assert_ne!(out.code, 0);
    out.assert_contains("refusing to walk it");

    // A body corrupted in transit fails verification and leaves nothing behind.
    fake.corrupt("sub/bad.bin");
    let out = files(ws.path(), &fake, "dls")
        .set("action", "download")
        .set("source", "sub/bad.bin")
        .set("target", "c")
        .set("block_size", "64KiB")
        .run();
    out.assert_code(1).assert_contains("SHA-256 mismatch");
    assert!(tree(&ws.path().join("c")).is_empty(), "{:?}", tree(&ws.path().join("c")));

    // A file with no checksum (written by another tool) is refused unless `verify: size`.
    fake.plant("dls", "foreign/plain.txt", b"from elsewhere", &[]);
    let out =
        files(ws.path(), &fake, "dls").set("action", "download").set("source", "foreign/").set("target", "f").run();
    out.assert_code(1).assert_contains("no `sha256` metadata and no Content-MD5");
    files(ws.path(), &fake, "dls")
        .set("action", "download")
        .set("source", "foreign/")
        .set("target", "f")
        .set("verify", "size")
        .run()
        .assert_ok();
    assert_eq!(std::fs::read(ws.path().join("f/foreign/plain.txt")).unwrap(), b"from elsewhere");
}

#[test]
fn listing_is_paginated_and_recursive_from_a_partial_name() {
    let fake = FilesFake::start();
    fake.create_share("pages");
    let ws = tempfile::tempdir().unwrap();
    for i in 0..12 {
        write(ws.path(), &format!("up/build-{}/f{i:02}.txt", i % 3), format!("file {i}").as_bytes());
    }
    write(ws.path(), "up/other/x.txt", b"x");
    files(ws.path(), &fake, "pages").set("source", "up/**").set("strip_prefix", "up").run().assert_ok();
    // The glob's literal part `build-` is a partial name: the listing of the root is
    // filtered by it, and `build-0/`, `build-1/`, `build-2/` are walked; `other/` is not.
    let out = files(ws.path(), &fake, "pages")
        .env("AZURE_STORAGE_LIST_PAGE_SIZE", "2")
        .set("action", "download")
        .set("source", "build-*/**")
        .set("target", "out")
        .set("log_level", "debug")
        .run();
    out.assert_ok();
    assert_eq!(tree(&ws.path().join("out")).len(), 12);
    assert!(!tree(&ws.path().join("out")).iter().any(|p| p.contains("other")));
    assert!(out.stderr.matches("list page").count() >= 8, "expected several pages:\n{}", out.stderr);
    assert!(!out.stderr.contains("comp=list"), "queries must not be logged");
}

#[test]
fn a_missing_share_is_a_clear_error_unless_created() {
    let fake = FilesFake::start();
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "a.txt", b"a");
    let out = files(ws.path(), &fake, "absent").set("source", "a.txt").run();
    assert_ne!(out.code, 0);
    out.assert_contains("share `absent` does not exist");
    assert_eq!(fake.count("Create File"), 0);
    files(ws.path(), &fake, "absent").set("source", "a.txt").set("create_container", "true").run().assert_ok();
    assert_eq!(fake.file("absent", "a.txt").unwrap().data, b"a");
}

#[test]
fn busy_answers_are_retried_and_counted() {
    let fake = FilesFake::start();
    fake.create_share("busy");
    fake.state.busy_every.store(3, std::sync::atomic::Ordering::Relaxed);
    let ws = tempfile::tempdir().unwrap();
    let data = bytes(6 * 1024 * 1024, 5);
    write(ws.path(), "f.bin", &data);
    let out = files(ws.path(), &fake, "busy").set("source", "f.bin").set("block_size", "1MiB").run();
    out.assert_ok().assert_contains("retrying").assert_lacks(" 0 retries");
    let f = fake.file("busy", "f.bin").unwrap();
    assert!(f.data == data);
    // Without `content_md5: true` a multi-range file gets no whole-file MD5 (sha256 only).
    assert_eq!((f.content_md5, f.metadata.get("sha256")), (None, Some(&sha256_hex(&data))));
}

#[test]
fn names_files_cannot_hold_are_refused_before_any_request() {
    let fake = FilesFake::start();
    fake.create_share("names");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "Readme.md", b"1");
    write(ws.path(), "README.md", b"2");
    let out = files(ws.path(), &fake, "names").set("source", "*.md").run();
    out.assert_code(3).assert_contains("Azure Files names ignore case");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "Out", b"a file");
    write(ws.path(), "out/x", b"under a directory of the same name, but for case");
    write(ws.path(), "time 12:00.log", b"colon");
    let out = files(ws.path(), &fake, "names").set("source", "**").run();
    out.assert_code(3).assert_contains("is a file but also the directory of");
    let out = files(ws.path(), &fake, "names").set("source", "*.log").run();
    out.assert_code(3).assert_contains("contains `:`");
    assert!(fake.log().is_empty(), "requests were sent: {:?}", fake.log());
}

#[test]
fn sas_token_round_trip_including_the_rename_source() {
    let fake = FilesFake::start();
    fake.create_share("sas");
    let ws = tempfile::tempdir().unwrap();
    let data = bytes(4 * 1024 * 1024 + 1, 9);
    write(ws.path(), "dir/f.bin", &data);
    write(ws.path(), "dir/s.txt", b"small");
    let sas = account_sas("rwdlc", "2099-01-01T00:00:00Z");
    let base = || {
        plugin(ws.path())
            .set("service", "file")
            .set("share", "sas")
            .set("endpoint", fake.endpoint())
            .set("sas_token", sas.clone())
    };
    let out = base().set("source", "dir/**").run();
    out.assert_ok().assert_contains("auth: SAS token").assert_lacks(sas.split("sig=").nth(1).unwrap());
    assert!(fake.file("sas", "dir/f.bin").unwrap().data == data);
    base().set("action", "download").set("source", "dir/").set("target", "back").run().assert_ok();
    assert!(std::fs::read(ws.path().join("back/dir/f.bin")).unwrap() == data);
    // A SAS without write permission is refused by the service, and the error says so; the
    // refusal would recur for every file, so the run stops: nothing transferred, exit 3.
    let ro = account_sas("rl", "2099-01-01T00:00:00Z");
    let out = base().set("sas_token", ro).set("source", "dir/s.txt").run();
    out.assert_code(3)
        .assert_contains("AuthenticationFailed")
        .assert_contains("stopped early")
        .assert_contains("Check that `sas_token` (PLUGIN_SAS_TOKEN)");
}

/// IMDS stand-in handing out one opaque token (the runtime serves it while it lives).
struct Imds {
    _rt: tokio::runtime::Runtime,
    server: wiremock::MockServer,
}

fn imds(token: &str) -> Imds {
    use wiremock::matchers::{method, path};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(wiremock::MockServer::start());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let body = serde_json::json!({
        "access_token": token, "expires_on": (now + 3600).to_string(), "expires_in": "3600",
        "client_id": "99999999-8888-7777-6666-555555555555", "resource": "https://storage.azure.com",
        "token_type": "Bearer",
    });
    rt.block_on(
        wiremock::Mock::given(method("GET"))
            .and(path("/metadata/identity/oauth2/token"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(body))
            .mount(&server),
    );
    Imds { _rt: rt, server }
}

#[test]
fn oauth_bearer_requests_carry_the_backup_intent() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let fake = FilesFake::start_tls(&cert, &key);
    let token = "files-oauth-token-0123456789";
    *fake.state.bearer.lock().unwrap() = Some(token.to_string());
    fake.create_share("oauth");
    let mi = imds(token);
    let ws = tempfile::tempdir().unwrap();
    let data = bytes(5 * 1024 * 1024, 4);
    write(ws.path(), "deep/er/f.bin", &data);
    let run = |p: Plugin| {
        p.set("service", "file")
            .set("share", "oauth")
            .set("endpoint", fake.endpoint())
            .set("auth", "managed_identity")
            .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.server.uri())
            .env("SSL_CERT_FILE", cert.to_str().unwrap())
            .set("log_level", "trace")
            .run()
    };
    let out = run(plugin(ws.path()).set("source", "deep/**"));
    out.assert_ok().assert_contains("managed identity").assert_lacks(token);
    assert!(fake.file("oauth", "deep/er/f.bin").unwrap().data == data);
    let out = run(plugin(ws.path()).set("action", "download").set("source", "deep/").set("target", "back"));
    out.assert_ok().assert_lacks(token);
    assert!(std::fs::read(ws.path().join("back/deep/er/f.bin")).unwrap() == data);
    // Every request was accepted by a fake that refuses a bearer without the intent header.
    assert!(fake.log().iter().all(|l| l.status < 400 || l.op == "Get File Properties"), "{:?}", fake.log());
    drop(mi);
}

/// On Azure Files the mode is stored as metadata `mode` (SMB shares have no
/// POSIX properties of their own) on the single-range and the multi-range path, and applied
/// on download less the umask.
#[test]
fn file_modes_round_trip_through_metadata_on_azure_files() {
    use std::os::unix::fs::PermissionsExt;
    let fake = FilesFake::start();
    fake.create_share("modes");
    let ws = tempfile::tempdir().unwrap();
    for (rel, mode, len) in [("bin/run", 0o755, 10), ("key.pem", 0o600, 10), ("big.bin", 0o750, 5 * 1024 * 1024)] {
        let p = write(ws.path(), &format!("src/{rel}"), &bytes(len, mode as u64));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    files(ws.path(), &fake, "modes").set("source", "src/**").set("strip_prefix", "src").run().assert_ok();
    for (rel, want) in [("bin/run", "0755"), ("key.pem", "0600"), ("big.bin", "0750")] {
        assert_eq!(fake.file("modes", rel).unwrap().metadata.get("mode").map(String::as_str), Some(want), "{rel}");
    }
    files(ws.path(), &fake, "modes")
        .set("action", "download")
        .set("source", "**")
        .set("target", "out")
        .run()
        .assert_ok();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = u32::from_str_radix(status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap().trim(), 8).unwrap();
    for (rel, mode) in [("bin/run", 0o755), ("key.pem", 0o600), ("big.bin", 0o750)] {
        let got = std::fs::metadata(ws.path().join("out").join(rel)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode & !umask, "{rel}");
    }
}
