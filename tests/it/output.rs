//! What a pipeline log shows: start line, progress, summary, manifest, JSON logs, dry run.

use crate::support::*;

#[test]
fn start_line_progress_summary_and_manifest() {
    let az = Azurite::shared();
    let c = container("output");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write(dir.path(), &format!("dist/f{i}.bin"), &bytes(200_000, i));
    }
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("target", "rel")
        .set("block_size", "64KiB")
        .set("concurrency", "2")
        .set("progress_interval", "10ms")
        .set("manifest", "out/manifest.json")
        .run();
    out.assert_ok();
    out.assert_contains(&format!("upload dist/** → rel account `devstoreaccount1` container `{c}`"));
    out.assert_contains("auth: shared key");
    out.assert_lacks(DEV_KEY);
    out.assert_contains("progress: ").assert_contains("/5 files");
    out.assert_contains("transferred            5").assert_contains("failed                 0");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["action"], "upload");
    assert_eq!(m["container"], c.as_str());
    assert_eq!(m["summary"]["files_transferred"], 5);
    assert_eq!(m["summary"]["bytes_transferred"], 1_000_000);
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    let f0 = &files[0];
    assert_eq!(f0["name"], "rel/f0.bin");
    assert_eq!(f0["local"], "dist/f0.bin");
    assert_eq!(f0["size"], 200_000);
    assert_eq!(f0["status"], "transferred");
    assert_eq!(f0["sha256"], sha256_hex(&bytes(200_000, 0)));
    assert_eq!(f0["url"], format!("{}/{c}/rel/f0.bin", az.endpoint()));
    assert!(f0["etag"].is_string());
    // The manifest's hash is what is stored.
    assert_eq!(fetch(az, &c, "rel/f0.bin").1["metadata"]["sha256"], f0["sha256"]);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let az = Azurite::shared();
    let c = container("jsonlogs");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .set("log_format", "json")
        .set("log_level", "debug")
        .run();
    out.assert_ok();
    let mut levels = std::collections::BTreeSet::new();
    for line in out.stderr.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        levels.insert(v["level"].as_str().unwrap().to_string());
    }
    assert!(levels.contains("DEBUG") && levels.contains("INFO"), "{levels:?}");
    assert!(out.stderr.contains("\"summary\""), "{}", out.stderr);
}

#[test]
fn dry_run_plans_without_credentials_and_transfers_nothing() {
    let az = Azurite::shared();
    let c = container("dryrun");
    py(az, &["create-container", &c]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/a.txt", b"a");
    write(dir.path(), "dist/b/c.txt", b"c");
    let out = plugin(dir.path())
        .set("endpoint", az.endpoint())
        .set("container", &c)
        .set("source", "dist/**")
        .set("target", "t")
        .set("strip_prefix", "dist")
        .set("dry_run", "true")
        .set("manifest", "m.json")
        .run();
    out.assert_ok()
        .assert_contains("would upload dist/a.txt → t/a.txt")
        .assert_contains("would upload dist/b/c.txt → t/b/c.txt");
    assert!(list(az, &c).is_empty());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["summary"]["dry_run"], true);
    assert_eq!(m["files"].as_array().unwrap().len(), 2);
}

#[test]
fn debug_logs_carry_client_request_ids_and_user_agent_names_the_run() {
    let az = Azurite::shared();
    let c = container("traceids");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = plugin(dir.path()).azurite(az, &c).set("source", "a.txt").set("log_level", "debug").run();
    out.assert_ok().assert_contains("client_request_id=");
    // A failure prints both ids.
    let out = plugin(dir.path()).azurite(az, &c).set("source", "a.txt").set("overwrite", "false").run();
    out.assert_code(1).assert_contains("x-ms-client-request-id");
}

#[test]
fn exit_code_is_non_zero_when_any_file_fails_and_every_failure_is_listed() {
    let az = Azurite::shared();
    let c = container("exitcodes");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    write(dir.path(), "b.txt", b"b");
    write(dir.path(), "c.txt", b"c");
    plugin(dir.path()).azurite(az, &c).set("source", "a.txt,b.txt").run().assert_ok();
    let out = plugin(dir.path()).azurite(az, &c).set("source", "*.txt").set("overwrite", "false").run();
    out.assert_code(1)
        .assert_contains("2 failed:")
        .assert_contains("✗ a.txt → a.txt")
        .assert_contains("✗ b.txt → b.txt");
    assert_eq!(fetch(az, &c, "c.txt").0, b"c");
}
