//! Upload from a hostile workspace: the workspace is written by
//! whoever opened the pull request. Links planted in source paths, files swapped or
//! rewritten while the plugin works, names that are not UTF-8, unreadable excluded
//! directories. Each case runs the real binary against Azurite and checks the exit code,
//! the message naming the file, and what is stored (read back by the independent client).
//! Time-of-check/time-of-use cases hold a request at the fault proxy until the test has
//! made its change: no sleeps.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::Duration;

use crate::fault_proxy::*;
use crate::faults::{finish, spawn, via};
use crate::support::*;

const BLOCK: usize = 64 * 1024;

/// A workspace `ws` and, beside it, an `outside` directory that must never be read
/// (its files stand for `/etc`): `passwd` and `outside-only.txt`.
fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().canonicalize().unwrap();
    let ws = base.join("ws");
    let outside = base.join("outside");
    std::fs::create_dir_all(&ws).unwrap();
    write(&outside, "passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    write(&outside, "outside-only.txt", b"never uploaded");
    (t, ws, outside)
}

#[test]
fn a_link_inside_a_source_path_is_never_read_through() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("linkinsource");
    let (_t, ws, outside) = workspace();
    write(&ws, "ok.txt", b"ok");
    symlink(&outside, ws.join("dist")).unwrap(); // dist -> /etc
    std::fs::create_dir(ws.join("sub")).unwrap();
    symlink("../../outside", ws.join("sub/inner")).unwrap();
    let out = plugin(&ws).azurite(az, &c).set("source", "dist/passwd,dist/.,dist/**,sub/inner/passwd,ok.txt").run();
    out.assert_ok()
        .assert_contains("skipped dist: symbolic link (set `follow_symlinks: true` to follow links)")
        .assert_contains("skipped sub/inner: symbolic link")
        .assert_contains("planned 1 file(s)")
        .assert_lacks("outside-only");
    assert_eq!(names(az, &c), vec!["ok.txt"]);

    // Alone, the link selects nothing: a planning error, nothing sent.
    let c = container("linkinsourcealone");
    let out = plugin(&ws).azurite(az, &c).set("source", "dist/passwd").set("create_container", "false").run();
    out.assert_code(3).assert_contains(
        "selects no file (1 matched but were skipped: dist (symbolic link (set `follow_symlinks: true` to follow links)))",
    );
}

#[test]
fn followed_links_stay_inside_the_workspace() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("followinside");
    let (_t, ws, outside) = workspace();
    write(&ws, "real/x.txt", b"x-bytes");
    symlink("real", ws.join("inside")).unwrap(); // relative, inside: followed
    symlink(ws.join("real/x.txt"), ws.join("abs-in")).unwrap(); // absolute, inside: followed
    symlink(&outside, ws.join("dist")).unwrap(); // absolute, out
    symlink("../outside/passwd", ws.join("rel-out")).unwrap(); // relative, out
    std::fs::create_dir(ws.join("deep")).unwrap();
    symlink("../../outside", ws.join("deep/up")).unwrap(); // relative, out, one level down
    let out = plugin(&ws).azurite(az, &c).set("source", "**,dist/passwd").set("follow_symlinks", "true").run();
    out.assert_ok()
        .assert_contains(&format!(
            "skipped dist: symbolic link to `{}`, outside the workspace; not followed",
            outside.display()
        ))
        .assert_contains("skipped rel-out: symbolic link to `../outside/passwd`, outside the workspace")
        .assert_contains("skipped deep/up: symbolic link to `../../outside`, outside the workspace")
        .assert_lacks("outside-only");
    assert_eq!(names(az, &c), vec!["abs-in", "inside/x.txt", "real/x.txt"]);
    let (got, _) = fetch(az, &c, "abs-in");
    assert_eq!(got, b"x-bytes");
}

