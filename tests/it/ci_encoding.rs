//! Settings exactly as the CI engines send them: Drone's and Woodpecker's
//! encoding of a step's `settings:` (a list of scalars comma-joined, maps as JSON with sorted
//! keys), run through the real binary against Azurite; and every YAML example in the
//! documentation, encoded the same way and run (a dry run, or a real run against Azurite).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::support::*;

/// A step's `settings:` as the engines encode them (tests/support/ci_settings.py, PyYAML).
pub struct Encoded {
    pub env: BTreeMap<String, String>,
    /// Variables that came from `from_secret` (their value is the test's to choose).
    pub secrets: Vec<String>,
}

fn python(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let py = tool(".cache/venv/bin/python", "PYBLOB_PYTHON", "python");
    let mut child = Command::new(py)
        .arg(repo_root().join("tests/support/ci_settings.py"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ci_settings.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn encoded(v: &serde_json::Value) -> Encoded {
    let env = v["env"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    let secrets = v["secrets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    Encoded { env, secrets }
}

/// Encodes a `settings:` mapping (YAML) into `PLUGIN_*` exactly as Drone and Woodpecker do.
pub fn encode_settings(yaml: &str) -> Encoded {
    encoded(&python(&["encode"], Some(yaml)))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An unsigned-checked JWT (nothing here verifies signatures).
pub fn jwt(claims: serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("not-a-real-signature")
    )
}

/// What a test puts in a `from_secret` variable: a value of the shape the setting accepts.
fn secret_placeholder(var: &str) -> String {
    match var {
        _ if var.starts_with("INPUT_") => secret_placeholder(&var.replacen("INPUT_", "PLUGIN_", 1)),
        "PLUGIN_SAS_TOKEN" => "sv=2024-08-04&ss=b&srt=co&sp=rwl&se=2099-01-01T00:00:00Z&sig=placeholder".into(),
        "PLUGIN_ACCOUNT_KEY" => DEV_KEY.into(),
        "PLUGIN_CONNECTION_STRING" => "UseDevelopmentStorage=true".into(),
        "PLUGIN_ACCESS_TOKEN" => storage_token("https://storage.azure.com", 3600),
        _ => jwt(serde_json::json!({
            "iss": "https://ci.example", "sub": "repo:org/repo", "aud": "api://AzureADTokenExchange",
            "exp": now() + 3600, "nbf": now() - 5,
        })),
    }
}

/// `${VAR}` (Drone, Woodpecker) and `${{ expr }}` (Actions) as the engines substitute them
/// before the step runs.
fn substitute(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let close = if rest[i..].starts_with("${{") { "}}" } else { "}" };
        let Some(end) = rest[i..].find(close) else { break };
        let var = rest[i + 2..i + end].trim_matches(|c: char| c == '{' || c.is_whitespace()).to_ascii_lowercase();
        out.push_str(if var.ends_with("repo") || var.ends_with("repository") {
            "org/repo"
        } else if var.contains("tenant_id") || var.contains("client_id") {
            "11111111-1111-1111-1111-111111111111"
        } else {
            "abc123"
        });
        rest = &rest[i + end + close.len()..];
    }
    out.push_str(rest);
    out
}

/// Paths a glob selects, one per `{a,b}` branch: `**` → `a/b`, `*` → `x`, `?` → `q`,
/// `[ab]` → `a`; a glob without wildcards is taken as a file, or as a directory (a file inside).
fn synthesize(glob: &str) -> Vec<String> {
    if let (Some(open), Some(close)) = (glob.find('{'), glob.find('}')) {
        if open < close {
            return glob[open + 1..close]
                .split(',')
                .flat_map(|b| synthesize(&format!("{}{b}{}", &glob[..open], &glob[close + 1..])))
                .collect();
        }
    }
    let plain = !glob.contains(['*', '?', '[']);
    let mut p = glob.trim_start_matches("./").replace("**", "a/b").replace('*', "x").replace('?', "q");
    while let (Some(o), Some(c)) = (p.find('['), p.find(']')) {
        let first = p[o + 1..c].chars().next().unwrap_or('c').to_string();
        p.replace_range(o..=c, &first);
    }
    if plain && (p.ends_with('/') || !p.rsplit('/').next().unwrap_or("").contains('.')) {
        p = format!("{}/file.bin", p.trim_end_matches('/'));
    }
    vec![p.replace("//", "/")]
}

#[test]
fn ci_encoding_braces_in_comma_joined_lists_never_split() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // `source: ["dist/*.{js,css}", "img/*.{png,svg}"]` and `exclude: ["*.min.{js,css}"]`,
    // as the engines pass them: comma-joined.
    let az = Azurite::shared();
    let c = container("braces");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    for f in [
        "dist/app.js",
        "dist/app.css",
        "dist/app.min.js",
        "dist/app.min.css",
        "dist/app.map",
        "img/a.png",
        "img/b.svg",
        "img/c.gif",
    ] {
        write(ws, f, f.as_bytes());
    }
    plugin(ws)
        .azurite(az, &c)
        .set("source", "dist/*.{js,css},img/*.{png,svg}")
        .set("exclude", "*.min.{js,css}")
        .run()
        .assert_ok();
    assert_eq!(names(az, &c), vec!["dist/app.css", "dist/app.js", "img/a.png", "img/b.svg"]);
}

#[test]
fn ci_encoding_header_maps_never_depend_on_key_order() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // `cache_control: {"**/*.html": no-cache, "**": "public, max-age=31536000, immutable"}`
    // arrives with its keys sorted, `**` first; the most specific glob still wins.
    let az = Azurite::shared();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    for f in ["site/index.html", "site/docs/page.html", "site/app.js"] {
        write(ws, f, f.as_bytes());
    }
    let long = "public, max-age=31536000, immutable";
    let sorted = format!(r#"{{"**":"{long}","**/*.html":"no-cache"}}"#);
    let listed = format!(r#"[{{"**/*.html":"no-cache"}},{{"**":"{long}"}}]"#);
    let reversed = format!(r#"[{{"**":"{long}"}},{{"**/*.html":"no-cache"}}]"#);
    for (tag, value, html) in
        [("sorted", &sorted, "no-cache"), ("list", &listed, "no-cache"), ("listrev", &reversed, long)]
    {
        let c = container(tag);
        plugin(ws)
            .azurite(az, &c)
            .set("source", "site/**")
            .set("strip_prefix", "site")
            .set("cache_control", value.as_str())
            .set("content_type", r#"{"*":"application/x-other","*.html":"text/html; charset=utf-8"}"#)
            .run()
            .assert_ok();
        for (name, want) in [("index.html", html), ("docs/page.html", html), ("app.js", long)] {
            let (_, p) = fetch(az, &c, name);
            assert_eq!(p["cache_control"], want, "{tag}: {name}");
        }
        let (_, p) = fetch(az, &c, "index.html");
        assert_eq!(p["content_type"], "text/html; charset=utf-8", "{tag}");
        let (_, p) = fetch(az, &c, "app.js");
        assert_eq!(p["content_type"], "application/x-other", "{tag}");
    }
}

#[test]
fn ci_encoding_a_list_entry_with_two_globs_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    plugin(dir.path())
        .set("source", "a.txt")
        .set("dry_run", "true")
        .set("container", "c-dry")
        .set("cache_control", r#"[{"*.html":"no-cache","*":"public"}]"#)
        .run()
        .assert_code(2)
        .assert_contains("PLUGIN_CACHE_CONTROL")
        .assert_contains("one-entry maps");
}

#[test]
fn ci_encoding_encoder_matches_the_engines() {
    if !crate::support::python_present() {
        return;
    }
    // The cases of Woodpecker's params_test.go / Drone's encoder, as users write them.
    let e = encode_settings(
        r#"
source: ["dist/*.{js,css}", "docs/**"]
exclude: "*.map"
cache_control: {"**/*.html": no-cache, "**": "public, max-age=31536000"}
content_type: [{"**/*.html": "text/html"}, {"**": "text/plain"}]
dry_run: true
concurrency: 8
metadata: {team: web, build: 42}
sas_token: {from_secret: artifacts_sas}
"#,
    );
    let want = [
        ("PLUGIN_SOURCE", "dist/*.{js,css},docs/**"),
        ("PLUGIN_EXCLUDE", "*.map"),
        ("PLUGIN_CACHE_CONTROL", r#"{"**":"public, max-age=31536000","**/*.html":"no-cache"}"#),
        ("PLUGIN_CONTENT_TYPE", r#"[{"**/*.html":"text/html"},{"**":"text/plain"}]"#),
        ("PLUGIN_DRY_RUN", "true"),
        ("PLUGIN_CONCURRENCY", "8"),
        ("PLUGIN_METADATA", r#"{"build":42,"team":"web"}"#),
        ("PLUGIN_SAS_TOKEN", ""),
    ];
    for (k, v) in want {
        assert_eq!(e.env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(e.env.len(), want.len());
    assert_eq!(e.secrets, vec!["PLUGIN_SAS_TOKEN"]);
}

#[test]
fn ci_encoding_engine_encoded_settings_reach_azurite_as_written() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("encoded");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    for f in ["dist/index.html", "dist/app.js", "dist/app.css", "dist/app.js.map", "dist/img/a.png"] {
        write(ws, f, f.as_bytes());
    }
    let e = encode_settings(
        r#"
source:
  - "dist/*.{js,css,html}"
  - dist/img/**
exclude: ["*.map", "*.{gif,bmp}"]
strip_prefix: dist
cache_control: {"**/*.html": no-cache, "**": "public, max-age=31536000, immutable"}
metadata: {team: web, build: 42}
"#,
    );
    let mut p = plugin(ws).azurite(az, &c);
    for (k, v) in &e.env {
        p = p.env(k, v.as_str());
    }
    p.run().assert_ok();
    assert_eq!(names(az, &c), vec!["app.css", "app.js", "img/a.png", "index.html"]);
    let (_, html) = fetch(az, &c, "index.html");
    assert_eq!(html["cache_control"], "no-cache");
    let (_, js) = fetch(az, &c, "app.js");
    assert_eq!(js["cache_control"], "public, max-age=31536000, immutable");
    assert_eq!(js["metadata"]["build"], "42");
}

/// The documents whose YAML examples users copy.
fn documented_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string(), "docs.md".to_string()];
    for dir in ["docs", "docs/examples"] {
        let mut found: Vec<String> = std::fs::read_dir(repo_root().join(dir))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
            .filter(|f| f.ends_with(".md") || f.ends_with(".yml") || f.ends_with(".yaml"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// The step's environment: `${VAR}`s substituted, secrets filled with placeholders.
fn step_env(e: &Encoded) -> BTreeMap<String, String> {
    // A Harness expression (`<+steps.x.output.outputVariables.Y>`) or an Actions secret
    // (`${{ secrets.X }}`) is resolved at run time, like a secret.
    let runtime: Vec<String> = e
        .env
        .iter()
        .filter(|(_, v)| (v.starts_with("<+") && v.ends_with('>')) || v.contains("secrets."))
        .map(|(k, _)| k.clone())
        .collect();
    let mut env: BTreeMap<String, String> = e.env.iter().map(|(k, v)| (k.clone(), substitute(v))).collect();
    for s in e.secrets.iter().cloned().chain(runtime) {
        let v = secret_placeholder(&s);
        env.insert(s, v);
    }
    env
}

/// Runs an example step as the engines pass it (`env`), against Azurite instead of its
/// account (its credentials are unset); it must exit 0. `p` is the plugin in its workspace.
fn example_on_azurite(at: &str, mut p: Plugin, env: &BTreeMap<String, String>, az: &Azurite, c: &str) -> Out {
    for (k, v) in env {
        p = p.env(k, v.as_str());
    }
    for k in ["account_name", "sas_token", "connection_string", "tenant_id", "client_id", "federated_token"] {
        p = p.unset(k);
    }
    let out = p.azurite(az, c).run();
    assert_eq!(out.code, 0, "{at}: the example fails as the engines pass it:\n{env:#?}\n{}", out.all());
    out
}

/// An upload example, as a dry run over a workspace holding a file for each `source` glob:
/// each must be planned (unless `exclude` removes it).
fn run_upload_example(at: &str, env: &BTreeMap<String, String>) {
    use plugin_azure_storage::config::{parse_list, PathPattern};
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    // A setting as the plugin reads it: PLUGIN_<NAME>, else the action input INPUT_<NAME>.
    let get = |name: &str| {
        let up = name.to_ascii_uppercase();
        env.get(&format!("PLUGIN_{up}")).or(env.get(&format!("INPUT_{up}"))).map_or("", String::as_str)
    };
    let sources = parse_list(get("source")).unwrap();
    let excludes: Vec<PathPattern> =
        parse_list(get("exclude")).unwrap().iter().map(|e| PathPattern::new(e).unwrap()).collect();
    let files: Vec<String> = sources.iter().flat_map(|s| synthesize(s)).collect();
    for f in &files {
        write(ws, f, b"example");
    }
    let mut p = plugin(ws).set("dry_run", "true");
    // A dry run of an upload sends nothing; should it ever try, it reaches no one.
    p = p.env("HTTPS_PROXY", "http://127.0.0.1:9").env("HTTP_PROXY", "http://127.0.0.1:9");
    for (k, v) in env {
        p = p.env(k, v.as_str());
    }
    let out = p.set("dry_run", "true").run();
    assert_eq!(out.code, 0, "{at}: the example fails as the engines pass it:\n{env:#?}\n{}", out.all());
    for f in files.iter().filter(|f| !excludes.iter().any(|x| x.is_match(f))) {
        assert!(out.all().contains(&format!("would upload {f} ")), "{at}: `{f}` not planned:\n{}", out.all());
    }
}

/// A download example, for real against Azurite: a file is put under the example's `source`
/// prefix; the example (its credentials and account replaced by Azurite's) fetches it.
fn run_download_example(at: &str, env: &BTreeMap<String, String>) {
    let az = Azurite::shared();
    let c = container("docdownload");
    let source = env.get("PLUGIN_SOURCE").cloned().unwrap_or_default();
    let prefix: String = source.chars().take_while(|c| !"*?[{".contains(*c)).collect();
    let seed = tempfile::tempdir().unwrap();
    write(seed.path(), "myapp.tar.gz", b"artifact");
    plugin(seed.path()).azurite(az, &c).set("source", "myapp.tar.gz").set("target", prefix.as_str()).run().assert_ok();

    let dir = tempfile::tempdir().unwrap();
    let out = example_on_azurite(at, plugin(dir.path()), env, az, &c);
    let got = tree(dir.path());
    let file = got.iter().find(|f| f.ends_with("myapp.tar.gz"));
    let file = file.unwrap_or_else(|| panic!("{at}: nothing downloaded: {got:?}\n{}", out.all()));
    assert_eq!(std::fs::read(dir.path().join(file)).unwrap(), b"artifact", "{at}");
    let target = env.get("PLUGIN_TARGET").map_or("", String::as_str);
    assert!(Path::new(file).starts_with(target), "{at}: `{file}` is not under `{target}`");
}

/// A delete example, for real against Azurite: a blob under the folder `source` names (and one
/// outside it, for a folder source) is stored, the example deletes it and keeps the other; an
/// `older_than` keeps the fresh blob instead.
fn run_delete_example(at: &str, env: &BTreeMap<String, String>) {
    let az = Azurite::shared();
    let c = container("docdelete");
    let source = env.get("PLUGIN_SOURCE").cloned().unwrap_or_default();
    let folder: String = source.chars().take_while(|c| !"*?[{".contains(*c)).collect();
    let seed = tempfile::tempdir().unwrap();
    write(seed.path(), "site/index.html", b"preview");
    let put = |target: &str| {
        plugin(seed.path())
            .azurite(az, &c)
            .set("source", "site/**")
            .set("strip_prefix", "site")
            .set("target", target)
            .run()
            .assert_ok();
    };
    put(folder.trim_end_matches('/'));
    let inside = format!("{folder}{}index.html", if folder.is_empty() || folder.ends_with('/') { "" } else { "/" });
    if !folder.is_empty() {
        put("elsewhere");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = example_on_azurite(at, plugin(dir.path()), env, az, &c);
    let left = list(az, &c);
    if env.contains_key("PLUGIN_OLDER_THAN") {
        assert!(left.contains(&inside), "{at}: `older_than` deleted a fresh blob: {left:?}\n{}", out.all());
    } else {
        assert!(!left.contains(&inside), "{at}: `{inside}` was not deleted: {left:?}\n{}", out.all());
    }
    if !folder.is_empty() {
        assert!(left.contains(&"elsewhere/index.html".to_string()), "{at}: deleted outside `{folder}`: {left:?}");
    }
}

/// A cache example, for real against Azurite: the files its key hashes and (for a save)
/// its `source` directories are made; a save must save (or find its key saved), a restore
/// must restore or report a miss, both with exit 0.
fn run_cache_example(at: &str, env: &BTreeMap<String, String>) {
    let az = Azurite::shared();
    let c = &container("doccache");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let keys = [env.get("PLUGIN_CACHE_KEY"), env.get("PLUGIN_RESTORE_KEYS")];
    for text in keys.into_iter().flatten() {
        for part in text.split("checksum \"").skip(1) {
            let file = part.split('"').next().unwrap();
            write(ws, file, b"lock file");
        }
        // `{{ hashFiles "GLOB" ... }}`: a file for each glob (the call's quoted arguments).
        for call in text.split("hashFiles").skip(1) {
            let args = call.split("}}").next().unwrap();
            for glob in args.split('"').skip(1).step_by(2) {
                for file in synthesize(glob) {
                    write(ws, &file, b"lock file");
                }
            }
        }
    }
    let save = env.get("PLUGIN_ACTION").map(String::as_str) == Some("cache_save");
    if save {
        let sources = plugin_azure_storage::config::parse_list(&env["PLUGIN_SOURCE"]).unwrap();
        for s in sources {
            write(ws, &format!("{s}/example.txt"), b"cached");
        }
    }
    let out =
        example_on_azurite(at, plugin(ws).env("CI_COMMIT_BRANCH", "main").env("DRONE_BRANCH", "main"), env, az, c);
    let want: &[&str] = if save { &["saved", "not saved again"] } else { &["restored", "cache miss"] };
    assert!(want.iter().any(|w| out.all().contains(w)), "{at}: neither of {want:?}:\n{}", out.all());
}

#[test]
fn ci_encoding_every_documented_example_runs_as_the_engines_pass_it() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let files = documented_files();
    let args: Vec<&str> = std::iter::once("examples").chain(files.iter().map(String::as_str)).collect();
    let found = python(&args, None);
    let mut steps = 0;
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    for block in found.as_array().unwrap() {
        let at = format!("{}:{}", block["file"].as_str().unwrap(), block["line"]);
        assert!(block["error"].is_null(), "{at}: the YAML example does not parse: {}", block["error"]);
        for step in block["steps"].as_array().unwrap() {
            // An action's INPUT_<NAME> is read as PLUGIN_<NAME> (when that is absent): run it so.
            let mut env = step_env(&encoded(step));
            for (k, v) in env.clone() {
                if let Some(name) = k.strip_prefix("INPUT_") {
                    env.remove(&k);
                    env.entry(format!("PLUGIN_{name}")).or_insert(v);
                }
            }
            match env.get("PLUGIN_ACTION").map(String::as_str) {
                Some("download") => run_download_example(&at, &env),
                Some("cache_save" | "cache_restore") => run_cache_example(&at, &env),
                Some("delete") => run_delete_example(&at, &env),
                _ => run_upload_example(&at, &env),
            }
            steps += 1;
            *per_file.entry(block["file"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    // The examples users copy are all checked (a parser that found nothing would pass).
    for f in [
        "README.md",
        "docs.md",
        "docs/auth.md",
        "docs/examples/drone.yml",
        "docs/examples/woodpecker.yml",
        "docs/examples/github-actions.yml",
    ] {
        assert!(per_file.get(f).copied().unwrap_or(0) > 0, "no plugin step found in {f}: {per_file:?}");
    }
    eprintln!("checked {steps} example steps: {per_file:?}");
}

/// `KEY=VALUE` lines of an output file.
fn outputs(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn ci_encoding_outputs_for_later_steps() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("outputs");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "dist/a.txt", b"hello");
    write(&ws, "dist/b/c.txt", b"world!");
    let gh = dir.path().join("github_output");
    let drone = dir.path().join("drone_output");
    std::fs::write(&gh, "earlier=kept\n").unwrap();
    plugin(&ws)
        .azurite(az, &c)
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("target", "org/repo/abc/")
        .set("manifest", "out/manifest.json")
        .env("GITHUB_OUTPUT", gh.to_str().unwrap())
        .env("DRONE_OUTPUT", drone.to_str().unwrap())
        .run()
        .assert_ok();
    let base = format!("{}/{c}", az.endpoint());
    for f in [&gh, &drone] {
        let o = outputs(f);
        assert_eq!(o["transferred"], "2", "{o:?}");
        assert_eq!(o["skipped"], "0");
        assert_eq!(o["failed"], "0");
        assert_eq!(o["bytes"], "11");
        assert_eq!(o["url"], format!("{base}/org/repo/abc/"));
        assert_eq!(o["manifest"], "out/manifest.json");
    }
    assert_eq!(outputs(&gh)["earlier"], "kept", "appended, not replaced");
    for k in outputs(&drone).keys() {
        let documented = crate::docs::docgen::OUTPUTS.iter().any(|(n, _)| n == k);
        assert!(documented, "output `{k}` is not declared in action.yml / docgen::OUTPUTS");
    }

    // Again with overwrite: skip, and one file: `url` is that file's; no manifest key.
    std::fs::remove_file(&gh).unwrap();
    plugin(&ws)
        .azurite(az, &c)
        .set("source", "dist/a.txt")
        .set("strip_prefix", "dist")
        .set("target", "org/repo/abc")
        .set("overwrite", "skip")
        .env("GITHUB_OUTPUT", gh.to_str().unwrap())
        .run()
        .assert_ok();
    let o = outputs(&gh);
    assert_eq!((o["transferred"].as_str(), o["skipped"].as_str(), o["bytes"].as_str()), ("0", "1", "0"), "{o:?}");
    assert_eq!(o["url"], format!("{base}/org/repo/abc/a.txt"));
    assert!(!o.contains_key("manifest"));

    // A download of a prefix names the prefix.
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::remove_file(&gh).unwrap();
    plugin(&dl)
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "org/repo/abc/")
        .env("GITHUB_OUTPUT", gh.to_str().unwrap())
        .run()
        .assert_ok();
    let o = outputs(&gh);
    assert_eq!((o["transferred"].as_str(), o["bytes"].as_str()), ("2", "11"), "{o:?}");
    assert_eq!(o["url"], format!("{base}/org/repo/abc/"));
}

#[test]
fn ci_encoding_an_unwritable_output_file_fails_the_run_by_name() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("outputsbad");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let missing = dir.path().join("no/such/dir/out");
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .env("GITHUB_OUTPUT", missing.to_str().unwrap())
        .run()
        // Like an unwritable manifest: the transfer stands, the summary is printed, exit 1.
        .assert_code(1)
        .assert_contains("transferred            1")
        .assert_contains("cannot append the outputs to")
        .assert_contains("no/such/dir/out");
    assert_eq!(fetch(az, &c, "a.txt").0, b"a");
}

/// An Entra-shaped storage token that the OAuth Azurite accepts (it checks iss/aud/nbf/exp).
pub fn storage_token(aud: &str, exp_in: i64) -> String {
    jwt(serde_json::json!({
        "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "aud": aud, "iat": now(), "nbf": now() - 60, "exp": now() + exp_in,
        "appid": "11111111-2222-3333-4444-555555555555", "oid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    }))
}

#[test]
fn ci_encoding_a_pre_minted_access_token_is_the_bearer_and_never_printed() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = oauth_azurite();
    let c = container("accesstoken");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"token-auth");
    let token = storage_token("https://storage.azure.com", 3600);
    let sig = token.rsplit('.').next().unwrap().to_string();
    let base = |p: Plugin| {
        p.set("endpoint", az.endpoint())
            .set("container", c.as_str())
            .set("create_container", "true")
            .set("source", "a.txt")
            .set("log_level", "trace")
            .env("SSL_CERT_FILE", az.cert.as_ref().unwrap().to_str().unwrap())
    };
    // PLUGIN_ACCESS_TOKEN, then AZURE_ACCESS_TOKEN (the fallback).
    for (var, target) in [("PLUGIN_ACCESS_TOKEN", "one"), ("AZURE_ACCESS_TOKEN", "two")] {
        let out = base(plugin(dir.path())).set("target", target).env(var, token.as_str()).run();
        out.assert_ok().assert_contains(
            "auth: access token (oid aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, appid 11111111-2222-3333-4444-555555555555",
        );
        assert!(!out.all().contains(&token) && !out.all().contains(&sig), "the token appears in the output");
    }
    let mut got = list(az, &c);
    got.sort();
    assert_eq!(got, vec!["one/a.txt", "two/a.txt"]);

    // Refused before the network, naming the setting: expired, wrong audience, not a JWT.
    for (bad, why) in [
        (storage_token("https://storage.azure.com", -120), "expired at"),
        (storage_token("https://management.azure.com", 3600), "not a token for Azure Storage"),
        ("secret-opaque-value".to_string(), "is not a JWT"),
    ] {
        let out = base(plugin(dir.path())).set("access_token", bad.as_str()).set("target", "never").run();
        out.assert_code(2).assert_contains("`access_token` (PLUGIN_ACCESS_TOKEN)").assert_contains(why);
        assert!(!out.all().contains(&bad), "the token appears in the output");
    }
    assert!(!list(az, &c).iter().any(|n| n.starts_with("never/")));
    // A bearer token never travels over plain HTTP.
    base(plugin(dir.path()))
        .set("endpoint", Azurite::shared().endpoint())
        .set("access_token", token.as_str())
        .run()
        .assert_code(3)
        .assert_contains("only over HTTPS");
}

/// A self-signed certificate with `CA:TRUE`, as `openssl req -x509 ... -addext
/// subjectAltName=IP:127.0.0.1` makes it (Microsoft's Azurite instructions), for `names`.
fn ca_true_cert(dir: &Path, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn https_azurite(dir: &Path, names: &[&str]) -> Azurite {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = ca_true_cert(dir, names);
    let args: Vec<String> =
        vec!["--cert".into(), cert.display().to_string(), "--key".into(), key.display().to_string()];
    Azurite::start(&args, "https", Some(cert))
}

#[test]
fn ci_encoding_tls_a_ca_true_self_signed_certificate_in_the_bundle_is_accepted() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let az = https_azurite(&dir.path().join("good"), &["127.0.0.1"]);
    let c = container("catrue");
    write(dir.path(), "ws/a.txt", b"over tls");
    let ws = dir.path().join("ws");
    let bundle = az.cert.clone().unwrap();
    let run = |bundle: &Path| {
        plugin(&ws)
            .azurite(&az, &c)
            .set("source", "a.txt")
            .set("retries", "3")
            .set("log_level", "debug")
            .env("SSL_CERT_FILE", bundle.to_str().unwrap())
            .run()
    };
    run(&bundle).assert_ok();
    assert_eq!(list(&az, &c), vec!["a.txt"]);

    // Not in the bundle: refused, as a certificate error.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (other_cert, _) = ca_true_cert(&other, &["127.0.0.1"]);
    let out = run(&other_cert);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.all().to_lowercase().contains("certificate"), "{}", out.all());

    // In the bundle, but for another name: refused (the name is still checked).
    let wrong = https_azurite(&dir.path().join("wrong"), &["storage.example.invalid"]);
    let out = plugin(&ws)
        .azurite(&wrong, &container("catruename"))
        .set("source", "a.txt")
        .set("retries", "0")
        .env("SSL_CERT_FILE", wrong.cert.as_ref().unwrap().to_str().unwrap())
        .run();
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.all().to_lowercase().contains("certificate"), "{}", out.all());
}

#[test]
fn ci_encoding_action_inputs_are_settings_when_plugin_vars_are_absent() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // GitHub runs the docker action with each input as INPUT_<NAME> (action.yml).
    let az = Azurite::shared();
    let c = container("inputs");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/a.txt", b"a");
    write(dir.path(), "dist/b.txt", b"b");
    plugin(dir.path())
        .env("INPUT_ENDPOINT", az.endpoint())
        .env("INPUT_ACCOUNT_KEY", DEV_KEY)
        .env("INPUT_CONTAINER", c.as_str())
        .env("INPUT_CREATE_CONTAINER", "true")
        .env("INPUT_SOURCE", "dist/*.txt")
        .env("INPUT_STRIP_PREFIX", "dist")
        .env("INPUT_TARGET", "ignored")
        .set("target", "from-plugin") // PLUGIN_<NAME> wins over INPUT_<NAME>
        .env("INPUT_EXCLUDE", "") // an input left empty is unset
        .run()
        .assert_ok();
    let mut got = list(az, &c);
    got.sort();
    assert_eq!(got, vec!["from-plugin/a.txt", "from-plugin/b.txt"]);
}

/// The environment a GitHub/Forgejo runner gives the docker action for a step's `with:`
/// (YAML): `INPUT_<NAME>` for every input action.yml declares, the `with:` value, else the
/// input's `default:`, else empty (tests/support/ci_settings.py `runner`).
fn runner_env(with: &str) -> BTreeMap<String, String> {
    let v = python(&["runner", repo_root().join("action.yml").to_str().unwrap()], Some(with));
    encoded(&v).env
}

/// A step's `with:` pointing at Azurite with the development key.
fn azurite_with(az: &Azurite, c: &str, rest: &str) -> String {
    format!("endpoint: {}\naccount_key: {DEV_KEY}\ncontainer: {c}\ncreate_container: true\n{rest}", az.endpoint())
}

fn run_as_action(ws: &Path, with: &str) -> Out {
    let mut p = plugin(ws);
    for (k, v) in runner_env(with) {
        p = p.env(&k, v);
    }
    p.run()
}

#[test]
fn ci_encoding_action_sync_through_the_runner_env_is_a_sync() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // A runner sets INPUT_OVERWRITE when action.yml gives `overwrite` a default: a sync
    // then stopped with "overwrite does not apply to sync", set by nobody.
    let az = Azurite::shared();
    let c = container("actsync");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "site/index.html", b"<h1>");
    write(dir.path(), "site/a/b.css", b"b{}");
    let with = azurite_with(az, &c, "action: sync\nsource: site/**\nstrip_prefix: site\ntarget: web\n");
    run_as_action(dir.path(), &with).assert_ok().assert_lacks("does not apply");
    std::fs::remove_file(dir.path().join("site/a/b.css")).unwrap();
    run_as_action(dir.path(), &with).assert_ok();
    assert_eq!(names(az, &c), vec!["web/index.html"]);
}

#[test]
fn ci_encoding_action_cache_save_twice_does_not_rewrite_the_key() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // A runner-set INPUT_OVERWRITE=true made every cache_save rewrite an existing key.
    let az = Azurite::shared();
    let c = container("actcache");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deps/lib.a", b"v1");
    let with = azurite_with(az, &c, "action: cache_save\nsource: deps\ntarget: caches\ncache_key: deps-1\n");
    run_as_action(dir.path(), &with).assert_ok();
    let etag = fetch(az, &c, "caches/trusted/deps-1.tar.zst").1["etag"].clone();
    write(dir.path(), "deps/lib.b", b"v2");
    run_as_action(dir.path(), &with).assert_ok().assert_contains("cache `deps-1` exists: not saved again");
    assert_eq!(fetch(az, &c, "caches/trusted/deps-1.tar.zst").1["etag"], etag, "an existing key was rewritten");
}

#[test]
fn ci_encoding_multi_line_lists_are_one_item_per_line_on_every_engine() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // `source: |` (one glob per line) through the action, with blank lines and indentation,
    // and the same block under Drone/Woodpecker's `settings:` (a string passed as is).
    let az = Azurite::shared();
    let c = container("multiline");
    let dir = tempfile::tempdir().unwrap();
    for f in ["dist/app.js", "dist/app.js.map", "dist/css/site.css", "docs/guide.md", "other.txt"] {
        write(dir.path(), f, f.as_bytes());
    }
    let with = azurite_with(az, &c, "source: |\n  dist/**\n\n    docs/*.md  \nexclude: |\n  *.map\n\ntarget: build\n");
    run_as_action(dir.path(), &with).assert_ok();
    assert_eq!(names(az, &c), vec!["build/dist/app.js", "build/dist/css/site.css", "build/docs/guide.md"]);

    let enc = encode_settings("source: |\n  build/dist/app.js\n  build/docs/**\ntarget: out\n");
    assert_eq!(enc.env["PLUGIN_SOURCE"], "build/dist/app.js\nbuild/docs/**\n", "the engines pass a block as is");
    let mut down = plugin(dir.path()).azurite(az, &c).set("action", "download");
    for (k, v) in &enc.env {
        down = down.env(k, v.clone());
    }
    down.run().assert_ok();
    assert_eq!(tree(&dir.path().join("out")), vec!["build/dist/app.js", "build/docs/guide.md"]);
}

#[test]
fn ci_encoding_action_inputs_left_out_leave_the_environment_fallbacks_in_charge() {
    if !crate::support::python_present() {
        return;
    }
    // With `default:` in action.yml, a runner's INPUT_AUTHORITY_HOST (the public cloud) hid
    // AZURE_AUTHORITY_HOST (a sovereign cloud's, set by the workflow). Every setting with an
    // environment fallback must read that fallback when the step's `with:` leaves it out.
    use plugin_azure_storage::config::RawSettings;
    use plugin_azure_storage::settings::SETTINGS;
    let mut env = runner_env("container: artifacts\nsource: dist/**\n");
    for st in SETTINGS {
        for var in st.env_fallback {
            env.insert(var.to_string(), format!("from-{var}"));
        }
    }
    let raw = RawSettings::from_map(env);
    for st in SETTINGS.iter().filter(|s| !s.env_fallback.is_empty()) {
        assert_eq!(raw.get(st.name), Some(format!("from-{}", st.env_fallback[0]).as_str()), "{}", st.name);
    }
    assert!(raw.unknown().is_empty(), "{:?}", raw.unknown());
}
