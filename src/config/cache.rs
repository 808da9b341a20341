//! Cache settings (`action: cache_save` / `cache_restore`): the key template, the
//! `restore_keys` fallbacks, the compression level and `fail_on_miss`.
//!
//! A template is parsed here, before any network call: `{{ env "VAR" }}`, `{{ arch }}`,
//! `{{ os }}` and `{{ branch }}` are resolved from the environment at once (a variable that
//! is not set is a settings error); `{{ checksum "FILE" }}` and `{{ hashFiles "GLOB" ... }}`
//! stay parts for the cache module to hash from the workspace. The rules of a key
//! ([`check_key`]) are checked on the template here (a `checksum` or `hashFiles` always
//! renders to hex digits) and again on the rendered key.

use super::RawSettings;

/// One piece of a parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Text(String),
    /// SHA-256 (hex) of this workspace file, computed when the key is rendered.
    Checksum(String),
    /// SHA-256 (hex) over the workspace files these globs select (`{{ hashFiles "GLOB" ... }}`),
    /// computed when the key is rendered.
    HashFiles(Vec<String>),
}

/// The arguments of a template function: quoted strings separated by white space
/// (`"a" "b"`), each non-empty and without a `"`; `None` when they are not that.
fn quoted_args(arg: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = arg.trim_start();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('"')?;
        let end = inner.find('"')?;
        if end == 0 {
            return None;
        }
        out.push(inner[..end].to_string());
        let after = &inner[end + 1..];
        if !after.is_empty() && !after.starts_with(char::is_whitespace) {
            return None;
        }
        rest = after.trim_start();
    }
    Some(out)
}

/// Whether a path or glob given to a template function reaches outside the workspace.
fn outside_workspace(path: &str) -> bool {
    path.starts_with('/') || path.split('/').any(|c| c == "..")
}

/// The validated cache settings.
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    pub key: Vec<KeyPart>,
    pub restore_keys: Vec<Vec<KeyPart>>,
    pub compression_level: i32,
    pub fail_on_miss: bool,
    /// `overwrite` was set to `true` explicitly (a cache key is not written again otherwise).
    pub overwrite_explicit: bool,
    /// `cache_restore`: the most the archive may expand to in the workspace.
    pub max_restore_size: u64,
    /// `cache_restore`: find the archive and set the outputs, download nothing.
    pub lookup_only: bool,
    /// A service or network failure fails the step (by default: a warning, exit 0).
    pub fail_on_cache_error: bool,
    /// The run that writes an archive (`cache_event`, `cache_ref`, `cache_commit`,
    /// `cache_build`, `cache_link`), header-safe, stored with it and printed on restore.
    pub writer: Vec<(String, String)>,
}

/// The archive format stored as metadata `cache_format`: another one is a miss.
pub const FORMAT: &str = "tar+zstd/1";

/// The `source` list as stored in metadata `cache_sources`: sorted, comma-separated, each
/// name percent-encoded where it is not visible ASCII (and `%` and `,`), so the same set
/// always gives the same value and another set another one.
pub fn sources_identity(sources: &[String]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b',').add(b' ');
    let mut names: Vec<String> =
        sources.iter().map(|s| percent_encoding::utf8_percent_encode(s, SET).to_string()).collect();
    names.sort();
    names.dedup();
    names.join(",")
}

/// Who writes an archive: the CI event, ref, commit, build number and link of the run.
fn writer(raw: &RawSettings) -> Vec<(String, String)> {
    let prov = super::provenance(raw);
    let from_prov = |k: &str| prov.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    [
        ("cache_event", super::ci::event(raw)),
        ("cache_ref", branch(raw)),
        ("cache_commit", from_prov("ci_commit")),
        ("cache_build", from_prov("ci_build")),
        ("cache_link", from_prov("ci_link")),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_string(), super::values::header_safe(&v))))
    .collect()
}

/// The branch of the run, from the CI's own variables.
pub fn branch(raw: &RawSettings) -> Option<String> {
    [
        "CI_COMMIT_SOURCE_BRANCH",
        "CI_COMMIT_BRANCH",
        "DRONE_SOURCE_BRANCH",
        "DRONE_BRANCH",
        "GITHUB_HEAD_REF",
        "GITHUB_REF_NAME",
        "CI_COMMIT_REF_NAME",
        "BUILDKITE_BRANCH",
    ]
    .iter()
    .find_map(|v| raw.var(v))
    .map(str::to_string)
}

