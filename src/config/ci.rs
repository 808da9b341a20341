//! CI provenance and trust: the run that produced the artifacts (repository, commit,
//! build, link) and whether it runs code from a pull request ([`Trust`]), read from the
//! variables Woodpecker, Drone, GitLab CI, GitHub/Forgejo Actions, Buildkite and Harness
//! set, for the provenance metadata, the start line and the User-Agent label.

use super::RawSettings;
use crate::settings::{Tier, TrustMode};

/// The trust of the run (docs/trust.md): its tier and why, for the start line, the
/// provenance metadata (`ci_trust`) and the cache tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub tier: Tier,
    /// Why, as the start line says it: the CI variable that decided, or the setting.
    pub why: String,
    /// The pull-request event (`VAR=value`) that `trust: trusted` overrode: warned about.
    pub forced_over: Option<String>,
}

/// A pull-request event name (Woodpecker `pull_request`, `pull_request_closed`,
/// `pull_request_metadata`; Drone and Harness `pull_request`; GitHub `pull_request`,
/// `pull_request_target`, `pull_request_review`, `pull_request_review_comment`; Forgejo's
/// `pull_request_*` variants).
fn pull_request_name(event: &str) -> bool {
    event.starts_with("pull_request")
}

/// Which values of an event variable are pull-request events.
type IsPullRequest = fn(&str) -> bool;

/// Each CI's event variable, and which of its values are pull-request events.
const EVENTS: &[(&str, IsPullRequest)] = &[
    // Woodpecker.
    ("CI_PIPELINE_EVENT", pull_request_name),
    // Drone, and Harness CI (which sets Drone's variables).
    ("DRONE_BUILD_EVENT", pull_request_name),
    // GitHub and Forgejo Actions. A merge queue runs code not yet on its base branch,
    // which the queue can still eject: it writes no cache a trusted run reads.
    ("GITHUB_EVENT_NAME", |e| pull_request_name(e) || e == "merge_group"),
    // GitLab CI.
    ("CI_PIPELINE_SOURCE", |e| matches!(e, "merge_request_event" | "external_pull_request_event")),
    // Buildkite: the pull request's number, `false` for a branch build.
    ("BUILDKITE_PULL_REQUEST", |e| e != "false"),
];

/// `VAR=value` for messages: the value as printable ASCII, at most 64 characters.
fn shown(var: &str, value: &str) -> String {
    let v: String = value.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    format!("{var}={v}")
}

/// The trust of the run: `mode` when forced, else `untrusted` when any CI variable names a
/// pull-request event, `trusted` otherwise.
pub fn trust(raw: &RawSettings, mode: TrustMode) -> Trust {
    let events: Vec<(&str, &str)> =
        EVENTS.iter().filter_map(|(var, _)| raw.var(var).map(|v| (*var, v.trim()))).collect();
    let pull_request = EVENTS.iter().find_map(|(var, is_pr)| {
        let v = raw.var(var)?.trim().to_ascii_lowercase();
        is_pr(&v).then(|| shown(var, &v))
    });
    let (tier, why, forced_over) = match (mode, pull_request) {
        (TrustMode::Auto, Some(event)) => (Tier::Untrusted, format!("pull-request event {event}"), None),
        (TrustMode::Auto, None) => {
            let why = match events.first() {
                Some((var, v)) => format!("{}, not a pull-request event", shown(var, v)),
                None => "no CI event variable: not a pull request".to_string(),
            };
            (Tier::Trusted, why, None)
        }
        (TrustMode::Untrusted, _) => (Tier::Untrusted, "`trust: untrusted`".to_string(), None),
        (TrustMode::Trusted, Some(event)) => {
            (Tier::Trusted, format!("`trust: trusted`, forced over the pull-request event {event}"), Some(event))
        }
        (TrustMode::Trusted, None) => (Tier::Trusted, "`trust: trusted`".to_string(), None),
    };
    Trust { tier, why, forced_over }
}

