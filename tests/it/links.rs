//! `link_expiry` through the real binary against Azurite: a link signed with the account
//! key (service SAS) or with an Entra credential (user-delegation SAS, against the OAuth
//! Azurite over HTTPS) is fetched anonymously with plain HTTP(S) before it expires and
//! refused after; it never reaches the log. A refused Get User Delegation Key (a wiremock
//! stand-in behind a TLS front: Azurite grants the key to any token) exits 3 with nothing
//! uploaded; sync uploads get links; the step summary stays bounded. On Azure Files
//! (`service: file`, against the in-memory fake, which checks a File service SAS written
//! from the docs) the account key signs a file SAS (`sr=f`) the same way, and an Entra
//! credential a user-delegation file SAS with a key from the File service's own Get User
//! Delegation Key (the fake over HTTPS hands out keys it can rebuild from a SAS, and
//! answers 403 on demand).

use std::time::Duration;

use crate::support::*;

/// The value of `key` in an outputs file.
fn output(ws: &std::path::Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(ws.join("out")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// An anonymous GET (no credential): status and body. `cert`: the HTTPS Azurite's certificate.
fn get_with(url: &str, cert: Option<&std::path::Path>) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = reqwest::Client::builder();
        if let Some(c) = cert {
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(c).unwrap()).unwrap());
        }
        let r = client.build().unwrap().get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    })
}

fn get(url: &str) -> (u16, Vec<u8>) {
    get_with(url, None)
}

/// An anonymous Put Blob through `url`: the status.
fn put(url: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().put(url).header("x-ms-blob-type", "BlockBlob").body("overwritten").send();
        r.await.unwrap().status().as_u16()
    })
}

fn upload(ws: &std::path::Path, az: &Azurite, c: &str, expiry: &str) -> Plugin {
    plugin(ws)
        .azurite(az, c)
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("link_expiry", expiry)
        .set("manifest", "m.json")
        .env("DRONE_OUTPUT", ws.join("out").to_str().unwrap())
        .env("GITHUB_STEP_SUMMARY", ws.join("summary.md").to_str().unwrap())
}

#[test]
fn a_link_reads_the_file_anonymously_and_never_reaches_the_log() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("links");
    let ws = tempfile::tempdir().unwrap();
    let data = bytes(3000, 7);
    write(ws.path(), "dist/app v1.tar", &data);
    let out = upload(ws.path(), az, &c, "1h").run();
    out.assert_ok().assert_lacks("sig=").assert_lacks("sp=r");
    let link = output(ws.path(), "link").expect("a link output");
    assert!(link.starts_with(&format!("{}/{c}/app%20v1.tar?", az.endpoint())) && link.contains("&sig="), "{link}");
    // Without the signature the blob is private: the link is what grants the read.
    let bare = link.split('?').next().unwrap();
    assert_eq!(get(bare).0, 403, "an anonymous read without the SAS is refused");
    let (status, body) = get(&link);
    assert_eq!(status, 200);
    assert_eq!(body, data);
    // Read-only: the same signature cannot write.
    assert_eq!(put(&link), 403, "the link wrote the blob");
    assert_eq!(get(&link).1, data);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["files"][0]["link"], link.as_str());
    let summary = std::fs::read_to_string(ws.path().join("summary.md")).unwrap();
    assert!(summary.contains("| name | size | SHA-256 | link | expires |"), "{summary}");
    assert!(
        summary.contains(&format!("| `app v1.tar` | 2.9 KiB | `{}` | [download](", sha256_hex(&data))),
        "{summary}"
    );
}

#[test]
fn a_link_is_refused_once_it_has_expired() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkexp");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/a.txt", b"short-lived");
    upload(ws.path(), az, &c, "4s").run().assert_ok();
    let link = output(ws.path(), "link").unwrap();
    assert_eq!(get(&link), (200, b"short-lived".to_vec()), "the link works before it expires");
    // `se` has whole seconds: past it by more than a second, the service refuses.
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(get(&link).0, 403, "an expired link still read the blob");
}

