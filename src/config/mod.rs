//! Raw `PLUGIN_*` settings → validated [`Config`].
//!
//! Two types, as ripgrep keeps them: [`RawSettings`] is the environment as given
//! (strings, looked up by setting name with fallbacks), [`Config`] is what the rest of
//! the program trusts. Every value is checked here, before any network call; every
//! problem is reported at once, naming the setting, its variable and what it accepts.
//! Secrets live in [`Secret`], whose `Debug` prints `***`.
//!
//! This file owns the setting types and [`Config::from_raw`], the validation. The value
//! parsers live in `values`, the credential settings in `auth`, CI provenance in `ci`;
//! all are re-exported here, so every item keeps its `crate::config::` path.

pub mod artifacts;
mod auth;
pub mod cache;
mod ci;
mod endpoint;
mod rules;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::settings::choices::Choice;
use crate::settings::{self, Kind, SETTINGS};
pub use crate::settings::{
    AccessTier, Action, AuthMode, Checksum, LogFormat, LogLevel, Overwrite, Service, Tier, TrustMode, Verify,
};

pub use auth::{
    account_from_endpoint, credential_source, AuthSettings, CiTokenSource, ConnectionString, CredentialSource,
    DEVSTORE_KEY, IMDS_DEFAULT_HOST,
};
pub use ci::{provenance, Trust};
pub use endpoint::shown as shown_url;
pub use values::{
    header_safe, human_bytes, parse_bool, parse_duration, parse_list, parse_map, parse_size, valid_metadata_name,
};

use auth::parse_keyless;
use ci::ci_label;
use values::check_container_name;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub setting: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if settings::find(&self.setting).is_some() {
            write!(f, "`{}` ({}): {}", self.setting, settings::env_name(&self.setting), self.message)
        } else {
            write!(f, "{}: {}", self.setting, self.message)
        }
    }
}

/// The one collector every sub-parser reports to: all problems are gathered, in the order
/// found, before [`Config::from_raw`] fails (and before any network call).
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Invalid>);

impl Problems {
    pub(crate) fn push(&mut self, setting: &str, message: String) {
        self.0.push(Invalid { setting: setting.to_string(), message });
    }

    /// One problem per cause: for each of `settings`, only its first problem is kept (a
    /// value that could not be read also reads as missing further on).
    fn keep_first_for(&mut self, settings: &[&str]) {
        let mut seen: Vec<&str> = Vec::new();
        self.0.retain(|i| match settings.iter().find(|s| **s == i.setting) {
            Some(s) if seen.contains(s) => false,
            Some(s) => {
                seen.push(s);
                true
            }
            None => true,
        });
    }

    fn into_result(self) -> Result<(), ConfigError> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(ConfigError(self.0)),
        }
    }
}

/// Every problem found in the settings.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Invalid>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() == 1 {
            return write!(f, "invalid setting {}", self.0[0]);
        }
        write!(f, "{} invalid settings:", self.0.len())?;
        for i in &self.0 {
            write!(f, "\n  - {i}")?;
        }
        Ok(())
    }
}

/// Matches a path against a pattern the way `.gitignore` does: a pattern without `/`
/// matches the file's base name at any depth; one with `/` matches the whole path.
/// `*` never crosses `/`; `**` does.
#[derive(Debug, Clone)]
pub struct PathPattern {
    pub pattern: String,
    matcher: GlobMatcher,
    basename_only: bool,
}

impl PathPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let trimmed = pattern.trim_start_matches("./");
        let basename_only = !trimmed.contains('/');
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("`{pattern}` is not a valid glob: {}", e.kind()))?;
        Ok(PathPattern { pattern: pattern.to_string(), matcher: glob.compile_matcher(), basename_only })
    }

    pub fn is_match(&self, path: &str) -> bool {
        if self.basename_only {
            let base = path.rsplit('/').next().unwrap_or(path);
            self.matcher.is_match(base)
        } else {
            self.matcher.is_match(path)
        }
    }
}

/// A per-file header value: one string for all, or the first matching glob of a list
/// (a JSON map is put in precedence order when parsed: see `rules`).
#[derive(Debug, Clone)]
pub enum ValueRule {
    Fixed(String),
    ByPattern(Vec<(PathPattern, String)>),
}

impl ValueRule {
    pub fn value_for(&self, path: &str) -> Option<&str> {
        match self {
            ValueRule::Fixed(v) => Some(v),
            ValueRule::ByPattern(rules) => rules.iter().find(|(p, _)| p.is_match(path)).map(|(_, v)| v.as_str()),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub action: Action,
    pub service: Service,
    /// Service base URL without a trailing `/`, e.g. `https://acct.blob.core.windows.net`
    /// or `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    pub account: String,
    /// The container (blob) or share (file).
    pub container: String,
    pub create_container: bool,
    pub sources: Vec<String>,
    pub target: String,
    pub strip_prefix: Option<String>,
    pub excludes: Vec<PathPattern>,
    pub allow_empty: bool,
    pub overwrite: Overwrite,
    /// Sync and delete: the most items one run may delete (`None`: no limit for sync,
    /// [`DEFAULT_MAX_DELETE`] for delete).
    pub max_delete: Option<u64>,
    /// Delete: only items last modified longer ago than this (`older_than`).
    pub older_than: Option<Duration>,
    /// Upload and sync: a read-only link per stored blob or file, valid this long (`link_expiry`).
    pub link_expiry: Option<Duration>,
    /// Files gzipped while uploading (`compress`).
    pub compress: Vec<PathPattern>,
    pub content_type: Option<ValueRule>,
    pub cache_control: Option<ValueRule>,
    pub content_encoding: Option<ValueRule>,
    pub content_disposition: Option<ValueRule>,
    /// User metadata followed by provenance, names already validated.
    pub metadata: Vec<(String, String)>,
    pub access_tier: Option<String>,
    pub content_md5: bool,
    pub verify: Verify,
    pub checksum: Checksum,
    pub follow_symlinks: bool,
    /// Select hidden entries (names beginning with `.`) that no pattern names.
    pub include_hidden: bool,
    pub block_size: Option<u64>,
    pub concurrency: usize,
    pub max_memory: u64,
    pub retries: u32,
    pub timeout: Duration,
    /// `retry_timeout`: one request's attempts and waits together.
    pub retry_timeout: Duration,
    pub manifest: Option<PathBuf>,
    /// `preserve_mode`, `checksums_file`, `verify_checksums`, `retention`.
    pub artifacts: artifacts::ArtifactSettings,
    pub dry_run: bool,
    pub log_level: String,
    pub log_format: LogFormat,
    pub progress_interval: Duration,
    pub auth: AuthSettings,
    /// `User-Agent` suffix naming the CI run, e.g. `woodpecker; org/repo#42`.
    pub ci_label: Option<String>,
    /// The trust of the run (`trust` and the CI's event variables).
    pub trust: Trust,
    /// `cache_key`, `restore_keys`, `compression_level`, `fail_on_miss` (cache modes).
    pub cache: cache::CacheSettings,
}

/// Raw settings: the process environment, read by setting name.
///
/// The environment is read as bytes (`vars_os`): a variable that is not UTF-8 never
/// panics and its value is never kept. Its name is remembered in `not_utf8` (escaped when
/// the name itself is not UTF-8), so that a setting given that way is refused by name
/// ([`RawSettings::check_encoding`]) and every other variable is simply absent.
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    env: BTreeMap<String, String>,
    not_utf8: std::collections::BTreeSet<String>,
}

/// How a variable whose name or value is not UTF-8 is named in messages: its name,
/// undecodable bytes as `\xNN`, control characters escaped. Never its value.
fn os_name(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let lossless: String = name.as_bytes().utf8_chunks().fold(String::new(), |mut out, chunk| {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
        out
    });
    crate::escape::shown(&lossless).into_owned()
}

impl RawSettings {
    pub fn from_env() -> Self {
        Self::from_os(std::env::vars_os())
    }

    /// The settings of an environment given as bytes, as [`RawSettings::from_env`] reads it.
    pub fn from_os(vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Self {
        let mut raw = RawSettings::default();
        for (k, v) in vars {
            match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => {
                    raw.env.insert(k, v);
                }
                (Ok(k), Err(_)) => {
                    raw.not_utf8.insert(crate::escape::shown(&k).into_owned());
                }
                (Err(k), _) => {
                    raw.not_utf8.insert(os_name(&k));
                }
            }
        }
        raw
    }

    pub fn from_map(env: BTreeMap<String, String>) -> Self {
        RawSettings { env, not_utf8: Default::default() }
    }

    /// Whether `var` is set to a value that is not UTF-8 (never read).
    pub(crate) fn is_not_utf8(&self, var: &str) -> bool {
        self.not_utf8.contains(var)
    }