/// The run's event as `VAR=value` (the first CI event variable set), for the writer of
/// a cache archive.
pub fn event(raw: &RawSettings) -> Option<String> {
    EVENTS.iter().find_map(|(var, _)| raw.var(var).map(|v| shown(var, v.trim())))
}

/// CI variables naming the run, for provenance metadata and the User-Agent.
pub fn provenance(raw: &RawSettings) -> Vec<(String, String)> {
    let pick = |names: &[&str]| names.iter().find_map(|n| raw.var(n)).map(str::to_string);
    let github_link = match (raw.var("GITHUB_SERVER_URL"), raw.var("GITHUB_REPOSITORY"), raw.var("GITHUB_RUN_ID")) {
        (Some(s), Some(r), Some(id)) => Some(format!("{s}/{r}/actions/runs/{id}")),
        _ => None,
    };
    let mut out = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push((k.to_string(), v));
        }
    };
    // Buildkite: the pipeline (`org/pipeline` slugs), not BUILDKITE_REPO (a clone URL).
    let buildkite = raw.var("BUILDKITE_PIPELINE_SLUG").map(|p| match raw.var("BUILDKITE_ORGANIZATION_SLUG") {
        Some(o) => format!("{o}/{p}"),
        None => p.to_string(),
    });
    push("ci_repo", pick(&["CI_REPO", "DRONE_REPO", "GITHUB_REPOSITORY", "CI_PROJECT_PATH"]).or(buildkite));
    push("ci_commit", pick(&["CI_COMMIT_SHA", "DRONE_COMMIT_SHA", "GITHUB_SHA", "BUILDKITE_COMMIT"]));
    push(
        "ci_build",
        pick(&[
            "CI_PIPELINE_NUMBER",
            "CI_PIPELINE_ID",
            "DRONE_BUILD_NUMBER",
            "GITHUB_RUN_ID",
            "BUILDKITE_BUILD_NUMBER",
        ]),
    );
    push("ci_link", pick(&["CI_PIPELINE_URL", "DRONE_BUILD_LINK", "BUILDKITE_BUILD_URL"]).or(github_link));
    out
}

