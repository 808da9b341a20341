//! `action: sync` through the real binary: against Azurite (through the fault proxy where
//! a request must fail or be held) and the Azure Files fake. Each test checks what is
//! stored afterwards, above all that nothing was deleted that should not have been.

use std::time::Duration;

use crate::fault_proxy::{inject_into_listing, op, op_on, Fault, FaultProxy, Gate, Rule, Times};
use crate::faults::{finish, spawn};
use crate::files_fake::{account_key, FilesFake};
use crate::support::*;

/// A sync of the workspace's `site/` into `target`, through `endpoint` when given.
fn sync(ws: &std::path::Path, az: &Azurite, c: &str, target: &str) -> Plugin {
    plugin(ws)
        .azurite(az, c)
        .set("action", "sync")
        .set("source", "site/**")
        .set("strip_prefix", "site")
        .set("target", target)
        .set("provenance", "false")
}

fn deletes(proxy: &FaultProxy) -> usize {
    proxy.records().iter().filter(|r| r.req.method == "DELETE").count()
}

#[test]
fn sync_uploads_what_changed_and_deletes_only_what_the_target_lacks() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncbasic");
    // `t/` is the sync's; `tb/`, `t` itself and `other/` are not (whole path components).
    plant(az, &c, &["t/old.txt", "t/deep/er/gone.txt", "t/keep.txt", "tb/x.txt", "other/y.txt"]);
    plant(az, &c, &["t"]);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    write(ws, "site/keep.txt", b"t/keep.txt"); // the same bytes as stored: skipped
    write(ws, "site/new dir/ü é.txt", b"unicode");
    write(ws, "site/a b.txt", b"spaces");
    let outputs = ws.join("drone-output");
    let out = sync(ws, az, &c, "t").set("manifest", "m.json").env("DRONE_OUTPUT", outputs.to_str().unwrap()).run();
    out.assert_ok().assert_contains("deleted t/old.txt").assert_contains("deleted t/deep/er/gone.txt");
    assert_eq!(
        names(az, &c),
        ["other/y.txt", "t", "t/a b.txt", "t/keep.txt", "t/new dir/ü é.txt", "tb/x.txt"],
        "{}",
        out.all()
    );
    assert_eq!(fetch(az, &c, "t/new dir/ü é.txt").0, b"unicode");
    let o = std::fs::read_to_string(&outputs).unwrap();
    assert!(o.contains("deleted=2\n") && o.contains("transferred=2\n") && o.contains("skipped=1\n"), "{o}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.join("m.json")).unwrap()).unwrap();
    assert_eq!(m["action"], "sync");
    assert_eq!(m["summary"]["files_deleted"], 2);
    let gone: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "deleted")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(gone, ["t/deep/er/gone.txt", "t/old.txt"]);

    // Again, unchanged: skipped from the listing alone (no Get Blob Properties, no Put).
    let proxy = FaultProxy::start(az, vec![]);
    let out = sync(ws, az, &c, "t").set("endpoint", proxy.endpoint()).run();
    out.assert_ok().assert_contains("unchanged");
    let ops: Vec<String> = proxy.records().iter().map(|r| r.req.op()).filter(|o| o != "CreateContainer").collect();
    assert_eq!(ops, ["ListBlobs"], "{}", proxy.log());

    // Changed with the same size: the hash tells, and it is uploaded.
    write(ws, "site/a b.txt", b"SPACES");
    let out = sync(ws, az, &c, "t").run();
    out.assert_ok();
    assert_eq!(fetch(az, &c, "t/a b.txt").0, b"SPACES", "{}", out.all());
}

#[test]
fn a_failed_upload_deletes_nothing() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncfailup");
    plant(az, &c, &["t/old.txt", "t/b.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/a.txt", b"a");
    write(dir.path(), "site/b.txt", b"changed");
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("refuse", op_on("PutBlob", "t/b.txt"), Times::Every, Fault::status(400, "InvalidInput"))],
    );
    let out = sync(dir.path(), az, &c, "t").set("endpoint", proxy.endpoint()).set("retries", "0").run();
    out.assert_code(1).assert_contains("so none of the 1 file(s) under `t/` the selection lacks was deleted");
    assert_eq!(proxy.fired("refuse"), 1, "{}", proxy.log());
    assert_eq!(deletes(&proxy), 0, "{}", proxy.log());
    assert_eq!(names(az, &c), ["t/a.txt", "t/b.txt", "t/old.txt"]);
}