#[test]
fn link_expiry_is_refused_with_a_sas_token_and_past_seven_days() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linksas");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/a.txt", b"x");
    let out = upload(ws.path(), az, &c, "1h")
        .unset("account_key")
        .set("sas_token", "sv=2025-11-05&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=AAAA")
        .run();
    out.assert_code(2)
        .assert_contains("`link_expiry` (PLUGIN_LINK_EXPIRY) cannot be used with a SAS token")
        .assert_lacks("sig=AAAA");
    match pyblob(az, &["list", &c]) {
        Ok(v) => assert_eq!(v, serde_json::json!([]), "a refused run uploaded something"),
        Err(e) => assert!(e.contains("ContainerNotFound"), "{e}"),
    }
    upload(ws.path(), az, &c, "8d").run().assert_code(2).assert_contains("out of range: 1s to 7d");
    upload(ws.path(), az, &c, "1h")
        .set("action", "download")
        .run()
        .assert_code(2)
        .assert_contains("applies to `action: upload` and `action: sync` only");
}

/// The OAuth Azurite (HTTPS) behind a pass-through that adds the `x-ms-request-id` its
/// Get User Delegation Key answer lacks (Azure always sends one, and the plugin refuses a
/// 2xx without it as not Azure's): plugin → TLS front → proxy → TLS → Azurite. Its
/// endpoint and the front's certificate.
fn entra_endpoint() -> &'static (String, std::path::PathBuf) {
    static E: std::sync::OnceLock<(String, std::path::PathBuf)> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        let az = oauth_azurite();
        let back = tls_back(az.port, az.cert.as_ref().unwrap());
        let rules = vec![crate::fault_proxy::Rule::new(
            "request id",
            |r: &crate::fault_proxy::Req| r.q("comp") == Some("userdelegationkey"),
            crate::fault_proxy::Times::Every,
            crate::fault_proxy::Fault::AddHeader("x-ms-request-id", "added-by-the-test-front"),
        )];
        let proxy = crate::fault_proxy::FaultProxy::start(&Azurite { port: back, scheme: "http", cert: None }, rules);
        let dir = std::env::temp_dir().join(format!("links-front-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed_cert(&dir);
        let (front, _) = tls_front(proxy.port, &cert, &key, 0);
        std::mem::forget(proxy);
        (format!("https://127.0.0.1:{front}/{DEV_ACCOUNT}"), cert)
    })
}

/// The plugin pointed at the OAuth Azurite (HTTPS) with an Entra access token and no key.
fn entra(ws: &std::path::Path, c: &str, expiry: &str) -> Plugin {
    let (endpoint, cert) = entra_endpoint();
    plugin(ws)
        .set("endpoint", endpoint.as_str())
        .set("access_token", crate::ci_encoding::storage_token("https://storage.azure.com", 3600))
        .set("container", c)
        .set("create_container", "true")
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("link_expiry", expiry)
        .set("manifest", "m.json")
        .env("SSL_CERT_FILE", cert.to_str().unwrap())
        .env("DRONE_OUTPUT", ws.join("out").to_str().unwrap())
}

/// An Entra credential signs a user-delegation SAS (Get User Delegation Key, once): the
/// link reads the file anonymously until it expires, then the service refuses it.
#[test]
fn an_entra_link_reads_the_file_anonymously_until_it_expires() {
    if !crate::support::azurite_present() {
        return;
    }
    let (endpoint, cert) = entra_endpoint();
    let c = container("linkentra");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/app v1.tar", b"signed by a delegation key");
    let out = entra(ws.path(), &c, "4s").run();
    out.assert_ok().assert_contains("auth: access token").assert_lacks("sig=").assert_lacks("skoid");
    let link = output(ws.path(), "link").expect("a link output");
    assert!(link.starts_with(&format!("{endpoint}/{c}/app%20v1.tar?")), "{link}");
    for field in
        ["&skoid=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee&", "&sktid=", "&skt=", "&ske=", "&sks=b&", "&skv=", "&sig="]
    {
        assert!(link.contains(field), "{field} missing: {link}");
    }
    let bare = link.split('?').next().unwrap();
    assert_ne!(get_with(bare, Some(cert)).0, 200, "an anonymous read without the SAS is refused");
    assert_eq!(get_with(&link, Some(cert)), (200, b"signed by a delegation key".to_vec()));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["files"][0]["link"], link.as_str());
    // `se` has whole seconds: past it by more than a second, the service refuses.
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(get_with(&link, Some(cert)).0, 403, "an expired link still read the blob");
    // The longest expiry works too; the key and the link expire together.
    std::fs::remove_file(ws.path().join("out")).unwrap();
    entra(ws.path(), &c, "7d").run().assert_ok();
    let link = output(ws.path(), "link").unwrap();
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(link.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    assert_eq!(q["se"], q["ske"]);
    assert_eq!(get_with(&link, Some(cert)), (200, b"signed by a delegation key".to_vec()));
}

