//! Reference documents generated from the settings table (`settings::SETTINGS`), so that
//! the code, `--help` and what users read cannot disagree:
//!
//! - `plugin.yaml`: the Drone plugin index's `content.yaml`, valid against its schema
//!   (drone/drone-plugin-index, plugin-validation/plugin-schema.json): only the index's
//!   top-level keys (title, author, tags, logo, repo, image, license, readme, description,
//!   example), `license` from its list, URLs for `image`, `repo` and `readme`, and
//!   `properties: {name: {type, defaultValue, description, secret, required}}` with exactly
//!   those five keys, `type` one of string, number, array, boolean, object. What the index
//!   has no key for (accepted values, fallback variables) is in the description. A setting
//!   without a documented default gets the empty value of its type (`""`, `[]`, `{}`).
//! - `docs/settings.md`: the settings reference for people.
//! - `docs.md`: the Woodpecker plugin index page (YAML front matter + settings table).
//!
//! The files are committed. The test in `tests/it/docs.rs` fails when one of them differs
//! from what these functions render, and rewrites them when run with `UPDATE_DOCS=1`:
//! `UPDATE_DOCS=1 cargo test --test it docs`. This module lives with the tests, not in the
//! shipped library: `--help` prints `settings::help_text`, and nothing at run time needs it.
//!
//! YAML is written by hand (no YAML dependency for three documents): every free-text
//! scalar is emitted as a JSON string, which is a valid YAML double-quoted scalar.

use plugin_azure_storage::settings::{self, Kind, Setting, SETTINGS};

/// Display name in plugin indexes.
pub const TITLE: &str = "Azure Storage";
/// Image repository users pull (pinned by digest in pipelines).
pub const IMAGE: &str = "ghcr.io/OWNER/plugin-azure-storage";
/// Source repository.
pub const REPO_URL: &str = "https://github.com/OWNER/plugin-azure-storage";
pub const AUTHOR: &str = "plugin-azure-storage authors";
pub const TAGS: &[&str] = &["azure", "storage", "blob", "files", "artifacts", "upload", "download", "publish", "oidc"];
/// One-line description (the crate's).
pub const DESCRIPTION: &str = env!("CARGO_PKG_DESCRIPTION");
/// `Cargo.toml`'s `Apache-2.0`, as the Drone plugin index names it.
pub const INDEX_LICENSE: &str = "Apache License 2.0";
/// The digest placeholder used in examples; the release pipeline prints the real one.
pub const DIGEST_PLACEHOLDER: &str = "sha256:<digest>";

/// The command that rewrites every generated document.
pub const REGENERATE: &str = "UPDATE_DOCS=1 cargo test --test it docs";

/// Renders one generated document.
pub type Render = fn() -> String;

/// Every generated document: path relative to the repository root, and its renderer.
pub const DOCUMENTS: &[(&str, Render)] = &[
    ("plugin.yaml", plugin_yaml),
    ("docs/settings.md", settings_markdown),
    ("docs.md", woodpecker_docs_md),
    ("action.yml", action_yml),
];

/// The outputs a run appends to `GITHUB_OUTPUT` / `DRONE_OUTPUT` (transfer/outputs.rs).
pub const OUTPUTS: &[(&str, &str)] = &[
    ("transferred", "Files transferred (0 in a dry run: see `would_transfer`)."),
    ("skipped", "Files skipped (existing, unchanged, or links not followed)."),
    ("failed", "Files that failed."),
    ("bytes", "Bytes transferred (0 in a dry run)."),
    ("url", "The file's URL when one file was moved, else the URL of the target prefix (upload) or source prefix (download). Never carries a SAS."),
    ("deleted", "Sync and delete: files deleted (0 in a dry run: see `would_delete`)."),
    ("would_transfer", "Dry run: files the real run would transfer (the same comparisons and refusals)."),
    ("would_delete", "Dry run of a sync or a delete: files the real run would delete (0 when it would refuse the deletes)."),
    ("manifest", "The manifest's path, when `manifest` is set."),
    ("link", "Upload or sync with `link_expiry`: the read-only link (a SAS URL) of the file when exactly one file was stored, else empty (each manifest entry has its own `link`; the manifest is local, never uploaded, so it has no link). A secret for its lifetime: never logged."),
    ("cache_hit", "`cache_restore`: `true` when the exact `cache_key` was restored, else `false` (a `restore_keys` match or a miss)."),
    ("cache_key", "Cache modes: the key saved, or the key restored (empty on a miss)."),
    ("cache_matched_key", "`cache_restore`: the key of the archive restored, or found with `lookup_only` or `dry_run` (the exact key or a `restore_keys` match; empty on a miss)."),
    ("cache_error", "Cache modes: why the service or the network failed, when it did and `fail_on_cache_error` is not set (the step then exits 0 with a warning)."),
];