#[test]
fn a_sync_interrupted_before_its_deletes_deletes_nothing() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncsigterm");
    plant(az, &c, &["t/old1.txt", "t/old2.txt"]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write(dir.path(), &format!("site/f{i}.txt"), format!("{i}").as_bytes());
    }
    // The last upload is held until the run is stopped: every other upload is done, the
    // deletes are next.
    let gate = Gate::new();
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("hold", op_on("PutBlob", "t/f3.txt"), Times::Every, Fault::Hold(gate.clone()))],
    );
    let child = spawn(&sync(dir.path(), az, &c, "t").set("endpoint", proxy.endpoint()).set("timeout", "60s"));
    let held = proxy.wait_until(Duration::from_secs(30), |recs| {
        recs.iter().any(|r| r.fault == Some("hold")) && recs.iter().filter(|r| r.req.op() == "PutBlob").count() == 4
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child);
    gate.open();
    assert!(held, "the last upload was not held:\n{}\n{}", proxy.log(), out.all());
    out.assert_code(143);
    assert_eq!(deletes(&proxy), 0, "a delete was sent before every upload succeeded:\n{}", proxy.log());
    let n = names(az, &c);
    assert!(n.contains(&"t/old1.txt".to_string()) && n.contains(&"t/old2.txt".to_string()), "{n:?}");
}

#[test]
fn a_listing_that_fails_on_its_second_page_deletes_and_uploads_nothing() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("synclistfail");
    plant(az, &c, &["t/1.txt", "t/2.txt", "t/3.txt", "t/4.txt", "t/5.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/new.txt", b"new");
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("page2", op("ListBlobs"), Times::From(2), Fault::status(503, "ServerBusy"))],
    );
    let out = sync(dir.path(), az, &c, "t")
        .set("endpoint", proxy.endpoint())
        .set("retries", "1")
        .env("AZURE_STORAGE_LIST_PAGE_SIZE", "2")
        .run();
    out.assert_code(3).assert_contains("the listing of `t/` failed, so nothing was uploaded or deleted");
    assert!(proxy.fired("page2") >= 1, "{}", proxy.log());
    assert!(proxy.ops("ListBlobs").iter().skip(1).all(|r| r.req.q("marker").is_some()), "{}", proxy.log());
    assert_eq!(deletes(&proxy), 0, "{}", proxy.log());
    assert!(proxy.ops("PutBlob").is_empty(), "{}", proxy.log());
    assert_eq!(names(az, &c), ["t/1.txt", "t/2.txt", "t/3.txt", "t/4.txt", "t/5.txt"]);
}

#[test]
fn max_delete_refuses_a_sync_that_would_delete_more() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncguard");
    plant(az, &c, &["t/1.txt", "t/2.txt", "t/3.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/new.txt", b"new");
    let out = sync(dir.path(), az, &c, "t").set("max_delete", "2").run();
    out.assert_code(1)
        .assert_contains("would delete 3 file(s) under `t/`, more than `max_delete` (PLUGIN_MAX_DELETE) allows (2)");
    assert_eq!(names(az, &c), ["t/1.txt", "t/2.txt", "t/3.txt"], "nothing uploaded or deleted");
    // Dry run: every upload and every delete printed, nothing changed.
    let out = sync(dir.path(), az, &c, "t").set("max_delete", "3").set("dry_run", "true").run();
    out.assert_ok().assert_contains("would upload site/new.txt → t/new.txt").assert_contains("would delete t/2.txt");
    assert_eq!(names(az, &c), ["t/1.txt", "t/2.txt", "t/3.txt"]);
    // A source that matched nothing (say, a build that produced no assets): no deletes.
    let out = sync(dir.path(), az, &c, "t").set("max_delete", "3").set("source", "site/**,assets/**").run();
    out.assert_code(1).assert_contains("source `assets/**` matched no file, so none of the 3 file(s)");
    assert_eq!(names(az, &c), ["t/1.txt", "t/2.txt", "t/3.txt", "t/new.txt"], "uploaded, nothing deleted");
    sync(dir.path(), az, &c, "t").set("max_delete", "3").run().assert_ok();
    assert_eq!(names(az, &c), ["t/new.txt"]);
}

