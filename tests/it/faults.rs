//! Faults: the real binary talks to Azurite through [`FaultProxy`], which injects one
//! fault on a schedule. For each fault the run either completes, with every file checked
//! by an independent read straight from Azurite (not through the proxy), or fails loudly
//! (non-zero exit, the fault named): never exit 0 with a wrong or missing file. Each test
//! also asserts that its fault really fired.
//!
//! Budgets are small (`retries: 2`, `timeout: 1s`) so the suite stays fast.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::fault_proxy::*;
use crate::support::*;

const BLOCK: usize = 64 * 1024;

/// The plugin against the shared Azurite, but through the proxy.
pub(crate) fn via(proxy: &FaultProxy, dir: &Path, c: &str) -> Plugin {
    plugin(dir)
        .azurite(Azurite::shared(), c)
        .set("endpoint", proxy.endpoint())
        .set("retries", "2")
        .set("timeout", "1s")
        .set("block_size", "64KiB")
}

pub(crate) fn spawn(p: &Plugin) -> Child {
    p.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the plugin")
}

/// Waits for a spawned run; a death by signal N reads as exit code 128+N.
pub(crate) fn finish(child: Child) -> Out {
    let out = wait_within(child, PLUGIN_RUN_LIMIT);
    Out {
        code: out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0, "kill({sig})");
}

/// Time between the faulted request of `label` and the next request of the same
/// operation on the same blob, block and range (its retry).
fn retry_gap(proxy: &FaultProxy, label: &str) -> Duration {
    let recs = proxy.records();
    let i = recs.iter().position(|r| r.fault == Some(label)).expect("the fault fired");
    let f = &recs[i];
    let next = recs[i + 1..]
        .iter()
        .find(|r| {
            r.req.op() == f.req.op()
                && r.req.blob() == f.req.blob()
                && r.req.q("blockid") == f.req.q("blockid")
                && r.req.header("x-ms-range") == f.req.header("x-ms-range")
        })
        .unwrap_or_else(|| panic!("no retry after `{label}`:\n{}", proxy.log()));
    next.at.duration_since(f.at)
}

fn small() -> Vec<u8> {
    bytes(1000, 71)
}

/// Ten full blocks and a partial one.
fn big() -> Vec<u8> {
    bytes(10 * BLOCK + 123, 72)
}

/// Checks a blob with the independent client: same bytes, and our SHA-256 stored.
#[track_caller]
fn assert_stored(c: &str, name: &str, data: &[u8]) {
    let (got, props) = fetch(Azurite::shared(), c, name);
    assert!(got == data, "{name}: stored bytes differ ({} vs {} bytes)", got.len(), data.len());
    assert_eq!(props["metadata"]["sha256"], sha256_hex(data), "{name}");
}

const ALL_PUTS: [&str; 3] = ["put-blob", "put-block", "put-block-list"];

/// Uploads a small file (Put Blob) and a chunked one (Put Block ×11 + Put Block List)
/// with `fault` on the first Put Blob, the third Put Block and the first Put Block List.
/// Asserts the run completed, each fault fired once and every blob is intact.
fn upload_survives(tag: &str, fault: Fault) -> (FaultProxy, Out) {
    upload_survives_on(tag, fault, &ALL_PUTS)
}

