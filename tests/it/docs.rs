//! The generated documents (`plugin.yaml`, `docs/settings.md`, `docs.md`) match the
//! settings table in the code, and `plugin.yaml` means what the table says when read by an
//! independent YAML parser (PyYAML, as a plugin index would read it).
//!
//! Regenerate after changing `src/settings.rs`: `UPDATE_DOCS=1 cargo test --test it docs`.

use plugin_azure_storage::docgen::{self, DOCUMENTS, REGENERATE};
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
    let y = parse_yaml("plugin.yaml", false);
    assert_eq!(y["title"], docgen::TITLE);
    assert_eq!(y["image"], docgen::IMAGE);
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
        assert_eq!(p["description"], st.help, "{}", st.name);
        assert_eq!(p["secret"], st.secret, "{}", st.name);
        assert_eq!(p["required"], st.required, "{}", st.name);
        let ty = match st.kind {
            Kind::Bool => "boolean",
            Kind::Integer => "integer",
            _ => "string",
        };
        assert_eq!(p["type"], ty, "{}", st.name);
        // A default reads back as the same value, typed (YAML booleans and integers).
        match (st.default, st.kind) {
            (None, _) => assert!(p.get("defaultValue").is_none(), "{}", st.name),
            (Some(d), Kind::Bool) => assert_eq!(p["defaultValue"], d == "true", "{}", st.name),
            (Some(d), Kind::Integer) => assert_eq!(p["defaultValue"], d.parse::<i64>().unwrap(), "{}", st.name),
            (Some(d), _) => assert_eq!(p["defaultValue"], d, "{}", st.name),
        }
        if let Kind::Enum(values) = st.kind {
            assert_eq!(p["enum"], serde_json::json!(values), "{}", st.name);
        }
        assert_eq!(p.get("env").cloned().unwrap_or(serde_json::json!([])), serde_json::json!(st.env_fallback));
    }
}

#[test]
fn docs_woodpecker_front_matter_names_the_image() {
    let f = parse_yaml("docs.md", true);
    assert_eq!(f["name"], docgen::TITLE);
    assert_eq!(f["containerImage"], docgen::IMAGE);
    assert!(f["tags"].as_array().unwrap().iter().any(|t| t == "azure"));
    assert!(f["description"].as_str().unwrap().contains("Azure Blob Storage"));
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