#[test]
fn a_file_swapped_after_planning_is_not_read() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("swapped");
    let (_t, ws, outside) = workspace();
    let secret = bytes(1000, 81);
    write(&outside, "secret", &secret);
    write(&outside, "c.txt", &secret);
    for name in ["a.txt", "b.txt", "d/c.txt", "ok.txt"] {
        write(&ws, name, &bytes(1000, 82));
    }
    write(&ws, "big.bin", &bytes(3 * BLOCK, 83));
    // Every lookup (`overwrite: skip` asks whether the blob exists) waits until the
    // workspace has been changed under the plan.
    let gate = Gate::new();
    let proxy = FaultProxy::start(az, vec![Rule::new("hold", op("HeadBlob"), Times::Every, Fault::Hold(gate.clone()))]);
    let child = spawn(
        &via(&proxy, &ws, &c)
            .set("source", "*.txt,d,big.bin")
            .set("overwrite", "skip")
            .set("concurrency", "8")
            .set("timeout", "30s"),
    );
    let held =
        proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().filter(|r| r.fault == Some("hold")).count() == 5);
    // a.txt: a same-size link to a file outside. b.txt, big.bin: another file renamed over
    // them. d: the directory replaced by a link to a directory outside holding c.txt.
    std::fs::remove_file(ws.join("a.txt")).unwrap();
    symlink(outside.join("secret"), ws.join("a.txt")).unwrap();
    for name in ["b.txt", "big.bin"] {
        let len = std::fs::metadata(ws.join(name)).unwrap().len() as usize;
        write(&ws, "new", &bytes(len, 84));
        std::fs::rename(ws.join("new"), ws.join(name)).unwrap();
    }
    std::fs::rename(ws.join("d"), ws.join("d-old")).unwrap();
    symlink(&outside, ws.join("d")).unwrap();
    gate.open();
    let out = finish(child);
    assert!(held, "the lookups were not held:\n{}\n{}", proxy.log(), out.all());
    out.assert_code(1)
        .assert_contains("4 failed")
        .assert_contains("✗ a.txt → a.txt: cannot read: `a.txt` is now a symbolic link (it was not when planned)")
        .assert_contains("✗ b.txt → b.txt: was replaced by another file since it was planned")
        .assert_contains("✗ big.bin → big.bin: was replaced by another file since it was planned")
        .assert_contains("✗ d/c.txt → d/c.txt: cannot read: `d` is now a symbolic link");
    assert_eq!(names(az, &c), vec!["ok.txt"]);
    let sent: Vec<String> = proxy
        .records()
        .iter()
        .filter(|r| r.req.method == "PUT" && r.req.q("restype").is_none())
        .filter_map(|r| r.req.blob().map(str::to_string))
        .collect();
    assert_eq!(sent, vec!["ok.txt"], "a swapped file was sent:\n{}", proxy.log());
}

#[test]
fn a_file_rewritten_in_place_while_read_is_not_committed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("rewritten");
    let dir = tempfile::tempdir().unwrap();
    let len = 48 * BLOCK;
    let path = write(dir.path(), "torn.bin", &bytes(len, 85));
    // An old mtime, so the rewrite changes it whatever the clock's granularity.
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    // Every Put Block waits: with `max_memory: 1MiB` the reader cannot be past 1 MiB of
    // the 3 MiB file when the rewrite happens, so it reads old bytes and then new ones.
    let gate = Gate::new();
    let proxy = FaultProxy::start(az, vec![Rule::new("hold", op("PutBlock"), Times::Every, Fault::Hold(gate.clone()))]);
    let child = spawn(
        &via(&proxy, dir.path(), &c)
            .set("source", "torn.bin")
            .set("max_memory", "1MiB")
            .set("concurrency", "2")
            .set("timeout", "30s"),
    );
    let held = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hold")));
    {
        use std::io::Write;
        let mut f = std::fs::File::options().write(true).open(&path).unwrap();
        f.write_all(&bytes(len, 86)).unwrap(); // same size, in place
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64);
    gate.open();
    let out = finish(child);
    assert!(held, "no block was held:\n{}", out.all());
    out.assert_code(1)
        .assert_contains("✗ torn.bin → torn.bin: file changed as we read it (it was modified); not committed");
    assert!(proxy.ops("PutBlockList").is_empty(), "committed: {}", proxy.log());
    assert!(list(az, &c).is_empty());
}

