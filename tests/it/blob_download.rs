//! Download from Blob through the real binary: selection, verification, path safety.

use crate::support::*;

fn upload_tree(az: &Azurite, c: &str, files: &[(&str, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in files {
        write(dir.path(), name, data);
    }
    plugin(dir.path()).azurite(az, c).set("source", "**").set("block_size", "64KiB").run().assert_ok();
}

#[test]
fn prefix_glob_and_exact_name_selection_with_strip_prefix() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlselect");
    upload_tree(
        az,
        &c,
        &[
            ("builds/1/app.tar", bytes(100, 1)),
            ("builds/1/app.tar.bak", bytes(10, 2)),
            ("builds/1/lib/x.so", bytes(200, 3)),
            ("builds/2/app.tar", bytes(50, 4)),
            ("other.txt", bytes(5, 5)),
        ],
    );
    let ws = tempfile::tempdir().unwrap();
    // A directory prefix, stripped.
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "builds/1/")
        .set("strip_prefix", "builds/1")
        .set("target", "a")
        .run()
        .assert_ok();
    assert_eq!(tree(&ws.path().join("a")), vec!["app.tar", "app.tar.bak", "lib/x.so"]);
    // A glob.
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "builds/*/app.tar")
        .set("target", "b")
        .run()
        .assert_ok();
    assert_eq!(tree(&ws.path().join("b")), vec!["builds/1/app.tar", "builds/2/app.tar"]);
    // An exact name does not pull in `app.tar.bak`.
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "builds/1/app.tar")
        .set("target", "c")
        .run()
        .assert_ok();
    assert_eq!(tree(&ws.path().join("c")), vec!["builds/1/app.tar"]);
    assert_eq!(std::fs::read(ws.path().join("c/builds/1/app.tar")).unwrap(), bytes(100, 1));
}

#[test]
fn large_files_come_back_in_parallel_ranges_and_verified() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlranges");
    let big = bytes(2 * 1024 * 1024 + 777, 9);
    upload_tree(az, &c, &[("big.bin", big.clone()), ("empty", vec![])]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "big.bin,empty")
        .set("block_size", "64KiB")
        .set("concurrency", "8")
        .set("log_level", "debug")
        .run();
    out.assert_ok();
    assert!(out.stderr.matches("status=206").count() >= 30, "expected ranged GETs:\n{}", out.stderr);
    assert!(std::fs::read(ws.path().join("big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(ws.path().join("empty")).unwrap().len(), 0);
}

#[test]
fn download_ranges_stream_to_disk_so_max_memory_does_not_bound_them() {
    if !crate::support::azurite_present() {
        return;
    }
    // An upload must hold a block in memory; a download range goes to disk as it arrives,
    // so a range far above `max_memory` is accepted and the file comes back whole.
    let az = Azurite::shared();
    let c = container("dlstream");
    let big = bytes(20 * 1024 * 1024 + 5, 10);
    upload_tree(az, &c, &[("big.bin", big.clone())]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "big.bin")
        .set("block_size", "16MiB")
        .set("max_memory", "1MiB")
        .set("log_level", "debug")
        .run();
    out.assert_ok();
    assert_eq!(out.stderr.matches("status=206").count(), 2, "expected two 16 MiB ranges:\n{}", out.stderr);
    assert!(std::fs::read(ws.path().join("big.bin")).unwrap() == big);
    // The same settings are refused for an upload, which holds its blocks in memory.
    plugin(ws.path())
        .azurite(az, &c)
        .set("source", "big.bin")
        .set("block_size", "16MiB")
        .set("max_memory", "1MiB")
        .run()
        .assert_code(2)
        .assert_contains("`max_memory` (PLUGIN_MAX_MEMORY): must hold at least one block");
}

#[test]
fn listing_is_paginated() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlpages");
    let files: Vec<(String, Vec<u8>)> =
        (0..23).map(|i| (format!("p/f{i:02}.txt"), format!("file {i}").into_bytes())).collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    upload_tree(az, &c, &refs);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path())
        .azurite(az, &c)
        .env("AZURE_STORAGE_LIST_PAGE_SIZE", "5")
        .set("action", "download")
        .set("source", "p/")
        .set("log_level", "debug")
        .run();
    out.assert_ok();
    assert_eq!(tree(&ws.path().join("p")).len(), 23);
    assert!(out.stderr.matches("comp=list").count() == 0, "queries must not be logged");
    assert!(out.stderr.matches("list page").count() >= 5, "expected 5 pages:\n{}", out.stderr);
}