/// Parses a key template; `Err` says what is wrong and what is accepted.
pub fn parse_template(template: &str, raw: &RawSettings) -> Result<Vec<KeyPart>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("`{template}`: a `{{{{` without its `}}}}`"))?;
        let expr = after[..end].trim();
        rest = &after[end + 2..];
        let (func, arg) = match expr.split_once(char::is_whitespace) {
            Some((f, a)) => (f, Some(a.trim())),
            None => (expr, None),
        };
        let quoted = |a: Option<&str>| -> Result<String, String> {
            a.and_then(|a| a.strip_prefix('"')?.strip_suffix('"'))
                .filter(|a| !a.is_empty() && !a.contains('"'))
                .map(str::to_string)
                .ok_or_else(|| {
                    format!(
                        "`{{{{ {expr} }}}}`: `{func}` takes one quoted argument, e.g. `{{{{ {func} \"{}\" }}}}`",
                        if func == "env" { "VAR" } else { "Cargo.lock" }
                    )
                })
        };
        match func {
            "checksum" => {
                let file = quoted(arg)?;
                if outside_workspace(&file) {
                    return Err(format!("`{{{{ {expr} }}}}`: the file must be inside the workspace (relative, without `..`)"));
                }
                if !text.is_empty() {
                    parts.push(KeyPart::Text(std::mem::take(&mut text)));
                }
                parts.push(KeyPart::Checksum(file));
            }
            "hashFiles" => {
                let globs = arg.and_then(quoted_args).filter(|g| !g.is_empty());
                // `./a/` is `a`, as in `source`.
                let globs: Option<Vec<String>> = globs.map(|g| {
                    g.iter().map(|g| g.trim_start_matches("./").trim_end_matches('/').to_string()).collect()
                });
                let globs = globs.ok_or_else(|| {
                    format!(
                        "`{{{{ {expr} }}}}`: `hashFiles` takes one or more quoted globs, \
                         e.g. `{{{{ hashFiles \"**/Cargo.lock\" \"rust-toolchain.toml\" }}}}`"
                    )
                })?;
                for g in &globs {
                    if g.is_empty() || g == "." {
                        return Err(format!(
                            "`{{{{ {expr} }}}}`: name the files to hash (`.` would hash the cached directories too), e.g. `**/Cargo.lock`"
                        ));
                    }
                    if outside_workspace(g) {
                        return Err(format!(
                            "`{{{{ {expr} }}}}`: the glob `{g}` must be inside the workspace (relative, without `..`)"
                        ));
                    }
                    if let Err(e) = globset::GlobBuilder::new(g).literal_separator(true).build() {
                        return Err(format!("`{{{{ {expr} }}}}`: `{g}` is not a valid glob: {}", e.kind()));
                    }
                }
                if !text.is_empty() {
                    parts.push(KeyPart::Text(std::mem::take(&mut text)));
                }
                parts.push(KeyPart::HashFiles(globs));
            }
            "env" => {
                let var = quoted(arg)?;
                let v = raw.var(&var).ok_or_else(|| format!("`{{{{ {expr} }}}}`: the variable `{var}` is not set"))?;
                text.push_str(v);
            }
            "arch" | "os" | "branch" if arg.is_some() => return Err(format!("`{{{{ {expr} }}}}`: `{func}` takes no argument")),
            "arch" => text.push_str(std::env::consts::ARCH),
            "os" => text.push_str(std::env::consts::OS),
            "branch" => text.push_str(&branch(raw).ok_or_else(|| {
                "`{{ branch }}`: no branch variable is set (CI_COMMIT_BRANCH, DRONE_BRANCH, GITHUB_REF_NAME, ...)".to_string()
            })?),
            _ => {
                return Err(format!(
                    "`{{{{ {expr} }}}}` is not a template function: use `checksum \"FILE\"`, `hashFiles \"GLOB\" ...`, `env \"VAR\"`, `arch`, `os` or `branch`"
                ))
            }
        }
    }
    if rest.contains("}}") {
        return Err(format!("`{template}`: a `}}}}` without its `{{{{`"));
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(KeyPart::Text(text));
    }
    Ok(parts)
}

