//! A hostile network and a refusing service, and every exit
//! code of the documented contract, through the real binary.
//!
//! - A redirect is a failure naming its `Location` (without the query), never followed:
//!   the redirect target is a loopback listener that records whether it was contacted.
//! - A refusal that recurs for every file (wrong key, missing role) stops the run after
//!   the first requests: the counting proxy proves that the rest were never sent.
//! - Unbuildable requests and TLS failures fail at once, without retries.
//! - A file needing more than 50,000 blocks is refused before any request (sparse file).
//! - Exit codes 0, 1, 2, 3, 130 and 143 each with what a user sees (README "Output",
//!   docs/settings.md, `src/main.rs`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fault_proxy::*;
use crate::faults::{finish, spawn};
use crate::support::*;

/// A key of the right shape that is not the account's.
const WRONG_KEY: &str = "AAAAvdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The plugin against the shared Azurite through `proxy`.
fn via(proxy: &FaultProxy, dir: &Path, c: &str) -> Plugin {
    plugin(dir).azurite(Azurite::shared(), c).set("endpoint", proxy.endpoint()).set("retries", "2").set("timeout", "2s")
}

/// A container that exists, created by a successful run of the plugin.
fn existing_container(tag: &str) -> String {
    let c = container(tag);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "seed.txt", b"seed");
    plugin(dir.path()).azurite(Azurite::shared(), &c).set("source", "seed.txt").set("target", "seed").run().assert_ok();
    c
}

/// A loopback HTTP server that answers 200 to anything and counts the connections it got.
fn landing() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, hits)
}

// ---- redirects ----

#[test]
fn net_a_redirected_put_blob_fails_naming_the_location_and_the_target_is_never_contacted() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    for status in [301u16, 302, 307] {
        let (port, hits) = landing();
        let location = format!("http://127.0.0.1:{port}/landing/a.txt?sv=2025-11-05&sig=SECRETSIG");
        let redirect = Fault::Status { status, code: "", headers: vec![("Location", location)] };
        let proxy =
            FaultProxy::start(Azurite::shared(), vec![Rule::new("redirect", op("PutBlob"), Times::Every, redirect)]);
        let c = container("redirect");
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.txt", "b.txt", "c.txt"] {
            write(dir.path(), n, n.as_bytes());
        }
        let out = via(&proxy, dir.path(), &c).set("source", "*.txt").set("concurrency", "1").run();
        out.assert_code(3);
        out.assert_contains(&format!("PUT /devstoreaccount1/{c}/a.txt: HTTP {status}"))
            .assert_contains(&format!("redirected to http://127.0.0.1:{port}/landing/a.txt; not followed"))
            .assert_contains("Azure Storage never redirects")
            .assert_contains("after 1 attempt ")
            .assert_contains("2 file(s) not attempted")
            .assert_lacks("SECRETSIG")
            .assert_lacks("sv=2025-11-05")
            .assert_lacks("retrying");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "{status}: the redirect target was contacted");
        assert_eq!(
            proxy.fired("redirect"),
            1,
            "{status}: one Put Blob, not retried, no other file started:\n{}",
            proxy.log()
        );
        assert!(list(Azurite::shared(), &c).is_empty(), "{status}: nothing is stored");
    }
}

// ---- a refusal that recurs for every file stops the run ----

#[test]
fn net_a_wrong_account_key_stops_an_upload_of_200_files_after_the_first_refusals() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let c = existing_container("wrongkey");
    let proxy = FaultProxy::start(Azurite::shared(), vec![]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        write(dir.path(), &format!("f/{i:03}.txt"), format!("file {i}").as_bytes());
    }
    let out = via(&proxy, dir.path(), &c)
        .set("account_key", WRONG_KEY)
        .set("create_container", "false")
        .set("source", "f/*.txt")
        .set("concurrency", "4")
        .set("manifest", "manifest.json")
        .run();
    out.assert_code(3);
    let puts = proxy.ops("PutBlob");
    assert!(!puts.is_empty() && puts.len() <= 8, "{} Put Blob requests for 200 files:\n{}", puts.len(), proxy.log());
    assert!(puts.iter().all(|r| r.upstream == Some(403)), "Azurite refused them:\n{}", proxy.log());
    // Azurite refuses a wrong signature with 403 AuthorizationFailure (Azure: AuthenticationFailed).
    out.assert_contains("stopped early on a refusal that would recur for every file (auth: shared key)")
        .assert_contains("403 AuthorizationFailure")
        .assert_contains("Check that `account_key` (PLUGIN_ACCOUNT_KEY)")
        .assert_contains("is a current key of account `devstoreaccount1`")
        .assert_lacks(WRONG_KEY);
    let (failed, not_attempted) = manifest_counts(dir.path(), 200);
    assert!(failed <= 8 && not_attempted >= 192, "{failed} failed, {not_attempted} not attempted");
    out.assert_contains(&format!("{not_attempted} file(s) not attempted"));
    assert_eq!(list(Azurite::shared(), &c), vec!["seed/seed.txt"], "nothing new is stored");
}

