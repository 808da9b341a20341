//! The benchmark harness keeps its fairness promises (scripts/bench --self-test): every
//! tool runs with a stdin that stays open for its whole run — azcopy busy-loops on a
//! closed one, which once made its CPU look six times worse than it is — and the tool
//! order rotates per repetition. The self-test carries its own negative control (the
//! same probe with a closed stdin must report EOF), so it can fail. It also checks the
//! scale scenarios' promises: their data recipe is deterministic and their download check
//! catches a changed byte, a renamed and a missing file; time to first request is read
//! per run (after each mark), and, when the release sink is built from the current source,
//! the live sink re-arms its first-request report on a mark, pages List Blobs right and,
//! as Azure does, stores the MD5 of a one-request blob (which the peers check on download).

use std::process::Command;

use crate::support::repo_root;

#[test]
fn bench_harness_holds_every_tools_stdin_open_and_rotates_the_order() {
    if !crate::support::prerequisite(
        std::path::Path::new("/usr/bin/time").exists(),
        "GNU time (/usr/bin/time, the benchmark's meter) is missing: run `scripts/ensure-tools image`",
    ) {
        return;
    }
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/bench"))
        .arg("--self-test")
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "self-test failed:\n{text}");
    assert!(text.contains("under timed(): stdin open; control with a closed stdin: eof"), "{text}");
    assert!(text.contains("scale data: deterministic; its digest catches a changed byte"), "{text}");
    assert!(text.contains("first request per mark: checked on a log text"), "{text}");
    assert!(text.contains("self-test: ok"), "{text}");
}
