//! Download when the storage content or the target directory is hostile: colliding names, a directory swapped for a symbolic link mid-download, a blob
//! rewritten between listing and read. Races are not left to luck: the fault proxy holds
//! the ranged GET on a [`Gate`] until the test has made its change.

use std::path::Path;
use std::time::Duration;

use crate::fault_proxy::*;
use crate::faults::{finish, spawn};
use crate::files_fake::{account_key, FilesFake};
use crate::support::*;

/// Uploads files (name, bytes) straight to Azurite with the plugin (so they carry `sha256`).
fn upload(az: &Azurite, c: &str, files: &[(&str, &[u8])]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in files {
        write(dir.path(), name, data);
    }
    plugin(dir.path()).azurite(az, c).set("source", "**").run().assert_ok();
}

/// A download through the proxy, in 64 KiB ranges, one request at a time.
fn download_via(proxy: &FaultProxy, dir: &Path, c: &str) -> Plugin {
    plugin(dir)
        .azurite(Azurite::shared(), c)
        .set("endpoint", proxy.endpoint())
        .set("action", "download")
        .set("block_size", "64KiB")
        .set("concurrency", "1")
        .set("timeout", "60s")
}

/// Every entry under `root` (directories and links included), relative, sorted.
fn entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---- two remote names, one local path -------------------------------------------

#[test]
fn two_remote_names_on_one_local_path_are_refused_before_anything_is_written() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlcollide");
    upload(az, &c, &[("p/x.txt", b"under p"), ("x.txt", b"top level"), ("p/y.txt", b"fine")]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "**")
        .set("strip_prefix", "p")
        .set("target", "out")
        .set("manifest", "manifest.json")
        .run();
    out.assert_code(3)
        .assert_contains("1 local path(s) would each receive more than one remote file; nothing was downloaded")
        .assert_contains("x.txt ← `p/x.txt`, `x.txt`")
        .assert_contains("`strip_prefix` (PLUGIN_STRIP_PREFIX)");
    // Nothing written: not the colliding files, not the innocent one, no manifest claiming anything.
    assert!(entries(ws.path()).is_empty(), "written: {:?}", entries(ws.path()));
    // Without the strip, all three download.
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "**")
        .set("target", "out")
        .run()
        .assert_ok();
    assert_eq!(tree(&ws.path().join("out")), vec!["p/x.txt", "p/y.txt", "x.txt"]);
}

// ---- a directory under the target swapped for a symlink mid-download --------------

#[test]
fn a_directory_swapped_for_a_symlink_mid_download_cannot_redirect_the_write() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlswap");
    let data = bytes(200_000, 71);
    upload(az, &c, &[("d/x.bin", &data), ("top.bin", b"top")]);
    let gate = Gate::new();
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("hold", op_on("GetBlob", "d/x.bin"), Times::Nth(1), Fault::Hold(gate.clone()))],
    );
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let out_dir = ws.path().join("out");
    let child = spawn(&download_via(&proxy, ws.path(), &c).set("source", "d/,top.bin").set("target", "out"));
    let held = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hold")));
    // The file's directory is open and its temporary file made: swap the directory for a
    // link to a directory outside the target, then let the bytes flow.
    if held {
        std::fs::rename(out_dir.join("d"), out_dir.join("d-moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), out_dir.join("d")).unwrap();
    }
    gate.open();
    let out = finish(child);
    assert!(held, "the GET was never held:\n{}\n{}", proxy.log(), out.all());
    assert!(entries(outside.path()).is_empty(), "written outside the target: {:?}", entries(outside.path()));
    out.assert_code(1)
        .assert_contains("was replaced while the file was downloaded")
        .assert_contains("is a symbolic link: refusing to write through it")
        .assert_contains("1 failed");
    // Nothing half-done inside either: the moved directory holds no file, no temporary file.
    assert_eq!(entries(&out_dir), vec!["d", "d-moved", "top.bin"], "{}", out.all());
    assert_eq!(std::fs::read(out_dir.join("top.bin")).unwrap(), b"top");
    // A link already in place before the run is refused too, and never followed.
    let ws2 = tempfile::tempdir().unwrap();
    std::fs::create_dir(ws2.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ws2.path().join("out/d")).unwrap();
    plugin(ws2.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "d/")
        .set("target", "out")
        .run()
        .assert_code(1)
        .assert_contains("is a symbolic link: refusing to write through it");
    assert!(entries(outside.path()).is_empty(), "written outside the target: {:?}", entries(outside.path()));
}

// ---- a blob rewritten between listing and download --------------------------------

#[test]
fn a_blob_rewritten_after_listing_is_downloaded_as_it_is_now_and_verified() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlchanged");
    let old = bytes(200_000, 81);
    let new = bytes(150_000, 82);
    upload(az, &c, &[("c.bin", &old)]);
    let gate = Gate::new();
    let proxy = FaultProxy::start(az, vec![Rule::new("hold", op("GetBlob"), Times::Nth(1), Fault::Hold(gate.clone()))]);
    let ws = tempfile::tempdir().unwrap();
    let child = spawn(
        &download_via(&proxy, ws.path(), &c)
            .set("source", "c.bin")
            .set("target", "out")
            .set("manifest", "manifest.json"),
    );
    let held = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hold")));
    if held {
        // Another writer replaces the blob (straight to Azurite) while the first range waits.
        let src = tempfile::tempdir().unwrap();
        let f = write(src.path(), "new", &new);
        let meta = format!("sha256={}", sha256_hex(&new));
        py(az, &["put", &c, "c.bin", f.to_str().unwrap(), "--metadata", &meta]);
    }
    gate.open();
    let out = finish(child);
    assert!(held, "the GET was never held:\n{}\n{}", proxy.log(), out.all());
    out.assert_ok().assert_contains("`c.bin` changed while it was read").assert_contains("downloading the new version");
    out.assert_lacks("mismatch").assert_lacks("twice");
    assert!(std::fs::read(ws.path().join("out/c.bin")).unwrap() == new, "not the new content");
    // Every ranged GET was pinned to a version; the held one was refused by Azurite (412).
    let gets = proxy.ops("GetBlob");
    assert!(gets.iter().all(|r| r.req.header("if-match").is_some()), "{}", proxy.log());
    assert_eq!(gets[0].upstream, Some(412), "{}", proxy.log());
    assert_eq!(gets.len(), 1 + 3, "the new 150,000-byte version in three 64 KiB ranges:\n{}", proxy.log());
    // The manifest names the version that was written.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path().join("manifest.json")).unwrap()).unwrap();
    let f = &m["files"][0];
    assert_eq!(f["sha256"], sha256_hex(&new));
    assert_eq!(f["size"], 150_000);
    assert_eq!(f["status"], "transferred");
}