#[test]
fn net_a_missing_data_role_stops_a_download_after_the_first_refusal() {
    if !crate::support::azurite_present() {
        return;
    }
    let c = existing_container("norole");
    let src = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(src.path(), &format!("{i:02}.bin"), &bytes(1000, i));
    }
    plugin(src.path()).azurite(Azurite::shared(), &c).set("source", "*.bin").run().assert_ok();
    let refuse = Fault::status(403, "AuthorizationPermissionMismatch");
    let proxy = FaultProxy::start(Azurite::shared(), vec![Rule::new("no-role", op("GetBlob"), Times::Every, refuse)]);
    let dir = tempfile::tempdir().unwrap();
    let out = via(&proxy, dir.path(), &c)
        .set("action", "download")
        .set("source", "*.bin")
        .set("target", "out")
        .set("concurrency", "2")
        .set("manifest", "manifest.json")
        .run();
    out.assert_code(3);
    let gets = proxy.fired("no-role");
    assert!((1..=2).contains(&gets), "{gets} GETs for 20 blobs:\n{}", proxy.log());
    let (failed, not_attempted) = manifest_counts(dir.path(), 20);
    assert!(failed <= 2 && not_attempted >= 18, "{failed} failed, {not_attempted} not attempted");
    out.assert_contains("403 AuthorizationPermissionMismatch")
        .assert_contains("(auth: shared key)")
        .assert_contains(&format!("{not_attempted} file(s) not attempted"));
    assert_eq!(tree(dir.path()), vec!["manifest.json"], "no file written");
}

#[test]
fn net_a_container_deleted_mid_run_stops_the_run_and_what_was_done_stands() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // Put Blob number 3 onwards: 404 ContainerNotFound (deleted under the run). With
    // concurrency 1, two files are stored first: the stop then exits 1, not 3.
    let gone = Fault::status(404, "ContainerNotFound");
    let proxy = FaultProxy::start(Azurite::shared(), vec![Rule::new("gone", op("PutBlob"), Times::From(3), gone)]);
    let c = container("gone");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        write(dir.path(), &format!("{i}.txt"), format!("file {i}").as_bytes());
    }
    let out = via(&proxy, dir.path(), &c).set("source", "*.txt").set("concurrency", "1").run();
    out.assert_code(1)
        .assert_contains("404 ContainerNotFound")
        .assert_contains(&format!(
            "The container `{c}` does not exist (any more): check `container` (PLUGIN_CONTAINER)"
        ))
        .assert_contains("3 file(s) not attempted")
        .assert_contains("transferred            2")
        .assert_contains("not attempted          3");
    assert_eq!(proxy.fired("gone"), 1, "one refusal, then nothing more:\n{}", proxy.log());
    assert_eq!(list(Azurite::shared(), &c), vec!["0.txt", "1.txt"]);
}

/// Reads the manifest of a stopped run: nothing transferred, every file failed or not
/// attempted; returns (failed, not attempted).
fn manifest_counts(dir: &Path, files: u64) -> (u64, u64) {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let s = &m["summary"];
    assert_eq!(s["files_transferred"], 0);
    let (failed, not_attempted) = (s["files_failed"].as_u64().unwrap(), s["files_not_attempted"].as_u64().unwrap());
    assert_eq!(failed + not_attempted, files);
    let listed = m["files"].as_array().unwrap().iter().filter(|f| f["status"] == "not_attempted").count();
    assert_eq!(listed as u64, not_attempted, "each file not attempted is listed as such");
    (failed, not_attempted)
}