/// An identity without `generateUserDelegationKey` (Get User Delegation Key answers 403)
/// fails before anything is written: exit 3, naming the permission and the roles.
/// A wiremock stand-in behind a TLS front answers: Azurite grants the key to any token.
#[test]
fn a_refused_delegation_key_exits_3_naming_the_role_and_uploads_nothing() {
    use wiremock::matchers::{method, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(MockServer::start());
    rt.block_on(
        Mock::given(method("POST"))
            .and(query_param("restype", "service"))
            .and(query_param("comp", "userdelegationkey"))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("x-ms-error-code", "AuthorizationPermissionMismatch")
                    .insert_header("x-ms-request-id", "req-udk")
                    .set_body_string("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized to perform this operation using this permission.</Message></Error>"),
            )
            .mount(&server),
    );
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let (port, _) = tls_front(server.address().port(), &cert, &key, 0);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/a.txt", b"never sent");
    for action in ["upload", "sync"] {
        let out = entra(ws.path(), "refused", "1h")
            .set("action", action)
            .set("target", "site")
            .set("endpoint", format!("https://127.0.0.1:{port}/{DEV_ACCOUNT}"))
            .env("SSL_CERT_FILE", cert.to_str().unwrap())
            .run();
        out.assert_code(3)
            .assert_contains("Get User Delegation Key was refused")
            .assert_contains("403 AuthorizationPermissionMismatch")
            .assert_contains("`Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action`")
            .assert_contains("`Storage Blob Delegator` role, or any `Storage Blob Data` role")
            .assert_contains("Nothing was uploaded");
    }
    let got: Vec<String> = rt
        .block_on(server.received_requests())
        .unwrap()
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.url.path(), r.url.query().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        vec![format!("POST /{DEV_ACCOUNT}/?restype=service&comp=userdelegationkey"); 2],
        "only the key was asked for"
    );
}

/// Several files stored with `manifest`: the manifest itself is uploaded next to them and
/// its link is the `link` output; read anonymously, it lists each file's link, and each
/// link downloads its file. The manifest is not counted as a transferred file.
#[test]
fn with_several_files_the_link_output_is_the_uploaded_manifests() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkman");
    let ws = tempfile::tempdir().unwrap();
    let (one, two) = (bytes(2000, 1), bytes(5000, 2));
    write(ws.path(), "dist/one.bin", &one);
    write(ws.path(), "dist/two.bin", &two);
    let out = upload(ws.path(), az, &c, "1h").set("target", "rel").run();
    out.assert_ok()
        .assert_contains("manifest uploaded to rel/m.json (its link is the `link` output)")
        .assert_contains("transferred            2")
        .assert_lacks("sig=");
    let link = output(ws.path(), "link").expect("a link output");
    assert!(link.starts_with(&format!("{}/{c}/rel/m.json?", az.endpoint())) && link.contains("&sig="), "{link}");
    let (status, body) = get(&link);
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(ws.path().join("m.json")).unwrap(), "the uploaded manifest is the local one");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{m}");
    for (f, want) in files.iter().zip([&one, &two]) {
        assert_eq!(&get(f["link"].as_str().expect("a link per file")), &(200, want.clone()), "{f}");
    }
    assert_eq!(names(az, &c), ["rel/m.json", "rel/one.bin", "rel/two.bin"]);
    assert_eq!(fetch(az, &c, "rel/m.json").1["content_type"], "application/json");
}