#[test]
fn names_that_are_not_utf8_are_refused_one_by_one() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("nonutf8");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    write(ws, "ok.txt", b"ok");
    // Both decode lossily to `x\u{fffd}.txt`: one must not overwrite the other, exit 0.
    for name in [&b"x\xff.txt"[..], b"x\xfe.txt", b"d\xff/in.txt"] {
        let p = ws.join(OsStr::from_bytes(name));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, name).unwrap();
    }
    let out = plugin(ws).azurite(az, &c).set("source", "**").run();
    let why = "refused: the name is not valid UTF-8 (blob names are Unicode); rename the file";
    out.assert_code(1)
        .assert_contains("3 failed")
        .assert_contains(&format!("✗ x\\xff.txt: {why}"))
        .assert_contains(&format!("✗ x\\xfe.txt: {why}"))
        .assert_contains(&format!("✗ d\\xff/in.txt: {why}"));
    assert_eq!(names(az, &c), vec!["ok.txt"]);
}

#[test]
fn an_excluded_directory_is_never_read() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let az = Azurite::shared();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    std::fs::set_permissions(ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(ws, "src/app.txt", b"app");
    write(ws, "src/locked/secret.txt", b"secret");
    for d in ["src", "src/locked"] {
        std::fs::set_permissions(ws.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(ws.join("src/app.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let locked = |mode| std::fs::set_permissions(ws.join("src/locked"), std::fs::Permissions::from_mode(mode)).unwrap();
    locked(0o000);
    let run = |c: &str, p: Plugin| p.azurite(az, c).set("source", "src").run_unprivileged();

    // The control: without the exclusion the directory is read, and cannot be.
    let c = container("exclcontrol");
    run(&c, plugin(ws)).assert_code(3).assert_contains("src/locked").assert_contains("Permission denied");

    let c = container("excluded");
    let out = run(&c, plugin(ws).set("exclude", "src/locked"));
    locked(0o755);
    out.assert_ok().assert_lacks("Permission denied");
    assert_eq!(names(az, &c), vec!["src/app.txt"]);
}

/// A checkout as CI leaves it: the job token in `.git/config`, dot-files, and files.
fn checkout(ws: &std::path::Path) {
    write(ws, ".git/config", b"[http]\n\textraheader = AUTHORIZATION: basic c2VjcmV0\n");
    write(ws, ".env", b"TOKEN=secret");
    write(ws, ".github/x", b"workflow");
    write(ws, "a/.npmrc", b"//registry.npmjs.org/:_authToken=secret");
    write(ws, "a/b.txt", b"b");
    write(ws, "c.txt", b"c");
}

fn sorted_names(az: &Azurite, c: &str) -> Vec<String> {
    let mut n = list(az, c);
    n.sort();
    n
}

#[test]
fn hidden_files_and_git_stay_out_of_a_wildcard_or_directory_source() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    for (i, source) in [".", "**", "./"].into_iter().enumerate() {
        let c = container(&format!("hidden{i}"));
        let dir = tempfile::tempdir().unwrap();
        checkout(dir.path());
        let out = plugin(dir.path()).azurite(az, &c).set("source", source).run();
        out.assert_ok().assert_contains(
            "left out 4 hidden entries (names beginning with `.`: `.env`, `.git`, `.github`, ...); name them in `source` or set `include_hidden: true`",
        );
        assert_eq!(sorted_names(az, &c), ["a/b.txt", "c.txt"], "source `{source}`");
    }
}

#[test]
fn include_hidden_brings_hidden_files_back() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("hiddenin");
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path());
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "**")
        .set("include_hidden", "true")
        .run()
        .assert_ok()
        .assert_lacks("hidden entr");
    assert_eq!(sorted_names(az, &c), [".env", ".git/config", ".github/x", "a/.npmrc", "a/b.txt", "c.txt"]);
}