// ---- errors that no retry can heal ----

#[test]
fn net_an_endpoint_with_a_non_http_scheme_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let started = Instant::now();
    let out = plugin(dir.path())
        .set(
            "connection_string",
            format!("AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint=ftp://127.0.0.1:1/{DEV_ACCOUNT}"),
        )
        .set("container", container("ftp"))
        .set("retries", "5")
        .set("source", "a.txt")
        .run();
    // Refused as an invalid setting before any request; a request the HTTP layer cannot
    // build is never retried either (unit test `a_request_that_cannot_be_built_is_not_retried`).
    out.assert_code(2).assert_contains("connection_string").assert_contains("ftp").assert_lacks(DEV_KEY);
    out.assert_lacks("retrying").assert_lacks("attempts");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}:\n{}", started.elapsed(), out.all());
}

#[test]
fn net_an_untrusted_certificate_fails_at_once() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = oauth_azurite();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let started = Instant::now();
    let out = plugin(dir.path()).azurite(az, &container("tls")).set("retries", "5").set("source", "a.txt").run();
    out.assert_code(3).assert_contains("certificate").assert_contains("after 1 attempt ").assert_lacks("retrying");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

// ---- the block count is checked at planning ----

#[test]
fn net_a_file_needing_more_than_50000_blocks_is_refused_before_any_request() {
    if !crate::support::azurite_present() {
        return;
    }
    let proxy = FaultProxy::start(Azurite::shared(), vec![]);
    let dir = tempfile::tempdir().unwrap();
    // 2 TiB, sparse: no real bytes. At the default 32 MiB `max_memory`, 50,000 blocks hold 1.5 TiB.
    let f = std::fs::File::create(dir.path().join("disk.img")).unwrap();
    f.set_len(2 << 40).unwrap();
    write(dir.path(), "small.txt", b"small");
    let c = container("blocks");
    let out = via(&proxy, dir.path(), &c).set("source", "*").run();
    out.assert_code(3)
        .assert_contains("1 file(s) cannot be uploaded as one blob")
        .assert_contains("`disk.img` (2.0 TiB, 2199023255552 bytes) needs more than 50,000 blocks of 32.0 MiB")
        .assert_contains("set `max_memory` to at least 42MiB");
    assert!(proxy.records().is_empty(), "nothing was sent:\n{}", proxy.log());
    // The same plan with the memory it names is accepted (a dry run: nothing sent).
    let out = via(&proxy, dir.path(), &c).set("source", "*").set("max_memory", "42MiB").set("dry_run", "true").run();
    out.assert_ok().assert_contains("would upload disk.img → disk.img (2.0 TiB)");
    assert!(proxy.records().is_empty(), "a dry run sends nothing:\n{}", proxy.log());
}

// ---- every exit code of the contract (README "Output", docs/settings.md, src/main.rs) ----

#[test]
fn net_exit_0_every_file_done() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let c = container("exit0");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"alpha");
    let out = plugin(dir.path()).azurite(Azurite::shared(), &c).set("source", "a.txt").run();
    out.assert_ok().assert_contains("transferred            1").assert_contains("failed                 0");
    assert_eq!(fetch(Azurite::shared(), &c, "a.txt").0, b"alpha");
}

#[test]
fn net_exit_1_one_file_failed_and_the_other_is_stored() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let fail = Fault::status(500, "InternalError");
    let proxy =
        FaultProxy::start(Azurite::shared(), vec![Rule::new("b", op_on("PutBlob", "b.txt"), Times::Every, fail)]);
    let c = container("exit1");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"alpha");
    write(dir.path(), "b.txt", b"beta");
    let out = via(&proxy, dir.path(), &c).set("source", "*.txt").set("retries", "0").run();
    out.assert_code(1)
        .assert_contains("1 file(s) failed")
        .assert_contains("✗ b.txt → b.txt: PUT /devstoreaccount1/")
        .assert_contains("500 InternalError")
        .assert_lacks("stopped early");
    assert_eq!(list(Azurite::shared(), &c), vec!["a.txt"]);
}