#[test]
fn a_file_rewritten_mid_download_on_azure_files_is_downloaded_as_it_is_now() {
    let fake = FilesFake::start();
    fake.create_share("changed");
    let (old, new) = (bytes(300_000, 91), bytes(100_000, 92));
    fake.plant("changed", "dir/f.bin", &old, &[("sha256", &sha256_hex(&old))]);
    // Get File has no If-Match: the second range's answer comes from the rewritten file,
    // with another ETag.
    let new_sha = sha256_hex(&new);
    fake.rewrite_on_get("dir/f.bin", 2, &new, &[("sha256", &new_sha)]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path())
        .set("service", "file")
        .set("share", "changed")
        .set("endpoint", fake.endpoint())
        .set("account_key", account_key())
        .set("action", "download")
        .set("source", "dir/")
        .set("target", "out")
        .set("block_size", "64KiB")
        .set("concurrency", "1")
        .run();
    out.assert_ok().assert_contains("`dir/f.bin` changed while it was read").assert_lacks("mismatch");
    assert!(std::fs::read(ws.path().join("out/dir/f.bin")).unwrap() == new, "not the new content");
    assert_eq!(entries(&ws.path().join("out")), vec!["dir", "dir/f.bin"]);
}

// ---- the directories written into by name: `target` and the manifest's ---------------

/// A pull request commits `dist -> <outside>` (or a link in a parent of `target`): the
/// download must not follow it, and neither may the manifest. Before this check, both
/// runs exited 0 with the files (and the manifest) written outside the workspace.
#[test]
fn a_target_or_manifest_reached_through_a_workspace_link_is_refused_and_nothing_lands_outside() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dltargetlink");
    upload(az, &c, &[("p/a.txt", b"payload")]);
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("dist")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("sub"), ws.path().join("deep")).unwrap();
    let download = |target: &str| {
        plugin(ws.path())
            .azurite(az, &c)
            .set("action", "download")
            .set("source", "p/")
            .set("strip_prefix", "p")
            .set("target", target)
    };
    for target in ["dist", "deep/x", "./dist/../dist", "dist/new"] {
        let out = download(target).run();
        out.assert_code(3)
            .assert_contains("cannot open `target` (PLUGIN_TARGET)")
            .assert_contains("is a symbolic link inside the workspace: refusing to write through it");
        assert_eq!(entries(outside.path()), vec!["sub".to_string()], "target `{target}` wrote outside");
    }
    // The manifest's directory is opened the same way; the transfer itself stands (exit 1).
    let out = download("out").set("manifest", "dist/m.json").run();
    out.assert_code(1).assert_contains("cannot write the manifest").assert_contains("symbolic link");
    assert_eq!(std::fs::read(ws.path().join("out/a.txt")).unwrap(), b"payload");
    assert_eq!(entries(outside.path()), vec!["sub".to_string()], "the manifest was written outside");
    // A real directory (created as needed) and a manifest beside it work as before.
    download("fresh/dir").set("manifest", "reports/m.json").run().assert_ok();
    assert_eq!(std::fs::read(ws.path().join("fresh/dir/a.txt")).unwrap(), b"payload");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path().join("reports/m.json")).unwrap()).unwrap();
    assert_eq!(m["files"][0]["status"], "transferred");
    assert!(!entries(ws.path()).iter().any(|e| e.contains(".tmp-")), "{:?}", entries(ws.path()));
}

/// A download dry run refuses the target the real run refuses: `target: dist` with `dist`
/// a workspace link to a directory outside is exit 3 in both, never `would download … →
/// dist/a.txt`, exit 0.
#[test]
fn a_dry_run_refuses_a_target_reached_through_a_workspace_link_as_the_real_run_does() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dldrylink");
    upload(az, &c, &[("p/a.txt", b"payload")]);
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("dist")).unwrap();
    let download = |target: &str, dry: bool| {
        plugin(ws.path())
            .azurite(az, &c)
            .set("action", "download")
            .set("source", "p/")
            .set("strip_prefix", "p")
            .set("target", target)
            .set("dry_run", if dry { "true" } else { "false" })
            .run()
    };
    for target in ["dist", "dist/new"] {
        let real = download(target, false);
        real.assert_code(3).assert_contains("is a symbolic link inside the workspace: refusing to write through it");
        download(target, true)
            .assert_code(real.code)
            .assert_contains("is a symbolic link inside the workspace: refusing to write through it")
            .assert_lacks("would download");
    }
    assert!(entries(outside.path()).is_empty(), "{:?}", entries(outside.path()));
    // A target that does not exist yet: the dry run plans it and creates nothing.
    download("fresh/dir", true).assert_ok().assert_contains("would download p/a.txt");
    assert!(!ws.path().join("fresh").exists(), "a dry run created the target");
}