/// [`upload_survives`], with the fault on the operations `labels` name only.
fn upload_survives_on(tag: &str, fault: Fault, labels: &[&'static str]) -> (FaultProxy, Out) {
    upload_survives_with(tag, fault, labels, &[])
}

/// [`upload_survives_on`], with more settings.
fn upload_survives_with(
    tag: &str,
    fault: Fault,
    labels: &[&'static str],
    settings: &[(&str, &str)],
) -> (FaultProxy, Out) {
    let c = container(tag);
    let rules = labels
        .iter()
        .map(|&label| match label {
            "put-blob" => Rule::new(label, op("PutBlob"), Times::Nth(1), fault.clone()),
            "put-block" => Rule::new(label, op("PutBlock"), Times::Nth(3), fault.clone()),
            "put-block-list" => Rule::new(label, op("PutBlockList"), Times::Nth(1), fault.clone()),
            other => panic!("no rule `{other}`"),
        })
        .collect();
    let proxy = FaultProxy::start(Azurite::shared(), rules);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "small.bin", &small());
    write(dir.path(), "big.bin", &big());
    let mut p = via(&proxy, dir.path(), &c).set("source", "*.bin");
    for (k, v) in settings {
        p = p.set(k, *v);
    }
    let out = p.run();
    let log = proxy.log();
    assert_eq!(out.code, 0, "output:\n{}\nproxy:\n{log}", out.all());
    for label in labels {
        assert_eq!(proxy.fired(label), 1, "`{label}` did not fire once:\n{log}");
    }
    out.assert_contains(&format!("{} retr", labels.len()));
    assert_stored(&c, "small.bin", &small());
    assert_stored(&c, "big.bin", &big());
    (proxy, out)
}

/// Uploads the two files straight to Azurite, then downloads them through the proxy
/// with `fault` on the first List Blobs (unless `list` is false), the first GET of the
/// small file and the third range of the big one. Asserts the run completed, the faults
/// fired and the files are intact with no temporary file left.
fn download_survives(tag: &str, fault: Fault, list: bool) -> (FaultProxy, Out) {
    let az = Azurite::shared();
    let c = container(tag);
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "small.bin", &small());
    write(src.path(), "big.bin", &big());
    plugin(src.path()).azurite(az, &c).set("source", "*.bin").set("block_size", "64KiB").run().assert_ok();
    let mut rules = vec![
        Rule::new("get-small", op_on("GetBlob", "small.bin"), Times::Nth(1), fault.clone()),
        Rule::new("get-big", op_on("GetBlob", "big.bin"), Times::Nth(3), fault.clone()),
    ];
    if list {
        rules.push(Rule::new("list", op("ListBlobs"), Times::Nth(1), fault));
    }
    let proxy = FaultProxy::start(az, rules);
    let ws = tempfile::tempdir().unwrap();
    let out = via(&proxy, ws.path(), &c).set("action", "download").set("source", "*.bin").set("target", "out").run();
    let log = proxy.log();
    assert_eq!(out.code, 0, "output:\n{}\nproxy:\n{log}", out.all());
    let mut labels = vec!["get-small", "get-big"];
    if list {
        labels.push("list");
    }
    for label in labels {
        assert_eq!(proxy.fired(label), 1, "`{label}` did not fire once:\n{log}");
    }
    assert_eq!(tree(&ws.path().join("out")), vec!["big.bin", "small.bin"], "a temporary file was left");
    assert!(std::fs::read(ws.path().join("out/small.bin")).unwrap() == small());
    assert!(std::fs::read(ws.path().join("out/big.bin")).unwrap() == big());
    (proxy, out)
}

// ---- transient faults: the run completes --------------------------------------------

#[test]
fn upload_survives_503_and_honours_retry_after() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let (proxy, _) = upload_survives("up503", Fault::status_with(503, "ServerBusy", "Retry-After", "1"));
    for label in ALL_PUTS {
        let gap = retry_gap(&proxy, label);
        assert!(gap >= Duration::from_millis(950), "`{label}` retried after {gap:?}, before Retry-After: 1");
    }
}

#[test]
fn download_survives_503_and_honours_retry_after() {
    if !crate::support::azurite_present() {
        return;
    }
    let (proxy, _) = download_survives("dl503", Fault::status_with(503, "ServerBusy", "Retry-After", "1"), true);
    let gap = retry_gap(&proxy, "get-big");
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}, before Retry-After: 1");
}

#[test]
fn upload_survives_429_and_honours_x_ms_retry_after_ms() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let (proxy, _) = upload_survives("up429", Fault::status_with(429, "TooManyRequests", "x-ms-retry-after-ms", "700"));
    let gap = retry_gap(&proxy, "put-block");
    assert!(gap >= Duration::from_millis(650), "retried after {gap:?}, before x-ms-retry-after-ms: 700");
}

#[test]
fn download_survives_429() {
    if !crate::support::azurite_present() {
        return;
    }
    let (proxy, _) =
        download_survives("dl429", Fault::status_with(429, "TooManyRequests", "x-ms-retry-after-ms", "700"), true);
    let gap = retry_gap(&proxy, "get-small");
    assert!(gap >= Duration::from_millis(650), "retried after {gap:?}, before x-ms-retry-after-ms: 700");
}

#[test]
fn upload_survives_500() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    upload_survives("up500", Fault::status(500, "InternalError"));
}

#[test]
fn download_survives_500() {
    if !crate::support::azurite_present() {
        return;
    }
    download_survives("dl500", Fault::status(500, "InternalError"), true);
}

#[test]
fn upload_survives_502_and_504() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    upload_survives("up502", Fault::status(502, "BadGateway"));
    upload_survives("up504", Fault::status(504, "GatewayTimeout"));
}

#[test]
fn download_survives_502_and_504() {
    if !crate::support::azurite_present() {
        return;
    }
    download_survives("dl502", Fault::status(502, "BadGateway"), true);
    download_survives("dl504", Fault::status(504, "GatewayTimeout"), true);
}

#[test]
fn upload_survives_a_connection_dropped_mid_request() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // Half of the small file's body, half of a block: the request never reaches Azurite.
    let (proxy, _) = upload_survives("updropreq", Fault::DropRequest { after: 500 });
    let faulted: Vec<_> = proxy.records().into_iter().filter(|r| r.fault.is_some()).collect();
    assert!(faulted.iter().all(|r| r.upstream.is_none()), "a dropped request reached Azurite:\n{}", proxy.log());
}

#[test]
fn download_survives_a_connection_dropped_before_the_response() {
    if !crate::support::azurite_present() {
        return;
    }
    download_survives("dldropreq", Fault::DropRequest { after: 0 }, true);
}