/// What the rules of a key (a part of a blob name) find wrong with `key`, if anything:
/// empty, a leading or trailing `/`, an empty, `.` or `..` segment, a control character
/// or a backslash.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.trim().is_empty() {
        Some("is empty")
    } else if key.starts_with('/') || key.ends_with('/') {
        Some("begins or ends with `/`")
    } else if key.split('/').any(|c| c == "." || c == ".." || c.is_empty()) {
        Some("has an empty, `.` or `..` path segment")
    } else if key.chars().any(|c| c.is_control() || c == '\\') {
        Some("holds a control character or a backslash")
    } else {
        None
    }
}

const KEY_CHARS: &str = "use letters, digits, `-`, `_`, `.` and `/`";

/// Checks a rendered key (`cache_key`, or a `restore_keys` prefix) as a part of a blob
/// name (see [`key_problem`]); the error names `setting` and its variable.
pub fn check_key(key: &str, setting: &str) -> Result<(), String> {
    match key_problem(key) {
        Some(w) => Err(format!(
            "`{setting}` ({}) renders to `{}`, which {w}: {KEY_CHARS}",
            crate::settings::env_name(setting),
            key.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Checks a parsed template before anything runs: each `{{ checksum }}` or `{{ hashFiles }}` always renders to
/// 64 hex digits, so the template with those in place breaks the rules exactly when every
/// key it renders would (`../x`, `a//b`, `/abs` are settings errors, not run-time ones).
fn check_template(template: &str, parts: &[KeyPart]) -> Result<(), String> {
    let sample: String = parts
        .iter()
        .map(|p| match p {
            KeyPart::Text(t) => t.as_str(),
            KeyPart::Checksum(_) | KeyPart::HashFiles(_) => {
                "0000000000000000000000000000000000000000000000000000000000000000"
            }
        })
        .collect();
    match key_problem(&sample) {
        Some(w) => Err(format!("`{}` renders to a name that {w}: {KEY_CHARS}", template.escape_debug())),
        None => Ok(()),
    }
}

/// Reads the cache settings; errors go to `bad(setting, message)`.
pub(super) fn parse(raw: &RawSettings, caching: bool, problems: &mut super::Problems) -> CacheSettings {
    let mut bad = |setting: &str, message: String| problems.push(setting, message);
    let mut out = CacheSettings { compression_level: 3, ..CacheSettings::default() };
    match raw.get("cache_key") {
        Some(k) => match parse_template(k.trim(), raw).and_then(|p| check_template(k.trim(), &p).map(|()| p)) {
            Ok(parts) => out.key = parts,
            Err(e) => bad("cache_key", e),
        },
        None if caching => bad(
            "cache_key",
            "is required with `action: cache_save` / `cache_restore`, e.g. `cargo-{{ checksum \"Cargo.lock\" }}`"
                .into(),
        ),
        None => {}
    }
    if let Some(list) = raw.get("restore_keys") {
        match super::parse_list(list) {
            Ok(keys) => {
                for k in keys {
                    match parse_template(k.trim(), raw).and_then(|p| check_template(k.trim(), &p).map(|()| p)) {
                        Ok(p) => out.restore_keys.push(p),
                        Err(e) => bad("restore_keys", e),
                    }
                }
            }
            Err(e) => bad("restore_keys", e),
        }
    }
    if let Some(v) = raw.get("compression_level") {
        match v.trim().parse::<i32>() {
            Ok(n) if (1..=19).contains(&n) => out.compression_level = n,
            _ => bad("compression_level", format!("`{v}` is not a whole number from 1 to 19")),
        }
    }
    match raw.get("fail_on_miss").map(|v| (v, super::parse_bool(v))) {
        Some((_, Some(b))) => out.fail_on_miss = b,
        Some((v, None)) => bad("fail_on_miss", format!("`{v}` is not a boolean (true or false)")),
        None => {}
    }
    let default_max =
        crate::settings::find("max_restore_size").and_then(|s| s.default).and_then(|d| super::parse_size(d).ok());
    out.max_restore_size = default_max.unwrap_or(10 << 30);
    if let Some(v) = raw.get("max_restore_size") {
        match super::parse_size(v) {
            Ok(n) if n >= 1 << 20 => out.max_restore_size = n,
            Ok(_) => bad("max_restore_size", format!("`{v}` is too small: at least 1MiB")),
            Err(e) => bad("max_restore_size", e),
        }
    }
    for (setting, flag) in
        [("lookup_only", &mut out.lookup_only), ("fail_on_cache_error", &mut out.fail_on_cache_error)]
    {
        match raw.get(setting).map(|v| (v, super::parse_bool(v))) {
            Some((_, Some(b))) => *flag = b,
            Some((v, None)) => bad(setting, format!("`{v}` is not a boolean (true or false)")),
            None => {}
        }
    }
    out.writer = writer(raw);
    out.overwrite_explicit = raw.get("overwrite").map(|v| v.trim().eq_ignore_ascii_case("true")).unwrap_or(false);
    out
}

/// The `source` directories of a cache mode, normalised (`./a/` is `a`) and deduplicated.
/// A cached directory is archived and restored as a whole, so none may be the workspace
/// itself or lie inside another (a restore would meet its members twice and refuse them).
pub(super) fn cache_sources(sources: Vec<String>, problems: &mut super::Problems) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in sources {
        let parts: Vec<&str> = s.trim().split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        if parts.is_empty() {
            problems.push(
                "source",
                format!(
                    "`{s}` is the whole workspace: a cache holds the directories a build fills \
                     (e.g. `.cargo/registry,target` or `node_modules`), list them instead"
                ),
            );
            continue;
        }
        let norm = parts.join("/");
        if out.contains(&norm) {
            continue;
        }
        out.push(norm);
    }
    let inside = |a: &str, b: &str| b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'));
    for a in &out {
        for b in out.iter().filter(|b| inside(a, b)) {
            problems
                .push("source", format!("`{b}` is inside `{a}`: cached directories may not overlap (keep only `{a}`)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn raw(vars: &[(&str, &str)]) -> RawSettings {
        RawSettings::from_map(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>())
    }

    #[test]
    fn templates_resolve_env_arch_os_branch_and_keep_checksums() {
        let r = raw(&[("RUST_V", "1.85"), ("DRONE_BRANCH", "main")]);
        let p = parse_template(
            r#"cargo-{{ os }}-{{arch}}-{{ env "RUST_V" }}-{{ branch }}-{{ checksum "Cargo.lock" }}{{ checksum "a/b" }}"#,
            &r,
        )
        .unwrap();
        let head = format!("cargo-{}-{}-1.85-main-", std::env::consts::OS, std::env::consts::ARCH);
        assert_eq!(
            p,
            vec![KeyPart::Text(head), KeyPart::Checksum("Cargo.lock".into()), KeyPart::Checksum("a/b".into())]
        );
        assert_eq!(parse_template("plain", &r).unwrap(), vec![KeyPart::Text("plain".into())]);
    }

    #[test]
    fn hash_files_takes_several_quoted_globs() {
        let r = raw(&[]);
        let p = parse_template(r#"k-{{ hashFiles "**/Cargo.lock"  "./rust-toolchain.toml" "src/{a,b}/*.rs" }}-x"#, &r)
            .unwrap();
        assert_eq!(
            p,
            vec![
                KeyPart::Text("k-".into()),
                KeyPart::HashFiles(vec!["**/Cargo.lock".into(), "rust-toolchain.toml".into(), "src/{a,b}/*.rs".into()]),
                KeyPart::Text("-x".into()),
            ]
        );
        check_template("t", &p).unwrap();
    }

    #[test]
    fn keys_break_the_rules_at_settings_time_when_every_rendering_would() {
        let r = raw(&[("SLASH", "/a/"), ("V", "1")]);
        for bad in ["../x", "a//b", "/abs", "/", "a/", "x/./y", "{{ env \"SLASH\" }}b", "a/{{ env \"V\" }}/../b"] {
            let p = parse_template(bad, &r).unwrap();
            let e = check_template(bad, &p).unwrap_err();
            assert!(e.contains("renders to a name that"), "{bad}: {e}");
        }
        for ok in
            ["cargo-{{ checksum \"Cargo.lock\" }}", "{{ checksum \"a\" }}", "linux/cargo-{{ env \"V\" }}-", "a..b"]
        {
            check_template(ok, &parse_template(ok, &r).unwrap()).unwrap();
        }
        for ok in ["cargo-linux-abc", "a/b.c_d", "é"] {
            check_key(ok, "cache_key").unwrap();
        }
        for bad in ["", " ", "/a", "a/", "a//b", "a/../b", "a\nb", "a\\b"] {
            let e = check_key(bad, "restore_keys").unwrap_err();
            assert!(e.contains("PLUGIN_RESTORE_KEYS"), "{e}");
        }
    }

    #[test]
    fn cache_sources_are_normalised_deduplicated_and_may_not_overlap() {
        let run = |list: &[&str]| {
            let mut p = super::super::Problems::default();
            let out = cache_sources(list.iter().map(|s| s.to_string()).collect(), &mut p);
            (out, p.0.iter().map(|i| i.message.clone()).collect::<Vec<_>>())
        };
        assert_eq!(
            run(&["./target/", "target", ".cargo//registry"]),
            (vec!["target".into(), ".cargo/registry".into()], vec![])
        );
        assert_eq!(run(&["sub", "subdir"]).1, Vec::<String>::new(), "a shared prefix is not an overlap");
        let (_, e) = run(&["sub", "sub/b.txt"]);
        assert!(e.len() == 1 && e[0].contains("`sub/b.txt` is inside `sub`"), "{e:?}");
        for whole in [".", "./", "/"] {
            let (out, e) = run(&[whole]);
            assert!(out.is_empty() && e[0].contains("is the whole workspace"), "{whole}: {e:?}");
        }
    }

    #[test]
    fn the_source_identity_is_the_sorted_set_escaped() {
        let id = |l: &[&str]| sources_identity(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(id(&["target", ".cargo/registry"]), ".cargo/registry,target");
        assert_eq!(id(&["target", ".cargo/registry"]), id(&[".cargo/registry", "target"]));
        assert_ne!(id(&["a,b"]), id(&["a", "b"]), "a comma in a name is not a separator");
        assert_eq!(id(&["é x%"]), "%C3%A9%20x%25");
    }

    #[test]
    fn the_writer_is_the_event_ref_commit_and_link() {
        let r = raw(&[
            ("DRONE_BUILD_EVENT", "pull_request"),
            ("DRONE_BRANCH", "main"),
            ("DRONE_COMMIT_SHA", "abc"),
            ("DRONE_BUILD_LINK", "https://ci/x/1"),
        ]);
        let w = writer(&r);
        assert_eq!(w[0], ("cache_event".into(), "DRONE_BUILD_EVENT=pull_request".into()));
        assert_eq!(w[1], ("cache_ref".into(), "main".into()));
        assert!(
            w.contains(&("cache_commit".into(), "abc".into()))
                && w.contains(&("cache_link".into(), "https://ci/x/1".into())),
            "{w:?}"
        );
    }

    #[test]
    fn bad_templates_say_what_is_accepted() {
        let r = raw(&[]);
        for (t, want) in [
            ("a-{{ os", "without its `}}`"),
            ("a-}}", "without its `{{`"),
            ("{{ nope }}", "is not a template function"),
            ("{{ env \"MISSING\" }}", "`MISSING` is not set"),
            ("{{ checksum Cargo.lock }}", "one quoted argument"),
            ("{{ checksum \"../x\" }}", "inside the workspace"),
            ("{{ checksum \"/etc/passwd\" }}", "inside the workspace"),
            ("{{ os \"x\" }}", "takes no argument"),
            ("{{ hashFiles }}", "one or more quoted globs"),
            ("{{ hashFiles Cargo.lock }}", "one or more quoted globs"),
            ("{{ hashFiles \"a\"\"b\" }}", "one or more quoted globs"),
            ("{{ hashFiles \"a\" \"\" }}", "one or more quoted globs"),
            ("{{ hashFiles \"a\" \"../b/*\" }}", "`../b/*` must be inside the workspace"),
            ("{{ hashFiles \"/etc/*\" }}", "inside the workspace"),
            ("{{ hashFiles \"a/[\" }}", "is not a valid glob"),
            ("{{ hashFiles \"./\" }}", "name the files to hash"),
            ("{{ branch }}", "no branch variable"),
        ] {
            let e = parse_template(t, &r).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