/// A YAML double-quoted scalar (JSON string syntax is a subset of it).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// `type` in the Drone plugin index's vocabulary (string, number, array, boolean, object):
/// what a user writes in `settings:` (a YAML list for a list, a map for a map).
pub fn index_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Integer => "number",
        Kind::List => "array",
        Kind::Map => "object",
        Kind::String | Kind::Enum(_) | Kind::StringOrMap | Kind::Size | Kind::Duration => "string",
    }
}

/// `defaultValue` as a YAML value of the index type; without a documented default, the
/// empty value of that type.
fn yaml_default(st: &Setting) -> String {
    match (st.kind, st.default) {
        (Kind::Bool, Some(d @ ("true" | "false"))) => d.to_string(),
        (Kind::Bool, _) => "false".to_string(),
        (Kind::Integer, Some(d)) if d.parse::<i64>().is_ok() => d.to_string(),
        (Kind::List, None) => "[]".to_string(),
        (Kind::Map, None) => "{}".to_string(),
        (_, d) => q(d.unwrap_or("")),
    }
}

/// The property description in `plugin.yaml`: the help, then what the index has no key for.
pub fn index_description(st: &Setting) -> String {
    let mut d = st.help.to_string();
    if let Kind::Enum(values) = st.kind {
        d.push_str(&format!(" One of: {}.", values.join(", ")));
    }
    if !st.env_fallback.is_empty() {
        d.push_str(&format!(" Also read from {} when unset.", st.env_fallback.join(" or ")));
    }
    d
}

/// The logo's file name (the index keeps logos in its public/logos folder; the file is in docs/).
pub const LOGO: &str = "azure-storage.svg";
/// The logo's URL, for the Woodpecker index page (`icon`).
pub fn logo_url() -> String {
    format!("{}/main/docs/{LOGO}", REPO_URL.replace("https://github.com/", "https://raw.githubusercontent.com/"))
}

fn yaml_list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|i| q(i)).collect::<Vec<_>>().join(", "))
}

/// A YAML literal block (`|`) body, indented.
fn block(text: &str, indent: &str) -> String {
    text.lines().map(|l| if l.is_empty() { "\n".to_string() } else { format!("{indent}{l}\n") }).collect()
}

fn drone_example() -> String {
    format!(
        r#"kind: pipeline
type: docker
name: default

steps:
  - name: publish
    image: {IMAGE}@{DIGEST_PLACEHOLDER}
    settings:
      account_name: mystorage
      container: artifacts
      source: dist/**
      strip_prefix: dist
      target: ${{DRONE_REPO}}/${{DRONE_COMMIT_SHA}}
      sas_token:
        from_secret: artifacts_sas
"#
    )
}

fn woodpecker_example() -> String {
    format!(
        r#"steps:
  publish:
    image: {IMAGE}@{DIGEST_PLACEHOLDER}
    settings:
      account_name: mystorage
      container: artifacts
      source: dist/**/*.tar.gz
      strip_prefix: dist
      target: ${{CI_REPO}}/${{CI_COMMIT_SHA}}
    # Keyless on the Kubernetes backend with Azure Workload Identity (the agent needs
    # WOODPECKER_BACKEND_K8S_POD_LABELS_ALLOW_FROM_STEP=true). Woodpecker mints no OIDC
    # token; on an agent VM with a managed identity, no backend_options are needed.
    backend_options:
      kubernetes:
        serviceAccountName: ci-artifacts
        labels:
          azure.workload.identity/use: "true"
"#
    )
}

const GENERATED_MD: &str = "<!-- Generated from src/settings.rs; do not edit: change the table there, then run `UPDATE_DOCS=1 cargo test --test it docs`. -->";