#[test]
fn upload_survives_a_connection_dropped_mid_response() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // The writes landed; their answers were cut in the middle of the head.
    let (proxy, _) = upload_survives("updropresp", Fault::DropResponse { body_bytes: None });
    let faulted: Vec<_> = proxy.records().into_iter().filter(|r| r.fault.is_some()).collect();
    assert!(faulted.iter().all(|r| r.upstream == Some(201)), "{}", proxy.log());
}

#[test]
fn download_survives_a_connection_dropped_mid_body() {
    if !crate::support::azurite_present() {
        return;
    }
    download_survives("dldropresp", Fault::DropResponse { body_bytes: Some(100) }, true);
}

#[test]
fn upload_survives_answers_later_than_the_timeout() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let (proxy, out) = upload_survives("updelay", Fault::DelayResponse(Duration::from_millis(1600)));
    out.assert_contains("timed out");
    let gap = retry_gap(&proxy, "put-block");
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}: before the 1s timeout");
}

#[test]
fn download_survives_answers_later_than_the_timeout() {
    if !crate::support::azurite_present() {
        return;
    }
    download_survives("dldelay", Fault::DelayResponse(Duration::from_millis(1600)), true)
        .1
        .assert_contains("timed out");
}

#[test]
fn upload_resends_a_body_damaged_on_the_way() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // Azurite checks the CRC-64 we send and refuses the damaged body (400 Crc64Mismatch);
    // our buffer is intact, so the request is sent again. (Put Block List: see below.)
    let (proxy, out) = upload_survives_on("upflip", Fault::FlipRequestByte { at: 77 }, &ALL_PUTS[..2]);
    let faulted: Vec<_> = proxy.records().into_iter().filter(|r| r.fault.is_some()).collect();
    assert!(faulted.iter().all(|r| r.upstream == Some(400)), "Azurite did not refuse the damage:\n{}", proxy.log());
    out.assert_contains("400 Crc64Mismatch");
}

#[test]
fn with_checksum_md5_bodies_carry_content_md5_and_a_damaged_one_is_resent() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let (proxy, out) =
        upload_survives_with("upflipmd5", Fault::FlipRequestByte { at: 77 }, &ALL_PUTS[..2], &[("checksum", "md5")]);
    let faulted: Vec<_> = proxy.records().into_iter().filter(|r| r.fault.is_some()).collect();
    assert!(faulted.iter().all(|r| r.upstream == Some(400)), "Azurite did not refuse the damage:\n{}", proxy.log());
    out.assert_contains("400 Md5Mismatch");
    let puts: Vec<_> =
        proxy.records().into_iter().filter(|r| matches!(r.req.op().as_str(), "PutBlob" | "PutBlock")).collect();
    assert_eq!(puts.len(), 1 + 11 + 2, "Put Blob, 11 Put Blocks, 2 re-sent:\n{}", proxy.log());
    for r in &puts {
        assert!(r.req.header("content-md5").is_some(), "{} without Content-MD5", r.req.op());
        assert!(r.req.header("x-ms-content-crc64").is_none(), "{} with a CRC-64 as well", r.req.op());
    }
}

#[test]
fn a_damaged_block_list_is_never_committed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // Azure verifies the CRC-64 of a Put Block List body (and we would re-send it);
    // Azurite 3.37 does not (docs/azurite-notes.md), but a damaged list names a block that
    // does not exist, so it refuses the commit: the file fails loudly, no blob appears.
    let az = Azurite::shared();
    let c = container("flipcommit");
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("flip", op("PutBlockList"), Times::Nth(1), Fault::FlipRequestByte { at: 80 })],
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.bin", &big());
    let out = via(&proxy, dir.path(), &c).set("source", "big.bin").run();
    assert_eq!(proxy.fired("flip"), 1, "{}", proxy.log());
    out.assert_code(1).assert_contains("400 InvalidBlockList");
    assert!(list(az, &c).is_empty(), "a blob is visible");
}

#[test]
fn download_fetches_again_after_a_damaged_body() {
    if !crate::support::azurite_present() {
        return;
    }
    // Not on the listing: a flipped byte there changes a name or a size, not file contents.
    let (_, out) = download_survives("dlflip", Fault::FlipResponseByte { at: 4321 }, false);
    out.assert_contains("SHA-256 mismatch").assert_contains("downloading it again");
}

#[test]
fn download_fetches_again_after_a_short_body() {
    if !crate::support::azurite_present() {
        return;
    }
    let (_, out) = download_survives("dlshort", Fault::ShortBody { keep: 999 }, false);
    out.assert_contains("received 999").assert_contains("downloading it again");
}

#[test]
fn a_storage_endpoint_that_refuses_connections_fails_clearly() {
    if !crate::support::azurite_present() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = plugin(dir.path())
        .azurite(Azurite::shared(), &container("refused"))
        .set("endpoint", format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}"))
        .set("retries", "2")
        .set("source", "a.txt")
        .run();
    out.assert_code(3).assert_contains("connection failed").assert_contains("after 3 attempts");
}

// ---- exhausted budgets: the file fails loudly, the others go on ----------------------