#[test]
fn net_exit_1_the_manifest_cannot_be_written_after_every_file_was_transferred() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let c = container("exit1manifest");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"alpha");
    std::fs::create_dir(dir.path().join("manifest.json")).unwrap(); // a directory where the file should go
    let out =
        plugin(dir.path()).azurite(Azurite::shared(), &c).set("source", "a.txt").set("manifest", "manifest.json").run();
    out.assert_code(1)
        .assert_contains("transferred            1")
        .assert_contains("cannot write the manifest `manifest.json` (`manifest`, PLUGIN_MANIFEST): ")
        .assert_lacks("nothing could be transferred");
    assert_eq!(fetch(Azurite::shared(), &c, "a.txt").0, b"alpha", "the transfer stands");
    let left: Vec<String> = tree(dir.path()).into_iter().filter(|p| p.contains("tmp-")).collect();
    assert!(left.is_empty(), "temporary manifest left: {left:?}");
}

#[test]
fn net_exit_2_invalid_settings_contact_nothing() {
    if !crate::support::azurite_present() {
        return;
    }
    let proxy = FaultProxy::start(Azurite::shared(), vec![]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = via(&proxy, dir.path(), &container("exit2")).set("source", "a.txt").set("concurrency", "lots").run();
    out.assert_code(2).assert_contains("`concurrency` (PLUGIN_CONCURRENCY)");
    assert!(proxy.records().is_empty(), "{}", proxy.log());
}

#[test]
fn net_exit_3_nothing_could_be_transferred_missing_container() {
    if !crate::support::azurite_present() {
        return;
    }
    let c = container("exit3");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out =
        plugin(dir.path()).azurite(Azurite::shared(), &c).set("create_container", "false").set("source", "a.txt").run();
    out.assert_code(3).assert_contains(&format!("the container `{c}` does not exist"));
}

/// A run held at its Put Blob, then sent `sig`: the exit code and what it says.
fn interrupted_at_put_blob(sig: i32, tag: &str) -> (Out, String) {
    let gate = Gate::new();
    let proxy =
        FaultProxy::start(Azurite::shared(), vec![Rule::new("hold", op("PutBlob"), Times::Every, Fault::Hold(gate))]);
    let c = container(tag);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"alpha");
    let child = spawn(&via(&proxy, dir.path(), &c).set("source", "a.txt"));
    assert!(
        proxy.wait_until(Duration::from_secs(20), |r| r.iter().any(|r| r.req.op() == "PutBlob")),
        "{}",
        proxy.log()
    );
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    // The held request is never released: nothing reaches Azurite.
    (finish(child), c)
}

#[test]
fn net_exit_130_sigint() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let (out, c) = interrupted_at_put_blob(libc::SIGINT, "exit130");
    out.assert_code(130).assert_contains("interrupted: stopped");
    assert!(list(Azurite::shared(), &c).is_empty());
}

#[test]
fn net_exit_143_sigterm() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let (out, c) = interrupted_at_put_blob(libc::SIGTERM, "exit143");
    out.assert_code(143).assert_contains("interrupted: stopped");
    assert!(list(Azurite::shared(), &c).is_empty());
}

// ---- a captive portal: `200 OK` from something that is not Azure Storage ----

/// What a hotel Wi-Fi portal answers to anything: `200 OK` and a login page.
const PORTAL: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: 38\r\n\r\n<html>Log in to the hotel Wi-Fi</html>";

