//! Upload to Blob through the real binary, read back by an independent client.

use crate::support::*;

#[test]
fn globs_exclude_strip_prefix_and_target_map_names() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("mapping");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    write(ws, "dist/app.tar.gz", b"tgz");
    write(ws, "dist/js/app.js", b"js");
    write(ws, "dist/js/app.js.map", b"map");
    write(ws, "dist/node_modules/x/index.js", b"nm");
    write(ws, "distribution/not-me.txt", b"no");
    write(ws, "README.md", b"no");
    plugin(ws)
        .azurite(az, &c)
        .set("source", "dist/**")
        .set("exclude", "*.map,node_modules")
        .set("strip_prefix", "dist/")
        .set("target", "org/repo/abc123/")
        .run()
        .assert_ok();
    assert_eq!(names(az, &c), vec!["org/repo/abc123/app.tar.gz", "org/repo/abc123/js/app.js"]);
}

#[test]
fn a_directory_source_means_its_tree() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dirsource");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out/a/b.txt", b"1");
    write(dir.path(), "out/c.txt", b"2");
    plugin(dir.path()).azurite(az, &c).set("source", "out").run().assert_ok();
    assert_eq!(names(az, &c), vec!["out/a/b.txt", "out/c.txt"]);
}

#[test]
fn small_and_chunked_files_arrive_intact_with_sha256_metadata() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("intact");
    let dir = tempfile::tempdir().unwrap();
    let small = bytes(1000, 1);
    let big = bytes(3 * 1024 * 1024 + 12345, 2); // 49 blocks of 64 KiB, the last one partial
    write(dir.path(), "small.bin", &small);
    write(dir.path(), "big.bin", &big);
    write(dir.path(), "empty.bin", b"");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "*.bin")
        .set("block_size", "64KiB")
        .set("content_md5", "true")
        .set("log_level", "debug")
        .run();
    out.assert_ok();
    // The big file went as blocks, the small one as a single Put Blob.
    assert!(out.all().matches("comp=block").count() == 0, "query strings must not be logged");
    for (name, data) in [("small.bin", &small), ("big.bin", &big), ("empty.bin", &Vec::new())] {
        let (got, props) = fetch(az, &c, name);
        assert_eq!(got.len(), data.len(), "{name}");
        assert!(got == *data, "{name} differs");
        assert_eq!(props["metadata"]["sha256"], sha256_hex(data), "{name}");
        // Single puts get their MD5 from the service; block uploads store ours (content_md5: true).
        assert!(props["content_md5"].is_string(), "{name} has no Content-MD5: {props}");
    }
}