#[test]
fn blobs_written_by_another_client_download_and_verify() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlforeign");
    py(az, &["create-container", &c]);
    let src = tempfile::tempdir().unwrap();
    let data = bytes(150_000, 11);
    let f = write(src.path(), "f", &data);
    // Put Blob: the service stores a Content-MD5, and we verify against it.
    py(az, &["put", &c, "single.bin", f.to_str().unwrap()]);
    // Staged upload: no checksum stored at all.
    py(az, &["put", &c, "staged.bin", f.to_str().unwrap(), "--chunk-size", "65536"]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path()).azurite(az, &c).set("action", "download").set("source", "single.bin,staged.bin").run();
    out.assert_code(1)
        .assert_contains("staged.bin")
        .assert_contains("no `sha256` metadata and no Content-MD5")
        .assert_contains("verify: size");
    assert_eq!(std::fs::read(ws.path().join("single.bin")).unwrap(), data);
    assert!(!ws.path().join("staged.bin").exists());
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "staged.bin")
        .set("verify", "size")
        .run()
        .assert_ok()
        .assert_contains("only its length is checked");
    assert_eq!(std::fs::read(ws.path().join("staged.bin")).unwrap(), data);
}

#[test]
fn a_corrupt_blob_fails_and_leaves_nothing_under_its_final_name() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlcorrupt");
    py(az, &["create-container", &c]);
    let src = tempfile::tempdir().unwrap();
    let f = write(src.path(), "f", &bytes(300_000, 12));
    // Stored hash says one thing, the body another: what a corrupted transfer looks like.
    let wrong = "sha256=".to_string() + &sha256_hex(b"something else");
    py(az, &["put", &c, "bad.bin", f.to_str().unwrap(), "--metadata", &wrong]);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "out/keep.txt", b"keep");
    let out = plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "bad.bin")
        .set("target", "out")
        .set("block_size", "64KiB")
        .run();
    out.assert_code(1).assert_contains("SHA-256 mismatch");
    assert_eq!(tree(&ws.path().join("out")), vec!["keep.txt"], "no partial or temporary file may remain");
}

#[test]
fn hostile_names_are_refused_and_nothing_escapes_the_target() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlhostile");
    py(az, &["create-container", &c]);
    let src = tempfile::tempdir().unwrap();
    let f = write(src.path(), "f", b"evil");
    for name in ["safe/ok.txt", "dir\\evil.txt", "safe/..\\..\\evil2.txt", "safe/a\tb.txt"] {
        py(az, &["put", &c, name, f.to_str().unwrap()]);
    }
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let out = plugin(&ws).azurite(az, &c).set("action", "download").set("source", "").set("target", "out").run();
    // Empty source is a required-setting error; select everything with a glob instead.
    out.assert_code(2);
    let out = plugin(&ws).azurite(az, &c).set("action", "download").set("source", "**").set("target", "out").run();
    // Azurite turns `\` into `/` on the way in, so `safe/..\..\evil2.txt` is listed as
    // `safe/../../evil2.txt`: exactly the name a hostile writer would want us to follow.
    out.assert_code(1)
        .assert_contains("`..` component")
        .assert_contains("control character")
        .assert_contains("2 failed");
    assert_eq!(tree(root.path()), vec!["ws/out/dir/evil.txt", "ws/out/safe/ok.txt"]);
}