/// A portal (or a stray proxy) answers `200 OK` where Azure would have stored the blob.
/// Before the check, such uploads were reported as transferred (exit 0) while nothing
/// reached Azure, and `overwrite: skip` "skipped" files that were never stored. Azure
/// Storage stamps every response with `x-ms-request-id`; an answer without it is
/// nobody's word: the file fails, the run stops, nothing is claimed.
#[test]
fn net_a_captive_portal_answering_200_is_never_taken_for_azure() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write(dir.path(), &format!("f{i}.txt"), b"small");
    }
    for (op_name, overwrite) in [("PutBlob", "true"), ("HeadBlob", "skip")] {
        let c = existing_container(&format!("portal{}", overwrite));
        let proxy = FaultProxy::start(
            Azurite::shared(),
            vec![Rule::new("portal", op(op_name), Times::From(2), Fault::Raw(PORTAL))],
        );
        let out = via(&proxy, dir.path(), &c)
            .set("overwrite", overwrite)
            .set("concurrency", "1")
            .set("source", "*.txt")
            .set("target", "p")
            .set("manifest", "m.json")
            .run();
        out.assert_code(1)
            .assert_contains("did not come from Azure Storage (no x-ms-request-id header)")
            .assert_contains("stopped early")
            .assert_lacks(DEV_KEY);
        assert!(proxy.fired("portal") >= 1, "{}", proxy.log());
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
        // The one file before the portal took over is really stored; no other is claimed.
        assert_eq!(m["summary"]["files_transferred"], 1, "{op_name}: {m}");
        assert_eq!(m["summary"]["files_skipped"], 0, "{op_name}: nothing exists there to skip: {m}");
        let stored: Vec<String> = list(Azurite::shared(), &c).into_iter().filter(|n| n.starts_with("p/")).collect();
        assert_eq!(stored.len(), 1, "{op_name}: {stored:?}");
    }
    // Straight at the portal: the first answer (the container check) stops the run;
    // a download writes nothing (the page never becomes a file).
    let (port, hits) = landing();
    let portal = |p: Plugin| {
        p.set("endpoint", format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}"))
            .set("account_key", DEV_KEY)
            .set("container", "portal")
    };
    portal(plugin(dir.path()))
        .set("source", "*.txt")
        .run()
        .assert_code(3)
        .assert_contains("did not come from Azure Storage");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let out = portal(plugin(dir.path())).set("action", "download").set("source", "f0.txt").set("target", "dl").run();
    out.assert_code(3);
    assert!(!dir.path().join("dl/f0.txt").exists());
}

// ---- every failure bounded, typed and truthful ----

/// A peer closing mid-handshake (`tls handshake eof`, an `UnexpectedEof`) is a dropped
/// connection, retried like a reset: the old classifier read "handshake" in its message
/// and failed the run on the first try (exit 3).
#[test]
fn net_a_tls_handshake_dropped_twice_is_retried_and_the_upload_succeeds() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let (port, seen) = tls_front(az.port, &cert, &key, 2);
    let c = container("tlsdrop");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"through a flaky balancer");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("endpoint", format!("https://127.0.0.1:{port}/{DEV_ACCOUNT}"))
        .set("retries", "3")
        .set("source", "a.txt")
        .env("SSL_CERT_FILE", cert.to_str().unwrap())
        .run();
    out.assert_ok().assert_contains("retrying");
    assert!(seen.load(Ordering::SeqCst) >= 3, "the two dropped handshakes happened");
    assert_eq!(fetch(az, &c, "a.txt").0, b"through a flaky balancer");
}

/// A server asking for long waits (`Retry-After: 100` on every Put Blob) cannot keep a
/// request alive past `retry_timeout`: the file fails soon, naming the setting, instead of
/// the step hanging for minutes (6 attempts and 5 waits of up to 120 s without the bound).
#[test]
fn net_retry_timeout_bounds_a_request_whose_server_asks_for_long_waits() {
    if !crate::support::azurite_present() {
        return;
    }
    let c = existing_container("deadline");
    let busy = Fault::status_with(503, "ServerBusy", "retry-after", "100");
    let proxy = FaultProxy::start(Azurite::shared(), vec![Rule::new("busy", op("PutBlob"), Times::Every, busy)]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let started = Instant::now();
    let out = via(&proxy, dir.path(), &c).set("retries", "5").set("retry_timeout", "3s").set("source", "a.txt").run();
    out.assert_code(1).assert_contains("`retry_timeout` (PLUGIN_RETRY_TIMEOUT)").assert_contains("503 ServerBusy");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}:\n{}", started.elapsed(), out.all());
    assert_eq!(proxy.fired("busy"), 1, "the second attempt would start past the deadline");
}

#[test]
fn net_retry_timeout_out_of_range_is_an_invalid_setting() {
    if !crate::support::azurite_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out =
        plugin(dir.path()).azurite(Azurite::shared(), "never").set("retry_timeout", "2h").set("source", "a.txt").run();
    out.assert_code(2).assert_contains("retry_timeout").assert_contains("1s to 1h");
}