#[test]
fn upload_budget_exhausted_fails_that_file_only_naming_status_code_and_attempts() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("upbudget");
    let proxy = FaultProxy::start(
        az,
        vec![
            Rule::new("b-busy", op_on("PutBlob", "b.txt"), Times::Every, Fault::status(503, "ServerBusy")),
            Rule::new("d-reset", op_on("PutBlob", "d.txt"), Times::Every, Fault::DropRequest { after: 1 }),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    for n in ["a", "b", "c", "d"] {
        write(dir.path(), &format!("{n}.txt"), n.repeat(100).as_bytes());
    }
    let out = via(&proxy, dir.path(), &c).set("source", "*.txt").run();
    out.assert_code(1)
        .assert_contains("2 failed")
        .assert_contains("✗ b.txt → b.txt: PUT /devstoreaccount1/")
        .assert_contains("503 ServerBusy (injected by the fault proxy) after 3 attempts")
        .assert_contains("x-ms-request-id fault-proxy-")
        .assert_contains("✗ d.txt → d.txt: PUT")
        .assert_contains("no response");
    assert_eq!(proxy.fired("b-busy"), 3, "{}", proxy.log());
    assert_eq!(proxy.fired("d-reset"), 3, "{}", proxy.log());
    assert_stored(&c, "a.txt", &b"a".repeat(100));
    assert_stored(&c, "c.txt", &b"c".repeat(100));
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, vec!["a.txt", "c.txt"]);
}

#[test]
fn download_budget_exhausted_fails_that_file_only() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("dlbudget");
    let src = tempfile::tempdir().unwrap();
    for n in ["a", "b", "c"] {
        write(src.path(), &format!("{n}.txt"), n.repeat(100).as_bytes());
    }
    write(src.path(), "big.bin", &big());
    plugin(src.path()).azurite(az, &c).set("source", "*").set("block_size", "64KiB").run().assert_ok();
    let proxy = FaultProxy::start(
        az,
        vec![
            Rule::new("b-500", op_on("GetBlob", "b.txt"), Times::Every, Fault::status(500, "InternalError")),
            // Every range of big.bin after the fourth is damaged: both attempts mismatch.
            Rule::new("big-flip", op_on("GetBlob", "big.bin"), Times::From(4), Fault::FlipResponseByte { at: 9 }),
        ],
    );
    let ws = tempfile::tempdir().unwrap();
    let out = via(&proxy, ws.path(), &c).set("action", "download").set("source", "*").set("target", "out").run();
    out.assert_code(1)
        .assert_contains("2 failed")
        .assert_contains("500 InternalError (injected by the fault proxy) after 3 attempts")
        .assert_contains("SHA-256 mismatch")
        .assert_contains("(twice; not written)");
    assert_eq!(proxy.fired("b-500"), 3, "{}", proxy.log());
    assert_eq!(tree(&ws.path().join("out")), vec!["a.txt", "c.txt"], "a failed file or a temporary file remains");
}

#[test]
fn a_block_that_never_lands_means_no_commit() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("nocommit");
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("flip", op("PutBlock"), Times::From(5), Fault::FlipRequestByte { at: 3 })],
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.bin", &big());
    let out = via(&proxy, dir.path(), &c).set("source", "big.bin").run();
    out.assert_code(1).assert_contains("400 Crc64Mismatch").assert_contains("after 3 attempts");
    assert!(proxy.fired("flip") >= 3, "{}", proxy.log());
    assert!(proxy.ops("PutBlockList").is_empty(), "committed despite a failed block:\n{}", proxy.log());
    assert!(list(az, &c).is_empty(), "a blob is visible");
}

// ---- resumable uploads and conditional writes ---------------------------------------

#[test]
fn a_killed_upload_resumes_sending_only_the_missing_blocks() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("resume");
    let data = bytes(32 * BLOCK, 73);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.bin", &data);
    // First run: 24 blocks land, the rest are held until the run is killed (SIGKILL: no
    // chance to clean up, as when a CI runner dies).
    let gate = Gate::new();
    let first =
        FaultProxy::start(az, vec![Rule::new("hold", op("PutBlock"), Times::From(25), Fault::Hold(gate.clone()))]);
    let child = spawn(&via(&first, dir.path(), &c).set("source", "big.bin"));
    let staged = first.wait_until(Duration::from_secs(60), |recs| {
        recs.iter().filter(|r| r.req.op() == "PutBlock" && r.upstream == Some(201)).count() == 24
            && recs.iter().any(|r| r.fault == Some("hold"))
    });
    signal(&child, libc::SIGKILL);
    let out = finish(child);
    assert!(staged, "24 blocks did not land:\n{}\n{}", first.log(), out.all());
    assert_eq!(out.code, 128 + libc::SIGKILL);
    assert!(list(az, &c).is_empty(), "a partial blob became visible");
    let first_bytes = first.bytes_forwarded("PutBlock");
    assert_eq!(first_bytes, 24 * BLOCK);

    // Second run: only the 8 missing blocks travel.
    let second = FaultProxy::start(az, vec![]);
    let out = via(&second, dir.path(), &c).set("source", "big.bin").set("manifest", "m.json").run();
    out.assert_ok().assert_contains("resumed: big.bin had 1.5 MiB already staged by an earlier run");
    let second_bytes = second.bytes_forwarded("PutBlock");
    assert_eq!(second.ops("PutBlock").len(), 8, "{}", second.log());
    assert_eq!(second_bytes, 8 * BLOCK, "the second run sent {second_bytes} bytes of blocks");
    assert!(second_bytes * 3 <= first_bytes, "second run sent {second_bytes}, first {first_bytes}");
    assert_stored(&c, "big.bin", &data);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["files"][0]["resumed_bytes"], 24 * BLOCK);
}