#[test]
fn a_symlinked_directory_in_the_target_is_not_written_through() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlsymlinkdir");
    upload_tree(az, &c, &[("sub/file.txt", b"data".to_vec())]);
    let outside = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir(ws.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("out/sub")).unwrap();
    let out =
        plugin(ws.path()).azurite(az, &c).set("action", "download").set("source", "sub/").set("target", "out").run();
    out.assert_code(1).assert_contains("is a symbolic link: refusing to write through it");
    assert!(tree(outside.path()).is_empty());
}

#[test]
fn overwrite_modes_on_download() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dloverwrite");
    upload_tree(az, &c, &[("a.txt", b"remote a".to_vec()), ("b.txt", b"remote b".to_vec())]);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "a.txt", b"local a");
    write(ws.path(), "b.txt", b"remote b");
    let dl = |mode: &str| {
        plugin(ws.path())
            .azurite(az, &c)
            .set("action", "download")
            .set("source", "a.txt,b.txt")
            .set("overwrite", mode)
            .run()
    };
    dl("false").assert_code(1).assert_contains("already exists locally (overwrite: false)");
    dl("skip").assert_ok();
    assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"local a");
    dl("changed").assert_ok().assert_contains("b.txt (unchanged (overwrite: changed))");
    assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"remote a");
    write(ws.path(), "a.txt", b"local again");
    dl("true").assert_ok();
    assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"remote a");
}

#[test]
fn nothing_to_download_is_an_error_unless_allowed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlempty");
    py(az, &["create-container", &c]);
    let ws = tempfile::tempdir().unwrap();
    let out = plugin(ws.path()).azurite(az, &c).set("action", "download").set("source", "nope/").run();
    out.assert_code(3).assert_contains("selects no file");
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "nope/")
        .set("allow_empty", "true")
        .run()
        .assert_ok();
    let out = plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "x")
        .set("container", "no-such-container")
        .run();
    out.assert_code(3).assert_contains("the container `no-such-container` does not exist");
}

#[test]
fn a_target_that_is_a_file_is_refused() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dltargetfile");
    upload_tree(az, &c, &[("a.txt", b"a".to_vec())]);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "out", b"i am a file");
    let out =
        plugin(ws.path()).azurite(az, &c).set("action", "download").set("source", "a.txt").set("target", "out").run();
    out.assert_code(3).assert_contains("`target` `out` exists and is not a directory");
    assert_eq!(std::fs::read(ws.path().join("out")).unwrap(), b"i am a file");
}

#[test]
fn names_that_begin_or_end_with_spaces_are_not_confused_with_others() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlspaces");
    upload_tree(
        az,
        &c,
        &[("a.txt", b"plain".to_vec()), (" a.txt", b"leading".to_vec()), ("d/b.txt ", b"trailing".to_vec())],
    );
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, vec![" a.txt", "a.txt", "d/b.txt "], "Azurite kept the spaces");
    let ws = tempfile::tempdir().unwrap();
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "**")
        .set("target", "o")
        .run()
        .assert_ok();
    assert_eq!(tree(&ws.path().join("o")), vec![" a.txt", "a.txt", "d/b.txt "]);
    assert_eq!(std::fs::read(ws.path().join("o/ a.txt")).unwrap(), b"leading");
    assert_eq!(std::fs::read(ws.path().join("o/a.txt")).unwrap(), b"plain");
    assert_eq!(std::fs::read(ws.path().join("o/d/b.txt ")).unwrap(), b"trailing");
}

/// The umask the plugin runs under (inherited from the tests).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("Umask in /proc/self/status");
    u32::from_str_radix(v.trim(), 8).unwrap()
}