/// One file stored: `link` is that file's link, and the manifest is not uploaded.
#[test]
fn with_one_file_the_link_output_is_the_files_and_no_manifest_is_uploaded() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkone");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/only.txt", b"only");
    upload(ws.path(), az, &c, "1h").run().assert_ok().assert_lacks("manifest uploaded");
    let link = output(ws.path(), "link").expect("a link output");
    assert!(link.starts_with(&format!("{}/{c}/only.txt?", az.endpoint())), "{link}");
    assert_eq!(get(&link), (200, b"only".to_vec()));
    assert_eq!(names(az, &c), ["only.txt"]);
}

/// A stored file of the run with the manifest's name is not overwritten: a warning, and
/// `link` is empty.
#[test]
fn a_stored_file_named_like_the_manifest_is_kept_and_link_is_empty() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkclash");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/m.json", b"{\"mine\": true}");
    write(ws.path(), "dist/a.txt", b"a");
    upload(ws.path(), az, &c, "1h")
        .run()
        .assert_ok()
        .assert_contains("the manifest is not uploaded: this run stored a file named `m.json`")
        .assert_lacks("manifest uploaded");
    assert_eq!(output(ws.path(), "link").as_deref(), Some(""));
    assert_eq!(fetch(az, &c, "m.json").0, b"{\"mine\": true}", "the stored file was overwritten");
}

/// A manifest upload that fails (here `overwrite: false` over a stored one) exits 1 naming
/// `manifest`; the files stay stored and `link` is empty.
#[test]
fn a_failed_manifest_upload_exits_1_naming_manifest() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkmfail");
    plant(az, &c, &["m.json"]);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/a.txt", b"a");
    write(ws.path(), "dist/b.txt", b"b");
    upload(ws.path(), az, &c, "1h")
        .set("overwrite", "false")
        .run()
        .assert_code(1)
        .assert_contains("cannot upload the manifest `m.json` (`manifest`, PLUGIN_MANIFEST) to `m.json`: ")
        .assert_lacks("sig=");
    assert_eq!(output(ws.path(), "link").as_deref(), Some(""));
    assert_eq!(names(az, &c), ["a.txt", "b.txt", "m.json"]);
    assert_eq!(fetch(az, &c, "m.json").0, b"m.json", "the stored manifest was overwritten");
}

/// Sync uploads get links too, and so does a file the sync skipped because its stored copy
/// is the same; `link` is the one file's, or with several the uploaded manifest's.
#[test]
fn sync_gives_every_stored_file_a_link() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linksync");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/one.txt", b"first");
    let sync = || upload(ws.path(), az, &c, "1h").set("action", "sync").set("target", "site");
    sync().run().assert_ok().assert_lacks("sig=");
    let link = output(ws.path(), "link").expect("a link output");
    assert_eq!(get(&link), (200, b"first".to_vec()));
    write(ws.path(), "dist/two.txt", b"second");
    std::fs::remove_file(ws.path().join("out")).unwrap();
    sync().run().assert_ok().assert_contains("skipped                1");
    // Two files stored: the link is the manifest's, uploaded after the sync's deletes.
    let link = output(ws.path(), "link").expect("a link output");
    assert!(link.starts_with(&format!("{}/{c}/site/m.json?", az.endpoint())), "{link}");
    assert_eq!(get(&link), (200, std::fs::read(ws.path().join("m.json")).unwrap()));
    assert_eq!(names(az, &c), ["site/m.json", "site/one.txt", "site/two.txt"]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for (f, want) in files.iter().zip([&b"first"[..], b"second"]) {
        assert_eq!(get(f["link"].as_str().expect("a link per stored file")), (200, want.to_vec()), "{f}");
    }
    let summary = std::fs::read_to_string(ws.path().join("summary.md")).unwrap();
    assert!(summary.contains("| `site/two.txt` |") && summary.matches("| `site/one.txt` |").count() == 2, "{summary}");
}

