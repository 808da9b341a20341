//! The generated documents (`plugin.yaml`, `docs/settings.md`, `docs.md`) match the
//! settings table in the code, and `plugin.yaml` means what the table says when read by an
//! independent YAML parser (PyYAML, as a plugin index would read it).
//!
//! Regenerate after changing `src/settings.rs`: `UPDATE_DOCS=1 cargo test --test it docs`.
//! The generator is `docgen` below: test code, not part of the shipped library.

pub(crate) mod docgen;

use docgen::{DOCUMENTS, REGENERATE};
use plugin_azure_storage::settings::{Kind, SETTINGS};
use std::process::Command;

use crate::support::{repo_root, tool};

#[test]
fn docs_generated_files_match_the_settings_table() {
    let update = std::env::var_os("UPDATE_DOCS").is_some_and(|v| v != "0");
    let mut stale = Vec::new();
    for (path, render) in DOCUMENTS {
        let want = render();
        let file = repo_root().join(path);
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        if have == want {
            continue;
        }
        if update {
            std::fs::write(&file, &want).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
            eprintln!("docs: rewrote {path}");
        } else {
            let line = have.lines().zip(want.lines()).position(|(a, b)| a != b).map_or_else(
                || format!("length {} vs {} lines", have.lines().count(), want.lines().count()),
                |i| format!("first difference at line {}", i + 1),
            );
            stale.push(format!("{path} ({line})"));
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with src/settings.rs: {}. Regenerate with `{REGENERATE}` and commit.",
        stale.join(", ")
    );
}

/// Parses a YAML document (or a Markdown file's front matter) with PyYAML into JSON.
fn parse_yaml(path: &str, front_matter: bool) -> serde_json::Value {
    let py = tool(".cache/venv/bin/python", "PYBLOB_PYTHON", "python");
    let script = r#"
import json, sys, yaml
text = open(sys.argv[1], encoding="utf-8").read()
if sys.argv[2] == "front":
    assert text.startswith("---\n"), "no front matter"
    text = text.split("---\n", 2)[1]
print(json.dumps(yaml.safe_load(text)))
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .arg(repo_root().join(path))
        .arg(if front_matter { "front" } else { "doc" })
        .output()
        .expect("run python");
    assert!(out.status.success(), "PyYAML cannot read {path}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn docs_plugin_yaml_reads_back_as_the_settings_table() {
    if !crate::support::python_present() {
        return;
    }
    let y = parse_yaml("plugin.yaml", false);
    assert_eq!(y["title"], docgen::TITLE);
    assert_eq!(y["image"], format!("https://{}", docgen::IMAGE));
    assert!(y["example"].as_str().unwrap().contains(&format!("image: {}@sha256:", docgen::IMAGE)));
    let props = y["properties"].as_object().expect("properties map");
    let names: Vec<&str> = props.keys().map(String::as_str).collect();
    let want: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    let (mut a, mut b) = (names.clone(), want.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "plugin.yaml properties differ from SETTINGS");
    for st in SETTINGS {
        let p = &props[st.name];
        let d = p["description"].as_str().unwrap();
        assert!(d.starts_with(st.help), "{}", st.name);
        assert_eq!(p["secret"], st.secret, "{}", st.name);
        assert_eq!(p["required"], st.required, "{}", st.name);
        assert_eq!(p["type"], docgen::index_type(st.kind), "{}", st.name);
        // A default reads back as the same value, typed; none reads back as the type's empty value.
        let want = match (st.default, st.kind) {
            (Some(d), Kind::Bool) => serde_json::json!(d == "true"),
            (Some(d), Kind::Integer) => serde_json::json!(d.parse::<i64>().unwrap()),
            (Some(d), _) => serde_json::json!(d),
            (None, Kind::List) => serde_json::json!([]),
            (None, Kind::Map) => serde_json::json!({}),
            (None, Kind::Bool) => serde_json::json!(false),
            (None, _) => serde_json::json!(""),
        };
        assert_eq!(p["defaultValue"], want, "{}", st.name);
        if let Kind::Enum(values) = st.kind {
            assert!(d.contains(&format!("One of: {}.", values.join(", "))), "{}", st.name);
        }
        for v in st.env_fallback {
            assert!(d.contains(v), "{}: {v}", st.name);
        }
    }
}

/// The rules of the Drone plugin index's schema (drone/drone-plugin-index,
/// plugin-validation/plugin-schema.json and example-schema.json), as its validator applies
/// them to a `content.yaml`.
fn drone_index_errors(y: &serde_json::Value) -> Vec<String> {
    const TOP: &[&str] = &[
        "title",
        "author",
        "tags",
        "logo",
        "repo",
        "image",
        "license",
        "readme",
        "description",
        "example",
        "properties",
    ];
    const LICENSES: &[&str] = &[
        "None",
        "Apache License 2.0",
        "GNU General Public License v3.0",
        "GNU Lesser General Public License v3.0",
        "MIT License",
        "BSD 2-Clause 'Simplified' License",
        "BSD 3-Clause 'New' or 'Revised' License",
        "Boost Software License 1.0",
        "Creative Commons Zero v1.0 Universal",
        "Eclipse Public License 2.0",
        "GNU Affero General Public License v3.0",
        "GNU General Public License v2.0",
        "GNU Lesser General Public License v2.1",
        "Mozilla Public License 2.0",
        "The Unlicense",
    ];
    const TYPES: &[&str] = &["string", "number", "array", "boolean", "object"];
    const PROP_KEYS: &[&str] = &["type", "defaultValue", "description", "secret", "required"];
    let mut e = Vec::new();
    let Some(top) = y.as_object() else { return vec!["not an object".into()] };
    for k in top.keys().filter(|k| !TOP.contains(&k.as_str())) {
        e.push(format!("must NOT have additional property `{k}`"));
    }
    for k in ["title", "author", "repo", "description"] {
        if !top.get(k).is_some_and(|v| v.is_string()) {
            e.push(format!("`{k}` is required and a string"));
        }
    }
    // The index's URL pattern: http(s)://host.tld/...
    let url = |s: &str| {
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or("");
        let host = rest.split('/').next().unwrap_or("");
        let tld = host.rsplit('.').next().unwrap_or("");
        host.contains('.') && (2..=4).contains(&tld.len()) && tld.chars().all(|c| c.is_ascii_lowercase())
    };
    for k in ["repo", "image", "readme"] {
        match top.get(k).and_then(|v| v.as_str()) {
            Some(v) if url(v) => {}
            None if k != "repo" => {}
            other => e.push(format!("`{k}` must be a URL, found {other:?}")),
        }
    }
    match top.get("license").and_then(|v| v.as_str()) {
        Some(l) if LICENSES.contains(&l) => {}
        None => {}
        other => e.push(format!("`license` must be one of the index's names, found {other:?}")),
    }
    if let Some(logo) = top.get("logo") {
        let l = logo.as_str().unwrap_or("");
        let (stem, ext) = l.rsplit_once('.').unwrap_or(("", ""));
        let stem = stem.rsplit('/').next().unwrap_or("");
        if stem.is_empty()
            || !stem.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            || !["svg", "png"].contains(&ext)
        {
            e.push(format!("`logo` must be a .svg or .png file name, found {l:?}"));
        }
    }
    if let Some(tags) = top.get("tags") {
        let t = tags.as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()).unwrap_or_default();
        let mut u = t.clone();
        u.sort();
        u.dedup();
        if t.is_empty() || u.len() != t.len() || t.len() != tags.as_array().map_or(0, |a| a.len()) {
            e.push("`tags` must be a non-empty list of unique strings".into());
        }
    }
    let props = top.get("properties").and_then(|p| p.as_object());
    for (name, p) in props.into_iter().flatten() {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            e.push(format!("/properties/{name}: bad name"));
        }
        let Some(p) = p.as_object() else {
            e.push(format!("/properties/{name} must be an object"));
            continue;
        };
        for k in p.keys().filter(|k| !PROP_KEYS.contains(&k.as_str())) {
            e.push(format!("/properties/{name} must NOT have additional property `{k}`"));
        }
        for k in PROP_KEYS.iter().filter(|k| !p.contains_key(**k)) {
            e.push(format!("/properties/{name} must have required property `{k}`"));
        }
        if !p.get("type").and_then(|t| t.as_str()).is_some_and(|t| TYPES.contains(&t)) {
            e.push(format!("/properties/{name}/type must be one of {TYPES:?}"));
        }
        if p.get("defaultValue").is_some_and(|d| d.is_null()) {
            e.push(format!("/properties/{name}/defaultValue must not be null"));
        }
        if !p.get("description").is_some_and(|d| d.is_string()) {
            e.push(format!("/properties/{name}/description must be a string"));
        }
        for k in ["secret", "required"] {
            if !p.get(k).is_some_and(|v| v.is_boolean()) {
                e.push(format!("/properties/{name}/{k} must be a boolean"));
            }
        }
    }
    if props.is_none_or(|p| p.is_empty()) {
        e.push("`properties` must hold at least one property".into());
    }
    e
}

