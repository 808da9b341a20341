//! Raw `PLUGIN_*` settings → validated [`Config`].
//!
//! Two types, as ripgrep keeps them: [`RawSettings`] is the environment as given
//! (strings, looked up by setting name with fallbacks), [`Config`] is what the rest of
//! the program trusts. Every value is checked here, before any network call; every
//! problem is reported at once, naming the setting, its variable and what it accepts.
//! Secrets live in [`Secret`], whose `Debug` prints `***`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::settings::{self, Kind, SETTINGS};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Upload,
    Download,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Blob,
    File,
}

impl Service {
    pub fn as_str(&self) -> &'static str {
        match self {
            Service::Blob => "blob",
            Service::File => "file",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overwrite {
    True,
    False,
    Skip,
    Changed,
}

/// The transactional checksum every Blob request body carries (`checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// `x-ms-content-crc64` (CRC-64/NVME): cheap on the client (SIMD).
    #[default]
    Crc64,
    /// `Content-MD5`: slower on the client, but Azurite verifies it ~4× cheaper than a CRC-64.
    Md5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Required,
    Size,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Auto,
    Federated,
    ManagedIdentity,
    Sas,
    SharedKey,
    ConnectionString,
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

/// A per-file header value: one string for all, or first matching glob wins.
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

/// Credentials and identity settings, before a mode is chosen (see `auth::resolve`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub account_key: Option<Secret>,
    pub sas_token: Option<Secret>,
    pub connection_string: Option<Secret>,
    /// Entra tenant (GUID or domain) and application / managed identity client id.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// CI token sources, in the order `auth::assertion_source` tries them.
    pub federated_token: Option<Secret>,
    /// The token file and what named it (the setting or `AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<(PathBuf, String)>,
    pub oidc_token_id: Option<Secret>,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub actions: Option<(String, Secret)>,
    pub audience: String,
    /// Entra host without a trailing `/`.
    pub authority_host: String,
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (App Service managed identity).
    pub identity_endpoint: Option<(String, Secret)>,
    /// IMDS base URL: `AZURE_POD_IDENTITY_AUTHORITY_HOST`, else `http://169.254.169.254`.
    pub imds_host: String,
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
    pub block_size: Option<u64>,
    pub concurrency: usize,
    pub max_memory: u64,
    pub retries: u32,
    pub timeout: Duration,
    pub manifest: Option<PathBuf>,
    pub dry_run: bool,
    pub log_level: String,
    pub log_format: LogFormat,
    pub progress_interval: Duration,
    pub auth: AuthSettings,
    /// `User-Agent` suffix naming the CI run, e.g. `woodpecker; org/repo#42`.
    pub ci_label: Option<String>,
}

/// Raw settings: the process environment, read by setting name.
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    env: BTreeMap<String, String>,
}

impl RawSettings {
    pub fn from_env() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    pub fn from_map(env: BTreeMap<String, String>) -> Self {
        RawSettings { env }
    }

    /// The value of a setting: `PLUGIN_<NAME>`, then its documented fallbacks. Empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        let primary = self.env.get(&settings::env_name(name)).map(|s| s.as_str());
        let fallbacks = settings::find(name).map(|s| s.env_fallback).unwrap_or(&[]);
        std::iter::once(primary)
            .chain(fallbacks.iter().map(|f| self.env.get(*f).map(|s| s.as_str())))
            .flatten()
            .find(|v| !v.trim().is_empty())
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(|s| s.as_str()).filter(|s| !s.is_empty())
    }

    /// `PLUGIN_*` variables that name no setting, each with the closest known name.
    pub fn unknown(&self) -> Vec<(String, Option<&'static str>)> {
        self.env
            .keys()
            .filter_map(|k| k.strip_prefix("PLUGIN_"))
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| settings::find(n).is_none())
            .map(|n| {
                let close = settings::closest(&n);
                (n, close)
            })
            .collect()
    }
}