    /// The same settings without the variables `vars` (set aside, see `auth::ambient_set_aside`).
    fn without(&self, vars: &[&str]) -> RawSettings {
        let mut out = self.clone();
        out.env.retain(|k, _| !vars.contains(&k.as_str()));
        out
    }

    /// The table's row of a setting read by name. Settings are read by their names, so a
    /// name the table lacks is a typo that compiles and reads nothing: debug builds stop on
    /// it (and test builds record every name read, see `reads`).
    fn row(name: &str) -> Option<&'static settings::Setting> {
        #[cfg(test)]
        reads::record(name);
        let row = settings::find(name);
        debug_assert!(
            row.is_some(),
            "`{name}` is read as a setting, but the settings table (src/settings.rs) lacks it"
        );
        row
    }

    /// Variables that would be read for `name` (`PLUGIN_<NAME>`, `INPUT_<NAME>`, then its
    /// documented `fallbacks`), in that order.
    fn sources(name: &str, fallbacks: &'static [&'static str]) -> impl Iterator<Item = std::borrow::Cow<'static, str>> {
        [settings::env_name(name), settings::input_env_name(name)]
            .into_iter()
            .map(std::borrow::Cow::Owned)
            .chain(fallbacks.iter().map(|f| std::borrow::Cow::Borrowed(*f)))
    }

    /// Reports every setting whose value would come from a variable that is not UTF-8,
    /// naming the setting and the variable, never the value (it may be a secret with one
    /// stray byte). A fallback variable counts only when it would be read: no earlier
    /// variable of that setting gives a value, and it is not `set_aside` (an ambient
    /// credential behind an explicit one). Returns the settings reported.
    pub(crate) fn check_encoding(&self, set_aside: &[&str], bad: &mut Problems) -> Vec<&'static str> {
        let mut reported = Vec::new();
        for st in SETTINGS {
            for var in Self::sources(st.name, st.env_fallback).filter(|v| !set_aside.contains(&v.as_ref())) {
                if self.env.get(var.as_ref()).is_some_and(|v| !v.trim().is_empty()) {
                    break;
                }
                if self.not_utf8.contains(var.as_ref()) {
                    bad.push(
                        st.name,
                        format!("{var} is not valid UTF-8 (its value is not shown): settings are text; look for a stray byte or a value in another encoding"),
                    );
                    reported.push(st.name);
                    break;
                }
            }
        }
        reported
    }

    /// `PLUGIN_*` and `INPUT_*` variables that are not UTF-8 (name or value) and name no
    /// setting: ignored, with a warning naming them (see [`RawSettings::check_encoding`]
    /// for the ones that name a setting).
    pub fn ignored_not_utf8(&self) -> Vec<String> {
        self.not_utf8
            .iter()
            .filter(|v| v.starts_with("PLUGIN_") || v.starts_with("INPUT_"))
            .filter(|v| {
                !SETTINGS.iter().any(|st| Self::sources(st.name, st.env_fallback).any(|s| s.as_ref() == v.as_str()))
            })
            .map(|v| format!("`{v}` is ignored: its name or value is not valid UTF-8 and it names no setting"))
            .collect()
    }

    /// The value of a setting: `PLUGIN_<NAME>`, then `INPUT_<NAME>` (a GitHub/Forgejo
    /// Action's input, see action.yml), then its documented fallbacks. Empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name).map(|(_, v)| v)
    }

    /// The variable a setting is read from and its value: the first of its sources set to
    /// more than blanks. Every read of a setting by name comes through here.
    fn lookup(&self, name: &str) -> Option<(std::borrow::Cow<'static, str>, &str)> {
        let fallbacks = Self::row(name).map(|s| s.env_fallback).unwrap_or(&[]);
        self.first_set(name, fallbacks)
    }

    /// The value of the table's row `st`, as [`RawSettings::get`] reads it (a row cannot be
    /// misspelt, so this read is neither checked nor recorded: it is for checks that walk
    /// the whole table).
    fn value_of(&self, st: &settings::Setting) -> Option<&str> {
        self.first_set(st.name, st.env_fallback).map(|(_, v)| v)
    }

    fn first_set(
        &self,
        name: &str,
        fallbacks: &'static [&'static str],
    ) -> Option<(std::borrow::Cow<'static, str>, &str)> {
        Self::sources(name, fallbacks)
            .find_map(|var| self.env.get(var.as_ref()).filter(|v| !v.trim().is_empty()).map(|v| (var, v.as_str())))
    }

    /// The value of a setting, else its documented default (the settings table is the
    /// only place a default is written).
    pub fn get_or_default(&self, name: &str) -> Option<&str> {
        self.get(name).or_else(|| Self::row(name).and_then(|s| s.default))
    }

    /// The variable that gave `name` its value when it is one of the setting's documented
    /// fallbacks (`AZURE_…`), not `PLUGIN_<NAME>` nor `INPUT_<NAME>`.
    pub fn fallback_source(&self, name: &str) -> Option<&'static str> {
        let (var, _) = self.lookup(name)?;
        Self::row(name)?.env_fallback.iter().copied().find(|f| *f == var)
    }

    /// Whether the pipeline gives `name` itself (`PLUGIN_<NAME>` or `INPUT_<NAME>`), not
    /// through a fallback variable of the runner's environment.
    pub(crate) fn is_explicit(&self, name: &str) -> bool {
        self.get(name).is_some() && self.fallback_source(name).is_none()
    }

    /// ` (from AZURE_…)` when `name`'s value came from a fallback variable, for messages.
    pub fn from_note(&self, name: &str) -> String {
        self.fallback_source(name).map(|v| format!(" (from {v})")).unwrap_or_default()
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(|s| s.as_str()).filter(|s| !s.is_empty())
    }

    /// `PLUGIN_*` and `INPUT_*` variables the plugin does not read: misspelt ones with the
    /// closest known name; ones that name a setting in another case (`PLUGIN_Source`,
    /// `input_source`), which are ignored, since settings are read from upper-case names
    /// only (what Drone, Woodpecker and the Actions runners set), named with the variable
    /// that would be read; and an `INPUT_<NAME>` set to another value than `PLUGIN_<NAME>`,
    /// which wins.
    pub fn unknown(&self) -> Vec<UnknownSetting> {
        let mut out: Vec<UnknownSetting> = self.env.keys().filter_map(|var| unread_var(var)).collect();
        for st in SETTINGS {
            let (plugin, input) = (settings::env_name(st.name), settings::input_env_name(st.name));
            if let (Some(p), Some(i)) = (self.var(&plugin), self.var(&input)) {
                if p.trim() != i.trim() {
                    out.push(UnknownSetting { var: input, suggestion: Some(st.name), why: Unread::Shadowed });
                }
            }
        }
        out
    }
}

/// Test builds record the setting names read (by [`RawSettings`]'s lookups) on this thread
/// while a recording is on, so that a test can hold what `from_raw` reads to the table.
#[cfg(test)]
mod reads {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    thread_local! {
        static READ: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
    }

    pub(super) fn record(name: &str) {
        READ.with(|r| {
            if let Some(names) = r.borrow_mut().as_mut() {
                names.insert(name.to_string());
            }
        });
    }

    /// The names read while `f` runs.
    pub(super) fn during(f: impl FnOnce()) -> BTreeSet<String> {
        READ.with(|r| *r.borrow_mut() = Some(BTreeSet::new()));
        f();
        READ.with(|r| r.borrow_mut().take()).unwrap_or_default()
    }
}

/// The setting prefixes read: `PLUGIN_` (Drone, Woodpecker, `docker run -e`) and `INPUT_`
/// (a GitHub/Forgejo docker action's inputs).
const PREFIXES: [&str; 2] = ["PLUGIN_", "INPUT_"];

/// Why `var`, which starts with a setting prefix in any case, is not read; `None` when it is
/// a setting's own variable (or carries no setting prefix).
fn unread_var(var: &str) -> Option<UnknownSetting> {
    let prefix = PREFIXES.iter().find(|p| var.get(..p.len()).is_some_and(|v| v.eq_ignore_ascii_case(p)))?;
    let name = var[prefix.len()..].to_ascii_lowercase();
    let own = |n: &str| if *prefix == "PLUGIN_" { settings::env_name(n) } else { settings::input_env_name(n) };
    Some(match settings::find(&name) {
        Some(st) if var == own(st.name) => return None,
        Some(st) => UnknownSetting { var: var.to_string(), suggestion: Some(st.name), why: Unread::OtherCase },
        None => UnknownSetting { var: var.to_string(), suggestion: settings::closest(&name), why: Unread::Unknown },
    })
}