/// `plugin.yaml`: the settings schema in the Drone plugin index's `content.yaml` shape.
pub fn plugin_yaml() -> String {
    let mut o = String::new();
    o.push_str("# Generated from src/settings.rs (SETTINGS); do not edit: change the table there, then run\n");
    o.push_str(&format!("#   {REGENERATE}\n"));
    o.push_str("# Shape: the Drone plugin index's content.yaml, valid against its plugin-schema.json.\n");
    o.push_str(&format!("title: {}\n", q(TITLE)));
    o.push_str(&format!("author: {}\n", q(AUTHOR)));
    o.push_str(&format!("tags: {}\n", yaml_list(TAGS)));
    o.push_str(&format!("logo: {}\n", q(LOGO)));
    o.push_str(&format!("repo: {}\n", q(REPO_URL)));
    o.push_str(&format!("image: {}\n", q(&format!("https://{IMAGE}"))));
    o.push_str(&format!("license: {}\n", q(INDEX_LICENSE)));
    o.push_str(&format!("readme: {}\n", q(&format!("{REPO_URL}/blob/main/README.md"))));
    o.push_str(&format!("description: {}\n", q(DESCRIPTION)));
    o.push_str("example: |\n");
    o.push_str(&block(&drone_example(), "  "));
    o.push_str("properties:\n");
    for st in SETTINGS {
        o.push_str(&format!("  {}:\n", st.name));
        o.push_str(&format!("    type: {}\n", index_type(st.kind)));
        o.push_str(&format!("    defaultValue: {}\n", yaml_default(st)));
        o.push_str(&format!("    description: {}\n", q(&index_description(st))));
        o.push_str(&format!("    secret: {}\n", st.secret));
        o.push_str(&format!("    required: {}\n", st.required));
    }
    o
}

/// A Markdown table cell: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Type column: the kind, with the accepted values of an enum.
fn md_type(st: &Setting) -> String {
    match st.kind {
        Kind::Enum(values) => values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(" \\| "),
        k => k.type_name().to_string(),
    }
}

fn md_default(st: &Setting) -> String {
    match st.default {
        Some("") => "empty".to_string(),
        Some(d) => format!("`{d}`"),
        None => String::new(),
    }
}

/// Description column: help, then the flags a reader needs.
fn md_description(st: &Setting) -> String {
    let mut d = st.help.to_string();
    if st.secret {
        d.push_str(" **Secret**: pass it with `from_secret`, never inline.");
    }
    if !st.env_fallback.is_empty() {
        let vars: Vec<String> = st.env_fallback.iter().map(|v| format!("`{v}`")).collect();
        d.push_str(&format!(" Also read from {} when unset.", vars.join(" or ")));
    }
    cell(&d)
}