/// A large upload's step summary stops at 512 KiB and says how many rows it left out; the
/// manifest still has every link.
#[test]
fn the_step_summary_is_bounded() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkcap");
    let ws = tempfile::tempdir().unwrap();
    // Long names make long rows (the name and the link hold it): ~700 bytes a row.
    let n = 1200;
    let long = "n".repeat(200);
    for i in 0..n {
        write(ws.path(), &format!("dist/{i:04}-{long}"), b"x");
    }
    upload(ws.path(), az, &c, "1h").set("concurrency", "32").run().assert_ok();
    let summary = std::fs::read_to_string(ws.path().join("summary.md")).unwrap();
    assert!(summary.len() <= 512 * 1024 + 1024, "{} bytes", summary.len());
    let rows = summary.lines().filter(|l| l.contains(&long)).count();
    assert!(rows > 100 && rows < n, "{rows} rows");
    assert!(
        summary.ends_with(&format!(
            "…and {} more (the table stops at 512.0 KiB; the manifest lists every link)\n",
            n - rows
        )),
        "{}",
        &summary[summary.len() - 300..]
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    let linked = m["files"].as_array().unwrap().iter().filter(|f| f["link"].is_string()).count();
    assert_eq!(linked, n);
}

// ---------------------------------------------------------------------------------------
// Azure Files: links signed with the account key (`sr=f`), against the in-memory fake.

/// The plugin uploading `dist/**` to share `share` of the Files fake with the account key.
fn files_upload(ws: &std::path::Path, fake: &crate::files_fake::FilesFake, share: &str, expiry: &str) -> Plugin {
    plugin(ws)
        .set("service", "file")
        .set("share", share)
        .set("endpoint", fake.endpoint())
        .set("account_key", crate::files_fake::account_key())
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("link_expiry", expiry)
        .set("manifest", "m.json")
        .env("DRONE_OUTPUT", ws.join("out").to_str().unwrap())
        .env("GITHUB_STEP_SUMMARY", ws.join("summary.md").to_str().unwrap())
}

/// A Files upload's link reads the file with a plain GET and no credential until it
/// expires; a tampered signature, or the signature moved to another file, is refused.
#[test]
fn a_files_link_reads_the_file_anonymously_until_it_expires() {
    let fake = crate::files_fake::FilesFake::start();
    fake.create_share("flinks");
    fake.plant("flinks", "private.txt", b"not shared", &[]);
    let ws = tempfile::tempdir().unwrap();
    let data = bytes(3000, 11);
    write(ws.path(), "dist/app v1.tar", &data);
    let out = files_upload(ws.path(), &fake, "flinks", "4s").run();
    out.assert_ok().assert_lacks("sig=").assert_lacks("sp=r");
    let link = output(ws.path(), "link").expect("a link output");
    let (bare, q) = link.split_once('?').unwrap();
    assert_eq!(bare, format!("{}/flinks/app%20v1.tar", fake.endpoint()));
    assert!(q.contains("&sr=f&sp=r&") && q.contains("&sig="), "{link}");
    assert_ne!(get(bare).0, 200, "an anonymous read without the SAS is refused");
    let (status, body) = get(&link);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body == data, "the link read other bytes");
    // The signature covers the permissions and the file: changed, it is refused.
    let tampered = link.replace("&sp=r&", "&sp=rw&");
    assert_eq!(get(&tampered).0, 403, "a tampered link read the file");
    let (head, sig) = link.rsplit_once("&sig=").unwrap();
    let flipped = format!("{head}&sig={}{}", if sig.starts_with('A') { "B" } else { "A" }, &sig[1..]);
    assert_eq!(get(&flipped).0, 403, "a link with another signature read the file");
    let moved = link.replace("/app%20v1.tar?", "/private.txt?");
    assert_eq!(get(&moved).0, 403, "the link read another file");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["files"][0]["link"], link.as_str());
    let summary = std::fs::read_to_string(ws.path().join("summary.md")).unwrap();
    assert!(
        summary.contains(&format!("| `app v1.tar` | 2.9 KiB | `{}` | [download](", sha256_hex(&data))),
        "{summary}"
    );
    // `se` has whole seconds: past it by more than a second, the service refuses.
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(get(&link).0, 403, "an expired link still read the file");
}