#[test]
fn docs_plugin_yaml_validates_against_the_drone_plugin_index_schema() {
    if !crate::support::python_present() {
        return;
    }
    let y = parse_yaml("plugin.yaml", false);
    let errors = drone_index_errors(&y);
    assert!(errors.is_empty(), "plugin.yaml breaks the Drone plugin index schema:\n  {}", errors.join("\n  "));
    // The rules bite: the file as it was before (extra keys, a short license, no URL).
    let mut old = y.clone();
    old["license"] = "Apache-2.0".into();
    old["image"] = "ghcr.io/OWNER/plugin-azure-storage".into();
    old["properties"]["source"]["format"] = "list".into();
    old["properties"]["container"].as_object_mut().unwrap().remove("defaultValue");
    old["properties"]["concurrency"]["type"] = "integer".into();
    assert_eq!(drone_index_errors(&old).len(), 5, "{:?}", drone_index_errors(&old));
    // The example is a Drone pipeline (the index's example-schema.json).
    let ex: serde_json::Value = {
        let py = tool(".cache/venv/bin/python", "PYBLOB_PYTHON", "python");
        let out = Command::new(py)
            .args(["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.argv[1])))"])
            .arg(y["example"].as_str().unwrap())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(["pipeline", "secret", "signature", "template"].contains(&ex["kind"].as_str().unwrap_or("")));
    assert!(ex["name"].is_string());
    let steps = ex["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.iter().all(|s| s["settings"].is_object() || s.get("settings").is_none()));
    // The logo it names exists.
    assert!(repo_root().join("docs").join(y["logo"].as_str().unwrap()).is_file());
}

#[test]
fn docs_woodpecker_front_matter_names_the_image() {
    if !crate::support::python_present() {
        return;
    }
    let f = parse_yaml("docs.md", true);
    assert_eq!(f["name"], docgen::TITLE);
    assert_eq!(f["containerImage"], docgen::IMAGE);
    assert!(f["tags"].as_array().unwrap().iter().any(|t| t == "azure"));
    assert!(f["description"].as_str().unwrap().contains("Azure Blob Storage"));
    assert_eq!(f["icon"], docgen::logo_url());
    assert!(f["icon"].as_str().unwrap().ends_with(&format!("/docs/{}", docgen::LOGO)));
}

/// The instructions of a Dockerfile's last stage (from its last `FROM`), comments dropped and
/// continuation lines joined.
fn final_stage(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let joined = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let joined = joined.replace("\\\n", " ");
    let lines: Vec<String> =
        joined.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    let start = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM");
    lines[start..].to_vec()
}

#[test]
fn docs_dockerfile_local_builds_the_same_final_stage_as_dockerfile() {
    // Dockerfile copies from its build stage; Dockerfile.local from the staged context.
    let from_source: Vec<String> = final_stage("Dockerfile")
        .into_iter()
        .map(|l| {
            l.replace("COPY --from=build /etc/ssl/certs/ca-certificates.crt ", "COPY ca-certificates.crt ")
                .replace("COPY --from=build /out/plugin-azure-storage ", "COPY plugin-azure-storage ")
        })
        .collect();
    assert_eq!(from_source, final_stage("Dockerfile.local"), "Dockerfile.local drifted from Dockerfile's final stage");
}

#[test]
fn docs_action_yml_inputs_and_outputs_agree_with_the_settings_table() {
    if !crate::support::python_present() {
        return;
    }
    let a = parse_yaml("action.yml", false);
    assert_eq!(a["runs"]["using"], "docker");
    assert!(a["runs"]["image"].as_str().unwrap().starts_with(&format!("docker://{}", docgen::IMAGE)));
    assert!(a["description"].as_str().unwrap().len() <= 125, "GitHub's marketplace limit");
    let inputs = a["inputs"].as_object().expect("inputs");
    let mut names: Vec<&str> = inputs.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    names.sort();
    want.sort();
    assert_eq!(names, want, "action.yml inputs differ from SETTINGS");
    for st in SETTINGS {
        let i = &inputs[st.name];
        assert!(i["description"].as_str().unwrap().starts_with(st.help), "{}", st.name);
        assert_eq!(i["required"], st.required, "{}", st.name);
        // No `default:`: a runner sets INPUT_<NAME> for every input that has one, which the
        // plugin cannot tell from a value the user gave. The description states the default.
        assert!(i.get("default").is_none(), "action.yml input `{}` declares a default: {}", st.name, i["default"]);
        if let Some(d) = st.default.filter(|d| !d.is_empty()) {
            assert!(i["description"].as_str().unwrap().ends_with(&format!("Default: `{d}`.")), "{}", st.name);
        }
    }
    let outputs: Vec<&str> = a["outputs"].as_object().expect("outputs").keys().map(String::as_str).collect();
    let mut documented: Vec<&str> = docgen::OUTPUTS.iter().map(|(k, _)| *k).collect();
    let mut outputs = outputs;
    outputs.sort();
    documented.sort();
    assert_eq!(outputs, documented);
}

/// The Markdown and YAML users copy from: README.md, docs/*.md, docs/examples/*.
fn user_docs() -> Vec<(String, String)> {
    let mut paths = vec![repo_root().join("README.md")];
    for dir in ["docs", "docs/examples"] {
        let mut found: Vec<_> = std::fs::read_dir(repo_root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md" || e == "yml" || e == "yaml"))
            .collect();
        found.sort();
        paths.extend(found);
    }
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(repo_root()).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn docs_examples_name_only_real_plugin_variables_and_the_engines_own_ones() {
    // A `PLUGIN_*` variable of the pipeline's own (GitLab's `PLUGIN_IMAGE`) lands in the
    // plugin's settings namespace: every upper-case one the docs write must be a setting.
    let mut bad = Vec::new();
    for (path, text) in user_docs() {
        for (i, _) in text.match_indices("PLUGIN_") {
            if i > 0 && text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `PLUGIN_<NAME>`, `PLUGIN_*`, and the other-case warning's own example.
            if name.is_empty() || name.chars().any(|c| c.is_ascii_lowercase()) {
                continue;
            }
            if plugin_azure_storage::settings::find(&name.to_ascii_lowercase()).is_none() {
                bad.push(format!("{path}: PLUGIN_{name}"));
            }
        }
    }
    // Misspellings shown on purpose, as the warning prints them.
    bad.retain(|b| !b.ends_with("PLUGIN_STRIP_PREFX"));
    assert!(bad.is_empty(), "PLUGIN_ variables that are no setting:\n  {}", bad.join("\n  "));

    // The README's Drone snippets use the names Drone substitutes (DRONE_*, not CI_*: an
    // unset `${CI_REPO}/${CI_COMMIT_SHA}` arrives as `/`).
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let drone = readme.split("\n**Drone**\n").nth(1).expect("a Drone section");
    let drone = drone.split("\n**").next().unwrap();
    let yaml: Vec<&str> = drone.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert!(yaml.len() >= 2 && yaml.iter().all(|b| b.contains("${DRONE_REPO}")), "{drone}");
    for block in yaml {
        assert!(!block.contains("${CI_"), "the README's Drone section uses Woodpecker's CI_* names:\n{block}");
    }

    // DRONE_OUTPUT is Harness's (lite-engine); drone-runner-docker sets no outputs file.
    for (path, text) in user_docs() {
        assert!(!text.contains("`DRONE_OUTPUT` (Drone"), "{path} says Drone sets DRONE_OUTPUT");
    }
    let settings = docgen::settings_markdown();
    assert!(settings.contains("`DRONE_OUTPUT` (set by Harness CI"), "docs/settings.md names who sets DRONE_OUTPUT");
}

#[test]
fn docs_every_docker_run_rm_example_says_podman_loses_the_exit_code() {
    // Through podman's Docker API `docker run --rm` reports 0 whatever the plugin returned.
    let mut missing = Vec::new();
    for path in ["README.md", "docs/auth.md", "docs/examples/github-actions.yml"] {
        let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, _) in lines.iter().enumerate().filter(|(_, l)| l.contains("docker run --rm")) {
            // The note sits in the few lines before it (a YAML comment) or after its block.
            let near = lines[n.saturating_sub(4)..(n + 14).min(lines.len())].join("\n");
            if !near.contains("#18889") {
                missing.push(format!("{path}:{}", n + 1));
            }
        }
    }
    assert!(missing.is_empty(), "`docker run --rm` without the podman exit-code note: {missing:?}");
}