#[test]
fn overwrite_false_accepts_its_own_write_whose_answer_was_lost() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("landed");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "taken.txt", b"someone else's");
    plugin(dir.path()).azurite(az, &c).set("source", "taken.txt").run().assert_ok();
    write(dir.path(), "taken.txt", b"ours, different");
    write(dir.path(), "small.bin", &small());
    write(dir.path(), "big.bin", &big());
    let late = Fault::DelayResponse(Duration::from_millis(1600));
    let proxy = FaultProxy::start(
        az,
        vec![
            // The Put Blob lands, its 201 arrives after the timeout; the retry gets 409.
            Rule::new("late-put", op_on("PutBlob", "small.bin"), Times::Nth(1), late.clone()),
            // The commit lands, its answer is cut; the retry gets 409.
            Rule::new("cut-commit", op("PutBlockList"), Times::Nth(1), Fault::DropResponse { body_bytes: None }),
            // Someone else's blob: the 409s are real and must stay failures.
            Rule::new("late-taken", op_on("PutBlob", "taken.txt"), Times::Nth(1), late),
        ],
    );
    let out = via(&proxy, dir.path(), &c).set("source", "*").set("overwrite", "false").run();
    let log = proxy.log();
    out.assert_code(1).assert_contains("1 failed").assert_contains("✗ taken.txt → taken.txt: already exists");
    let statuses = |op: &str, blob: &str| -> Vec<Option<u16>> {
        proxy.ops(op).iter().filter(|r| r.req.blob() == Some(blob)).map(|r| r.upstream).collect()
    };
    assert_eq!(statuses("PutBlob", "small.bin"), vec![Some(201), Some(409)], "{log}");
    assert_eq!(statuses("PutBlockList", "big.bin"), vec![Some(201), Some(409)], "{log}");
    assert_eq!(statuses("PutBlob", "taken.txt"), vec![Some(409), Some(409)], "{log}");
    assert_stored(&c, "small.bin", &small());
    assert_stored(&c, "big.bin", &big());
    assert_eq!(fetch(az, &c, "taken.txt").0, b"someone else's");
}

// ---- nothing half-done ----------------------------------------------------------------

#[test]
fn sigterm_mid_download_leaves_no_file_and_no_temporary_file() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("sigterm");
    let data = bytes(32 * BLOCK, 74);
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "big.bin", &data);
    plugin(src.path()).azurite(az, &c).set("source", "big.bin").set("block_size", "64KiB").run().assert_ok();
    // Two ranges arrive, the rest hang: the download is deterministically mid-way.
    let proxy = FaultProxy::start(az, vec![Rule::new("hang", op("GetBlob"), Times::From(3), Fault::Hold(Gate::new()))]);
    let ws = tempfile::tempdir().unwrap();
    let out_dir = ws.path().join("out");
    let child = spawn(
        &via(&proxy, ws.path(), &c)
            .set("action", "download")
            .set("source", "big.bin")
            .set("target", "out")
            .set("timeout", "60s"),
    );
    let mid = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hang")));
    // Two ranges are on disk, in an unnamed file (or a named `.azpart-` one where the
    // filesystem has no O_TMPFILE): never under the final name.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!out_dir.join("big.bin").exists(), "a partial download is visible under its final name");
    signal(&child, libc::SIGTERM);
    let out = finish(child);
    assert!(mid, "the download was not caught mid-way:\n{}\n{}", proxy.log(), out.all());
    out.assert_code(143).assert_contains("interrupted").assert_contains("1 partial download(s) discarded");
    assert!(tree(&out_dir).is_empty(), "left behind: {:?}", tree(&out_dir));
}

/// Whether this filesystem gives unnamed temporary files (`O_TMPFILE`).
fn tmpfile_supported(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).open(dir).is_ok()
}