#[test]
fn a_hidden_path_named_in_source_is_uploaded() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("hiddennamed");
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path());
    // Named literally, or by a pattern segment beginning with `.`; `.git` only literally.
    plugin(dir.path()).azurite(az, &c).set("source", ".github/x,**/.npmrc,.*").run().assert_ok();
    assert_eq!(sorted_names(az, &c), [".env", ".github/x", "a/.npmrc"]);
    let c = container("hiddengit");
    plugin(dir.path()).azurite(az, &c).set("source", ".git").run().assert_ok();
    assert_eq!(sorted_names(az, &c), [".git/config"]);
}

#[test]
fn a_source_of_only_hidden_files_says_they_were_left_out() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out/.hidden", b"h");
    plugin(dir.path())
        .azurite(az, &container("hiddenempty"))
        .set("source", "out")
        .run()
        .assert_code(3)
        .assert_contains(
        "`source` selects no file (looked for `out`; 1 hidden entry left out: name them or set `include_hidden: true`)",
    );
}

#[test]
fn a_sync_never_deletes_a_hidden_remote_name() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("hiddensync");
    let remote = tempfile::tempdir().unwrap();
    for n in ["t/.well-known/assetlinks.json", "t/.htaccess", "t/old.txt", "t/keep.txt"] {
        write(remote.path(), n, n.as_bytes());
    }
    plugin(remote.path()).azurite(az, &c).set("source", "t").set("include_hidden", "true").run().assert_ok();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/keep.txt", b"new");
    let sync = || {
        plugin(dir.path())
            .azurite(az, &c)
            .set("action", "sync")
            .set("source", "site/**")
            .set("strip_prefix", "site")
            .set("target", "t")
    };
    sync().run().assert_ok();
    assert_eq!(sorted_names(az, &c), ["t/.htaccess", "t/.well-known/assetlinks.json", "t/keep.txt"]);
    // With `include_hidden`, hidden names are in the selection's domain: the sync owns them.
    sync().set("include_hidden", "true").run().assert_ok();
    assert_eq!(sorted_names(az, &c), ["t/keep.txt"]);
}

#[test]
fn cache_save_leaves_git_home_but_keeps_a_cached_trees_hidden_state() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    checkout(ws);
    write(ws, "node_modules/.bin/tool", b"#!/bin/sh");
    write(ws, "node_modules/x/.git/config", b"token");
    write(ws, "node_modules/x/index.js", b"js");
    write(ws, ".cargo/.crates.toml", b"crates");
    let archived = |c: &str, source: &str, include_hidden: &str| -> Vec<String> {
        plugin(ws)
            .azurite(az, c)
            .set("action", "cache_save")
            .set("source", source)
            .set("cache_key", "k")
            .set("include_hidden", include_hidden)
            .run()
            .assert_ok();
        let (data, _) = fetch(az, c, "trusted/k.tar.zst");
        let tar = zstd::decode_all(&data[..]).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
            .filter(|n| n.contains('.') || n.ends_with("tool"))
            .collect();
        names.sort();
        names
    };
    // Named directories keep their hidden state (`.bin`, a literal `.cargo`), not `.git`.
    assert_eq!(
        archived(&container("hiddencache1"), "node_modules,.cargo", "false"),
        [".cargo", ".cargo/.crates.toml", "node_modules/.bin", "node_modules/.bin/tool", "node_modules/x/index.js"]
    );
    // `include_hidden: true` keeps a cached tree's `.git` too (`source: .` is refused for caches:
    // a cache names the directories a build fills).
    let all = archived(&container("hiddencache2"), "node_modules", "true");
    assert!(all.contains(&"node_modules/x/.git/config".to_string()), "{all:?}");
}