/// Parses a boolean the way CI YAML writes them.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Parses `8MiB`, `8MB`, `8M`, `512k`, `1048576`. Units are binary (1 MB = 1 MiB), as azcopy's.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("`{v}` is not a size (e.g. `8MiB`, `512KiB`, `1048576`)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("`{v}` has an unknown unit (use B, KiB, MiB, GiB)")),
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{v}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `30s`, `2m`, `1h`, `500ms`, `1m30s`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let t = v.trim().to_ascii_lowercase();
    let err = || format!("`{v}` is not a duration (e.g. `30s`, `2m`, `500ms`)");
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| err());
    }
    let mut total = Duration::ZERO;
    let mut rest = t.as_str();
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        if n_end == 0 {
            return Err(err());
        }
        let n: f64 = rest[..n_end].parse().map_err(|_| err())?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..u_end];
        rest = &rest[u_end..];
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" | "sec" | "secs" => n,
            "m" | "min" | "mins" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(err()),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|_| err())?;
    }
    Ok(total)
}

/// Parses a list: a JSON array of strings, or comma-joined values.
pub fn parse_list(v: &str) -> Result<Vec<String>, String> {
    let t = v.trim();
    if t.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(t).map_err(|e| format!("looks like a JSON array but does not parse: {e}"))?;
        return items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("list items must be strings, found `{other}`")),
            })
            .filter(|r| r.as_ref().map(|s| !s.trim().is_empty()).unwrap_or(true))
            .collect();
    }
    Ok(t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Parses a JSON map of string values, keeping the written order.
pub fn parse_map(v: &str) -> Result<Vec<(String, String)>, String> {
    let t = v.trim();
    if !t.starts_with('{') {
        return Err("expected a JSON object, e.g. {\"key\": \"value\"}".into());
    }
    // Keep written order: serde_json's Map is sorted unless preserve_order; walk tokens instead.
    let ordered: OrderedMap = serde_json::from_str(t).map_err(|e| format!("is not a valid JSON object: {e}"))?;
    Ok(ordered.0)
}

struct OrderedMap(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<OrderedMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "value of `{k}` must be a string, found `{other}`"
                            )))
                        }
                    };
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A metadata name Azure accepts: a C# identifier (letters, digits, `_`, not starting with a digit).
pub fn valid_metadata_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Container / share naming rules (3-63, lowercase letters, digits, single hyphens).
fn check_container_name(name: &str, what: &str) -> Result<(), String> {
    if name == "$root" || name == "$web" || name == "$logs" {
        return Ok(());
    }
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(format!(
            "`{name}` is not a valid {what} name: 3-63 characters, lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Parsed connection string (`Key=Value;...`).
#[derive(Debug, Clone, Default)]
pub struct ConnectionString {
    pub account_name: Option<String>,
    pub account_key: Option<Secret>,
    pub sas: Option<Secret>,
    pub blob_endpoint: Option<String>,
    pub file_endpoint: Option<String>,
    pub protocol: Option<String>,
    pub endpoint_suffix: Option<String>,
}

/// Azurite's well-known development account key (public, documented by Microsoft).
pub const DEVSTORE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl ConnectionString {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut cs = ConnectionString::default();
        let mut dev = false;
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| "is not a connection string: expected `Key=Value;Key=Value`".to_string())?;
            match k.trim().to_ascii_lowercase().as_str() {
                "accountname" => cs.account_name = Some(v.to_string()),
                "accountkey" => cs.account_key = Some(Secret::new(v)),
                "sharedaccesssignature" => cs.sas = Some(Secret::new(v)),
                "blobendpoint" => cs.blob_endpoint = Some(v.trim_end_matches('/').to_string()),
                "fileendpoint" => cs.file_endpoint = Some(v.trim_end_matches('/').to_string()),
                "defaultendpointsprotocol" => cs.protocol = Some(v.to_string()),
                "endpointsuffix" => cs.endpoint_suffix = Some(v.to_string()),
                "usedevelopmentstorage" => dev = parse_bool(v).unwrap_or(false),
                // Queue/Table endpoints and the like are irrelevant here.
                _ => {}
            }
        }
        if dev {
            cs.account_name.get_or_insert_with(|| "devstoreaccount1".into());
            cs.account_key.get_or_insert_with(|| Secret::new(DEVSTORE_KEY));
            cs.blob_endpoint.get_or_insert_with(|| "http://127.0.0.1:10000/devstoreaccount1".into());
        }
        if cs.account_name.is_none() && cs.blob_endpoint.is_none() && cs.file_endpoint.is_none() {
            return Err("names no account: it needs `AccountName=` or a `BlobEndpoint=`/`FileEndpoint=`".into());
        }
        Ok(cs)
    }
}