#[test]
fn sigkill_mid_download_leaves_nothing_at_all() {
    if !crate::support::azurite_present() {
        return;
    }
    // SIGKILL runs no handler: only an unnamed temporary file guarantees an empty target.
    let az = Azurite::shared();
    let c = container("killdl");
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "big.bin", &big());
    plugin(src.path()).azurite(az, &c).set("source", "big.bin").set("block_size", "64KiB").run().assert_ok();
    let proxy = FaultProxy::start(az, vec![Rule::new("hang", op("GetBlob"), Times::From(3), Fault::Hold(Gate::new()))]);
    let ws = tempfile::tempdir().unwrap();
    let what = format!(
        "the filesystem under {} has no O_TMPFILE (the named fallback is covered by the SIGTERM test)",
        ws.path().display()
    );
    if !prerequisite(tmpfile_supported(ws.path()), &what) {
        return;
    }
    let out_dir = ws.path().join("out");
    let child =
        spawn(&via(&proxy, ws.path(), &c).set("action", "download").set("source", "big.bin").set("target", "out"));
    let mid =
        proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().filter(|r| r.req.op() == "GetBlob").count() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGKILL);
    let out = finish(child);
    assert!(mid, "the download was not caught mid-way:\n{}\n{}", proxy.log(), out.all());
    assert_eq!(out.code, 128 + libc::SIGKILL);
    assert!(out_dir.is_dir(), "the target was never created");
    assert!(tree(&out_dir).is_empty(), "left behind: {:?}", tree(&out_dir));
}

// ---- bad input --------------------------------------------------------------------------

#[test]
fn hostile_names_in_a_listing_are_refused_and_never_fetched() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("hostilelist");
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "safe/ok.txt", b"fine");
    plugin(src.path()).azurite(az, &c).set("source", "safe/ok.txt").run().assert_ok();
    // Names Azurite would not store, injected into its listing as a hostile server would.
    let long_component = "x".repeat(300);
    let long_path = vec!["d".repeat(200); 25].join("/") + "/f";
    let hostile: Vec<(String, &str)> = vec![
        ("<Name>../escape.txt</Name>".into(), "has a `..` component"),
        ("<Name>sub/../../up.txt</Name>".into(), "has a `..` component"),
        ("<Name>/abs.txt</Name>".into(), "is an absolute path"),
        ("<Name>dir\\back.txt</Name>".into(), "contains a backslash"),
        ("<Name Encoded=\"true\">nul%00.txt</Name>".into(), "contains a NUL byte"),
        ("<Name Encoded=\"true\">bell%07.txt</Name>".into(), "contains a control character"),
        ("<Name>a//b.txt</Name>".into(), "empty path component"),
        ("<Name>sub/./dot.txt</Name>".into(), "has a `.` component"),
        (format!("<Name>{long_component}</Name>"), "longer than 255 bytes"),
        (format!("<Name>{long_path}</Name>"), "longer than 4000 bytes"),
    ];
    let sha = sha256_hex(b"evil");
    let inject: String = hostile
        .iter()
        .map(|(n, _)| {
            format!("<Blob>{n}<Properties><Content-Length>4</Content-Length></Properties><Metadata><sha256>{sha}</sha256></Metadata></Blob>")
        })
        .collect();
    let rewrite = move |body: &[u8]| -> Vec<u8> {
        String::from_utf8_lossy(body).replacen("</Blobs>", &format!("{inject}</Blobs>"), 1).into_bytes()
    };
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("inject", op("ListBlobs"), Times::Every, Fault::Rewrite(std::sync::Arc::new(rewrite)))],
    );
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let out = via(&proxy, &ws, &c).set("action", "download").set("source", "**").set("target", "out").run();
    assert!(proxy.fired("inject") >= 1);
    out.assert_code(1).assert_contains(&format!("{} failed", hostile.len()));
    for (_, why) in &hostile {
        out.assert_contains(why);
    }
    let fetched: Vec<String> = proxy.ops("GetBlob").iter().filter_map(|r| r.req.blob().map(str::to_string)).collect();
    assert_eq!(fetched, vec!["safe/ok.txt"], "a hostile name was requested");
    assert_eq!(tree(root.path()), vec!["ws/out/safe/ok.txt"]);
}

#[test]
fn unreadable_files_fail_per_file_and_the_rest_go_on() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let az = Azurite::shared();
    let c = container("unreadable");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(dir.path(), "ok.txt", b"readable");
    for (name, len) in [("secret.txt", 100), ("secret-big.bin", 3 * BLOCK)] {
        let p = write(dir.path(), name, &bytes(len, 75));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = plugin(dir.path()).azurite(az, &c).set("source", "*").set("block_size", "64KiB").run_unprivileged();
    out.assert_code(1)
        .assert_contains("2 failed")
        .assert_contains("✗ secret.txt → secret.txt: cannot read: Permission denied")
        .assert_contains("✗ secret-big.bin → secret-big.bin: cannot read: Permission denied");
    assert_eq!(list(az, &c), vec!["ok.txt"]);
}