pub(super) fn ci_label(raw: &RawSettings) -> Option<String> {
    let ci = if raw.var("CI").map(|c| c == "woodpecker").unwrap_or(false) {
        "woodpecker"
    } else if raw.var("DRONE").is_some() {
        "drone"
    } else if raw.var("GITLAB_CI").is_some() {
        "gitlab"
    } else if raw.var("GITHUB_ACTIONS").is_some() {
        "github-actions"
    } else if raw.var("BUILDKITE").is_some() {
        "buildkite"
    } else if raw.var("HARNESS_BUILD_ID").is_some() {
        "harness"
    } else {
        return None;
    };
    let prov = provenance(raw);
    let get = |k: &str| prov.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut label = ci.to_string();
    if let Some(repo) = get("ci_repo") {
        label.push_str(&format!("; {repo}"));
        if let Some(b) = get("ci_build") {
            label.push_str(&format!("#{b}"));
        }
    }
    Some(label.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::raw;

    #[test]
    fn provenance_from_woodpecker_and_github() {
        let r = raw(&[("CI_REPO", "org/app"), ("CI_COMMIT_SHA", "abc"), ("CI_PIPELINE_NUMBER", "7")]);
        let p = provenance(&r);
        assert_eq!(p[0], ("ci_repo".into(), "org/app".into()));
        assert_eq!(p[2], ("ci_build".into(), "7".into()));
        let r = raw(&[
            ("GITHUB_REPOSITORY", "org/app"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_RUN_ID", "99"),
        ]);
        let p = provenance(&r);
        assert!(p.contains(&("ci_link".into(), "https://github.com/org/app/actions/runs/99".into())));
    }

    fn auto(pairs: &[(&str, &str)]) -> Trust {
        trust(&raw(pairs), TrustMode::Auto)
    }

    #[test]
    fn every_engines_pull_request_event_is_untrusted() {
        for (var, event) in [
            ("CI_PIPELINE_EVENT", "pull_request"),
            ("CI_PIPELINE_EVENT", "pull_request_closed"),
            ("CI_PIPELINE_EVENT", "pull_request_metadata"),
            ("DRONE_BUILD_EVENT", "pull_request"),
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_EVENT_NAME", "pull_request_target"),
            ("GITHUB_EVENT_NAME", "pull_request_review"),
            ("GITHUB_EVENT_NAME", "merge_group"),
            ("CI_PIPELINE_SOURCE", "merge_request_event"),
            ("CI_PIPELINE_SOURCE", "external_pull_request_event"),
            ("BUILDKITE_PULL_REQUEST", "42"),
        ] {
            let t = auto(&[(var, event)]);
            assert_eq!(t.tier, Tier::Untrusted, "{var}={event}");
            assert_eq!(t.why, format!("pull-request event {var}={event}"));
        }
    }

    #[test]
    fn other_events_and_no_ci_are_trusted() {
        for (var, event) in [
            ("CI_PIPELINE_EVENT", "push"),
            ("CI_PIPELINE_EVENT", "tag"),
            ("DRONE_BUILD_EVENT", "cron"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_EVENT_NAME", "workflow_dispatch"),
            ("CI_PIPELINE_SOURCE", "push"),
            ("CI_PIPELINE_SOURCE", "schedule"),
            ("BUILDKITE_PULL_REQUEST", "false"),
        ] {
            let t = auto(&[(var, event)]);
            assert_eq!(t.tier, Tier::Trusted, "{var}={event}");
            assert!(t.why.starts_with(&format!("{var}={event}")), "{}", t.why);
        }
        assert_eq!(auto(&[]).tier, Tier::Trusted);
        // Any engine's variable naming a pull request wins over another's push.
        assert_eq!(auto(&[("DRONE_BUILD_EVENT", "push"), ("GITHUB_EVENT_NAME", "pull_request")]).tier, Tier::Untrusted);
    }

    #[test]
    fn forcing_trusted_on_a_pull_request_names_the_event() {
        let r = raw(&[("CI_PIPELINE_EVENT", "pull_request")]);
        let t = trust(&r, TrustMode::Trusted);
        assert_eq!(t.tier, Tier::Trusted);
        assert_eq!(t.forced_over.as_deref(), Some("CI_PIPELINE_EVENT=pull_request"));
        assert_eq!(trust(&raw(&[("CI_PIPELINE_EVENT", "push")]), TrustMode::Trusted).forced_over, None);
        let t = trust(&raw(&[("CI_PIPELINE_EVENT", "push")]), TrustMode::Untrusted);
        assert_eq!((t.tier, t.why.as_str()), (Tier::Untrusted, "`trust: untrusted`"));
    }

    #[test]
    fn an_event_value_is_shown_printable_and_short() {
        let t = auto(&[("CI_PIPELINE_EVENT", "pull_request\x1b[31m\n")]);
        assert_eq!(t.tier, Tier::Untrusted);
        assert!(t.why.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{}", t.why);
        let long = "x".repeat(500);
        assert!(auto(&[("CI_PIPELINE_EVENT", &long)]).why.len() < 120);
    }

    #[test]
    fn buildkite_names_the_pipeline_not_the_clone_url() {
        let r = raw(&[
            ("BUILDKITE_REPO", "git@github.com:org/app.git"),
            ("BUILDKITE_ORGANIZATION_SLUG", "acme"),
            ("BUILDKITE_PIPELINE_SLUG", "app-release"),
            ("BUILDKITE_BUILD_NUMBER", "12"),
        ]);
        assert_eq!(provenance(&r)[0], ("ci_repo".into(), "acme/app-release".into()));
        let r = raw(&[("BUILDKITE_PIPELINE_SLUG", "app-release")]);
        assert_eq!(provenance(&r)[0], ("ci_repo".into(), "app-release".into()));
    }
}