/// Sync to Azure Files gives every stored file a link, the skipped-as-unchanged one too,
/// and with two files the manifest is uploaded to the share and `link` is its link.
#[test]
fn a_sync_on_files_gives_every_stored_file_a_link() {
    let fake = crate::files_fake::FilesFake::start();
    fake.create_share("fsync");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/one.txt", b"first");
    let sync = || files_upload(ws.path(), &fake, "fsync", "1h").set("action", "sync").set("target", "site");
    sync().run().assert_ok().assert_lacks("sig=");
    assert_eq!(get(&output(ws.path(), "link").expect("a link output")), (200, b"first".to_vec()));
    write(ws.path(), "dist/sub/two.txt", b"second");
    std::fs::remove_file(ws.path().join("out")).unwrap();
    sync().run().assert_ok().assert_contains("skipped                1");
    // Two files stored: the link is the manifest's, uploaded to the share next to them.
    let link = output(ws.path(), "link").expect("a link output");
    assert!(link.starts_with(&format!("{}/fsync/site/m.json?", fake.endpoint())) && link.contains("&sr=f&"), "{link}");
    assert_eq!(get(&link), (200, std::fs::read(ws.path().join("m.json")).unwrap()));
    assert_eq!(fake.files("fsync"), ["site/m.json", "site/one.txt", "site/sub/two.txt"]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for (f, want) in files.iter().zip([&b"first"[..], b"second"]) {
        let link = f["link"].as_str().expect("a link per stored file");
        assert!(link.contains("&sr=f&"), "{link}");
        assert_eq!(get(link), (200, want.to_vec()), "{f}");
    }
}

/// The plugin uploading `dist/**` to share `share` of the fake over HTTPS with an Entra
/// access token (no key); `cert` is the fake's certificate.
fn files_entra(
    ws: &std::path::Path,
    fake: &crate::files_fake::FilesFake,
    share: &str,
    expiry: &str,
    cert: &std::path::Path,
) -> Plugin {
    files_upload(ws, fake, share, expiry)
        .unset("account_key")
        .set("access_token", crate::ci_encoding::storage_token("https://storage.azure.com", 3600))
        .env("SSL_CERT_FILE", cert.to_str().unwrap())
}

/// The Files fake over HTTPS (a bearer token needs it) and its certificate.
fn files_tls() -> (crate::files_fake::FilesFake, tempfile::TempDir, std::path::PathBuf) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    (crate::files_fake::FilesFake::start_tls(&cert, &key), certs, cert)
}

/// An Entra credential on Azure Files signs a user-delegation file SAS (`sr=f`, `sks=f`),
/// with one Get User Delegation Key on the File service before anything is written: the
/// link reads the file anonymously until it expires; tampered or moved, it is refused.
#[test]
fn an_entra_files_link_reads_the_file_anonymously_until_it_expires() {
    let (fake, _certs, cert) = files_tls();
    fake.create_share("fentra");
    fake.plant("fentra", "private.txt", b"not shared", &[]);
    let ws = tempfile::tempdir().unwrap();
    let data = bytes(3000, 12);
    write(ws.path(), "dist/app v1.tar", &data);
    let out = files_entra(ws.path(), &fake, "fentra", "4s", &cert).run();
    out.assert_ok().assert_contains("auth: access token").assert_lacks("sig=").assert_lacks("skoid");
    let ops: Vec<&str> = fake.log().iter().map(|l| l.op).collect();
    assert_eq!(ops.iter().filter(|o| **o == "Get User Delegation Key").count(), 1, "{ops:?}");
    let first_write = ops.iter().position(|o| o.starts_with("Create")).expect("a write");
    assert!(ops[..first_write].contains(&"Get User Delegation Key"), "the key comes before any write: {ops:?}");
    let link = output(ws.path(), "link").expect("a link output");
    let (bare, q) = link.split_once('?').unwrap();
    assert_eq!(bare, format!("{}/fentra/app%20v1.tar", fake.endpoint()));
    for field in [
        "&sr=f&sp=r&",
        &format!("&skoid={}&", crate::files_fake::DELEGATION_OID),
        "&sktid=",
        "&skt=",
        "&ske=",
        "&sks=f&",
        "&skv=",
        "&sig=",
    ] {
        assert!(q.contains(field), "{field} missing: {link}");
    }
    assert_ne!(get_with(bare, Some(&cert)).0, 200, "an anonymous read without the SAS is refused");
    let (status, body) = get_with(&link, Some(&cert));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body == data, "the link read other bytes");
    assert_eq!(get_with(&link.replace("&sp=r&", "&sp=rw&"), Some(&cert)).0, 403, "a tampered link read the file");
    let (head, sig) = link.rsplit_once("&sig=").unwrap();
    let flipped = format!("{head}&sig={}{}", if sig.starts_with('A') { "B" } else { "A" }, &sig[1..]);
    assert_eq!(get_with(&flipped, Some(&cert)).0, 403, "a link with another signature read the file");
    let moved = link.replace("/app%20v1.tar?", "/private.txt?");
    assert_eq!(get_with(&moved, Some(&cert)).0, 403, "the link read another file");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["files"][0]["link"], link.as_str());
    // `se` has whole seconds: past it by more than a second, the service refuses.
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(get_with(&link, Some(&cert)).0, 403, "an expired link still read the file");
}