#[test]
fn a_sync_of_the_whole_container_needs_max_delete() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncwhole");
    plant(az, &c, &["x/old.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/index.html", b"<h1>hi</h1>");
    let out = sync(dir.path(), az, &c, "").run();
    out.assert_code(2).assert_contains("set `max_delete` (PLUGIN_MAX_DELETE)");
    assert_eq!(names(az, &c), ["x/old.txt"]);
    sync(dir.path(), az, &c, "").set("max_delete", "10").run().assert_ok();
    assert_eq!(names(az, &c), ["index.html"]);
}

#[test]
fn compressed_files_are_stored_gzipped_and_compared_like_for_like() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("synccompress");
    let dir = tempfile::tempdir().unwrap();
    let html = b"<html><body>hello, hello, hello, hello, hello</body></html>\n".repeat(100);
    write(dir.path(), "site/index.html", &html);
    write(dir.path(), "site/logo.png", b"\x89PNG not compressed");
    let run = || {
        sync(dir.path(), az, &c, "web")
            .set("compress", r#"["**/*.html","**/*.css"]"#)
            .set("cache_control", r#"{"*.html":"no-cache","*":"max-age=31536000"}"#)
    };
    run().run().assert_ok();
    let (decoded, props) = fetch(az, &c, "web/index.html"); // the Python client decodes gzip
    assert_eq!(decoded, html);
    assert_eq!(props["content_encoding"], "gzip", "{props}");
    assert_eq!(props["content_type"], "text/html", "{props}");
    assert_eq!(props["cache_control"], "no-cache", "{props}");
    let stored = stored_bytes(az, &c, "web/index.html");
    assert!(stored.starts_with(&[0x1f, 0x8b]) && stored.len() < html.len() / 5, "not gzip: {} bytes", stored.len());
    assert_eq!(props["metadata"]["sha256"], sha256_hex(&stored), "sha256 describes the stored bytes");
    assert_eq!(miniz_oxide::inflate::decompress_to_vec(&stored[10..stored.len() - 8]).unwrap(), html);
    let (png, props) = fetch(az, &c, "web/logo.png");
    assert_eq!(png, b"\x89PNG not compressed");
    assert!(props["content_encoding"].is_null(), "{props}");
    // Unchanged: the same gzip bytes, so both files are skipped from the listing.
    let proxy = FaultProxy::start(az, vec![]);
    run().set("endpoint", proxy.endpoint()).run().assert_ok();
    assert!(proxy.ops("PutBlob").is_empty() && proxy.ops("HeadBlob").is_empty(), "{}", proxy.log());
    // Changed: uploaded again.
    write(dir.path(), "site/index.html", b"<html>new</html>");
    run().run().assert_ok();
    let stored = stored_bytes(az, &c, "web/index.html");
    assert_eq!(fetch(az, &c, "web/index.html").1["metadata"]["sha256"], sha256_hex(&stored));
    assert_eq!(miniz_oxide::inflate::decompress_to_vec(&stored[10..stored.len() - 8]).unwrap(), b"<html>new</html>");
}

/// The bytes as stored (the plugin's download does not decode and checks them against `sha256`).
fn stored_bytes(az: &Azurite, c: &str, name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    plugin(dir.path())
        .azurite(az, c)
        .set("action", "download")
        .set("source", name)
        .set("target", "out")
        .run()
        .assert_ok();
    std::fs::read(dir.path().join("out").join(name)).unwrap()
}

// ---------------------------------------------------------------------------------------
// Azure Files (the fake).

fn files_sync(dir: &std::path::Path, fake: &FilesFake, share: &str) -> Plugin {
    plugin(dir)
        .set("service", "file")
        .set("share", share)
        .set("endpoint", fake.endpoint())
        .set("account_key", account_key())
        .set("action", "sync")
        .set("source", "site/**")
        .set("strip_prefix", "site")
        .set("target", "t")
        .set("provenance", "false")
}

#[test]
fn files_sync_deletes_files_and_the_directories_it_emptied() {
    let fake = FilesFake::start();
    fake.create_share("share1");
    fake.plant("share1", "t/old dir/ä b.txt", b"old", &[]);
    fake.plant("share1", "t/keep/gone.txt", b"old", &[]);
    fake.plant("share1", "tb/other.txt", b"not the sync's", &[]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/keep/kept.txt", b"kept");
    write(dir.path(), "site/Ü.txt", b"unicode");
    let out = files_sync(dir.path(), &fake, "share1").run();
    out.assert_ok().assert_contains("deleted t/old dir/ä b.txt");
    assert_eq!(fake.files("share1"), ["t/keep/kept.txt", "t/Ü.txt", "tb/other.txt"], "{}", out.all());
    assert_eq!(fake.dirs("share1"), ["t", "t/keep", "tb"], "the emptied `t/old dir` is removed, the rest stay");
    // Unchanged: Files listings carry no sha256, so a same-size file costs one Get File
    // Properties, and nothing is written.
    fake.clear_log();
    files_sync(dir.path(), &fake, "share1").run().assert_ok().assert_contains("unchanged");
    assert_eq!(fake.count("Get File Properties"), 2);
    assert_eq!(fake.count("Create File") + fake.count("Delete File"), 0);
}

#[test]
fn files_names_differing_only_in_case_are_the_same_file_and_never_deleted() {
    let fake = FilesFake::start();
    fake.create_share("share1");
    fake.plant("share1", "t/README.md", b"old", &[]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/readme.md", b"new");
    files_sync(dir.path(), &fake, "share1").run().assert_ok();
    assert_eq!(fake.file("share1", "t/readme.md").map(|f| f.data), Some(b"new".to_vec()));
    assert_eq!(fake.count("Delete File"), 0);
}

// ---------------------------------------------------------------------------------------
// Listings and deletes.

/// `<Blob>` entries for [`inject_into_listing`].
fn blob_entries(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!("<Blob><Name>{n}</Name><Properties><Content-Length>6</Content-Length><Etag>\"0x1\"</Etag></Properties></Blob>")
        })
        .collect()
}

/// A listing naming `t/../victim.txt` must not make the sync send `DELETE /<container>/victim.txt`
/// (the URL library resolves the `..`), deleting a blob outside `target`.
#[test]
fn a_listed_name_with_dot_dot_is_never_requested_and_nothing_outside_the_target_is_deleted() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncdotdot");
    plant(az, &c, &["victim.txt", "t/old.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/new.txt", b"new");
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new(
            "inject",
            op("ListBlobs"),
            Times::Every,
            inject_into_listing(blob_entries(&["t/../victim.txt"])),
        )],
    );
    let out = sync(dir.path(), az, &c, "t").set("endpoint", proxy.endpoint()).run();
    assert!(proxy.fired("inject") >= 1, "{}", proxy.log());
    out.assert_code(1)
        .assert_contains("refused: the listed name `t/../victim.txt`")
        .assert_contains("has a `..` component")
        .assert_contains("1 listed name(s) under `t/` were refused")
        .assert_lacks("deleted victim.txt");
    assert_eq!(deletes(&proxy), 0, "a delete was sent:\n{}", proxy.log());
    let touched: Vec<String> = proxy.records().iter().filter_map(|r| r.req.blob().map(str::to_string)).collect();
    assert!(!touched.iter().any(|b| b.contains("victim")), "requested: {touched:?}");
    // The upload went on; nothing was deleted, in the target or outside it.
    assert_eq!(names(az, &c), ["t/new.txt", "t/old.txt", "victim.txt"], "{}", out.all());
}