/// `docs/settings.md`: the settings reference.
pub fn settings_markdown() -> String {
    let mut o = String::new();
    o.push_str(GENERATED_MD);
    o.push_str("\n\n# Settings reference\n\n");
    o.push_str(concat!(
        "Each setting is a key under the step's `settings:` (Drone, Woodpecker), which the CI passes\n",
        "to the container as the environment variable `PLUGIN_<NAME>` (upper case). Any CI that runs\n",
        "a container step can set those variables itself (`docker run -e PLUGIN_SOURCE=...`). As a\n",
        "GitHub/Forgejo docker action (`action.yml`), each setting is an input of the same name, which\n",
        "the runner passes as `INPUT_<NAME>`: read when `PLUGIN_<NAME>` is absent. The action's\n",
        "inputs declare no `default:` (a runner passes every default as if the step had set it): an\n",
        "input left out arrives empty and the plugin applies the default in the table below.\n",
        "`plugin.yaml` holds the same table, machine-readable.\n\n",
        "Value forms:\n\n",
        "- **boolean**: `true` or `false`.\n",
        "- **list**: comma-joined (`a,b`), one item per line (a YAML block `source: |`, the usual form\n",
        "  of an Actions input; blank lines and the space around an item are ignored), or a JSON array\n",
        "  (`[\"a\",\"b\"]`). Drone and Woodpecker pass a YAML list of strings comma-joined (`[a, b]`\n",
        "  arrives as `a,b`), so a comma inside `{...}` (`dist/*.{js,css}`) never splits an item; write\n",
        "  `\\,` for a literal comma outside braces. A line break is never part of an item.\n",
        "- **map**: a JSON object (a YAML map in `settings:` arrives as JSON).\n",
        "- **string or map**: one string for every file; or a map glob → value; or a list of one-entry\n",
        "  maps. Drone and Woodpecker pass a YAML map as JSON with its keys **sorted**, so a map's\n",
        "  written order is lost: in a map the **most specific glob wins**: the one with more literal\n",
        "  characters (not counting `/` and wildcards; `{a,bc}` counts its shortest branch), then fewer\n",
        "  wildcards (`*`, `**`, `?`, `[...]`, `{...}` one each), then fewer `**`, then the glob's text in\n",
        "  byte order. A list (a YAML list of maps arrives as a JSON array, in written order) is\n",
        "  tried top to bottom, and the first match wins. For example, with\n",
        "  `cache_control: {\"**/*.html\": no-cache, \"**\": \"public, max-age=31536000, immutable\"}`,\n",
        "  `index.html` and `a/b.html` get `no-cache` (5 literal characters beat 0) and `app.js` the\n",
        "  long-lived value; with `{\"*.js\": A, \"vendor/**\": B}`, `vendor/x.js` gets `B` (6 beat 3);\n",
        "  with `{\"*.js\": A, \"*.{js,mjs}\": B}`, `x.js` gets `A` (fewer wildcards). The same as a\n",
        "  list, in the order you choose: `[{\"**/*.html\": \"no-cache\"}, {\"**\": \"public\"}]`; each entry\n",
        "  holds exactly one glob (a map's keys would be sorted again).\n",
        "- **size**: bytes with an optional unit: `1048576`, `4M`, `8MiB`.\n",
        "- **duration**: `500ms`, `30s`, `2m`.\n\n",
        "Unknown `PLUGIN_*` and `INPUT_*` variables are warned about, with the closest known name.\n",
        "Every invalid value is reported, naming the setting and what it accepts, before any network\n",
        "call. Variable names are upper case, as Drone, Woodpecker and the Actions runners write them:\n",
        "one naming a setting in another case (`PLUGIN_Source`, `input_source`) is not read, and is\n",
        "warned about with the variable that is (`PLUGIN_SOURCE`, `INPUT_SOURCE`). When `PLUGIN_<NAME>`\n",
        "and `INPUT_<NAME>` are both set, to different values, `PLUGIN_<NAME>` wins and a warning says\n",
        "so (without the values). A `source` or an upload's `target` made only of `/`, or with an\n",
        "empty path component (`/abc`, `org//abc`), is refused: it is what `${CI_REPO}/${CI_COMMIT_SHA}`\n",
        "becomes where those variables are not set (Drone substitutes `DRONE_*` names only); select\n",
        "the whole container with `**`. With `endpoint`, the account is the one the endpoint names (its\n",
        "path, `http://127.0.0.1:10000/devstoreaccount1`, or its host, `acct.blob.core.windows.net`);\n",
        "an `account_name` naming another is refused. Every URL (`endpoint`, a connection string's endpoints, the one built\n",
        "from `account_name` and `endpoint_suffix`, `authority_host`) must be `http://` or `https://`\n",
        "with a host and no query, user info or fragment. Header values (`content_type`,\n",
        "`cache_control`, `content_encoding`, `content_disposition`) must be one line of visible\n",
        "ASCII; only a `content_disposition` file name may be non-ASCII (it is encoded).\n\n",
        "Exit codes: `0` every file done (or skipped as asked); `1` one or more files failed (each is\n",
        "listed), or the manifest or the outputs could not be written (the summary is printed first); `2` invalid\n",
        "settings; `3` nothing could be transferred: an error before any file (credentials, missing\n",
        "container, listing, planning), or a refusal that recurs for every file (wrong key, expired\n",
        "SAS, missing role, firewall, a redirect), which stops the run early; `130`/`143`\n",
        "interrupted (SIGINT/SIGTERM).\n\n",
        "Outputs for later steps: when `GITHUB_OUTPUT` (set by GitHub's and Forgejo's runners) or\n",
        "`DRONE_OUTPUT` (set by Harness CI's lite-engine; Drone's own docker runner and Woodpecker set\n",
        "no outputs file, and GitLab passes values with a `dotenv` report) names a file, the plugin\n",
        "appends `KEY=VALUE` lines to it once the run ends:\n",
        "`transferred`, `skipped` and `failed` (file counts), `bytes` (bytes transferred), `url` (the\n",
        "file's URL when the run moved one file, else the URL of the target prefix: `target` on\n",
        "upload, the `source` prefix on download; never with a SAS) and `manifest` (when set); the\n",
        "cache modes add `cache_hit` (`true` when the exact key was restored), `cache_key`,\n",
        "`cache_matched_key` and, after a service failure, `cache_error`. E.g.\n",
        "`transferred=12`, `url=https://mystorage.blob.core.windows.net/artifacts/org/repo/abc123/`;\n",
        "read them as `${{ steps.<id>.outputs.url }}` in Actions. A file that cannot be appended to\n",
        "is named after the summary and the run exits `1` (the transfers stand as reported).\n\n",
        "| Setting | Type | Default | Description |\n",
        "|---|---|---|---|\n",
    ));
    for st in SETTINGS {
        let mut name = format!("`{}`<br>`{}`", st.name, settings::env_name(st.name));
        if st.required {
            name.push_str("<br>**required**");
        }
        o.push_str(&format!("| {name} | {} | {} | {} |\n", md_type(st), md_default(st), md_description(st)));
    }
    o.push_str("\nSee also: [authentication](auth.md), [Azure Files](files.md), ");
    o.push_str("[troubleshooting](troubleshooting.md), [the image](image.md).\n");
    o
}