/// Holds every Put Block of a 3 MiB file while the file changes size: the reader
/// cannot be past 1 MiB (`max_memory`) when the change happens, so it must see it.
fn change_size_mid_upload(tag: &str, change: impl FnOnce(&Path)) -> (FaultProxy, Out) {
    let az = Azurite::shared();
    let c = container(tag);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "growing.bin", &bytes(48 * BLOCK, 76));
    let gate = Gate::new();
    let proxy = FaultProxy::start(az, vec![Rule::new("hold", op("PutBlock"), Times::Every, Fault::Hold(gate.clone()))]);
    let child = spawn(
        &via(&proxy, dir.path(), &c)
            .set("source", "growing.bin")
            .set("max_memory", "1MiB")
            .set("concurrency", "2")
            .set("timeout", "30s"),
    );
    let held = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hold")));
    change(&path);
    gate.open();
    let out = finish(child);
    assert!(held, "no block was held:\n{}", out.all());
    out.assert_code(1).assert_contains("changed size while being uploaded").assert_contains("not committed");
    assert!(proxy.ops("PutBlockList").is_empty(), "committed: {}", proxy.log());
    assert!(list(az, &c).is_empty());
    (proxy, out)
}

#[test]
fn a_file_that_grows_while_uploading_is_not_committed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    change_size_mid_upload("grows", |p| {
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(b"more").unwrap();
    })
    .1
    .assert_contains("grew past the planned 3145728 bytes");
}

#[test]
fn a_file_that_shrinks_while_uploading_is_not_committed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    change_size_mid_upload("shrinks", |p| {
        std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(24 * BLOCK as u64).unwrap();
    })
    .1
    .assert_contains("file ended before");
}

#[test]
fn sigterm_mid_upload_commits_nothing() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("sigtermup");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.bin", &big());
    let proxy =
        FaultProxy::start(az, vec![Rule::new("hang", op("PutBlock"), Times::From(4), Fault::Hold(Gate::new()))]);
    let child = spawn(&via(&proxy, dir.path(), &c).set("source", "big.bin").set("timeout", "60s"));
    let mid = proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().any(|r| r.fault == Some("hang")));
    signal(&child, libc::SIGTERM);
    let out = finish(child);
    assert!(mid, "the upload was not caught mid-way:\n{}\n{}", proxy.log(), out.all());
    out.assert_code(143).assert_contains("interrupted");
    assert!(proxy.ops("PutBlockList").is_empty(), "{}", proxy.log());
    assert!(list(az, &c).is_empty(), "a partial blob became visible");
}

/// SIGTERM stops the work. Twenty chunked files upload four at a time;
/// every Put Block List is held at the proxy, so four commits are waiting when the signal
/// comes. The gate then opens (the held commits are answered): no further commit may
/// reach the proxy after the signal, the run exits 143 within 5 s, and only the blobs
/// whose commit was sent before the signal can exist.
#[test]
fn sigterm_mid_upload_of_many_files_sends_no_commit_after_the_signal_and_exits_within_5s() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("sigtermmany");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(dir.path(), &format!("f{i:02}.bin"), &bytes(4 * BLOCK, 200 + i));
    }
    let gate = Gate::new();
    let proxy =
        FaultProxy::start(az, vec![Rule::new("hold", op("PutBlockList"), Times::Every, Fault::Hold(gate.clone()))]);
    let child =
        spawn(&via(&proxy, dir.path(), &c).set("source", "*.bin").set("concurrency", "4").set("timeout", "60s"));
    // Four files in flight, four commits held: nothing else moves until the gate opens.
    let held =
        proxy.wait_until(Duration::from_secs(30), |recs| recs.iter().filter(|r| r.fault == Some("hold")).count() == 4);
    let signalled = std::time::Instant::now();
    signal(&child, libc::SIGTERM);
    gate.open();
    let mut child = child;
    let deadline = signalled + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited_in_time = child.try_wait().unwrap().is_some();
    if !exited_in_time {
        signal(&child, libc::SIGKILL);
    }
    let out = finish(child);
    assert!(held, "no commit was held:\n{}\n{}", proxy.log(), out.all());
    assert!(exited_in_time, "still running 5 s after SIGTERM:\n{}", out.all());
    out.assert_code(143).assert_contains("interrupted");
    let late: Vec<String> = proxy
        .ops("PutBlockList")
        .iter()
        .filter(|r| r.at > signalled)
        .map(|r| r.req.blob().unwrap_or("?").to_string())
        .collect();
    assert!(late.is_empty(), "commits sent after the signal: {late:?}\n{}", proxy.log());
    let sent_before: Vec<String> =
        proxy.ops("PutBlockList").iter().map(|r| r.req.blob().unwrap_or("?").to_string()).collect();
    for name in list(az, &c) {
        assert!(sent_before.contains(&name), "`{name}` was committed without a commit before the signal");
    }
}

/// A fake 201 for Put Blob: the request id is forged and no checksum is echoed.
const FORGED_PUT_BLOB: &str =
    "HTTP/1.1 201 Created\r\nx-ms-request-id: forged-0001\r\nETag: \"0x8D0FORGED\"\r\nContent-Length: 0\r\n\r\n";
/// A fake 201 for Put Block echoing a CRC-64 that is not the block's.
const FORGED_PUT_BLOCK: &str = "HTTP/1.1 201 Created\r\nx-ms-request-id: forged-0002\r\nx-ms-content-crc64: AAAAAAAAAAA=\r\nContent-Length: 0\r\n\r\n";

