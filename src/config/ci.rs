//! CI provenance: the run that produced the artifacts (repository, commit, build, link),
//! read from the variables Woodpecker, Drone, GitLab CI, GitHub Actions, Buildkite and
//! Harness set, for the provenance metadata and the User-Agent label.

use super::RawSettings;

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