/// Runs `run` (given the fault proxy's endpoint) with its Delete Blob of `t/old.txt` held
/// while another pipeline rewrites that blob straight in Azurite, then opens the gate. The
/// run must succeed, keep and report the rewritten blob and delete `t/gone.txt`; every
/// delete must carry `If-Match`, and the held one must have got 412. Returns the output.
pub(crate) fn delete_raced_by_a_rewrite(az: &Azurite, c: &str, run: impl FnOnce(String) -> Plugin) -> Out {
    let gate = Gate::new();
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("hold", op_on("DELETE ?", "t/old.txt"), Times::Nth(1), Fault::Hold(gate.clone()))],
    );
    let child = spawn(&run(proxy.endpoint()).set("timeout", "60s"));
    let held = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hold")));
    if held {
        // Another pipeline writes the blob (straight to Azurite) while the delete waits.
        let src = tempfile::tempdir().unwrap();
        let f = write(src.path(), "v2", b"version 2");
        py(az, &["put", c, "t/old.txt", f.to_str().unwrap()]);
    }
    gate.open();
    let out = finish(child);
    assert!(held, "the delete was never held:\n{}\n{}", proxy.log(), out.all());
    out.assert_ok()
        .assert_contains("t/old.txt: not deleted: rewritten after it was listed")
        .assert_contains("deleted t/gone.txt");
    let dels: Vec<_> = proxy.records().into_iter().filter(|r| r.req.method == "DELETE").collect();
    assert!(dels.iter().all(|r| r.req.header("if-match").is_some()), "an unpinned delete:\n{}", proxy.log());
    let held_del = dels.iter().find(|r| r.req.blob() == Some("t/old.txt")).unwrap();
    assert_eq!(held_del.upstream, Some(412), "{}", proxy.log());
    out
}