/// Sync to Azure Files with an Entra credential gives every stored file a user-delegation
/// link, the one skipped as unchanged too.
#[test]
fn a_sync_on_files_with_entra_gives_every_stored_file_a_link() {
    let (fake, _certs, cert) = files_tls();
    fake.create_share("fsyncentra");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/one.txt", b"first");
    let sync = || files_entra(ws.path(), &fake, "fsyncentra", "1h", &cert).set("action", "sync").set("target", "site");
    sync().run().assert_ok().assert_lacks("sig=");
    assert_eq!(get_with(&output(ws.path(), "link").expect("a link output"), Some(&cert)), (200, b"first".to_vec()));
    write(ws.path(), "dist/sub/two.txt", b"second");
    std::fs::remove_file(ws.path().join("out")).unwrap();
    sync().run().assert_ok().assert_contains("skipped                1");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for (f, want) in files.iter().zip([&b"first"[..], b"second"]) {
        let link = f["link"].as_str().expect("a link per stored file");
        assert!(link.contains("&sr=f&") && link.contains("&sks=f&"), "{link}");
        assert_eq!(get_with(link, Some(&cert)), (200, want.to_vec()), "{f}");
    }
}

/// An identity without the Files `generateUserDelegationKey` permission (the File
/// service's Get User Delegation Key answers 403) fails before anything is written: exit
/// 3, naming the permission; a SAS token cannot sign links at all (exit 2).
#[test]
fn files_links_refuse_a_denied_delegation_key_or_a_sas_token() {
    let (fake, _certs, cert) = files_tls();
    fake.create_share("fdenied");
    fake.state.refuse_delegation.store(true, std::sync::atomic::Ordering::SeqCst);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/a.txt", b"never sent");
    for action in ["upload", "sync"] {
        let out =
            files_entra(ws.path(), &fake, "fdenied", "1h", &cert).set("action", action).set("target", "site").run();
        out.assert_code(3)
            .assert_contains("Get User Delegation Key was refused")
            .assert_contains("403 AuthorizationPermissionMismatch")
            .assert_contains("`Microsoft.Storage/storageAccounts/fileServices/generateUserDelegationKey/action`")
            .assert_contains("Nothing was uploaded");
    }
    let ops: Vec<&str> = fake.log().iter().map(|l| l.op).collect();
    assert_eq!(ops, ["Get User Delegation Key"; 2], "only the key was asked for");
    assert!(fake.files("fdenied").is_empty(), "a refused run uploaded something");
    let sas = crate::files_fake::account_sas("rwdlc", "2099-01-01T00:00:00Z");
    let out = files_upload(ws.path(), &fake, "fdenied", "1h").unset("account_key").set("sas_token", sas).run();
    out.assert_code(2)
        .assert_contains("`link_expiry` (PLUGIN_LINK_EXPIRY) cannot be used with a SAS token")
        .assert_contains("or an Entra credential");
    assert!(fake.files("fdenied").is_empty(), "a refused run uploaded something");
}