#[test]
fn content_type_guessed_or_set_and_other_headers_stored() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("headers");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/index.html", b"<h1>hi</h1>");
    write(dir.path(), "site/app.wasm", b"\0asm");
    write(dir.path(), "site/data.unknownext", b"?");
    write(dir.path(), "site/special.js", b"x");
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "site/**")
        .set("strip_prefix", "site")
        .set("content_type", r#"{"special.*": "text/x-special", "*.nothing": "a/b"}"#)
        .set("cache_control", r#"{"*.html": "no-cache", "*": "public, max-age=31536000"}"#)
        .set("content_disposition", "inline")
        .set("content_encoding", r#"{"*.wasm": "identity"}"#)
        .set("metadata", r#"{"team": "platform", "Build_Kind": "release"}"#)
        .set("access_tier", "cool")
        .run()
        .assert_ok();
    let (_, p) = fetch(az, &c, "index.html");
    assert_eq!(p["content_type"], "text/html");
    assert_eq!(p["cache_control"], "no-cache");
    assert_eq!(p["content_disposition"], "inline");
    assert_eq!(p["metadata"]["team"], "platform");
    assert_eq!(p["metadata"]["build_kind"], "release");
    assert_eq!(p["access_tier"], "Cool");
    let (_, p) = fetch(az, &c, "app.wasm");
    assert_eq!(p["content_type"], "application/wasm");
    assert_eq!(p["cache_control"], "public, max-age=31536000");
    assert_eq!(p["content_encoding"], "identity");
    let (_, p) = fetch(az, &c, "data.unknownext");
    assert_eq!(p["content_type"], "application/octet-stream");
    let (_, p) = fetch(az, &c, "special.js");
    assert_eq!(p["content_type"], "text/x-special");
}

#[test]
fn provenance_names_the_ci_run_unless_disabled() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("provenance");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    write(dir.path(), "b.txt", b"b");
    let ci = |p: Plugin| {
        p.env("CI", "woodpecker")
            .env("CI_REPO", "org/app")
            .env("CI_COMMIT_SHA", "0123abcd")
            .env("CI_PIPELINE_NUMBER", "42")
            .env("CI_PIPELINE_URL", "https://ci.example/org/app/42")
    };
    ci(plugin(dir.path()).azurite(az, &c).set("source", "a.txt")).run().assert_ok();
    ci(plugin(dir.path()).azurite(az, &c).set("source", "b.txt").set("provenance", "false")).run().assert_ok();
    let (_, p) = fetch(az, &c, "a.txt");
    assert_eq!(p["metadata"]["ci_repo"], "org/app");
    assert_eq!(p["metadata"]["ci_commit"], "0123abcd");
    assert_eq!(p["metadata"]["ci_build"], "42");
    assert_eq!(p["metadata"]["ci_link"], "https://ci.example/org/app/42");
    let (_, p) = fetch(az, &c, "b.txt");
    assert!(p["metadata"].get("ci_repo").is_none(), "{p}");
    assert!(p["metadata"]["sha256"].is_string());
}

#[test]
fn overwrite_false_refuses_existing_blobs_per_file() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("owfalse");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "keep.txt", b"original");
    write(dir.path(), "big.bin", &bytes(300_000, 3));
    plugin(dir.path()).azurite(az, &c).set("source", "keep.txt,big.bin").set("block_size", "64KiB").run().assert_ok();
    write(dir.path(), "keep.txt", b"changed!");
    write(dir.path(), "big.bin", &bytes(300_000, 4));
    write(dir.path(), "new.txt", b"new");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "*.txt,big.bin")
        .set("overwrite", "false")
        .set("block_size", "64KiB")
        .run();
    out.assert_code(1).assert_contains("keep.txt").assert_contains("already exists (overwrite: false)");
    out.assert_contains("2 failed");
    assert_eq!(fetch(az, &c, "keep.txt").0, b"original");
    assert_eq!(fetch(az, &c, "big.bin").0, bytes(300_000, 3));
    assert_eq!(fetch(az, &c, "new.txt").0, b"new", "other files still go");
}

#[test]
fn overwrite_skip_and_changed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("owskip");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"one");
    write(dir.path(), "b.txt", b"two");
    plugin(dir.path()).azurite(az, &c).set("source", "*.txt").run().assert_ok();
    write(dir.path(), "a.txt", b"ONE");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "*.txt")
        .set("overwrite", "skip")
        .set("manifest", "m.json")
        .run();
    out.assert_ok().assert_contains("exists (overwrite: skip)");
    assert_eq!(fetch(az, &c, "a.txt").0, b"one");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["summary"]["files_skipped"], 2);

    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "*.txt")
        .set("overwrite", "changed")
        .set("manifest", "m.json")
        .run();
    out.assert_ok().assert_contains("b.txt (unchanged (overwrite: changed))");
    assert_eq!(fetch(az, &c, "a.txt").0, b"ONE");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["summary"]["files_transferred"], 1);
    assert_eq!(m["summary"]["files_skipped"], 1);
}

#[test]
fn changed_compares_against_md5_of_blobs_from_other_tools() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("owchangedmd5");
    py(az, &["create-container", &c]);
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "same.txt", b"same content");
    py(az, &["put", &c, "same.txt", f.to_str().unwrap()]);
    let out = plugin(dir.path()).azurite(az, &c).set("source", "same.txt").set("overwrite", "changed").run();
    out.assert_ok().assert_contains("unchanged (overwrite: changed)");
}