/// `docs.md`: the Woodpecker plugin index page (front matter read by the index).
pub fn woodpecker_docs_md() -> String {
    let mut o = String::new();
    o.push_str("---\n");
    o.push_str(&format!("name: {}\n", q(TITLE)));
    o.push_str(&format!("description: {}\n", q(DESCRIPTION)));
    o.push_str(&format!("author: {}\n", q(AUTHOR)));
    o.push_str(&format!("tags: {}\n", yaml_list(TAGS)));
    o.push_str(&format!("containerImage: {}\n", q(IMAGE)));
    o.push_str(&format!("containerImageUrl: {}\n", q(&format!("https://{IMAGE}"))));
    o.push_str(&format!("icon: {}\n", q(&logo_url())));
    o.push_str(&format!("url: {}\n", q(REPO_URL)));
    o.push_str("---\n\n");
    o.push_str(GENERATED_MD);
    o.push_str("\n\n");
    o.push_str(concat!(
        "Moves build artifacts between the workspace and Azure Blob Storage or Azure Files:\n",
        "upload with globs, `exclude` and `strip_prefix`, or download a prefix or glob back.\n",
        "Keyless: on Woodpecker, Kubernetes workload identity or a managed identity on the agent\n",
        "(Woodpecker mints no OIDC token); where the CI mints one, it is exchanged for a short-lived\n",
        "Entra ID token (account keys, SAS and connection strings work too). Parallel, chunked transfers; every request body\n",
        "carries a CRC-64, every file's SHA-256 is stored with it and verified on download, and a\n",
        "file only appears under its final name once verified. One small static binary in a\n",
        "`FROM scratch` image: pin it by digest.\n\n",
        "## Settings\n\n",
        "| Settings Name | Default | Description |\n",
        "|---|---|---|\n",
    ));
    for st in SETTINGS {
        let mut name = format!("`{}`", st.name);
        if st.required {
            name.push_str(" (required)");
        }
        let ty = match st.kind {
            Kind::Enum(_) => format!("One of {}. ", md_type(st)),
            Kind::String => String::new(),
            k => format!("{} {}. ", article(k.type_name()), k.type_name()),
        };
        o.push_str(&format!("| {name} | {} | {}{} |\n", md_default(st), ty, md_description(st)));
    }
    o.push_str("\n## Example\n\n```yaml\n");
    o.push_str(&woodpecker_example());
    o.push_str("```\n\nMore: the settings reference (`docs/settings.md`), authentication per CI (`docs/auth.md`),\n");
    o.push_str(
        "troubleshooting (`docs/troubleshooting.md`) and ready pipelines (`docs/examples/`) in the repository.\n",
    );
    o
}

