//! The trust of a run (docs/trust.md) through the real binary against Azurite: every
//! engine's pull-request event makes the run `untrusted`, the start line says so and why,
//! uploads record it as metadata `ci_trust`, and forcing `trusted` on a pull request warns.

use crate::support::*;

/// Uploads one file with the CI variables `env` (and settings `set`); returns the run and
/// the uploaded blob's metadata.
fn upload_with(tag: &str, env: &[(&str, &str)], set: &[(&str, &str)]) -> (Out, serde_json::Value) {
    let az = Azurite::shared();
    let c = container(tag);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let mut p = plugin(dir.path()).azurite(az, &c).set("source", "a.txt");
    for (k, v) in env {
        p = p.env(k, *v);
    }
    for (k, v) in set {
        p = p.set(k, *v);
    }
    let out = p.run();
    out.assert_ok();
    let (_, props) = fetch(az, &c, "a.txt");
    (out, props["metadata"].clone())
}

/// Azurite and the test Python (which reads the metadata back) are installed.
fn ready() -> bool {
    crate::support::azurite_present() && crate::support::python_present()
}

#[test]
fn every_engines_pull_request_event_makes_the_run_untrusted() {
    if !ready() {
        return;
    }
    for (engine, env, event) in [
        (
            "woodpecker",
            &[("CI", "woodpecker"), ("CI_PIPELINE_EVENT", "pull_request")][..],
            "CI_PIPELINE_EVENT=pull_request",
        ),
        (
            "woodpecker-closed",
            &[("CI", "woodpecker"), ("CI_PIPELINE_EVENT", "pull_request_closed")][..],
            "CI_PIPELINE_EVENT=pull_request_closed",
        ),
        ("drone", &[("DRONE", "true"), ("DRONE_BUILD_EVENT", "pull_request")][..], "DRONE_BUILD_EVENT=pull_request"),
        (
            "github",
            &[("GITHUB_ACTIONS", "true"), ("GITHUB_EVENT_NAME", "pull_request_target")][..],
            "GITHUB_EVENT_NAME=pull_request_target",
        ),
        (
            "gitlab",
            &[("GITLAB_CI", "true"), ("CI_PIPELINE_SOURCE", "merge_request_event")][..],
            "CI_PIPELINE_SOURCE=merge_request_event",
        ),
        ("buildkite", &[("BUILDKITE", "true"), ("BUILDKITE_PULL_REQUEST", "17")][..], "BUILDKITE_PULL_REQUEST=17"),
        (
            "harness",
            &[("HARNESS_BUILD_ID", "5"), ("DRONE_BUILD_EVENT", "pull_request")][..],
            "DRONE_BUILD_EVENT=pull_request",
        ),
    ] {
        let (out, meta) = upload_with(&format!("trust-{engine}"), env, &[]);
        out.assert_contains(&format!("trust: untrusted (pull-request event {event})"));
        assert_eq!(meta["ci_trust"], "untrusted", "{engine}: {meta}");
    }
}

#[test]
fn a_push_is_trusted_and_says_which_variable_decided() {
    if !ready() {
        return;
    }
    let (out, meta) = upload_with("trust-push", &[("CI", "woodpecker"), ("CI_PIPELINE_EVENT", "push")], &[]);
    out.assert_contains("trust: trusted (CI_PIPELINE_EVENT=push, not a pull-request event)");
    assert_eq!(meta["ci_trust"], "trusted");
    let (out, _) = upload_with("trust-buildkite-branch", &[("BUILDKITE_PULL_REQUEST", "false")], &[]);
    out.assert_contains("trust: trusted (BUILDKITE_PULL_REQUEST=false");
}

#[test]
fn forcing_trusted_on_a_pull_request_warns_naming_the_event() {
    if !ready() {
        return;
    }
    let (out, meta) = upload_with("trust-forced", &[("GITHUB_EVENT_NAME", "pull_request")], &[("trust", "trusted")]);
    out.assert_contains(
        "trust: trusted (`trust: trusted`, forced over the pull-request event GITHUB_EVENT_NAME=pull_request)",
    );
    out.assert_contains("WARN").assert_contains("is forced on a pull-request event (GITHUB_EVENT_NAME=pull_request)");
    assert_eq!(meta["ci_trust"], "trusted");
    // Forcing it on a push is no news: no warning.
    let (out, _) = upload_with("trust-forced-push", &[("DRONE_BUILD_EVENT", "push")], &[("trust", "trusted")]);
    out.assert_lacks("is forced on a pull-request event");
}

#[test]
fn trust_untrusted_is_honoured_on_a_push() {
    if !ready() {
        return;
    }
    let (out, meta) = upload_with("trust-down", &[("CI_PIPELINE_EVENT", "push")], &[("trust", "untrusted")]);
    out.assert_contains("trust: untrusted (`trust: untrusted`)");
    assert_eq!(meta["ci_trust"], "untrusted");
}

#[test]
fn a_bad_trust_value_or_a_user_ci_trust_metadata_is_exit_2() {
    if !crate::support::azurite_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let az = Azurite::shared();
    let c = container("trust-bad");
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .set("trust", "yes")
        .run()
        .assert_code(2)
        .assert_contains("`yes` is not one of: auto, trusted, untrusted");
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .set("metadata", r#"{"ci_trust":"trusted"}"#)
        .env("CI_PIPELINE_EVENT", "pull_request")
        .run()
        .assert_code(2)
        .assert_contains("`ci_trust` is reserved");
}