#[test]
fn collisions_and_empty_selections_are_clear_errors() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("collide");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/x.txt", b"1");
    write(dir.path(), "b/x.txt", b"2");
    // strip_prefix strips `a` only, so a/x.txt → x.txt and b/x.txt → b/x.txt: no collision.
    plugin(dir.path()).azurite(az, &c).set("source", "a/*,b/*").set("strip_prefix", "a").run().assert_ok();
    assert_eq!(names(az, &c), vec!["b/x.txt", "x.txt"]);
    // x/x.txt stripped of `x` lands on x.txt, where the top-level x.txt goes too.
    let dir2 = tempfile::tempdir().unwrap();
    write(dir2.path(), "x/x.txt", b"1");
    write(dir2.path(), "x.txt", b"2");
    let out = plugin(dir2.path()).azurite(az, &c).set("source", "**/*.txt").set("strip_prefix", "x").run();
    out.assert_code(3)
        .assert_contains("would be uploaded under the same name")
        .assert_contains("`x.txt` ← x.txt, x/x.txt");

    let out = plugin(dir.path()).azurite(az, &c).set("source", "nothing/**/*.zip").run();
    out.assert_code(3).assert_contains("`source` selects no file").assert_contains("allow_empty");
    plugin(dir.path()).azurite(az, &c).set("source", "nothing/**/*.zip").set("allow_empty", "true").run().assert_ok();
}

#[test]
fn symlinks_are_skipped_with_a_warning_unless_followed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("symlinks");
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", b"outside the workspace");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/real.txt", b"real");
    let secret = outside.path().canonicalize().unwrap().join("secret.txt");
    std::os::unix::fs::symlink(&secret, dir.path().join("dist/link.txt")).unwrap();
    std::os::unix::fs::symlink("real.txt", dir.path().join("dist/inside.txt")).unwrap();
    let out = plugin(dir.path()).azurite(az, &c).set("source", "dist/**").run();
    out.assert_ok()
        .assert_contains("skipped dist/link.txt: symbolic link")
        .assert_contains("skipped dist/inside.txt: symbolic link");
    assert_eq!(names(az, &c), vec!["dist/real.txt"]);
    // Followed, a link is read only while it stays inside the workspace.
    let out = plugin(dir.path()).azurite(az, &c).set("source", "dist/**").set("follow_symlinks", "true").run();
    out.assert_ok().assert_contains(&format!(
        "skipped dist/link.txt: symbolic link to `{}`, outside the workspace; not followed",
        secret.display()
    ));
    assert_eq!(names(az, &c), vec!["dist/inside.txt", "dist/real.txt"]);
    assert_eq!(fetch(az, &c, "dist/inside.txt").0, b"real");
}

#[test]
fn missing_container_is_a_clear_error_unless_created() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("missing");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = plugin(dir.path()).azurite(az, &c).set("create_container", "false").set("source", "a.txt").run();
    out.assert_code(3)
        .assert_contains(&format!("the container `{c}` does not exist"))
        .assert_contains("create_container: true");
}

#[test]
fn sas_token_and_connection_string_auth() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("sasauth");
    py(az, &["create-container", &c]);
    let sas = py(az, &["sas", &c])["sas"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "via-sas.txt", b"sas");
    write(dir.path(), "via-cs.txt", b"cs");
    let out = plugin(dir.path())
        .set("endpoint", az.endpoint())
        .set("container", &c)
        .set("sas_token", format!("?{sas}"))
        .set("source", "via-sas.txt")
        .set("log_level", "trace")
        .run();
    out.assert_ok().assert_contains("auth: SAS token");
    let sig = sas.split('&').find(|p| p.starts_with("sig=")).unwrap();
    out.assert_lacks(&sig[4..]);
    out.assert_lacks(sig);
    let out = plugin(dir.path())
        .env("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())
        .set("container", &c)
        .set("source", "via-cs.txt")
        .set("log_level", "trace")
        .run();
    out.assert_ok().assert_contains("auth: shared key").assert_lacks(DEV_KEY);
    assert_eq!(fetch(az, &c, "via-sas.txt").0, b"sas");
    assert_eq!(fetch(az, &c, "via-cs.txt").0, b"cs");
    // A wrong key is refused by the service, reported with its code.
    let out = plugin(dir.path())
        .set("endpoint", az.endpoint())
        .set("container", &c)
        .set("account_key", "d3Jvbmcga2V5")
        .set("source", "via-cs.txt")
        .run();
    assert_ne!(out.code, 0);
    out.assert_contains("403").assert_contains("AuthorizationFailure").assert_lacks("d3Jvbmcga2V5");
}