/// Why a variable is not read (see [`RawSettings::unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// No setting has this name.
    Unknown,
    /// It names `suggestion` in another case.
    OtherCase,
    /// `INPUT_<NAME>` differs from `PLUGIN_<NAME>`, which is read instead.
    Shadowed,
}

/// A `PLUGIN_*` or `INPUT_*` variable the plugin does not read (see
/// [`RawSettings::unknown`]); `Display` is the warning, which never shows a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSetting {
    /// The variable as it is set, e.g. `PLUGIN_Source`.
    pub var: String,
    /// The setting meant: the same name in another case, the closest spelling, or the one
    /// both variables set.
    pub suggestion: Option<&'static str>,
    pub why: Unread,
}

impl UnknownSetting {
    /// `PLUGIN_` or `INPUT_`, as the variable starts.
    fn prefix(&self) -> &'static str {
        PREFIXES.iter().find(|p| self.var.get(..p.len()).is_some_and(|v| v.eq_ignore_ascii_case(p))).unwrap_or(&"")
    }

    /// The variable of `setting` read under this variable's prefix.
    fn read_var(&self, setting: &str) -> String {
        match self.prefix() {
            "INPUT_" => settings::input_env_name(setting),
            _ => settings::env_name(setting),
        }
    }
}

impl fmt::Display for UnknownSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let var: String = self.var.chars().flat_map(char::escape_debug).collect();
        let name = self.var.get(self.prefix().len()..).unwrap_or_default().to_ascii_lowercase();
        let name: String = name.chars().flat_map(char::escape_debug).collect();
        match (self.suggestion, self.why) {
            (Some(s), Unread::Shadowed) => write!(
                f,
                "`{s}` is set by both {} and {var}, to different values: {} wins, {var} is ignored",
                settings::env_name(s),
                settings::env_name(s)
            ),
            (Some(s), Unread::OtherCase) => write!(
                f,
                "`{var}` is ignored: settings are read from upper-case {}<NAME> variables only; did you mean `{s}` ({})?",
                self.prefix(),
                self.read_var(s)
            ),
            (Some(s), _) => {
                write!(f, "unknown setting `{name}` ({var}): did you mean `{s}` ({})?", self.read_var(s))
            }
            (None, _) => write!(f, "unknown setting `{name}` ({var}): ignored"),
        }
    }
}

/// A header setting's values checked (and `content_disposition` encoded) by
/// [`values::header_value`]; a refused value is reported, naming the glob it belongs to.
fn checked_header_rule(name: &str, rule: ValueRule, bad: &mut Problems) -> ValueRule {
    let mut check = |glob: Option<&str>, v: String| match values::header_value(name, &v) {
        Ok(ok) => ok,
        Err(e) => {
            let shown: String = v.chars().flat_map(char::escape_debug).collect();
            match glob {
                Some(g) => bad.push(name, format!("the value `{shown}` for `{g}` {e}")),
                None => bad.push(name, format!("`{shown}` {e}")),
            }
            v
        }
    };
    match rule {
        ValueRule::Fixed(v) => ValueRule::Fixed(check(None, v)),
        ValueRule::ByPattern(rules) => ValueRule::ByPattern(
            rules
                .into_iter()
                .map(|(p, v)| {
                    let v = check(Some(&p.pattern), v);
                    (p, v)
                })
                .collect(),
        ),
    }
}

/// An enum setting's value, else (absent or invalid: [`Config::from_raw`] reports it) its
/// documented default; a test keeps every default valid.
pub fn choice<T: Choice>(raw: &RawSettings, name: &str) -> T {
    let default = || settings::find(name).and_then(|s| s.default).and_then(T::parse);
    raw.get(name).and_then(T::parse).or_else(default).unwrap_or(T::ALL[0])
}

/// What is selected and how names are mapped: `source`, `exclude`, `target`, `strip_prefix`.
struct Selection {
    sources: Vec<String>,
    excludes: Vec<PathPattern>,
    target: String,
    strip_prefix: Option<String>,
}

/// A list setting (empty when absent or invalid: reported).
fn list(raw: &RawSettings, name: &str, bad: &mut Problems) -> Vec<String> {
    match raw.get(name).map(parse_list) {
        None => vec![],
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            bad.push(name, e);
            vec![]
        }
    }
}

fn selection(raw: &RawSettings, action: Action, bad: &mut Problems) -> Selection {
    let sources = list(raw, "source", bad);
    if sources.is_empty() {
        bad.push(
            "source",
            match action {
                Action::Upload | Action::Sync => {
                    "is required: the local file(s) or glob(s) to upload, e.g. `dist/**`".into()
                }
                Action::Download => "is required: the remote name(s), prefix(es) or glob(s) to download".into(),
                Action::Delete => {
                    "is required: the remote name(s), prefix(es) or glob(s) to delete, e.g. `previews/pr-42/`".into()
                }
                Action::CacheSave | Action::CacheRestore => {
                    "is required: the workspace directories to cache, e.g. `.cargo/registry`".into()
                }
            },
        );
    }
    let local = action.uploads() || action.is_cache();
    for s in &sources {
        // A local absolute path (`/etc/passwd`) is refused below as outside the workspace.
        let absolute = local && s.strip_prefix('/').is_some_and(|r| !r.is_empty() && emptied_path(r, "").is_none());
        if let Some(why) = emptied_path(s, "to select everything, write `**`").filter(|_| !absolute) {
            bad.push("source", why);
            continue;
        }
        if let Err(e) = Glob::new(s) {
            bad.push("source", format!("`{s}` is not a valid glob: {}", e.kind()));
        }
        if local && (s.starts_with('/') || s.split('/').any(|c| c == "..")) {
            bad.push(
                "source",
                format!("`{s}` points outside the workspace: use a path relative to the workspace, without `..`"),
            );
        }
    }
    let sources = if action.is_cache() { cache::cache_sources(sources, bad) } else { sources };
    let excludes: Vec<PathPattern> = list(raw, "exclude", bad)
        .iter()
        .filter_map(|e| PathPattern::new(e).map_err(|m| bad.push("exclude", m)).ok())
        .collect();

    let target = raw.get("target").unwrap_or("").trim().to_string();
    if action.uploads() || action.is_cache() {
        if let Some(why) = emptied_path(&target, "to put the files at the top, leave `target` out") {
            bad.push("target", why);
        }
    }
    let strip_prefix = raw
        .get("strip_prefix")
        .map(|s| s.trim().trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty());
    Selection { sources, excludes, target, strip_prefix }
}

/// Why a `source` or remote `target` looks like the result of an empty substitution
/// (`${CI_REPO}/${CI_COMMIT_SHA}` where the engine knows neither variable arrives as `/`),
/// or `None`: a path made only of `/`, or with an empty component (`/x`, `a//b`; one
/// trailing `/` is fine). Taken as written, `//` would download the whole container and
/// `a//b` would quietly become `a/b`; the whole container is chosen with `**` only.
/// `whole` says how to ask for what the slashes stood for.
fn emptied_path(p: &str, whole: &str) -> Option<String> {
    let body = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() || !body.split('/').any(str::is_empty) {
        return None;
    }
    const HINT: &str =
        "was a variable in it unset or empty? (Drone substitutes DRONE_* variables, not Woodpecker's CI_*)";
    let shown: String = p.chars().flat_map(char::escape_debug).collect();
    Some(if body.trim_matches('/').is_empty() {
        format!("`{shown}` is only slashes: {HINT}; {whole}")
    } else {
        format!("`{shown}` has an empty path component (a leading `/` or a `//`): {HINT}")
    })
}

/// Headers and metadata stored with each file.
struct Headers {
    content_type: Option<ValueRule>,
    cache_control: Option<ValueRule>,
    content_encoding: Option<ValueRule>,
    content_disposition: Option<ValueRule>,
    metadata: Vec<(String, String)>,
}