fn mode_of(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Modes survive upload → download (small and chunked files), less the
/// umask; setuid/setgid/sticky are never taken from stored metadata; a malformed `mode` is
/// ignored with a warning; `preserve_mode: false` turns both sides off.
#[test]
fn file_modes_survive_a_round_trip_but_never_setuid() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlmodes");
    let up = tempfile::tempdir().unwrap();
    let files =
        [("bin/tool", 0o755, 10), ("secret.key", 0o600, 10), ("big.bin", 0o750, 300_000), ("doc.txt", 0o644, 5)];
    for (rel, mode, len) in files {
        let p = write(up.path(), rel, &bytes(len, mode as u64));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    plugin(up.path()).azurite(az, &c).set("source", "**").set("block_size", "64KiB").run().assert_ok();
    assert_eq!(fetch(az, &c, "bin/tool").1["metadata"]["mode"], "0755");
    assert_eq!(fetch(az, &c, "big.bin").1["metadata"]["mode"], "0750", "the chunked path stores it too");

    // Stored by another client: setuid asked for, and a `mode` that is no mode.
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "x", b"#!/bin/sh\n");
    let sha = format!("sha256={}", sha256_hex(b"#!/bin/sh\n"));
    let data = data.to_str().unwrap();
    py(az, &["put", &c, "suid", data, "--metadata", &sha, "--metadata", "mode=4755"]);
    py(az, &["put", &c, "junk", data, "--metadata", &sha, "--metadata", "mode=rwxrwxrwx"]);

    let ws = tempfile::tempdir().unwrap();
    let out =
        plugin(ws.path()).azurite(az, &c).set("action", "download").set("source", "**").set("target", "out").run();
    out.assert_ok().assert_contains("`junk`: its metadata `mode` `rwxrwxrwx` is not 3-4 octal digits; ignored");
    let mask = umask();
    let dir = ws.path().join("out");
    for (rel, mode, _) in files {
        assert_eq!(mode_of(&dir.join(rel)), mode & !mask, "{rel}");
    }
    assert_eq!(mode_of(&dir.join("suid")), 0o755 & !mask, "setuid must never be restored");
    assert_eq!(mode_of(&dir.join("junk")), 0o666 & !mask, "a malformed mode downloads as before");

    // `preserve_mode: false`: nothing stored, nothing applied.
    let c2 = container("dlmodesoff");
    plugin(up.path()).azurite(az, &c2).set("source", "bin/**").set("preserve_mode", "false").run().assert_ok();
    assert!(fetch(az, &c2, "bin/tool").1["metadata"].get("mode").is_none());
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "bin/tool")
        .set("target", "off")
        .set("preserve_mode", "false")
        .run()
        .assert_ok();
    assert_eq!(mode_of(&ws.path().join("off/bin/tool")), 0o666 & !mask);
}

/// The coreutils tool, when installed (it is on every Linux runner).
fn sha256sum_present() -> bool {
    let present = std::process::Command::new("sha256sum").arg("--version").output().is_ok_and(|o| o.status.success());
    crate::support::prerequisite(present, "sha256sum (coreutils) is not installed")
}