/// A write whose answer does not echo the checksum of the body sent
/// (Azure computes `x-ms-content-crc64` / `Content-MD5` from what it received) did not
/// store it: a forged 201 is a failure, never counted as stored (transferred, exit 0, with
/// nothing stored), and nothing is committed.
#[test]
fn a_forged_201_to_put_blob_or_put_block_is_not_counted_as_stored() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("forged201");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "small.bin", &small());
    write(dir.path(), "big.bin", &big());
    let proxy = FaultProxy::start(
        az,
        vec![
            Rule::new("forged-put-blob", op("PutBlob"), Times::Every, Fault::Raw(FORGED_PUT_BLOB)),
            Rule::new("forged-put-block", op("PutBlock"), Times::Every, Fault::Raw(FORGED_PUT_BLOCK)),
        ],
    );
    let out = via(&proxy, dir.path(), &c).set("source", "*.bin").run();
    assert!(proxy.fired("forged-put-blob") > 0 && proxy.fired("forged-put-block") > 0, "{}", proxy.log());
    out.assert_code(1)
        .assert_contains("2 failed")
        .assert_contains("neither x-ms-content-crc64 nor Content-MD5")
        .assert_contains("x-ms-content-crc64 `AAAAAAAAAAA=` is not the CRC-64 of the body sent");
    assert!(proxy.ops("PutBlockList").is_empty(), "a block list was committed:\n{}", proxy.log());
    assert!(list(az, &c).is_empty(), "something is stored: {:?}", list(az, &c));
}

/// A signal ends the run even while the run is
/// blocked in a system call. The federated token file is a FIFO: the settings check reads
/// one token from it, then the run opens it again and blocks reading (the test holds the
/// writing end open and sends nothing). SIGTERM must still end the process, by exit 143
/// within 5 s: a run blocking the thread that watches for signals would swallow SIGTERM
/// (or, by the luck of the poll order, be killed before any handler ran).
#[test]
fn sigterm_while_the_run_is_blocked_in_a_system_call_exits_143_within_5s() {
    use std::io::{BufRead, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    let fifo = dir.path().join("token");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ci = crate::ci_encoding::jwt(serde_json::json!({
        "iss": "https://ci.example", "sub": "repo:o/r", "aud": "api://AzureADTokenExchange",
        "iat": now, "exp": now + 600,
    }));
    let mut child = spawn(
        &plugin(dir.path())
            .set("endpoint", "https://127.0.0.1:9/devstoreaccount1")
            .set("container", "artifacts")
            .set("source", "a.txt")
            .set("auth", "federated")
            .set("tenant_id", "00000000-0000-0000-0000-000000000000")
            .set("client_id", "11111111-1111-1111-1111-111111111111")
            .set("authority_host", "http://127.0.0.1:9")
            .set("federated_token_file", fifo.to_str().unwrap())
            .set("log_level", "debug"),
    );
    // The log, line by line, as it comes.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(l);
        }
    });
    // The settings check reads one token (this open waits for the plugin to open the FIFO).
    let (f, t) = (fifo.clone(), ci.clone());
    std::thread::spawn(move || {
        let _ = std::fs::OpenOptions::new().write(true).open(&f).and_then(|mut w| w.write_all(t.as_bytes()));
    });
    // The settings are checked once `configuration` is logged; then the run opens the FIFO
    // again: a non-blocking open for writing succeeds once that reader waits. Held open
    // (and nothing written), so the run keeps waiting in its read.
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("configuration") => {
                log.push(l);
                break;
            }
            Ok(l) => log.push(l),
            Err(_) => {}
        }
    }
    let configured = log.iter().any(|l| l.contains("configuration"));
    let held = loop {
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo) {
            Ok(w) => break Some(w),
            Err(_) if Instant::now() < deadline && child.try_wait().unwrap().is_none() => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => break None,
        }
    };
    let early = child.try_wait().unwrap();
    if early.is_some() {
        std::thread::sleep(Duration::from_millis(100));
        log.extend(lines.try_iter());
    }
    assert!(early.is_none(), "the run ended before the signal ({early:?}):\n{}", log.join("\n"));
    let signalled = Instant::now();
    signal(&child, libc::SIGTERM);
    while child.try_wait().unwrap().is_none() && signalled.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.try_wait().unwrap();
    if status.is_none() {
        signal(&child, libc::SIGKILL);
    }
    let _ = child.wait();
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    log.extend(lines.try_iter());
    let log = log.join("\n");
    assert!(configured, "the settings were not checked:\n{log}");
    assert!(status.is_some(), "still running 5 s after SIGTERM (the signal was swallowed):\n{log}");
    assert_eq!(status.unwrap().code(), Some(143), "not an exit 143 (killed before a handler ran?):\n{log}");
    assert!(log.contains("interrupted (SIGTERM)"), "{log}");
    assert!(!log.contains(&ci), "the CI token was printed");
}