/// `provenance_of`: the run's trust when provenance metadata is stored (`provenance: true`).
fn headers(raw: &RawSettings, provenance_of: Option<&Trust>, bad: &mut Problems) -> Headers {
    let rule = |name: &str, bad: &mut Problems| -> Option<ValueRule> {
        let (rule, errs) = rules::parse_value_rule(raw.get(name)?);
        errs.into_iter().for_each(|e| bad.push(name, e));
        rule
    };
    let content_type = rule("content_type", &mut *bad);
    let cache_control = rule("cache_control", &mut *bad);
    let content_encoding = rule("content_encoding", &mut *bad);
    let content_disposition = rule("content_disposition", &mut *bad);
    let [content_type, cache_control, content_encoding, content_disposition] = [
        ("content_type", content_type),
        ("cache_control", cache_control),
        ("content_encoding", content_encoding),
        ("content_disposition", content_disposition),
    ]
    .map(|(name, r)| r.map(|r| checked_header_rule(name, r, &mut *bad)));

    let mut metadata = Vec::new();
    if let Some(m) = raw.get("metadata") {
        match parse_map(m) {
            Ok(pairs) => {
                for (k, v) in pairs {
                    if !valid_metadata_name(&k) {
                        bad.push("metadata", format!("`{}` is not a valid metadata name: a C# identifier (ASCII letters, digits and `_`, not starting with a digit)", k.escape_debug()));
                    } else if metadata.iter().any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(&k)) {
                        bad.push("metadata", format!("`{k}` is given twice: metadata names are case-insensitive"));
                    } else if k.eq_ignore_ascii_case("sha256") {
                        bad.push("metadata", "`sha256` is reserved: the plugin stores the file's SHA-256 there".into());
                    } else if k.eq_ignore_ascii_case("ci_trust") {
                        bad.push(
                            "metadata",
                            "`ci_trust` is reserved: the plugin stores the run's trust there (docs/trust.md)".into(),
                        );
                    } else {
                        metadata.push((k.to_ascii_lowercase(), header_safe(&v)));
                    }
                }
            }
            Err(e) => bad.push("metadata", e),
        }
    }
    if let Some(trust) = provenance_of {
        for (k, v) in provenance(raw) {
            if !metadata.iter().any(|(n, _)| *n == k) {
                metadata.push((k, header_safe(&v)));
            }
        }
        metadata.push(("ci_trust".into(), trust.tier.as_str().into()));
    }
    Headers { content_type, cache_control, content_encoding, content_disposition, metadata }
}

/// `action: sync`'s guard and `compress`; a sync's `overwrite` is always `changed`.
struct SyncSettings {
    max_delete: Option<u64>,
    older_than: Option<Duration>,
    link_expiry: Option<Duration>,
    compress: Vec<PathPattern>,
    overwrite: Overwrite,
}

fn sync_settings(
    raw: &RawSettings,
    action: Action,
    service: Service,
    target: &str,
    sources: &[String],
    overwrite: Overwrite,
    bad: &mut Problems,
) -> SyncSettings {
    let max_delete = raw.get("max_delete").map(|v| match v.trim().parse::<u64>() {
        Ok(n) if n <= 1_000_000_000 => n,
        _ => {
            bad.push("max_delete", format!("`{v}` is not a whole number from 0 to 1000000000"));
            0
        }
    });
    if action == Action::Sync && target.trim_matches('/').is_empty() && max_delete.is_none() {
        bad.push(
            "target",
            format!(
                "is empty: a sync of the whole {} deletes everything in it that the selection lacks; set `max_delete` ({}) to allow that, or name a `target` folder",
                if service == Service::File { "share" } else { "container" },
                settings::env_name("max_delete")
            ),
        );
    }
    // A sync uploads only what changed; another `overwrite` would contradict it.
    if action == Action::Sync && raw.get("overwrite").is_some() && overwrite != Overwrite::Changed {
        bad.push(
            "overwrite",
            "does not apply to `action: sync`, which always uploads only what changed (`changed`)".into(),
        );
    }
    if max_delete.is_some() && !matches!(action, Action::Sync | Action::Delete) {
        tracing::warn!("`max_delete` applies to `action: sync` and `action: delete` only; ignored");
    }
    // A delete names what it removes in `source` alone: a `target` or `strip_prefix` it
    // ignored would make it delete something other than the author read.
    for name in ["target", "strip_prefix"] {
        if action == Action::Delete && raw.get(name).is_some_and(|v| !v.trim().is_empty()) {
            bad.push(
                name,
                "does not apply to `action: delete`: name the folder in `source` (`previews/pr-42/`)".into(),
            );
        }
    }
    if action == Action::Delete && max_delete.is_none() {
        if let Some(s) = sources.iter().find(|s| delete_lists_everything(s)) {
            bad.push(
                "max_delete",
                format!(
                    "is required: `source` `{s}` selects from the top of the {}, so it may delete anything in it; set `max_delete` ({}) to the most this run may delete, or name a folder (`previews/pr-42/`)",
                    if service == Service::File { "share" } else { "container" },
                    settings::env_name("max_delete")
                ),
            );
        }
    }
    let older_than = raw.get("older_than").and_then(|v| match parse_duration(v) {
        Ok(d) if action == Action::Delete => Some(d),
        Ok(_) => {
            bad.push("older_than", "applies to `action: delete` only".into());
            None
        }
        Err(e) => {
            bad.push("older_than", format!("{e}; e.g. `14d`, `12h`"));
            None
        }
    });
    let compress: Vec<PathPattern> = list(raw, "compress", bad)
        .iter()
        .filter_map(|e| PathPattern::new(e).map_err(|m| bad.push("compress", m)).ok())
        .collect();
    if !compress.is_empty() && !action.uploads() {
        bad.push("compress", "applies to `action: upload` and `action: sync` only".into());
    }
    let overwrite = if action == Action::Sync { Overwrite::Changed } else { overwrite };
    let link_expiry = raw.get("link_expiry").and_then(|v| match parse_duration(v) {
        Ok(d) if !action.uploads() => {
            bad.push("link_expiry", "applies to `action: upload` and `action: sync` only".into());
            Some(d)
        }
        Ok(d) if d >= Duration::from_secs(1) && d <= MAX_LINK_EXPIRY => Some(d),
        Ok(_) => {
            bad.push(
                "link_expiry",
                format!("`{v}` is out of range: 1s to 7d (the longest a user-delegation link may live)"),
            );
            None
        }
        Err(e) => {
            bad.push("link_expiry", format!("{e}; e.g. `1h`, `7d`"));
            None
        }
    });
    SyncSettings { max_delete, older_than, link_expiry, compress, overwrite }
}

/// The longest `link_expiry`: Azure's limit on a user-delegation SAS (its key lives at most
/// 7 days), applied to key-signed links too, so a pipeline's links live as long whatever its
/// credential and a leaked link cannot outlive a week (a key-signed link is revoked only by
/// rotating the key).
pub const MAX_LINK_EXPIRY: Duration = Duration::from_secs(7 * 86400);

/// The most a delete may remove when `max_delete` is not set. A preview site or a build's
/// artifacts hold hundreds of files; past a thousand the delete is more likely a wrong
/// `source` than a teardown, and its author should write the number down.
pub const DEFAULT_MAX_DELETE: u64 = 1000;

/// A delete `source` whose listing starts at the top of the container (`**`, `*.log`,
/// `{a,b}/x`): it may select anything, so `max_delete` must be written.
pub fn delete_lists_everything(source: &str) -> bool {
    let s = source.trim_start_matches('/');
    s.is_empty() || s.starts_with(['*', '?', '[', '{'])
}

/// Transfer tuning: block size, memory, concurrency, retries, timeouts.
struct Tuning {
    block_size: Option<u64>,
    max_memory: u64,
    concurrency: usize,
    retries: u32,
    timeout: Duration,
    retry_timeout: Duration,
    progress_interval: Duration,
}

/// A size setting's documented default.
fn default_size(name: &str) -> u64 {
    settings::find(name).and_then(|s| s.default).and_then(|d| parse_size(d).ok()).unwrap_or_default()
}

fn tuning(raw: &RawSettings, action: Action, bad: &mut Problems) -> Tuning {
    let size = |name: &str, min: u64, max: u64, bad: &mut Problems| -> Option<u64> {
        let v = raw.get(name)?;
        match parse_size(v) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(_) => {
                bad.push(name, format!("`{v}` is out of range: {} to {}", human_bytes(min), human_bytes(max)));
                None
            }
            Err(e) => {
                bad.push(name, e);
                None
            }
        }
    };
    let block_size = size("block_size", 64 << 10, 4000 << 20, &mut *bad);
    let max_memory = size("max_memory", 1 << 20, 64 << 30, &mut *bad).unwrap_or_else(|| default_size("max_memory"));
    // Upload blocks are held in memory; download ranges stream to disk.
    if let (Some(b), Action::Upload | Action::Sync | Action::CacheSave) = (block_size, action) {
        if max_memory < b {
            bad.push("max_memory", format!("must hold at least one block (`block_size` is {})", human_bytes(b)));
        }
    }

    let int = |name: &str, min: u64, max: u64, bad: &mut Problems| -> u64 {
        let default: u64 = settings::find(name).and_then(|s| s.default).and_then(|d| d.parse().ok()).unwrap_or(min);
        match raw.get(name) {
            None => default,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    bad.push(name, format!("`{v}` is not a whole number from {min} to {max}"));
                    default
                }
            },
        }
    };
    let concurrency = int("concurrency", 1, 256, &mut *bad) as usize;
    let retries = int("retries", 0, 50, &mut *bad) as u32;

    let duration = |name: &str, bad: &mut Problems| -> Duration {
        let default = settings::find(name)
            .and_then(|s| s.default)
            .and_then(|d| parse_duration(d).ok())
            .unwrap_or(Duration::from_secs(60));
        match raw.get(name) {
            None => default,
            Some(v) => match parse_duration(v) {
                Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(24 * 3600) => d,
                Ok(_) => {
                    bad.push(name, format!("`{v}` is out of range: 10ms to 24h"));
                    default
                }
                Err(e) => {
                    bad.push(name, e);
                    default
                }
            },
        }
    };
    let timeout = duration("timeout", &mut *bad);
    let mut retry_timeout = duration("retry_timeout", &mut *bad);
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&retry_timeout) {
        bad.push(
            "retry_timeout",
            format!("`{}` is out of range: 1s to 1h", raw.get("retry_timeout").unwrap_or_default()),
        );
        retry_timeout = Duration::from_secs(180);
    }
    let progress_interval = duration("progress_interval", &mut *bad);
    Tuning { block_size, max_memory, concurrency, retries, timeout, retry_timeout, progress_interval }
}