/// The checksums file of an upload lists the stored bytes (gzip where
/// `compress` applied) by name under `target`, and `sha256sum -c` passes on a download of
/// the same tree.
#[test]
fn checksums_file_passes_sha256sum_check_on_the_downloaded_tree() {
    if !crate::support::azurite_present() || !crate::support::python_present() || !sha256sum_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlsums");
    let up = tempfile::tempdir().unwrap();
    let html = b"<p>hello hello hello hello</p>\n".repeat(50);
    write(up.path(), "dist/index.html", &html);
    write(up.path(), "dist/app/main.js", &bytes(200_000, 7));
    write(up.path(), "dist/a b/ü.txt", b"unicode");
    let run = || {
        plugin(up.path())
            .azurite(az, &c)
            .set("source", "dist/**")
            .set("strip_prefix", "dist")
            .set("target", "builds/7")
            .set("compress", "**/*.html")
            .set("block_size", "64KiB")
            .set("checksums_file", "out/SHA256SUMS")
    };
    run().run().assert_ok().assert_contains("checksums written to out/SHA256SUMS");
    let sums = std::fs::read_to_string(up.path().join("out/SHA256SUMS")).unwrap();
    let gz = stored_gzip(az, &c, "builds/7/index.html");
    assert_eq!(
        sums,
        format!(
            "{}  a b/ü.txt\n{}  app/main.js\n{}  index.html\n",
            sha256_hex(b"unicode"),
            sha256_hex(&bytes(200_000, 7)),
            sha256_hex(&gz)
        )
    );
    // Again: every file is skipped (overwrite: changed), and still listed (they are stored).
    std::fs::remove_file(up.path().join("out/SHA256SUMS")).unwrap();
    run().set("overwrite", "changed").run().assert_ok().assert_contains("unchanged");
    assert_eq!(std::fs::read_to_string(up.path().join("out/SHA256SUMS")).unwrap(), sums);

    let ws = tempfile::tempdir().unwrap();
    plugin(ws.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "builds/7/")
        .set("strip_prefix", "builds/7")
        .set("target", "tree")
        .run()
        .assert_ok();
    std::fs::write(ws.path().join("SHA256SUMS"), &sums).unwrap();
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "../SHA256SUMS"])
        .current_dir(ws.path().join("tree"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&check.stdout).matches(": OK").count(), 3);
}

/// The bytes stored under `name` (gzip, not decoded).
fn stored_gzip(az: &Azurite, c: &str, name: &str) -> Vec<u8> {
    let ws = tempfile::tempdir().unwrap();
    plugin(ws.path()).azurite(az, c).set("action", "download").set("source", name).set("target", "o").run().assert_ok();
    let data = std::fs::read(ws.path().join("o").join(name)).unwrap();
    assert!(data.starts_with(&[0x1f, 0x8b]), "not gzip");
    data
}

/// `verify_checksums` refuses a tampered entry (that file is not written),
/// a listed name the container lacks, and a malformed file (exit 2, before any transfer).
#[test]
fn verify_checksums_refuses_a_tampered_entry_and_a_missing_file() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlverify");
    upload_tree(az, &c, &[("r/a.txt", b"alpha".to_vec()), ("r/sub/b.bin", bytes(150_000, 3))]);
    let good = format!("{}  a.txt\n{}  sub/b.bin\n", sha256_hex(b"alpha"), sha256_hex(&bytes(150_000, 3)));
    let ws = tempfile::tempdir().unwrap();
    let dl = |sums: &str, target: &str| {
        std::fs::write(ws.path().join("SUMS"), sums).unwrap();
        plugin(ws.path())
            .azurite(az, &c)
            .set("action", "download")
            .set("source", "r/")
            .set("strip_prefix", "r")
            .set("target", target)
            .set("verify_checksums", "SUMS")
            .run()
    };
    dl(&good, "ok").assert_ok();
    assert_eq!(tree(&ws.path().join("ok")), ["a.txt", "sub/b.bin"]);

    let tampered = good.replacen(&sha256_hex(b"alpha"), &sha256_hex(b"omega"), 1);
    dl(&tampered, "t")
        .assert_code(1)
        .assert_contains("a.txt")
        .assert_contains("that `verify_checksums` lists; not written");
    assert_eq!(tree(&ws.path().join("t")), ["sub/b.bin"], "the tampered entry's file is not written");

    let missing = format!("{good}{}  gone.txt\n", sha256_hex(b"gone"));
    dl(&missing, "m")
        .assert_code(1)
        .assert_contains("gone.txt")
        .assert_contains("listed in `verify_checksums` but not in the selection");

    dl("not a checksum line\n", "x").assert_code(2).assert_contains("`SUMS` (`verify_checksums`) line 1");
    assert!(!ws.path().join("x").exists(), "nothing is downloaded after a refusal");
}
