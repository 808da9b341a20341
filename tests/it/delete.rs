//! `action: delete` through the real binary: against Azurite (through the fault proxy where
//! a request must be held) and the Azure Files fake. Each test checks what is stored
//! afterwards: what was asked for is gone, nothing else is.

use std::time::Duration;

use crate::files_fake::{account_key, FilesFake};
use crate::support::*;
use crate::sync::delete_raced_by_a_rewrite;

/// A delete of `source` in container `c`, its outputs written to `<ws>/out`.
fn delete(ws: &std::path::Path, az: &Azurite, c: &str, source: &str) -> Plugin {
    plugin(ws)
        .azurite(az, c)
        .set("action", "delete")
        .set("source", source)
        .set("trust", "trusted")
        .env("DRONE_OUTPUT", ws.join("out").to_str().unwrap())
}

fn outputs(ws: &std::path::Path) -> String {
    std::fs::read_to_string(ws.join("out")).unwrap_or_default()
}

fn ready() -> bool {
    crate::support::azurite_present() && crate::support::python_present()
}

#[test]
fn a_prefix_deletes_whole_path_components_and_nothing_else() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("delprefix");
    plant(az, &c, &["previews/pr-42/index.html", "previews/pr-42/a/b.css", "previews/pr-420/index.html", "keep.txt"]);
    let ws = tempfile::tempdir().unwrap();
    let out = delete(ws.path(), az, &c, "previews/pr-42/").set("manifest", "m.json").run();
    out.assert_ok()
        .assert_contains("deleted previews/pr-42/a/b.css")
        .assert_contains("deleted previews/pr-42/index.html");
    assert_eq!(names(az, &c), ["keep.txt", "previews/pr-420/index.html"], "{}", out.all());
    let o = outputs(ws.path());
    assert!(o.contains("deleted=2\n"), "{o}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["action"], "delete");
    assert_eq!(m["summary"]["files_deleted"], 2);
    // The same name without the slash: whole components too (`pr-420` is not `pr-42`).
    plant(az, &c, &["previews/pr-42/x.txt"]);
    delete(ws.path(), az, &c, "previews/pr-42").run().assert_ok();
    assert_eq!(names(az, &c), ["keep.txt", "previews/pr-420/index.html"]);
    // Run again (a teardown that already ran): nothing selected is not a failure.
    delete(ws.path(), az, &c, "previews/pr-42/").run().assert_ok().assert_contains("selected nothing");
}

#[test]
fn a_glob_deletes_only_what_it_matches() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("delglob");
    plant(az, &c, &["logs/a.log", "logs/b.log", "logs/a.txt", "logs/sub/c.log"]);
    let ws = tempfile::tempdir().unwrap();
    delete(ws.path(), az, &c, "logs/*.log").run().assert_ok();
    assert_eq!(names(az, &c), ["logs/a.txt", "logs/sub/c.log"], "`*` stays within one path component");
    // `exclude` keeps what it matches; a `target` the delete would ignore is refused.
    plant(az, &c, &["logs/x.log", "logs/keep/y.log"]);
    delete(ws.path(), az, &c, "logs/").set("exclude", "logs/keep,**/*.txt").run().assert_ok();
    assert_eq!(names(az, &c), ["logs/a.txt", "logs/keep/y.log"]);
    let out = delete(ws.path(), az, &c, "y.log").set("target", "logs/keep").run();
    out.assert_code(2).assert_contains("`target` (PLUGIN_TARGET): does not apply to `action: delete`");
    assert_eq!(names(az, &c), ["logs/a.txt", "logs/keep/y.log"]);
}

#[test]
fn older_than_keeps_what_is_newer() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("delolder");
    plant(az, &c, &["nightly/1.tar", "nightly/2.tar"]);
    let ws = tempfile::tempdir().unwrap();
    // Written seconds ago: not older than a day, kept.
    let out = delete(ws.path(), az, &c, "nightly/").set("older_than", "1d").run();
    out.assert_ok().assert_contains("kept 2 item(s) modified within `older_than` (1d)");
    assert_eq!(names(az, &c), ["nightly/1.tar", "nightly/2.tar"], "{}", out.all());
    assert!(outputs(ws.path()).contains("deleted=0\n"));
    // Older than nothing: every item with a time before now.
    std::thread::sleep(Duration::from_millis(1100)); // Last-Modified has whole seconds
    delete(ws.path(), az, &c, "nightly/").set("older_than", "0s").run().assert_ok();
    assert!(names(az, &c).is_empty());
    // A bad duration is a settings error naming the setting.
    delete(ws.path(), az, &c, "nightly/")
        .set("older_than", "two weeks")
        .run()
        .assert_code(2)
        .assert_contains("older_than");
}