/// Where: the connection string, the endpoint, the account and the container (or share).
struct Place {
    connection_string: Option<Secret>,
    endpoint: String,
    account: String,
    container: String,
}

fn place(raw: &RawSettings, service: Service, action: Action, dry_run: bool, bad: &mut Problems) -> Place {
    // Endpoint, account and container.
    let connection_string = raw.get("connection_string").map(Secret::new);
    let cs = connection_string.as_ref().and_then(|c| match ConnectionString::parse_all(c.expose()) {
        Ok(cs) => Some(cs),
        Err(es) => {
            let from = raw.from_note("connection_string");
            for e in es {
                bad.push("connection_string", format!("{e}{from}"));
            }
            None
        }
    });
    let found = endpoint::resolve(raw, cs.as_ref(), service, &mut *bad);
    let account = found.account;
    let endpoint = match found.endpoint {
        Some(u) => endpoint::url_text(&u),
        None => {
            // An invalid connection string was reported already.
            if !found.given && (cs.is_some() || connection_string.is_none()) && (!dry_run || !action.uploads()) {
                bad.push(
                    "account_name",
                    "is required: set `account_name`, or `endpoint`, or `connection_string`".into(),
                );
            }
            String::new()
        }
    };

    let (container_key, other_key) = match service {
        Service::Blob => ("container", "share"),
        Service::File => ("share", "container"),
    };
    if raw.get(other_key).is_some() {
        bad.push(other_key, format!("does not apply to `service: {}`: use `{container_key}`", service.as_str()));
    }
    let container = raw.get(container_key).map(|s| s.trim().to_string()).unwrap_or_default();
    if container.is_empty() {
        bad.push(container_key, format!("is required with `service: {}`", service.as_str()));
    } else if let Err(e) = check_container_name(&container, container_key) {
        bad.push(container_key, e);
    }
    Place { connection_string, endpoint, account, container }
}

impl Config {
    /// Reads and validates every setting. Collects all problems before failing.
    pub fn from_raw(raw: &RawSettings) -> Result<Config, ConfigError> {
        let mut bad = Problems::default();
        // Ambient credentials behind an explicit one are neither used nor checked.
        let set_aside = auth::ambient_set_aside(raw, choice(raw, "auth"));
        // A setting whose variable is not UTF-8 reads as unset below; its one problem is this.
        let not_utf8 = raw.check_encoding(&set_aside, &mut bad);

        // Enum-typed settings checked generically against the table.
        for st in SETTINGS {
            if let (Kind::Enum(values), Some(v)) = (st.kind, raw.value_of(st)) {
                if !values.iter().any(|a| a.eq_ignore_ascii_case(v.trim())) {
                    bad.push(st.name, format!("`{v}` is not one of: {}", values.join(", ")));
                }
            }
        }
        let action: Action = choice(raw, "action");
        let service: Service = choice(raw, "service");
        let overwrite: Overwrite = choice(raw, "overwrite");
        let checksum: Checksum = choice(raw, "checksum");
        let verify: Verify = choice(raw, "verify");
        let log_format: LogFormat = choice(raw, "log_format");
        let log_level = choice::<LogLevel>(raw, "log_level").as_str().to_string();
        let auth_mode: AuthMode = choice(raw, "auth");
        let access_tier = raw
            .get("access_tier")
            .map(|v| AccessTier::parse(v).map(AccessTier::as_str).unwrap_or_default().to_string());
        if access_tier.is_some() && service == Service::File {
            bad.push("access_tier", "applies to Blob only (`service: blob`)".into());
        }

        let boolean = |name: &str, bad: &mut Problems| -> bool {
            let default = settings::find(name).and_then(|s| s.default).and_then(parse_bool).unwrap_or(false);
            match raw.get(name) {
                None => default,
                Some(v) => parse_bool(v).unwrap_or_else(|| {
                    bad.push(name, format!("`{v}` is not a boolean (true or false)"));
                    default
                }),
            }
        };
        let create_container = boolean("create_container", &mut bad);
        let allow_empty = boolean("allow_empty", &mut bad);
        let content_md5 = boolean("content_md5", &mut bad);
        let follow_symlinks = boolean("follow_symlinks", &mut bad);
        let include_hidden = boolean("include_hidden", &mut bad);
        let dry_run = boolean("dry_run", &mut bad);
        let provenance_on = boolean("provenance", &mut bad);

        let Selection { sources, excludes, target, strip_prefix } = selection(raw, action, &mut bad);

        let trust = ci::trust(raw, choice(raw, "trust"));
        let Headers { content_type, cache_control, content_encoding, content_disposition, metadata } =
            headers(raw, provenance_on.then_some(&trust), &mut bad);

        let Tuning { block_size, max_memory, concurrency, retries, timeout, retry_timeout, progress_interval } =
            tuning(raw, action, &mut bad);
        let SyncSettings { max_delete, older_than, link_expiry, compress, overwrite } =
            sync_settings(raw, action, service, &target, &sources, overwrite, &mut bad);

        let manifest = raw.get("manifest").map(|m| PathBuf::from(m.trim()));
        let artifacts = artifacts::parse(raw, action, service, boolean, &mut bad);
        if artifacts.preserve_mode && metadata.iter().any(|(k, _)| k == "mode") {
            bad.push(
                "metadata",
                "`mode` is reserved: the plugin stores the file's permission bits there (set `preserve_mode: false` to use it)"
                    .into(),
            );
        }

        let creds = raw.without(&set_aside);
        let Place { connection_string, endpoint, account, container } =
            place(&creds, service, action, dry_run, &mut bad);

        let (sas_token, account_key) = auth::static_secrets(&creds, &mut bad);
        let keyless = parse_keyless(&creds, auth_mode, &mut bad);
        let precedence = auth::precedence_note(&set_aside);
        let auth = AuthSettings { mode: auth_mode, account_key, sas_token, connection_string, precedence, ..keyless };
        auth::check_identity_endpoints(&auth, dry_run, &mut bad);
        auth::check_ci_token(&auth, dry_run, &mut bad);
        let cache = cache::parse(raw, action.is_cache(), &mut bad);
        bad.keep_first_for(&not_utf8);
        bad.into_result()?;
        Ok(Config {
            action,
            service,
            endpoint,
            account,
            container,
            create_container,
            sources,
            target,
            strip_prefix,
            excludes,
            allow_empty,
            overwrite,
            max_delete,
            older_than,
            link_expiry,
            compress,
            content_type,
            cache_control,
            content_encoding,
            content_disposition,
            metadata,
            access_tier,
            content_md5,
            verify,
            checksum,
            follow_symlinks,
            include_hidden,
            block_size,
            concurrency,
            max_memory,
            retries,
            timeout,
            retry_timeout,
            manifest,
            artifacts,
            dry_run,
            log_level,
            log_format,
            progress_interval,
            auth,
            ci_label: ci_label(raw),
            trust,
            cache,
        })
    }