/// `action.yml`: a GitHub / Forgejo Actions docker action running the image. Every setting is
/// an input of the same name; the runner passes it as `INPUT_<NAME>`, which the plugin reads
/// when `PLUGIN_<NAME>` is absent, empty when the step's `with:` leaves it out. No input
/// declares a `default:` (see [`action_input_description`]).
pub fn action_yml() -> String {
    let mut o = String::new();
    o.push_str("# Generated from src/settings.rs (SETTINGS); do not edit: change the table there, then run\n");
    o.push_str(&format!("#   {REGENERATE}\n"));
    o.push_str("# A docker action: the runner mounts the workspace, passes each input as INPUT_<NAME> and,\n");
    o.push_str("# with `permissions: id-token: write`, ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN (keyless auth).\n");
    o.push_str("# `runs.image` is a placeholder: a release pins it to the digest it pushed (scripts/action-image,\n");
    o.push_str("# docs/image.md). Before a release, build the image and use `uses: docker://<image>` (README).\n");
    o.push_str(&format!("name: {}\n", q(TITLE)));
    o.push_str(&format!("description: {}\n", q(ACTION_DESCRIPTION)));
    o.push_str(&format!("author: {}\n", q(AUTHOR)));
    o.push_str("branding:\n  icon: \"upload-cloud\"\n  color: \"blue\"\n");
    o.push_str("inputs:\n");
    // No input has a `default:`: a runner sets INPUT_<NAME> for every input that has one, so
    // a default would read as a setting the user gave (a sync "given" `overwrite`, a cache
    // key rewritten, AZURE_AUTHORITY_HOST hidden). The binary owns the defaults; the
    // description states them.
    for st in SETTINGS {
        o.push_str(&format!("  {}:\n", st.name));
        o.push_str(&format!("    description: {}\n", q(&action_input_description(st))));
        o.push_str(&format!("    required: {}\n", st.required));
    }
    o.push_str("outputs:\n");
    for (name, what) in OUTPUTS {
        o.push_str(&format!("  {name}:\n    description: {}\n", q(what)));
    }
    o.push_str("runs:\n  using: \"docker\"\n");
    o.push_str(&format!("  image: {}\n", q(&format!("docker://{IMAGE}:{}", env!("CARGO_PKG_VERSION")))));
    o
}

/// An action input's description: the index description, then the default the binary
/// applies when the input is left empty (action.yml declares no `default:`).
pub fn action_input_description(st: &Setting) -> String {
    let mut d = index_description(st);
    match st.default {
        Some("") | None => {}
        Some(v) => d.push_str(&format!(" Default: `{v}`.")),
    }
    d
}

/// The action's one-line description (GitHub's marketplace allows 125 characters).
pub const ACTION_DESCRIPTION: &str =
    "Upload or download build artifacts to Azure Blob Storage or Azure Files: keyless (OIDC), parallel, verified";

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "An"
    } else {
        "A"
    }
}

mod tests {
    use super::*;

    #[test]
    fn every_setting_is_in_every_document() {
        for (path, render) in DOCUMENTS {
            let text = render();
            for st in SETTINGS {
                assert!(
                    text.contains(&format!("`{}`", st.name)) || text.contains(&format!("  {}:\n", st.name)),
                    "{path} lacks {}",
                    st.name
                );
            }
        }
    }

    #[test]
    fn yaml_scalars_survive_quotes_colons_and_hashes() {
        // A help text with YAML-significant characters stays one double-quoted scalar.
        assert_eq!(q(r#"a: "b" # c \ d"#), r#""a: \"b\" # c \\ d""#);
    }

    #[test]
    fn plugin_yaml_marks_secrets_required_and_typed_defaults() {
        let y = plugin_yaml();
        // The indented lines under `  <name>:`.
        let section = |name: &str| -> String {
            let head = format!("  {name}:");
            let mut lines = y.lines().skip_while(|l| *l != head);
            assert!(lines.next().is_some(), "{name} missing");
            lines.take_while(|l| l.starts_with("    ")).map(|l| format!("{}\n", l.trim())).collect()
        };
        assert!(section("account_key").contains("secret: true"));
        assert!(section("source").contains("required: true"));
        assert!(section("overwrite").contains("One of: true, false, skip, changed."));
        assert!(section("dry_run").contains("defaultValue: false\n"), "{}", section("dry_run"));
        assert!(section("concurrency").contains("type: number"));
        assert!(section("source").contains("type: array\ndefaultValue: []\n"), "{}", section("source"));
        assert!(section("metadata").contains("type: object\ndefaultValue: {}\n"));
        assert!(section("container").contains("defaultValue: \"\"\n"));
    }

    #[test]
    fn action_inputs_state_defaults_but_declare_none() {
        // A runner passes a declared default as INPUT_<NAME>, as if the step had set it.
        let a = action_yml();
        assert!(!a.lines().any(|l| l.trim_start().starts_with("default:")), "{a}");
        let overwrite = SETTINGS.iter().find(|s| s.name == "overwrite").unwrap();
        assert!(action_input_description(overwrite).ends_with("Default: `true`."));
    }

    #[test]
    fn markdown_cells_never_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        for line in settings_markdown().lines().filter(|l| l.starts_with("| `")) {
            let unescaped = line.replace("\\|", "");
            assert_eq!(unescaped.matches('|').count(), 5, "{line}");
        }
    }
}