/// The Delete Blob carries a condition: without it, a blob another writer replaced after
/// the listing would be deleted with its new content.
#[test]
fn a_blob_rewritten_after_the_listing_is_kept_and_reported_not_deleted() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncrace");
    plant(az, &c, &["t/old.txt", "t/gone.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/new.txt", b"new");
    let outputs = dir.path().join("drone-output");
    let out = delete_raced_by_a_rewrite(az, &c, |endpoint| {
        sync(dir.path(), az, &c, "t").set("endpoint", endpoint).env("DRONE_OUTPUT", outputs.to_str().unwrap())
    });
    out.assert_lacks("deleted t/old.txt");
    assert_eq!(names(az, &c), ["t/new.txt", "t/old.txt"]);
    assert_eq!(fetch(az, &c, "t/old.txt").0, b"version 2", "the other writer's version is kept");
    let o = std::fs::read_to_string(&outputs).unwrap();
    assert!(o.contains("deleted=1\n"), "only the one really deleted is counted: {o}");
}

/// Delete File is not sent without looking: a file rewritten after the listing would be deleted.
#[test]
fn files_sync_keeps_a_file_rewritten_after_the_listing() {
    let fake = FilesFake::start();
    fake.create_share("share1");
    fake.plant("share1", "t/old.txt", b"old", &[]);
    fake.plant("share1", "t/gone.txt", b"gone", &[]);
    // Another writer replaces `t/old.txt` between the listing and the check before its delete.
    fake.rewrite_on_properties("t/old.txt", 1, b"version 2", &[]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/new.txt", b"new");
    let out = files_sync(dir.path(), &fake, "share1").run();
    out.assert_ok()
        .assert_contains("t/old.txt: not deleted: rewritten after it was listed")
        .assert_contains("deleted t/gone.txt");
    assert_eq!(fake.files("share1"), ["t/new.txt", "t/old.txt"], "{}", out.all());
    assert_eq!(fake.file("share1", "t/old.txt").map(|f| f.data), Some(b"version 2".to_vec()));
}

/// The dry run must not say `would delete` where the real run refuses (a source that
/// matches nothing), `would upload` for an unchanged file, nor `transferred=N` in its outputs.
#[test]
fn a_dry_run_makes_the_real_runs_decisions_and_reports_would_counts() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncdry");
    plant(az, &c, &["t/keep.txt", "t/old.txt"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/keep.txt", b"t/keep.txt"); // the bytes stored: unchanged
    write(dir.path(), "site/new.txt", b"new");
    let outputs = dir.path().join("drone-output");
    let dry = |source: &str| {
        let _ = std::fs::remove_file(&outputs);
        sync(dir.path(), az, &c, "t")
            .set("source", source)
            .set("dry_run", "true")
            .env("DRONE_OUTPUT", outputs.to_str().unwrap())
            .run()
    };
    // A source that matched nothing: the real run refuses the deletes, so the dry run does.
    let out = dry("site/**,assets/**");
    out.assert_code(1)
        .assert_contains("source `assets/**` matched no file, so none of the 1 file(s)")
        .assert_contains("would upload site/new.txt → t/new.txt")
        .assert_lacks("would delete t/")
        .assert_lacks("would upload site/keep.txt");
    let o = std::fs::read_to_string(&outputs).unwrap();
    for want in ["transferred=0\n", "deleted=0\n", "would_transfer=1\n", "would_delete=0\n", "skipped=1\n"] {
        assert!(o.contains(want), "{want:?} missing: {o}");
    }
    let real = sync(dir.path(), az, &c, "t").set("source", "site/**,assets/**").run();
    real.assert_code(1).assert_contains("source `assets/**` matched no file");
    // Without it: the one changed file and the one delete, and still nothing done.
    let out = dry("site/**");
    out.assert_ok().assert_contains("would delete t/old.txt").assert_lacks("would upload site/new.txt");
    let o = std::fs::read_to_string(&outputs).unwrap();
    for want in ["transferred=0\n", "deleted=0\n", "would_transfer=0\n", "would_delete=1\n", "skipped=2\n"] {
        assert!(o.contains(want), "{want:?} missing: {o}");
    }
    assert_eq!(names(az, &c), ["t/keep.txt", "t/new.txt", "t/old.txt"]);
}

/// A dry run of a sync into a container `create_container: true` would create must not
/// stop with exit 3 (`does not exist`), where the real run creates it and uploads.
#[test]
fn a_dry_run_into_a_container_the_real_run_would_create_plans_every_upload() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncdrynew");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/a.txt", b"a");
    let outputs = dir.path().join("drone-output");
    let out = sync(dir.path(), az, &c, "t")
        .set("create_container", "true")
        .set("dry_run", "true")
        .env("DRONE_OUTPUT", outputs.to_str().unwrap())
        .run();
    out.assert_ok()
        .assert_contains("the real run would create it")
        .assert_contains("would upload site/a.txt → t/a.txt");
    let o = std::fs::read_to_string(&outputs).unwrap();
    assert!(o.contains("would_transfer=1\n") && o.contains("transferred=0\n"), "{o}");
    assert!(pyblob(az, &["list", &c]).is_err(), "the dry run created the container");
}