    /// `container` for Blob, `share` for Files: the word users know.
    pub fn container_word(&self) -> &'static str {
        match self.service {
            Service::Blob => "container",
            Service::File => "share",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        RawSettings::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    pub(super) fn base() -> Vec<(&'static str, &'static str)> {
        vec![("PLUGIN_ACCOUNT_NAME", "mystorage"), ("PLUGIN_CONTAINER", "artifacts"), ("PLUGIN_SOURCE", "dist/**")]
    }

    /// A documented default reads as its kind says (config takes defaults from here only).
    #[test]
    fn every_default_is_a_value_of_its_kind() {
        for st in SETTINGS {
            let Some(d) = st.default else { continue };
            let ok = match st.kind {
                Kind::Enum(values) => values.contains(&d),
                Kind::Bool => matches!(d, "true" | "false"),
                Kind::Integer => d.parse::<u64>().is_ok(),
                Kind::Size => parse_size(d).is_ok(),
                Kind::Duration => parse_duration(d).is_ok(),
                _ => true,
            };
            assert!(ok, "`{}`: default `{d}` is not a {}", st.name, st.kind.type_name());
        }
    }

    /// `from_raw` reads every setting of the table, whatever the action, and no other name
    /// (a typo would read nothing): the names its lookups record, over one run per action.
    #[test]
    fn every_documented_setting_is_read_and_nothing_else() {
        let read = reads::during(|| {
            for action in Action::NAMES {
                let _ = Config::from_raw(&raw(&[base(), vec![("PLUGIN_ACTION", action)]].concat()));
            }
        });
        let table: std::collections::BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_string()).collect();
        let unread: Vec<&String> = table.difference(&read).collect();
        let unknown: Vec<&String> = read.difference(&table).collect();
        assert!(
            unread.is_empty() && unknown.is_empty(),
            "never read: {unread:?}; read but not in the table: {unknown:?}"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "the settings table (src/settings.rs) lacks it")]
    fn reading_a_name_the_table_lacks_panics_in_debug_builds() {
        let _ = raw(&[("PLUGIN_STRIP_PREFX", "dist")]).get("strip_prefx");
    }

    /// The variable named as a value's source is the one `get` read: an Action input comes
    /// before the runner's fallback variable, so no `(from AZURE_…)` is claimed for it.
    #[test]
    fn a_value_is_named_with_the_variable_it_was_read_from() {
        let r = raw(&[("INPUT_AUTHORITY_HOST", "https://login.example"), ("AZURE_AUTHORITY_HOST", "https://other")]);
        assert_eq!(r.get("authority_host"), Some("https://login.example"));
        assert_eq!(r.fallback_source("authority_host"), None);
        assert!(r.is_explicit("authority_host"));
        let r = raw(&[("INPUT_AUTHORITY_HOST", " "), ("AZURE_AUTHORITY_HOST", "https://other")]);
        assert_eq!(r.fallback_source("authority_host"), Some("AZURE_AUTHORITY_HOST"));
        assert_eq!(r.from_note("authority_host"), " (from AZURE_AUTHORITY_HOST)");
        assert!(!r.is_explicit("authority_host"));
    }