#[test]
fn names_with_spaces_and_unicode_round_trip() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("unicode");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "docs/read me (1)+final#.txt", b"spaces");
    write(dir.path(), "docs/h\u{e9}llo w\u{f6}rld.txt", b"unicode");
    plugin(dir.path()).azurite(az, &c).set("source", "docs/*").run().assert_ok();
    assert_eq!(names(az, &c), vec!["docs/h\u{e9}llo w\u{f6}rld.txt", "docs/read me (1)+final#.txt"]);
    let out = tempfile::tempdir().unwrap();
    plugin(out.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "docs/")
        .set("target", "o")
        .run()
        .assert_ok();
    assert_eq!(std::fs::read(out.path().join("o/docs/read me (1)+final#.txt")).unwrap(), b"spaces");
}

/// `retention` stores the index tags `expires-on` (today + N days, UTC) and
/// `retention-days` with each blob, single-request and block-list alike, read back with the
/// Python SDK.
#[test]
fn retention_tags_each_blob_with_its_expiry_date() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("retention");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "small.txt", b"small");
    write(dir.path(), "big.bin", &bytes(200_000, 9));
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "*")
        .set("block_size", "64KiB")
        .set("retention", "30d")
        .run()
        .assert_ok();
    let date = std::process::Command::new("date").args(["-u", "-d", "+30 days", "+%F"]).output().unwrap();
    let want = String::from_utf8(date.stdout).unwrap().trim().to_string();
    for name in ["small.txt", "big.bin"] {
        assert_eq!(
            py(az, &["tags", &c, name]),
            serde_json::json!({ "expires-on": want, "retention-days": "30" }),
            "{name}"
        );
    }
    // Without `retention`, no tags.
    plugin(dir.path()).azurite(az, &c).set("source", "small.txt").run().assert_ok();
    assert_eq!(py(az, &["tags", &c, "small.txt"]), serde_json::json!({}));
}

/// Azure Files has no index tags: `retention` with `service: file` is a
/// settings error (exit 2) that says so, before any request.
#[test]
fn retention_with_azure_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    plugin(dir.path())
        .set("service", "file")
        .set("endpoint", "http://127.0.0.1:9/devstoreaccount1")
        .set("account_key", DEV_KEY)
        .set("share", "s")
        .set("source", "a.txt")
        .set("retention", "30d")
        .run()
        .assert_code(2)
        .assert_contains("retention")
        .assert_contains("Azure Files has no blob index tags");
    plugin(dir.path())
        .set("endpoint", "http://127.0.0.1:9/devstoreaccount1")
        .set("account_key", DEV_KEY)
        .set("container", "c")
        .set("source", "a.txt")
        .set("retention", "30s")
        .run()
        .assert_code(2)
        .assert_contains("`30s` is not a number of whole days");
}

/// The checksums file is written like the manifest: never through a link in
/// the workspace (a committed `out -> /elsewhere`), exit 1 naming `checksums_file`, nothing
/// written outside; the upload itself stands.
#[test]
fn a_checksums_file_reached_through_a_workspace_link_is_refused() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("sumslink");
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .set("checksums_file", "out/SHA256SUMS")
        .run()
        .assert_code(1)
        .assert_contains("cannot write the checksums file `out/SHA256SUMS` (`checksums_file`, PLUGIN_CHECKSUMS_FILE)");
    assert!(tree(outside.path()).is_empty(), "written through the link: {:?}", tree(outside.path()));
}
