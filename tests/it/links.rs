//! `link_expiry` through the real binary against Azurite (account key): the link is
//! fetched anonymously with plain HTTP before it expires and refused after; it never
//! reaches the log.

use std::time::Duration;

use crate::support::*;

/// The value of `key` in an outputs file.
fn output(ws: &std::path::Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(ws.join("out")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// An anonymous GET (no credential): status and body.
fn get(url: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    })
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
    if !crate::support::azurite_present() {
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
    upload(ws.path(), az, &c, "8d").run().assert_code(2).assert_contains("out of range: 1s to 7d");
    upload(ws.path(), az, &c, "1h")
        .set("action", "download")
        .run()
        .assert_code(2)
        .assert_contains("applies to `action: upload` only");
}