    #[test]
    fn minimal_config_resolves_endpoint() {
        let c = Config::from_raw(&raw(&base())).unwrap();
        assert_eq!(c.endpoint, "https://mystorage.blob.core.windows.net");
        assert_eq!(c.account, "mystorage");
        assert_eq!(c.action, Action::Upload);
        assert_eq!(c.overwrite, Overwrite::True);
        assert_eq!(c.concurrency, 16);
    }

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        let mut p = base();
        p.extend([
            ("PLUGIN_OVERWRITE", "maybe"),
            ("PLUGIN_BLOCK_SIZE", "huge"),
            ("PLUGIN_TIMEOUT", "soon"),
            ("PLUGIN_CONCURRENCY", "0"),
            ("PLUGIN_METADATA", "{\"1bad\": \"x\"}"),
        ]);
        let e = Config::from_raw(&raw(&p)).unwrap_err();
        let names: Vec<_> = e.0.iter().map(|i| i.setting.as_str()).collect();
        assert_eq!(names, vec!["overwrite", "metadata", "block_size", "concurrency", "timeout"]);
        let text = e.to_string();
        assert!(text.contains("PLUGIN_OVERWRITE"), "{text}");
        assert!(text.contains("true, false, skip, changed"), "{text}");
    }

    #[test]
    fn secrets_never_in_debug() {
        let mut p = base();
        p.push(("PLUGIN_ACCOUNT_KEY", "c2VjcmV0LWtleS12YWx1ZQ=="));
        let c = Config::from_raw(&raw(&p)).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("c2VjcmV0LWtleS12YWx1ZQ=="), "{dbg}");
    }

    #[test]
    fn wrong_container_word_for_service() {
        let mut p = base();
        p.push(("PLUGIN_SHARE", "builds"));
        let e = Config::from_raw(&raw(&p)).unwrap_err();
        assert_eq!(e.0[0].setting, "share");
    }

    #[test]
    fn patterns_match_like_gitignore() {
        let p = PathPattern::new("*.map").unwrap();
        assert!(p.is_match("dist/js/app.js.map"));
        let p = PathPattern::new("dist/*.map").unwrap();
        assert!(p.is_match("dist/a.map"));
        assert!(!p.is_match("dist/js/a.map"));
        let p = PathPattern::new("dist/**/*.map").unwrap();
        assert!(p.is_match("dist/js/a.map"));
    }

    fn errors_of(extra: &[(&str, &str)]) -> String {
        let mut p = base();
        p.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        p.extend_from_slice(extra);
        Config::from_raw(&raw(&p)).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    /// Files links are signed like Blob's: with the account key, or with an Entra credential
    /// (a user-delegation SAS); neither is refused at validation.
    #[test]
    fn file_links_take_the_key_or_an_entra_credential() {
        let file = [
            ("PLUGIN_SERVICE", "file"),
            ("PLUGIN_CONTAINER", ""),
            ("PLUGIN_SHARE", "builds"),
            ("PLUGIN_LINK_EXPIRY", "1h"),
        ];
        let key = ("PLUGIN_ACCOUNT_KEY", "c2VjcmV0LWtleS12YWx1ZQ==");
        assert_eq!(errors_of(&[&file[..], &[key]].concat()), "");
        for entra in [("PLUGIN_ACCESS_TOKEN", "a.b.c"), ("PLUGIN_AUTH", "managed_identity")] {
            let e = errors_of(&[&file[..], &[entra]].concat());
            assert!(!e.contains("link_expiry"), "Files signs with Entra: {e}");
            let blob = errors_of(&[("PLUGIN_LINK_EXPIRY", "1h"), entra]);
            assert!(!blob.contains("link_expiry"), "Blob signs with Entra: {blob}");
        }
    }

    /// Every source of the endpoint is parsed during validation; each refusal names its setting.
    #[test]
    fn every_endpoint_source_is_validated_naming_its_setting() {
        for (extra, want) in [
            (
                vec![("PLUGIN_ENDPOINT_SUFFIX", "core windows.net")],
                "`endpoint_suffix` (PLUGIN_ENDPOINT_SUFFIX): `core windows.net` is not a DNS suffix",
            ),
            (
                vec![("PLUGIN_ENDPOINT_SUFFIX", "core.windows.net/x?y")],
                "`endpoint_suffix` (PLUGIN_ENDPOINT_SUFFIX): `core.windows.net/x?y` is not a DNS suffix",
            ),
            (
                vec![("PLUGIN_ACCOUNT_NAME", "Bad_Name!")],
                "`account_name` (PLUGIN_ACCOUNT_NAME): `Bad_Name!` is not a storage account name",
            ),
            (vec![("PLUGIN_ENDPOINT", "notaurl")], "`endpoint` (PLUGIN_ENDPOINT): `notaurl` is not a URL"),
            (
                vec![("PLUGIN_ENDPOINT", "https://u:secretpw@h.net")],
                "`endpoint` (PLUGIN_ENDPOINT): `https://***@h.net` carries a user name or password",
            ),
            (vec![("PLUGIN_ENDPOINT", "https://acct1.blob.core.windows.net#frag")], "carries a `#` fragment"),
        ] {
            let e = errors_of(&extra);
            assert!(e.contains(want), "{extra:?}: {e}");
            assert!(!e.contains("secretpw"), "{e}");
            assert!(!e.contains("is required"), "one error for one cause: {e}");
        }
        // A suffix from the connection string builds the URL too; an endpoint is normalised.
        let c = Config::from_raw(&raw(&[
            ("PLUGIN_ENDPOINT", "HTTP://127.0.0.1:10000/devstoreaccount1/"),
            ("PLUGIN_CONTAINER", "artifacts"),
            ("PLUGIN_SOURCE", "x"),
        ]))
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(c.account, "devstoreaccount1");
    }

    #[test]
    fn the_account_is_the_one_the_endpoint_reaches_and_a_different_name_is_refused() {
        let azurite = "http://127.0.0.1:10000/devstoreaccount1";
        for (extra, want) in [
            (vec![("PLUGIN_ENDPOINT", azurite)], "devstoreaccount1"),
            (vec![("PLUGIN_ENDPOINT", "http://azurite:10000/devstoreaccount1")], "devstoreaccount1"),
            (vec![("PLUGIN_ENDPOINT", azurite), ("PLUGIN_ACCOUNT_NAME", "devstoreaccount1")], "devstoreaccount1"),
            (vec![("PLUGIN_ENDPOINT", "https://files.example.com"), ("PLUGIN_ACCOUNT_NAME", "acct1")], "acct1"),
            (vec![("PLUGIN_ACCOUNT_NAME", "acct1")], "acct1"),
        ] {
            let mut p = vec![("PLUGIN_CONTAINER", "artifacts"), ("PLUGIN_SOURCE", "x")];
            p.extend(extra.iter().copied());
            assert_eq!(Config::from_raw(&raw(&p)).map(|c| c.account).unwrap(), want, "{extra:?}");
        }
        for (extra, setting) in [
            (vec![("PLUGIN_ENDPOINT", azurite), ("PLUGIN_ACCOUNT_NAME", "mystorage")], "account_name"),
            (
                vec![("PLUGIN_ENDPOINT", "https://prod1.blob.core.windows.net"), ("PLUGIN_ACCOUNT_NAME", "mystorage")],
                "account_name",
            ),
            (
                vec![
                    ("PLUGIN_ENDPOINT", azurite),
                    ("PLUGIN_CONNECTION_STRING", "AccountName=mystorage;AccountKey=a2V5"),
                ],
                "connection_string",
            ),
        ] {
            let mut p = vec![("PLUGIN_CONTAINER", "artifacts"), ("PLUGIN_SOURCE", "x")];
            p.extend(extra.iter().copied());
            let e = Config::from_raw(&raw(&p)).unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!(e.0[0].setting, setting, "{e}");
            assert!(e.0[0].message.contains("names the account `mystorage`"), "{e}");
            assert!(e.0[0].message.contains("but the endpoint `http"), "{e}");
            if extra.iter().any(|(k, _)| k.starts_with("AZURE_")) {
                assert!(e.0[0].message.contains("(from AZURE_STORAGE_CONNECTION_STRING)"), "{e}");
            }
            assert!(!e.to_string().contains("a2V5"), "{e}");
        }
    }

    #[test]
    fn header_values_are_ascii_or_refused_and_a_unicode_file_name_is_encoded() {
        let c = Config::from_raw(&raw(&[
            ("PLUGIN_ACCOUNT_NAME", "acct1"),
            ("PLUGIN_CONTAINER", "artifacts"),
            ("PLUGIN_SOURCE", "x"),
            ("PLUGIN_CONTENT_DISPOSITION", "attachment; filename=\"é.txt\""),
        ]))
        .unwrap();
        match c.content_disposition {
            Some(ValueRule::Fixed(v)) => assert_eq!(v, "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt"),
            other => panic!("{other:?}"),
        }
        for (extra, want) in [
            (("PLUGIN_CACHE_CONTROL", "max-age=60\r\nX-Evil: 1"), "`cache_control` (PLUGIN_CACHE_CONTROL): `max-age=60\\r\\nX-Evil: 1` contains the control character U+000D"),
            (("PLUGIN_CONTENT_TYPE", "text/plain; charset=ütf-8"), "`content_type` (PLUGIN_CONTENT_TYPE): `text/plain; charset=ütf-8` contains the non-ASCII character U+00FC"),
            (("PLUGIN_CONTENT_ENCODING", "{\"*.gz\": \"gzip\\u0000\"}"), "`content_encoding` (PLUGIN_CONTENT_ENCODING): the value `gzip\\0` for `*.gz` contains the control character U+0000"),
            (("PLUGIN_CONTENT_DISPOSITION", "piè; filename=a"), "only a `filename=` may be non-ASCII"),
            (("PLUGIN_CONTENT_DISPOSITION", "attachment; filename=\"a\tb\""), "control character U+0009"),
            (("PLUGIN_CACHE_CONTROL", "no-cache\u{7f}"), "control character U+007F"),
        ] {
            let e = errors_of(&[extra]);
            assert!(e.contains(want), "{extra:?}: {e}");
        }
    }

    #[test]
    fn metadata_names_are_csharp_identifiers_and_unique() {
        for bad in ["1bad", "has-dash", "has space", "é", "", "a.b", "x$"] {
            let m = format!("{{{}: \"v\"}}", serde_json::to_string(bad).unwrap());
            let e = errors_of(&[("PLUGIN_METADATA", &m)]);
            assert!(e.contains("is not a valid metadata name: a C# identifier"), "{bad:?}: {e}");
        }
        for good in ["_ok", "Ok2", "build_id", "X"] {
            let m = format!("{{\"{good}\": \"v\"}}");
            assert_eq!(errors_of(&[("PLUGIN_METADATA", &m)]), "", "{good}");
        }
        let e = errors_of(&[("PLUGIN_METADATA", "{\"Build\": \"1\", \"build\": \"2\"}")]);
        assert!(e.contains("`build` is given twice: metadata names are case-insensitive"), "{e}");
        // Values may hold anything: they are percent-encoded, so what is signed is what is sent.
        let c = Config::from_raw(&raw(&[
            ("PLUGIN_ACCOUNT_NAME", "acct1"),
            ("PLUGIN_CONTAINER", "artifacts"),
            ("PLUGIN_SOURCE", "x"),
            ("PLUGIN_PROVENANCE", "false"),
            ("PLUGIN_METADATA", "{\"note\": \"é 100%\\r\\n\"}"),
        ]))
        .unwrap();
        assert_eq!(c.metadata, vec![("note".to_string(), "%C3%A9 100%25%0D%0A".to_string())]);
    }

    #[test]
    fn a_source_or_target_an_empty_substitution_emptied_is_refused() {
        for (extra, setting, want) in [
            (vec![("PLUGIN_ACTION", "download"), ("PLUGIN_SOURCE", "/")], "source", "is only slashes"),
            (vec![("PLUGIN_ACTION", "download"), ("PLUGIN_SOURCE", "//")], "source", "write `**`"),
            (vec![("PLUGIN_ACTION", "download"), ("PLUGIN_SOURCE", "/abc123")], "source", "empty path component"),
            (vec![("PLUGIN_ACTION", "download"), ("PLUGIN_SOURCE", "org//dist/")], "source", "empty path component"),
            (vec![("PLUGIN_SOURCE", "dist//**")], "source", "empty path component"),
            (vec![("PLUGIN_SOURCE", "/")], "source", "is only slashes"),
            (vec![("PLUGIN_SOURCE", "/a//b")], "source", "empty path component"),
            (vec![("PLUGIN_TARGET", "/")], "target", "leave `target` out"),
            (vec![("PLUGIN_TARGET", "org/repo//abc/")], "target", "empty path component"),
            (vec![("PLUGIN_ACTION", "sync"), ("PLUGIN_TARGET", "//")], "target", "is only slashes"),
        ] {
            let e = Config::from_raw(&raw(&[base(), extra.clone()].concat())).unwrap_err();
            let hit = e.0.iter().find(|i| i.setting == setting).unwrap_or_else(|| panic!("{extra:?}: {e}"));
            assert!(hit.message.contains(want) && hit.message.contains("DRONE_*"), "{extra:?}: {e}");
        }
        for (action, source, target) in
            [("download", "**", ""), ("download", "org/repo/", "out/"), ("upload", "./dist/**", "org/repo/abc/")]
        {
            let p = [base(), vec![("PLUGIN_ACTION", action), ("PLUGIN_SOURCE", source), ("PLUGIN_TARGET", target)]];
            assert!(Config::from_raw(&raw(&p.concat())).is_ok(), "{action} {source} {target}");
        }
        // An upload's absolute source is outside the workspace, as before.
        let e = Config::from_raw(&raw(&[base(), vec![("PLUGIN_SOURCE", "/etc/passwd")]].concat())).unwrap_err();
        assert!(e.to_string().contains("`/etc/passwd` points outside the workspace"), "{e}");
        assert_eq!(e.0.len(), 1, "{e}");
        // A download's target is a local directory: an absolute path is its own business.
        let p = [base(), vec![("PLUGIN_ACTION", "download"), ("PLUGIN_TARGET", "/tmp/out")]];
        assert!(Config::from_raw(&raw(&p.concat())).is_ok());
    }

    #[test]
    fn unknown_settings_suggest_the_closest() {
        let r = raw(&[("PLUGIN_STRIP_PREFX", "dist"), ("PLUGIN_SOURCE", "x"), ("PLUGIN_WHATEVER_ELSE_ENTIRELY", "1")]);
        let u = r.unknown();
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(u[0].suggestion, Some("strip_prefix"));
        assert_eq!(
            u[0].to_string(),
            "unknown setting `strip_prefx` (PLUGIN_STRIP_PREFX): did you mean `strip_prefix` (PLUGIN_STRIP_PREFIX)?"
        );
        assert_eq!(
            u[1].to_string(),
            "unknown setting `whatever_else_entirely` (PLUGIN_WHATEVER_ELSE_ENTIRELY): ignored"
        );
    }

    /// The environment as bytes: a setting that is not UTF-8 is one problem naming it and
    /// its variable, never its value; other variables are absent, odd names are named escaped.
    #[test]
    fn an_environment_that_is_not_utf8_is_read_without_panic_or_value() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let os = |b: &[u8]| OsString::from_vec(b.to_vec());
        let r = RawSettings::from_os([
            (os(b"PLUGIN_ACCOUNT_NAME"), os(b"mystorage")),
            (os(b"PLUGIN_CONTAINER"), os(b"artifacts")),
            (os(b"PLUGIN_SOURCE"), os(b"dist/\xe9/**")),
            (os(b"AZURE_STORAGE_SAS_TOKEN"), os(b"sig=SECRET\xff")),
            (os(b"CI_COMMIT_MESSAGE"), os(b"caf\xe9")),
            (os(b"PLUGIN_\xff\nX"), os(b"v")),
        ]);
        assert_eq!(r.var("CI_COMMIT_MESSAGE"), None);
        assert_eq!(r.get("source"), None);
        let e = Config::from_raw(&r).unwrap_err();
        let settings: Vec<&str> = e.0.iter().map(|i| i.setting.as_str()).collect();
        assert_eq!(settings, vec!["source", "sas_token"], "{e}");
        let text = e.to_string();
        assert!(text.contains("`source` (PLUGIN_SOURCE): PLUGIN_SOURCE is not valid UTF-8"), "{text}");
        assert!(text.contains("`sas_token` (PLUGIN_SAS_TOKEN): AZURE_STORAGE_SAS_TOKEN is not valid UTF-8"), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("is required"), "{text}");
        // The odd name: escaped bytes and control characters, one line.
        assert_eq!(
            r.ignored_not_utf8(),
            vec!["`PLUGIN_\\\\xFF\\nX` is ignored: its name or value is not valid UTF-8 and it names no setting"]
        );
        // Behind an explicit credential the ambient SAS is set aside, not reported.
        let mut vars: Vec<(OsString, OsString)> = vec![
            (os(b"PLUGIN_ACCOUNT_NAME"), os(b"mystorage")),
            (os(b"PLUGIN_CONTAINER"), os(b"artifacts")),
            (os(b"PLUGIN_SOURCE"), os(b"x")),
            (os(b"AZURE_STORAGE_SAS_TOKEN"), os(b"sig=SECRET\xff")),
        ];
        vars.push((os(b"PLUGIN_ACCOUNT_KEY"), os(b"c2VjcmV0LWtleS12YWx1ZQ==")));
        let c = Config::from_raw(&RawSettings::from_os(vars)).unwrap();
        assert!(c.auth.precedence.unwrap().contains("AZURE_STORAGE_SAS_TOKEN ignored"));
    }

    #[test]
    fn action_inputs_are_checked_like_plugin_variables() {
        let r = raw(&[
            ("INPUT_SOURSE", "x"),
            ("input_target", "y"),
            ("Input_Exclude", "z"),
            ("INPUT_CONTAINER", "artifacts"),
            ("INPUT_WHATEVER_ELSE_ENTIRELY", "1"),
        ]);
        let u: Vec<String> = r.unknown().iter().map(ToString::to_string).collect();
        assert_eq!(
            u,
            vec![
                "unknown setting `sourse` (INPUT_SOURSE): did you mean `source` (INPUT_SOURCE)?",
                "unknown setting `whatever_else_entirely` (INPUT_WHATEVER_ELSE_ENTIRELY): ignored",
                "`Input_Exclude` is ignored: settings are read from upper-case INPUT_<NAME> variables only; did you mean `exclude` (INPUT_EXCLUDE)?",
                "`input_target` is ignored: settings are read from upper-case INPUT_<NAME> variables only; did you mean `target` (INPUT_TARGET)?",
            ]
        );
        // Not read: `source` is still missing.
        assert_eq!(Config::from_raw(&r).unwrap_err().0[0].setting, "source");
    }

    #[test]
    fn plugin_and_input_set_differently_say_which_wins_without_the_values() {
        let r = raw(&[
            ("PLUGIN_TARGET", "from-plugin"),
            ("INPUT_TARGET", "from-input"),
            ("PLUGIN_SOURCE", "same"),
            ("INPUT_SOURCE", " same "),
            ("PLUGIN_ACCOUNT_KEY", "c2VjcmV0LWtleQ=="),
            ("INPUT_ACCOUNT_KEY", "b3RoZXIta2V5"),
            ("PLUGIN_EXCLUDE", "x"),
            ("INPUT_EXCLUDE", ""),
        ]);
        let u: Vec<String> = r.unknown().iter().map(ToString::to_string).collect();
        assert_eq!(
            u,
            vec![
                "`target` is set by both PLUGIN_TARGET and INPUT_TARGET, to different values: PLUGIN_TARGET wins, INPUT_TARGET is ignored",
                "`account_key` is set by both PLUGIN_ACCOUNT_KEY and INPUT_ACCOUNT_KEY, to different values: PLUGIN_ACCOUNT_KEY wins, INPUT_ACCOUNT_KEY is ignored",
            ]
        );
        assert_eq!(r.get("target"), Some("from-plugin"));
    }

    #[test]
    fn a_setting_in_another_case_is_named_and_not_read() {
        for var in ["PLUGIN_Source", "plugin_source", "Plugin_SOURCE"] {
            let r = raw(&[(var, "dist/**"), ("PLUGIN_CONTAINER", "artifacts"), ("PLUGIN_ACCOUNT_NAME", "acct1")]);
            let u = r.unknown();
            assert_eq!(u.len(), 1, "{var}: {u:?}");
            assert_eq!(u[0].why, Unread::OtherCase);
            let text = u[0].to_string();
            assert!(text.contains(&format!("`{var}` is ignored")), "{text}");
            assert!(text.contains("did you mean `source` (PLUGIN_SOURCE)?"), "{text}");
            // Not read: `source` is still missing.
            let e = Config::from_raw(&r).unwrap_err();
            assert_eq!(e.0[0].setting, "source");
        }
        // Upper case is the setting itself; a non-ASCII name neither panics nor matches.
        assert!(raw(&[("PLUGIN_SOURCE", "x")]).unknown().is_empty());
        let u = raw(&[("PLUGIN_é", "x"), ("PLUGIé", "x")]).unknown();
        assert_eq!(u.len(), 1);
        assert!(u[0].to_string().contains("PLUGIN_é"));
    }
}

