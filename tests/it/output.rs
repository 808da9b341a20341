//! What a pipeline log shows: start line, progress, summary, manifest, JSON logs, dry run.

use crate::support::*;

#[test]
fn start_line_progress_summary_and_manifest() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
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

/// The manifest lists files in plan order (here: by workspace path, downloads by path
/// under `target`), not in the order eight concurrent transfers finished; its entries are
/// spooled to an unnamed file in TMPDIR that leaves nothing there, and a TMPDIR that does
/// not exist falls back to the working directory, leaving nothing there either.
#[test]
fn manifest_files_come_in_plan_order_and_the_spool_leaves_nothing_behind() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("manifestorder");
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Sizes that finish out of order: the largest first in plan order.
    let rels: Vec<String> = (0..24).map(|i| format!("dist/d{}/f{i:02}.bin", i % 3)).collect();
    for (i, rel) in rels.iter().enumerate() {
        write(dir.path(), rel, &bytes(if i % 5 == 0 { 300_000 } else { 100 + i }, i as u64));
    }
    let run = |p: Plugin| p.set("concurrency", "8").set("block_size", "64KiB").run();
    let out = run(plugin(dir.path())
        .azurite(az, &c)
        .set("source", "dist/**")
        .set("manifest", "m.json")
        .env("TMPDIR", tmp.path().to_str().unwrap()));
    out.assert_ok();
    let locals = |m: &str, key: &str| -> Vec<String> {
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(m)).unwrap()).unwrap();
        m["files"].as_array().unwrap().iter().map(|f| f[key].as_str().unwrap().to_string()).collect()
    };
    let mut sorted = rels.clone();
    sorted.sort();
    assert_eq!(locals("m.json", "local"), sorted);
    assert_eq!(tree(tmp.path()), Vec::<String>::new(), "the spool left a file in TMPDIR");

    let out = run(plugin(dir.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("target", "out")
        .set("manifest", "dl.json")
        .env("TMPDIR", dir.path().join("no-such-dir").to_str().unwrap()));
    out.assert_ok();
    assert_eq!(locals("dl.json", "name"), sorted, "remote names, in the order of their paths under `target`");
    let left: Vec<String> =
        tree(dir.path()).into_iter().filter(|p| !p.starts_with("dist/") && !p.starts_with("out/")).collect();
    assert_eq!(left, ["dl.json", "m.json"], "only the manifests are left in the working directory");
}

/// A manifest that cannot be written (its directory is a file) with a failed file among
/// the transferred ones: the summary and the failure are printed as ever, the manifest
/// error last, exit 1; nothing is left behind, neither in the workspace nor in TMPDIR.
#[test]
fn an_unwritable_manifest_leaves_the_summary_the_failures_and_no_spool() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("manifestfail");
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..6 {
        write(dir.path(), &format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    write(dir.path(), "blocker", b"a file where the manifest's directory should be");
    plugin(dir.path()).azurite(az, &c).set("source", "f3.txt").run().assert_ok();
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "f*.txt")
        .set("overwrite", "false")
        .set("manifest", "blocker/m.json")
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .run();
    out.assert_code(1)
        .assert_contains("transferred            5")
        .assert_contains("failed                 1")
        .assert_contains("1 failed:\n  ✗ f3.txt → f3.txt: ")
        .assert_contains("cannot write the manifest `blocker/m.json` (`manifest`, PLUGIN_MANIFEST): ")
        .assert_contains("the transfers above are as listed");
    assert_eq!(list(az, &c).len(), 6, "the transfers stand");
    assert_eq!(tree(tmp.path()), Vec::<String>::new(), "the spool left a file in TMPDIR");
    let mut want: Vec<String> = (0..6).map(|i| format!("f{i}.txt")).collect();
    want.insert(0, "blocker".into());
    assert_eq!(tree(dir.path()), want, "nothing else in the workspace");
}

#[test]
fn json_logs_are_one_object_per_line() {
    if !crate::support::azurite_present() {
        return;
    }
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
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
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
    if !crate::support::azurite_present() {
        return;
    }
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
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
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

/// An output file that would block (a FIFO nobody reads) is refused at
/// once, named with its variable, exit 1; the other output file is still written.
#[test]
fn a_fifo_as_output_file_is_refused_at_once_and_the_other_output_is_still_written() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("fifoout");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"hello");
    let fifo = dir.path().join("drone-output");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let github = dir.path().join("github-output");
    let mut child = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .env("DRONE_OUTPUT", fifo.to_str().unwrap())
        .env("GITHUB_OUTPUT", github.to_str().unwrap())
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let hung = child.try_wait().unwrap().is_none();
    if hung {
        child.kill().unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(!hung, "the run hung on the FIFO:\n{}", out.all());
    out.assert_code(1)
        .assert_contains("transferred            1")
        .assert_contains(&format!("cannot append the outputs to `{}` (DRONE_OUTPUT): it is a FIFO", fifo.display()));
    let written = std::fs::read_to_string(&github).unwrap();
    assert!(written.contains("transferred=1\n"), "{written}");
    assert_eq!(fetch(az, &c, "a.txt").0, b"hello");
}