/// A sync re-uploads a file whose mode changed though its bytes did
/// not, and its checksums file lists the skipped (stored) files too.
#[test]
fn a_mode_change_is_a_change_and_skipped_files_stay_in_the_checksums_file() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("syncmode");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let script = write(ws, "site/run.sh", b"#!/bin/sh\necho hi\n");
    write(ws, "site/readme.txt", b"read me");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    sync(ws, az, &c, "t").run().assert_ok();
    assert_eq!(fetch(az, &c, "t/run.sh").1["metadata"]["mode"], "0644");

    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outputs = ws.join("drone-output");
    let out =
        sync(ws, az, &c, "t").set("checksums_file", "SHA256SUMS").env("DRONE_OUTPUT", outputs.to_str().unwrap()).run();
    out.assert_ok();
    let o = std::fs::read_to_string(&outputs).unwrap();
    assert!(o.contains("transferred=1\n") && o.contains("skipped=1\n"), "{o}\n{}", out.all());
    assert_eq!(fetch(az, &c, "t/run.sh").1["metadata"]["mode"], "0755", "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(ws.join("SHA256SUMS")).unwrap(),
        format!("{}  readme.txt\n{}  run.sh\n", sha256_hex(b"read me"), sha256_hex(b"#!/bin/sh\necho hi\n"))
    );
}