/// Property test: no value of any setting panics the validation, and whatever it accepts
/// as an endpoint is a URL the storage layer can build requests on.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,30}",
            "[ -~]{0,30}",
            Just("AccountName=acct1;AccountKey=a2V5;BlobEndpoint=".to_string())
                .prop_flat_map(|p| "[ -~]{0,20}".prop_map(move |s| format!("{p}{s}"))),
            "(https?|ftp)://[a-z.: @?#%/\\[\\]0-9-]{0,20}",
            "attachment; filename=\"[ -~\u{e9}\u{1F600}\"\\\\;]{0,12}\"?",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_input_panics_the_config_parser(picks in proptest::collection::vec((0usize..SETTINGS.len(), value()), 1..6)) {
            let mut env: BTreeMap<String, String> = base_env();
            for (i, v) in &picks {
                env.insert(settings::env_name(SETTINGS[*i].name), v.clone());
            }
            if let Ok(c) = Config::from_raw(&RawSettings::from_map(env)) {
                if !c.endpoint.is_empty() {
                    let u = url::Url::parse(&c.endpoint);
                    prop_assert!(u.is_ok(), "accepted endpoint {:?} does not parse", c.endpoint);
                }
                for r in [&c.content_type, &c.cache_control, &c.content_encoding, &c.content_disposition].into_iter().flatten() {
                    let values: Vec<&str> = match r {
                        ValueRule::Fixed(v) => vec![v.as_str()],
                        ValueRule::ByPattern(p) => p.iter().map(|(_, v)| v.as_str()).collect(),
                    };
                    for v in values {
                        prop_assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "accepted header value {v:?}");
                    }
                }
            }
        }
    }

    fn base_env() -> BTreeMap<String, String> {
        [
            ("PLUGIN_ACCOUNT_NAME", "acct1"),
            ("PLUGIN_CONTAINER", "artifacts"),
            ("PLUGIN_SOURCE", "x"),
            ("PLUGIN_AUTH", "shared_key"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}