#[test]
fn max_delete_refuses_more_and_a_whole_container_needs_it() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("delguard");
    plant(az, &c, &["t/1.txt", "t/2.txt", "t/3.txt", "top.txt"]);
    let ws = tempfile::tempdir().unwrap();
    let out = delete(ws.path(), az, &c, "t/").set("max_delete", "2").run();
    out.assert_code(1).assert_contains(
        "would remove 3 item(s) selected by `t/`, more than `max_delete` (PLUGIN_MAX_DELETE) allows (2): nothing was deleted",
    );
    assert_eq!(names(az, &c), ["t/1.txt", "t/2.txt", "t/3.txt", "top.txt"]);
    // The whole container: refused at validation, before any request.
    let out = delete(ws.path(), az, &c, "**").run();
    out.assert_code(2)
        .assert_contains("invalid setting `max_delete` (PLUGIN_MAX_DELETE): is required")
        .assert_contains("PLUGIN_MAX_DELETE");
    let out = delete(ws.path(), az, &c, "*.txt").run();
    out.assert_code(2).assert_contains("invalid setting `max_delete` (PLUGIN_MAX_DELETE): is required");
    assert_eq!(names(az, &c).len(), 4);
    delete(ws.path(), az, &c, "**").set("max_delete", "4").run().assert_ok();
    assert!(names(az, &c).is_empty());
}

#[test]
fn a_dry_run_lists_would_delete_and_deletes_nothing() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("deldry");
    plant(az, &c, &["t/1.txt", "t/2.txt"]);
    let ws = tempfile::tempdir().unwrap();
    let out = delete(ws.path(), az, &c, "t/").set("dry_run", "true").run();
    out.assert_ok().assert_contains("would delete t/1.txt").assert_contains("would delete t/2.txt");
    assert_eq!(names(az, &c), ["t/1.txt", "t/2.txt"]);
    let o = outputs(ws.path());
    assert!(o.contains("deleted=0\n") && o.contains("would_delete=2\n"), "{o}");
    // The guard decides in a dry run as in the real run.
    delete(ws.path(), az, &c, "t/").set("dry_run", "true").set("max_delete", "1").run().assert_code(1);
}

#[test]
fn a_blob_rewritten_after_the_listing_is_kept() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("delrace");
    plant(az, &c, &["t/old.txt", "t/gone.txt"]);
    let ws = tempfile::tempdir().unwrap();
    delete_raced_by_a_rewrite(az, &c, |endpoint| delete(ws.path(), az, &c, "t/").set("endpoint", endpoint));
    assert_eq!(names(az, &c), ["t/old.txt"]);
    assert_eq!(fetch(az, &c, "t/old.txt").0, b"version 2", "the other writer's version is kept");
    assert!(outputs(ws.path()).contains("deleted=1\n"));
}

#[test]
fn an_untrusted_run_deletes_only_the_untrusted_tier() {
    if !ready() {
        return;
    }
    let az = Azurite::shared();
    let c = container("deluntrusted");
    plant(az, &c, &["cache/trusted/cargo.tar.zst", "cache/untrusted/cargo.tar.zst", "cache/untrusted/npm.tar.zst"]);
    let ws = tempfile::tempdir().unwrap();
    let out = delete(ws.path(), az, &c, "cache/").set("trust", "untrusted").run();
    out.assert_code(2)
        .assert_contains("this run is untrusted (")
        .assert_contains("may delete only names under an `untrusted/` directory")
        .assert_contains("`cache/trusted/cargo.tar.zst` is not, so nothing was deleted");
    assert_eq!(names(az, &c).len(), 3, "{}", out.all());
    delete(ws.path(), az, &c, "cache/untrusted/").set("trust", "untrusted").run().assert_ok();
    assert_eq!(names(az, &c), ["cache/trusted/cargo.tar.zst"]);
}

#[test]
fn files_delete_removes_the_emptied_directories_deepest_first() {
    let fake = FilesFake::start();
    fake.create_share("share1");
    fake.plant("share1", "previews/pr-42/index.html", b"x", &[]);
    fake.plant("share1", "previews/pr-42/a/b/c.css", b"x", &[]);
    fake.plant("share1", "previews/pr-7/index.html", b"x", &[]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path())
        .set("service", "file")
        .set("share", "share1")
        .set("endpoint", fake.endpoint())
        .set("account_key", account_key())
        .set("action", "delete")
        .set("source", "previews/pr-42/")
        .set("trust", "trusted")
        .run();
    out.assert_ok().assert_contains("removed the emptied directory previews/pr-42");
    assert_eq!(fake.files("share1"), ["previews/pr-7/index.html"], "{}", out.all());
    assert_eq!(fake.dirs("share1"), ["previews", "previews/pr-7"], "`previews` is above what `source` named");
    let removed: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|l| l.op == "Delete Directory")
        .map(|l| l.path.replace("/fakefiles/share1/", ""))
        .collect();
    assert_eq!(removed, ["previews/pr-42/a/b", "previews/pr-42/a", "previews/pr-42"], "deepest first");
}