/// Derives the account name from a service URL: `acct.blob.core.windows.net` or path-style `host/acct`.
pub fn account_from_endpoint(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host == "localhost";
    if is_ip {
        url.path_segments()?.find(|s| !s.is_empty()).map(str::to_string)
    } else {
        host.split('.').next().map(str::to_string)
    }
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
    push("ci_repo", pick(&["CI_REPO", "DRONE_REPO", "GITHUB_REPOSITORY", "CI_PROJECT_PATH", "BUILDKITE_REPO"]));
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

fn ci_label(raw: &RawSettings) -> Option<String> {
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

/// Header values must be visible ASCII; anything else is percent-encoded.
pub fn header_safe(v: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let enc = percent_encoding::utf8_percent_encode(v, SET).to_string();
    enc.chars().map(|c| if c.is_ascii() { c.to_string() } else { "%3F".into() }).collect()
}

impl Config {
    /// Reads and validates every setting. Collects all problems before failing.
    pub fn from_raw(raw: &RawSettings) -> Result<Config, ConfigError> {
        let mut errs: Vec<Invalid> = Vec::new();
        let mut bad = |setting: &str, message: String| {
            errs.push(Invalid { setting: setting.to_string(), message });
        };

        // Enum-typed settings checked generically against the table.
        for st in SETTINGS {
            if let (Kind::Enum(values), Some(v)) = (st.kind, raw.get(st.name)) {
                if !values.iter().any(|a| a.eq_ignore_ascii_case(v.trim())) {
                    bad(st.name, format!("`{v}` is not one of: {}", values.join(", ")));
                }
            }
        }
        let en = |name: &str| raw.get(name).map(|v| v.trim().to_ascii_lowercase());

        let action = match en("action").as_deref() {
            Some("download") => Action::Download,
            _ => Action::Upload,
        };
        let service = match en("service").as_deref() {
            Some("file") => Service::File,
            _ => Service::Blob,
        };
        let overwrite = match en("overwrite").as_deref() {
            Some("false") => Overwrite::False,
            Some("skip") => Overwrite::Skip,
            Some("changed") => Overwrite::Changed,
            _ => Overwrite::True,
        };
        let checksum = match en("checksum").as_deref() {
            Some("md5") => Checksum::Md5,
            _ => Checksum::Crc64,
        };
        let verify = match en("verify").as_deref() {
            Some("size") => Verify::Size,
            _ => Verify::Required,
        };
        let log_format = match en("log_format").as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        let log_level = en("log_level").unwrap_or_else(|| "info".into());
        let auth_mode = match en("auth").as_deref() {
            Some("federated") => AuthMode::Federated,
            Some("managed_identity") => AuthMode::ManagedIdentity,
            Some("sas") => AuthMode::Sas,
            Some("shared_key") => AuthMode::SharedKey,
            Some("connection_string") => AuthMode::ConnectionString,
            _ => AuthMode::Auto,
        };
        let access_tier = raw.get("access_tier").map(|v| {
            settings::ACCESS_TIERS
                .iter()
                .find(|t| t.eq_ignore_ascii_case(v.trim()))
                .map(|t| t.to_string())
                .unwrap_or_default()
        });
        if access_tier.is_some() && service == Service::File {
            bad("access_tier", "applies to Blob only (`service: blob`)".into());
        }

        let boolean = |name: &str, bad: &mut dyn FnMut(&str, String)| -> bool {
            let default = settings::find(name).and_then(|s| s.default).and_then(parse_bool).unwrap_or(false);
            match raw.get(name) {
                None => default,
                Some(v) => parse_bool(v).unwrap_or_else(|| {
                    bad(name, format!("`{v}` is not a boolean (true or false)"));
                    default
                }),
            }
        };
        let create_container = boolean("create_container", &mut bad);
        let allow_empty = boolean("allow_empty", &mut bad);
        let content_md5 = boolean("content_md5", &mut bad);
        let follow_symlinks = boolean("follow_symlinks", &mut bad);
        let dry_run = boolean("dry_run", &mut bad);
        let provenance_on = boolean("provenance", &mut bad);

        let list = |name: &str, bad: &mut dyn FnMut(&str, String)| -> Vec<String> {
            match raw.get(name).map(parse_list) {
                None => vec![],
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    bad(name, e);
                    vec![]
                }
            }
        };
        let sources = list("source", &mut bad);
        if sources.is_empty() {
            bad(
                "source",
                match action {
                    Action::Upload => "is required: the local file(s) or glob(s) to upload, e.g. `dist/**`".into(),
                    Action::Download => "is required: the remote name(s), prefix(es) or glob(s) to download".into(),
                },
            );
        }
        for s in &sources {
            if let Err(e) = Glob::new(s) {
                bad("source", format!("`{s}` is not a valid glob: {}", e.kind()));
            }
            if action == Action::Upload && (s.starts_with('/') || s.split('/').any(|c| c == "..")) {
                bad(
                    "source",
                    format!("`{s}` points outside the workspace: use a path relative to the workspace, without `..`"),
                );
            }
        }
        let excludes: Vec<PathPattern> = list("exclude", &mut bad)
            .iter()
            .filter_map(|e| PathPattern::new(e).map_err(|m| bad("exclude", m)).ok())
            .collect();

        let target = raw.get("target").unwrap_or("").trim().to_string();
        let strip_prefix = raw
            .get("strip_prefix")
            .map(|s| s.trim().trim_start_matches("./").trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty());

        let rule = |name: &str, bad: &mut dyn FnMut(&str, String)| -> Option<ValueRule> {
            let v = raw.get(name)?;
            if v.trim_start().starts_with('{') {
                match parse_map(v) {
                    Ok(pairs) => {
                        let mut rules = Vec::new();
                        for (g, val) in pairs {
                            match PathPattern::new(&g) {
                                Ok(p) => rules.push((p, val)),
                                Err(e) => bad(name, e),
                            }
                        }
                        Some(ValueRule::ByPattern(rules))
                    }
                    Err(e) => {
                        bad(name, e);
                        None
                    }
                }
            } else {
                Some(ValueRule::Fixed(v.trim().to_string()))
            }
        };
        let content_type = rule("content_type", &mut bad);
        let cache_control = rule("cache_control", &mut bad);
        let content_encoding = rule("content_encoding", &mut bad);
        let content_disposition = rule("content_disposition", &mut bad);
        for (name, r) in [
            ("content_type", &content_type),
            ("cache_control", &cache_control),
            ("content_encoding", &content_encoding),
            ("content_disposition", &content_disposition),
        ] {
            let values: Vec<&str> = match r {
                Some(ValueRule::Fixed(v)) => vec![v.as_str()],
                Some(ValueRule::ByPattern(p)) => p.iter().map(|(_, v)| v.as_str()).collect(),
                None => vec![],
            };
            for v in values {
                if v.chars().any(|c| c.is_control()) {
                    bad(name, "values must not contain control characters".into());
                }
            }
        }

        let mut metadata = Vec::new();
        if let Some(m) = raw.get("metadata") {
            match parse_map(m) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        if !valid_metadata_name(&k) {
                            bad("metadata", format!("`{k}` is not a valid metadata name: letters, digits and `_`, not starting with a digit"));
                        } else if k.eq_ignore_ascii_case("sha256") {
                            bad("metadata", "`sha256` is reserved: the plugin stores the file's SHA-256 there".into());
                        } else {
                            metadata.push((k.to_ascii_lowercase(), header_safe(&v)));
                        }
                    }
                }
                Err(e) => bad("metadata", e),
            }
        }
        if provenance_on {
            for (k, v) in provenance(raw) {
                if !metadata.iter().any(|(n, _)| *n == k) {
                    metadata.push((k, header_safe(&v)));
                }
            }
        }

        let size = |name: &str, min: u64, max: u64, bad: &mut dyn FnMut(&str, String)| -> Option<u64> {
            let v = raw.get(name)?;
            match parse_size(v) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                Ok(_) => {
                    bad(name, format!("`{v}` is out of range: {} to {}", human_bytes(min), human_bytes(max)));
                    None
                }
                Err(e) => {
                    bad(name, e);
                    None
                }
            }
        };
        let block_size = size("block_size", 64 << 10, 4000 << 20, &mut bad);
        let max_memory = size("max_memory", 1 << 20, 64 << 30, &mut bad).unwrap_or(32 << 20);
        // Upload blocks are held in memory; download ranges stream to disk.
        if let (Some(b), Action::Upload) = (block_size, action) {
            if max_memory < b {
                bad("max_memory", format!("must hold at least one block (`block_size` is {})", human_bytes(b)));
            }
        }

        let int = |name: &str, min: u64, max: u64, bad: &mut dyn FnMut(&str, String)| -> u64 {
            let default: u64 = settings::find(name).and_then(|s| s.default).and_then(|d| d.parse().ok()).unwrap_or(min);
            match raw.get(name) {
                None => default,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        bad(name, format!("`{v}` is not a whole number from {min} to {max}"));
                        default
                    }
                },
            }
        };
        let concurrency = int("concurrency", 1, 256, &mut bad) as usize;
        let retries = int("retries", 0, 50, &mut bad) as u32;

        let duration = |name: &str, bad: &mut dyn FnMut(&str, String)| -> Duration {
            let default = settings::find(name)
                .and_then(|s| s.default)
                .and_then(|d| parse_duration(d).ok())
                .unwrap_or(Duration::from_secs(60));
            match raw.get(name) {
                None => default,
                Some(v) => match parse_duration(v) {
                    Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(24 * 3600) => d,
                    Ok(_) => {
                        bad(name, format!("`{v}` is out of range: 10ms to 24h"));
                        default
                    }
                    Err(e) => {
                        bad(name, e);
                        default
                    }
                },
            }
        };
        let timeout = duration("timeout", &mut bad);
        let progress_interval = duration("progress_interval", &mut bad);

        let manifest = raw.get("manifest").map(|m| PathBuf::from(m.trim()));

        // Endpoint, account and container.
        let connection_string = raw.get("connection_string").map(Secret::new);
        let cs = match &connection_string {
            Some(c) => match ConnectionString::parse(c.expose()) {
                Ok(cs) => Some(cs),
                Err(e) => {
                    bad("connection_string", e);
                    None
                }
            },
            None => None,
        };
        let suffix = raw
            .get("endpoint_suffix")
            .map(str::to_string)
            .or_else(|| cs.as_ref().and_then(|c| c.endpoint_suffix.clone()))
            .unwrap_or_else(|| "core.windows.net".into());
        let account_setting = raw.get("account_name").map(|s| s.trim().to_string());
        if let Some(a) = &account_setting {
            if !(3..=24).contains(&a.len()) || !a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
                bad("account_name", format!("`{a}` is not a storage account name: 3-24 lowercase letters and digits"));
            }
        }
        let cs_endpoint = cs.as_ref().and_then(|c| match service {
            Service::Blob => c.blob_endpoint.clone(),
            Service::File => c.file_endpoint.clone(),
        });
        let cs_account = cs.as_ref().and_then(|c| c.account_name.clone());
        let endpoint = if let Some(e) = raw.get("endpoint") {
            let e = e.trim().trim_end_matches('/').to_string();
            if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bad("endpoint", "must not contain spaces or control characters".into());
            }
            match url::Url::parse(&e) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                    if u.query().is_some() {
                        bad("endpoint", "must not carry a query string: give a SAS in `sas_token`".into());
                    }
                }
                _ => bad("endpoint", format!("`{e}` is not an http(s) URL")),
            }
            Some(e)
        } else if let Some(e) = cs_endpoint {
            Some(e)
        } else {
            let acct = account_setting.clone().or(cs_account.clone());
            let proto = cs.as_ref().and_then(|c| c.protocol.clone()).unwrap_or_else(|| "https".into());
            acct.map(|a| format!("{proto}://{a}.{}.{suffix}", service.as_str()))
        };
        let account = account_setting
            .clone()
            .or(cs_account)
            .or_else(|| endpoint.as_deref().and_then(account_from_endpoint))
            .unwrap_or_default();
        let endpoint = match endpoint {
            Some(e) => e,
            None => {
                if !dry_run || action == Action::Download {
                    bad(
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
            bad(other_key, format!("does not apply to `service: {}`: use `{container_key}`", service.as_str()));
        }
        let container = raw.get(container_key).map(|s| s.trim().to_string()).unwrap_or_default();
        if container.is_empty() {
            bad(container_key, format!("is required with `service: {}`", service.as_str()));
        } else if let Err(e) = check_container_name(&container, container_key) {
            bad(container_key, e);
        }

        // Credentials (the mode is resolved in auth::resolve, with the network-free checks here).
        let sas_token = raw.get("sas_token").map(|s| Secret::new(s.trim().trim_start_matches('?')));
        if let Some(s) = &sas_token {
            if !s.expose().contains("sig=") {
                bad("sas_token", "is not a SAS: it has no `sig=` parameter".into());
            }
        }
        let account_key = raw.get("account_key").map(|s| Secret::new(s.trim()));
        if let Some(k) = &account_key {
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD.decode(k.expose()).is_err() {
                bad("account_key", "is not base64 (copy the key from the portal's Access keys page)".into());
            }
        }

        let keyless = parse_keyless(raw, auth_mode, &mut bad);

        if !errs.is_empty() {
            return Err(ConfigError(errs));
        }
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
            block_size,
            concurrency,
            max_memory,
            retries,
            timeout,
            manifest,
            dry_run,
            log_level,
            log_format,
            progress_interval,
            auth: AuthSettings { mode: auth_mode, account_key, sas_token, connection_string, ..keyless },
            ci_label: ci_label(raw),
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

/// Whether `s` is a GUID (`8-4-4-4-12` hex digits).
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_loopback_url(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The keyless-auth settings (federated and managed identity), checked without the network.
/// The CI token is checked only when it may be used (`auth: auto` or `federated`): a
/// malformed or expired token is reported here, naming its setting, before any exchange.
fn parse_keyless(raw: &RawSettings, mode: AuthMode, bad: &mut dyn FnMut(&str, String)) -> AuthSettings {
    use crate::auth::federated::{check_assertion, DEFAULT_AUDIENCE, DEFAULT_AUTHORITY};
    let uses_token = matches!(mode, AuthMode::Auto | AuthMode::Federated);

    let tenant_id = raw.get("tenant_id").map(|t| t.trim().to_string());
    if let Some(t) = &tenant_id {
        let domain_like = t.contains('.') && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !is_guid(t) && !domain_like {
            bad("tenant_id", format!("`{t}` is not a tenant: use the Directory (tenant) ID, a GUID such as 00000000-0000-0000-0000-000000000000, or a verified domain such as contoso.onmicrosoft.com"));
        }
    }
    let client_id = raw.get("client_id").map(|t| t.trim().to_string());
    if let Some(c) = &client_id {
        if !is_guid(c) {
            bad("client_id", format!("`{c}` is not a client id: use the Application (client) ID, a GUID such as 11111111-1111-1111-1111-111111111111"));
        }
    }

    let token_setting = |name: &str, bad: &mut dyn FnMut(&str, String)| -> Option<Secret> {
        let v = raw.get(name)?.trim().to_string();
        if uses_token {
            if let Err(e) = check_assertion(&v) {
                bad(name, e);
            }
        }
        Some(Secret::new(v))
    };
    let federated_token = token_setting("federated_token", bad);
    let oidc_token_id = token_setting("oidc_token_id", bad);

    let federated_token_file = raw.get("federated_token_file").map(|p| {
        let from = if raw.var(&settings::env_name("federated_token_file")).is_some() {
            "`federated_token_file` (PLUGIN_FEDERATED_TOKEN_FILE)".to_string()
        } else {
            "AZURE_FEDERATED_TOKEN_FILE".to_string()
        };
        let path = PathBuf::from(p.trim());
        // Checked now (it is re-read at every exchange) when it is the source that will be
        // used. Under `auto` that needs tenant and client too: a runner pod may carry
        // AZURE_FEDERATED_TOKEN_FILE for a pipeline that uses an account key.
        let will_use = match mode {
            AuthMode::Federated => true,
            AuthMode::Auto => tenant_id.is_some() && client_id.is_some(),
            _ => false,
        };
        if will_use && federated_token.is_none() {
            match std::fs::read_to_string(&path) {
                Ok(t) if t.trim().is_empty() => {
                    bad("federated_token_file", format!("`{}` (from {from}) is empty", path.display()))
                }
                Ok(t) => {
                    if let Err(e) = check_assertion(t.trim()) {
                        bad("federated_token_file", format!("the token in `{}` (from {from}) {e}", path.display()));
                    }
                }
                Err(e) => bad("federated_token_file", format!("cannot read `{}` (from {from}): {e}", path.display())),
            }
        }
        (path, from)
    });

    let actions = match (raw.var("ACTIONS_ID_TOKEN_REQUEST_URL"), raw.var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")) {
        (Some(u), Some(t)) => Some((u.trim().to_string(), Secret::new(t.trim()))),
        _ => None,
    };

    let audience = raw.get("audience").map(|a| a.trim().to_string()).unwrap_or_else(|| DEFAULT_AUDIENCE.to_string());
    let authority_host = raw
        .get("authority_host")
        .map(|a| a.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_AUTHORITY.to_string());
    match url::Url::parse(&authority_host) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_url(&u)) => {
            if u.query().is_some() || (u.path() != "/" && !u.path().is_empty()) {
                bad("authority_host", format!("`{authority_host}` must be a bare host URL such as https://login.microsoftonline.com (no path: the tenant is `tenant_id`)"));
            }
        }
        Ok(_) => {
            bad("authority_host", format!("`{authority_host}` must be an https:// URL (the CI token is sent there)"))
        }
        Err(_) => {
            bad("authority_host", format!("`{authority_host}` is not a URL, e.g. https://login.microsoftonline.com"))
        }
    }

    let identity_endpoint = match (raw.var("IDENTITY_ENDPOINT"), raw.var("IDENTITY_HEADER")) {
        (Some(e), Some(h)) => Some((e.trim().to_string(), Secret::new(h.trim()))),
        _ => None,
    };
    let imds_override =
        raw.var("AZURE_POD_IDENTITY_AUTHORITY_HOST").map(|h| h.trim().trim_end_matches('/').to_string());
    let imds_host =
        imds_override.clone().unwrap_or_else(|| crate::auth::managed_identity::IMDS_DEFAULT_HOST.to_string());

    AuthSettings {
        mode,
        account_key: None,
        sas_token: None,
        connection_string: None,
        tenant_id,
        client_id,
        federated_token,
        federated_token_file,
        oidc_token_id,
        actions,
        audience,
        authority_host,
        identity_endpoint,
        imds_host,
    }
}

/// `1.5 MiB`-style rendering.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        RawSettings::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![("PLUGIN_ACCOUNT_NAME", "mystorage"), ("PLUGIN_CONTAINER", "artifacts"), ("PLUGIN_SOURCE", "dist/**")]
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("8MB").unwrap(), 8 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn lists_comma_and_json() {
        assert_eq!(parse_list("a, b,,c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(parse_list(r#"["dist/{a,b}/*", "x"]"#).unwrap(), vec!["dist/{a,b}/*", "x"]);
        assert!(parse_list("[not json").is_err());
    }

    #[test]
    fn maps_keep_written_order() {
        let m = parse_map(r#"{"*.html": "text/html", "*": "text/plain", "a": "b"}"#).unwrap();
        assert_eq!(m[0].0, "*.html");
        assert_eq!(m[1].0, "*");
        assert!(parse_map("text/html").is_err());
        assert!(parse_map(r#"{"a": {"nested": 1}}"#).is_err());
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
    fn connection_string_gives_account_and_endpoint() {
        let mut p = base();
        p.retain(|(k, _)| *k != "PLUGIN_ACCOUNT_NAME");
        p.push(("PLUGIN_CONNECTION_STRING", "UseDevelopmentStorage=true"));
        let c = Config::from_raw(&raw(&p)).unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(c.account, "devstoreaccount1");
    }

    #[test]
    fn account_from_path_style_and_host_style() {
        assert_eq!(
            account_from_endpoint("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(account_from_endpoint("https://acct.blob.core.windows.net").as_deref(), Some("acct"));
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

    #[test]
    fn unknown_settings_suggest_the_closest() {
        let r = raw(&[("PLUGIN_STRIP_PREFX", "dist"), ("PLUGIN_SOURCE", "x")]);
        assert_eq!(r.unknown(), vec![("strip_prefx".to_string(), Some("strip_prefix"))]);
    }

    #[test]
    fn keyless_settings_and_their_fallbacks() {
        let mut p = base();
        p.extend([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000"),
            ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", "https://actions.example/idtoken?api-version=2.0"),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "req"),
        ]);
        let c = Config::from_raw(&raw(&p)).unwrap();
        assert_eq!(c.auth.tenant_id.as_deref(), Some("00000000-0000-0000-0000-000000000000"));
        assert_eq!(c.auth.client_id.as_deref(), Some("11111111-1111-1111-1111-111111111111"));
        assert_eq!(c.auth.authority_host, "https://login.microsoftonline.us");
        assert_eq!(c.auth.audience, "api://AzureADTokenExchange");
        assert_eq!(c.auth.imds_host, "http://169.254.169.254");
        assert!(c.auth.actions.is_some());
        assert!(!format!("{c:?}").contains("\"req\""));
        // A domain is a valid tenant; a bad one is named.
        let mut p = base();
        p.push(("PLUGIN_TENANT_ID", "contoso.onmicrosoft.com"));
        assert!(Config::from_raw(&raw(&p)).is_ok());
        p.push(("PLUGIN_CLIENT_ID", "{11111111-1111-1111-1111-111111111111}"));
        assert_eq!(Config::from_raw(&raw(&p)).unwrap_err().0[0].setting, "client_id");
    }

    #[test]
    fn a_token_file_from_the_environment_is_checked_only_when_it_will_be_used() {
        let mut p = base();
        p.push(("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/azure-identity-token"));
        // Without tenant and client, `auto` will not use it: no error for a pipeline using a key.
        let c = Config::from_raw(&raw(&p)).unwrap();
        assert_eq!(c.auth.federated_token_file.as_ref().unwrap().1, "AZURE_FEDERATED_TOKEN_FILE");
        p.extend([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000"),
            ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
        ]);
        let e = Config::from_raw(&raw(&p)).unwrap_err().to_string();
        assert!(e.contains("cannot read `/nonexistent/azure-identity-token` (from AZURE_FEDERATED_TOKEN_FILE)"), "{e}");
        // A forced static mode never looks at it.
        p.push(("PLUGIN_AUTH", "shared_key"));
        assert!(Config::from_raw(&raw(&p)).is_ok());
    }

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
}

/// Property tests: the parsers never panic, and what they accept means what was written.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            for v in [s.as_str(), lossy.as_str()] {
                let _ = parse_size(v);
                let _ = parse_duration(v);
                let _ = parse_list(v);
                let _ = parse_map(v);
                let _ = parse_bool(v);
                let _ = ConnectionString::parse(v);
            }
        }

        #[test]
        fn sizes_mean_what_they_say(n in 0u64..(1 << 20), unit in 0usize..5, lower in any::<bool>(), pad in any::<bool>()) {
            let (names, mult): (&[&str], u64) = [
                (&["", "B"][..], 1u64),
                (&["KiB", "KB", "K"][..], 1 << 10),
                (&["MiB", "MB", "M"][..], 1 << 20),
                (&["GiB", "GB", "G"][..], 1 << 30),
                (&["TiB", "TB", "T"][..], 1 << 40),
            ][unit];
            for name in names {
                let name = if lower { name.to_ascii_lowercase() } else { name.to_string() };
                let text = if pad { format!(" {n} {name} ") } else { format!("{n}{name}") };
                prop_assert_eq!(parse_size(&text), Ok(n * mult), "{:?}", text);
            }
        }

        #[test]
        fn durations_mean_what_they_say(h in 0u64..48, m in 0u64..120, s in 0u64..120, ms in 0u64..2000) {
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let got = parse_duration(&text).unwrap();
            let diff = got.abs_diff(want);
            prop_assert!(diff < Duration::from_micros(1), "{text}: {got:?} != {want:?}");
            prop_assert_eq!(parse_duration(&format!("{s}")).unwrap(), Duration::from_secs(s));
        }

        #[test]
        fn lists_round_trip_in_both_forms(items in proptest::collection::vec("[A-Za-z0-9_./*?-][A-Za-z0-9_./*? -]{0,10}[A-Za-z0-9_./*?-]", 0..6)) {
            let want: Vec<String> = items.iter().map(|s| s.trim().to_string()).collect();
            let joined = items.join(",");
            prop_assume!(!joined.trim_start().starts_with('['));
            prop_assert_eq!(parse_list(&joined).unwrap(), want.clone());
            let json = serde_json::to_string(&items).unwrap();
            prop_assert_eq!(parse_list(&json).unwrap(), items);
        }

        #[test]
        fn maps_keep_their_written_order(pairs in proptest::collection::vec(("\\PC{1,8}", "\\PC{0,8}"), 0..6)) {
            let mut seen = std::collections::HashSet::new();
            let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
                .collect();
            let json = format!("{{{}}}", body.join(", "));
            prop_assert_eq!(parse_map(&json).unwrap(), pairs);
        }
    }
}
