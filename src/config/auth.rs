//! Credential and identity settings: [`AuthSettings`] (account key, SAS, connection
//! string, and the keyless federated / managed-identity settings, checked without the
//! network), connection-string parsing, Azurite's development key, and the account name
//! a service URL implies.

use std::path::PathBuf;

use super::endpoint::shown;
use super::values::parse_bool;
use super::{AuthMode, Problems, RawSettings, Secret};
use crate::jwt::check_assertion;
use crate::settings;

/// Credentials and identity settings, before a mode is chosen (see `auth::resolve`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub account_key: Option<Secret>,
    pub sas_token: Option<Secret>,
    pub connection_string: Option<Secret>,
    /// A pre-minted Entra ID access token (`access_token`, `AZURE_ACCESS_TOKEN`), checked.
    pub access_token: Option<Secret>,
    /// Entra tenant (GUID or domain) and application / managed identity client id.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// CI token sources, in the order federation tries them ([`AuthSettings::ci_token_source`]).
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
    /// Under `auth: auto`, the ambient variables set aside because an explicit `PLUGIN_*`
    /// credential was given, said on the start line ([`ambient_set_aside`]).
    pub precedence: Option<String>,
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

/// The IMDS base URL when `AZURE_POD_IDENTITY_AUTHORITY_HOST` does not override it (not a
/// setting: the platform's address, as every Azure SDK has it).
pub const IMDS_DEFAULT_HOST: &str = "http://169.254.169.254";

/// Azurite's well-known development account key (public, documented by Microsoft).
pub const DEVSTORE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Connection-string keys read and ignored (other services, SDK-only knobs).
const IGNORED_KEYS: &[&str] = &["queueendpoint", "tableendpoint", "dfsendpoint", "developmentstorageproxyuri"];

impl ConnectionString {
    /// Parses `Key=Value;Key=Value` (see [`ConnectionString::parse_all`]); the problems
    /// joined into one message.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_all(s).map_err(|e| e.join("; "))
    }

    /// Parses `Key=Value;Key=Value` as the Azure SDKs do: keys case-insensitively, keys and
    /// values trimmed of spaces, a value holding `=` (base64 padding) kept whole. Every value
    /// is checked as its setting would be (`AccountName` as `account_name`, the endpoints
    /// as `endpoint`); every problem is returned. Messages name the key and never print the
    /// value of `AccountKey` or `SharedAccessSignature`, nor a segment that has no key.
    pub fn parse_all(s: &str) -> Result<Self, Vec<String>> {
        use super::endpoint::{check_account_name, check_dns_suffix, service_url, url_text};
        let mut cs = ConnectionString::default();
        let mut errs: Vec<String> = Vec::new();
        let mut dev = false;
        let mut seen: Vec<String> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        let segments: Vec<&str> = s.split(';').collect();
        let total = segments.iter().filter(|p| !p.trim().is_empty()).count();
        let mut n = 0;
        for part in segments.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            n += 1;
            let Some((k, v)) = part.split_once('=') else {
                errs.push(format!(
                    "segment {n} of {total} has no `=` (its text is not shown: it may be a secret): expected `Key=Value;Key=Value`"
                ));
                continue;
            };
            let (key, v) = (k.trim(), v.trim());
            let lower = key.to_ascii_lowercase();
            let shown_key: String = key.chars().flat_map(char::escape_debug).collect();
            if key.is_empty() {
                errs.push(format!("segment {n} of {total} has no key before `=`: expected `Key=Value;Key=Value`"));
                continue;
            }
            if v.is_empty() {
                errs.push(format!("`{shown_key}=` has no value"));
                continue;
            }
            if seen.contains(&lower) {
                errs.push(format!("`{shown_key}` is given more than once"));
                continue;
            }
            seen.push(lower.clone());
            match lower.as_str() {
                "accountname" => match check_account_name(v) {
                    Ok(()) => cs.account_name = Some(v.to_string()),
                    Err(e) => errs.push(format!("`AccountName`: {e}")),
                },
                "accountkey" => {
                    use base64::Engine;
                    if base64::engine::general_purpose::STANDARD.decode(v).is_err() {
                        errs.push("`AccountKey` is not base64 (copy the connection string from the portal's Access keys page)".into());
                    } else {
                        cs.account_key = Some(Secret::new(v));
                    }
                }
                "sharedaccesssignature" => {
                    if !v.contains("sig=") {
                        errs.push("`SharedAccessSignature` is not a SAS: it has no `sig=` parameter".into());
                    } else if let Some(why) = super::values::not_a_query(v.trim_start_matches('?')) {
                        errs.push(format!("`SharedAccessSignature` {why}"));
                    } else {
                        cs.sas = Some(Secret::new(v));
                    }
                }
                "blobendpoint" | "fileendpoint" => match service_url(v) {
                    Ok(u) if lower == "blobendpoint" => cs.blob_endpoint = Some(url_text(&u)),
                    Ok(u) => cs.file_endpoint = Some(url_text(&u)),
                    Err(e) => errs.push(format!("`{shown_key}`: {e}")),
                },
                "defaultendpointsprotocol" => match v.to_ascii_lowercase().as_str() {
                    p @ ("http" | "https") => cs.protocol = Some(p.to_string()),
                    _ => errs
                        .push(format!("`DefaultEndpointsProtocol`: `{}` is not `https` or `http`", v.escape_debug())),
                },
                "endpointsuffix" => match check_dns_suffix(v) {
                    Ok(()) => cs.endpoint_suffix = Some(v.to_ascii_lowercase()),
                    Err(e) => errs.push(format!("`EndpointSuffix`: {e}")),
                },
                "usedevelopmentstorage" => match parse_bool(v) {
                    Some(b) => dev = b,
                    None => {
                        errs.push(format!("`UseDevelopmentStorage`: `{}` is not `true` or `false`", v.escape_debug()))
                    }
                },
                k if IGNORED_KEYS.contains(&k) => {}
                _ => unknown.push(shown_key),
            }
        }
        if dev {
            cs.account_name.get_or_insert_with(|| "devstoreaccount1".into());
            cs.account_key.get_or_insert_with(|| Secret::new(DEVSTORE_KEY));
            cs.blob_endpoint.get_or_insert_with(|| "http://127.0.0.1:10000/devstoreaccount1".into());
        }
        let named_account = seen.iter().any(|k| matches!(k.as_str(), "accountname" | "blobendpoint" | "fileendpoint"));
        if !named_account && !dev {
            let mut e = "names no account: it needs `AccountName=` or a `BlobEndpoint=`/`FileEndpoint=`".to_string();
            if !unknown.is_empty() {
                e.push_str(&format!(" (keys not understood: `{}`)", unknown.join("`, `")));
            }
            errs.push(e);
        }
        if errs.is_empty() {
            Ok(cs)
        } else {
            Err(errs)
        }
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

/// The static secrets `sas_token` and `account_key`, checked (the mode is resolved in
/// `auth::resolve`; these are the network-free checks).
pub(super) fn static_secrets(raw: &RawSettings, bad: &mut Problems) -> (Option<Secret>, Option<Secret>) {
    let sas_token = raw.get("sas_token").map(|s| Secret::new(s.trim().trim_start_matches('?')));
    if let Some(s) = &sas_token {
        let from = raw.from_note("sas_token");
        if !s.expose().contains("sig=") {
            bad.push("sas_token", format!("is not a SAS: it has no `sig=` parameter{from}"));
        } else if let Some(why) = super::values::not_a_query(s.expose()) {
            bad.push("sas_token", format!("{why}{from}"));
        }
    }
    let account_key = raw.get("account_key").map(|s| Secret::new(s.trim()));
    if let Some(k) = &account_key {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(k.expose()).is_err() {
            let from = raw.from_note("account_key");
            bad.push("account_key", format!("is not base64 (copy the key from the portal's Access keys page){from}"));
        }
    }
    (sas_token, account_key)
}

/// The keyless-auth settings (federated and managed identity), checked without the network.
/// A CI token given as a value is checked when it may be used (`auth: auto` or `federated`):
/// a malformed or expired token is reported here, naming its setting, before any exchange.
/// The token file, the Actions endpoint and the platform's identity endpoints are checked
/// once the credential is known ([`check_ci_token`], [`check_identity_endpoints`]).
pub(super) fn parse_keyless(raw: &RawSettings, mode: AuthMode, bad: &mut Problems) -> AuthSettings {
    let uses_token = matches!(mode, AuthMode::Auto | AuthMode::Federated);

    let tenant_id = raw.get("tenant_id").map(|t| t.trim().to_string());
    if let Some(t) = &tenant_id {
        let domain_like = t.contains('.') && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !is_guid(t) && !domain_like {
            bad.push("tenant_id", format!("`{t}` is not a tenant: use the Directory (tenant) ID, a GUID such as 00000000-0000-0000-0000-000000000000, or a verified domain such as contoso.onmicrosoft.com"));
        }
    }
    let client_id = raw.get("client_id").map(|t| t.trim().to_string());
    if let Some(c) = &client_id {
        if !is_guid(c) {
            bad.push("client_id", format!("`{c}` is not a client id: use the Application (client) ID, a GUID such as 11111111-1111-1111-1111-111111111111"));
        }
    }

    let token_setting = |name: &str, bad: &mut Problems| -> Option<Secret> {
        let v = raw.get(name)?.trim().to_string();
        if uses_token {
            if let Err(e) = check_assertion(&v) {
                bad.push(name, e);
            }
        }
        Some(Secret::new(v))
    };
    let federated_token = token_setting("federated_token", bad);
    let access_token = parse_access_token(raw, mode, bad);
    let oidc_token_id = token_setting("oidc_token_id", bad);

    let federated_token_file = token_file(raw);

    let actions = match (raw.var("ACTIONS_ID_TOKEN_REQUEST_URL"), raw.var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")) {
        (Some(u), Some(t)) => Some((u.trim().to_string(), Secret::new(t.trim()))),
        _ => None,
    };

    let audience = raw.get_or_default("audience").unwrap_or_default().trim().to_string();
    let authority_host = authority_host(raw, bad);

    let identity_endpoint = match (raw.var("IDENTITY_ENDPOINT"), raw.var("IDENTITY_HEADER")) {
        (Some(e), Some(h)) => Some((e.trim().to_string(), Secret::new(h.trim()))),
        _ => None,
    };
    let imds_host = raw
        .var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .map(|h| h.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| IMDS_DEFAULT_HOST.to_string());

    AuthSettings {
        mode,
        account_key: None,
        sas_token: None,
        connection_string: None,
        access_token,
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
        precedence: None,
    }
}

/// The credential a run uses, as decided from its settings (see [`credential_source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// A pre-minted token (`access_token`).
    AccessToken,
    /// A CI token exchanged with Entra ID (`tenant_id`, `client_id`).
    Federated,
    Sas,
    SharedKey,
    ConnectionString,
    /// The machine's managed identity: `IDENTITY_ENDPOINT`, else IMDS (probed under `auto`).
    ManagedIdentity,
    /// Nothing configured, in a dry run: no credential.
    None,
}

/// Which credential a run uses: the one its `auth` mode names, or under `auth: auto` the
/// first present in the order docs/auth.md gives: `access_token`; federation (a CI token
/// source and both `tenant_id` and `client_id`); `sas_token`; `account_key`; a
/// `connection_string` holding a key or a SAS; then, in a dry run, none; else the managed
/// identity. The one place that order is written: `auth::resolve` builds what it names, and
/// `check_identity_endpoints` checks the platform's endpoints only when it names the
/// managed identity.
pub fn credential_source(a: &AuthSettings, dry_run: bool) -> CredentialSource {
    use CredentialSource as S;
    match a.mode {
        AuthMode::AccessToken => S::AccessToken,
        AuthMode::Federated => S::Federated,
        AuthMode::Sas => S::Sas,
        AuthMode::SharedKey => S::SharedKey,
        AuthMode::ConnectionString => S::ConnectionString,
        AuthMode::ManagedIdentity => S::ManagedIdentity,
        AuthMode::Auto if a.access_token.is_some() => S::AccessToken,
        AuthMode::Auto if a.ci_token_source().is_some() && a.tenant_id.is_some() && a.client_id.is_some() => {
            S::Federated
        }
        AuthMode::Auto if a.sas_token.is_some() => S::Sas,
        AuthMode::Auto if a.account_key.is_some() => S::SharedKey,
        // One that does not parse is taken too, so that its problem is the one reported.
        AuthMode::Auto
            if a.connection_string.as_ref().is_some_and(|c| {
                ConnectionString::parse(c.expose()).map_or(true, |cs| cs.sas.is_some() || cs.account_key.is_some())
            }) =>
        {
            S::ConnectionString
        }
        AuthMode::Auto if dry_run => S::None,
        AuthMode::Auto => S::ManagedIdentity,
    }
}

/// Where federation takes the CI token from (see [`AuthSettings::ci_token_source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiTokenSource {
    /// `federated_token`.
    FederatedToken,
    /// `federated_token_file` (or AZURE_FEDERATED_TOKEN_FILE).
    TokenFile,
    /// `oidc_token_id` (Harness).
    OidcTokenId,
    /// The Actions ID-token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN).
    Actions,
}

impl AuthSettings {
    /// The CI token source federation uses: the first present of `federated_token`,
    /// `federated_token_file`, `oidc_token_id` and the Actions endpoint (the one place that
    /// order is written; `auth::assertion_source` builds what it names).
    pub fn ci_token_source(&self) -> Option<CiTokenSource> {
        use CiTokenSource as T;
        [
            (self.federated_token.is_some(), T::FederatedToken),
            (self.federated_token_file.is_some(), T::TokenFile),
            (self.oidc_token_id.is_some(), T::OidcTokenId),
            (self.actions.is_some(), T::Actions),
        ]
        .into_iter()
        .find_map(|(present, source)| present.then_some(source))
    }
}

/// The platform's managed-identity endpoints (`IDENTITY_ENDPOINT`, and the IMDS host
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST` may move), checked exactly when the run will use the
/// managed identity: a runner's environment may carry them for a pipeline that never looks
/// at them.
pub(super) fn check_identity_endpoints(a: &AuthSettings, dry_run: bool, bad: &mut Problems) {
    if credential_source(a, dry_run) != CredentialSource::ManagedIdentity {
        return;
    }
    if let Some((e, _)) = &a.identity_endpoint {
        if let Err(m) = super::endpoint::http_url(e) {
            bad.push("IDENTITY_ENDPOINT", format!("{m} (App Service sets it; unset it to use IMDS)"));
        }
    }
    match super::endpoint::service_url(&a.imds_host) {
        Ok(u) if u.path() == "/" => {}
        Ok(_) => bad.push(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            format!("`{}` must be a bare host URL such as http://169.254.169.254 (no path)", shown(&a.imds_host)),
        ),
        Err(m) => bad.push("AZURE_POD_IDENTITY_AUTHORITY_HOST", m),
    }
}

/// Credential settings whose documented fallbacks are ambient variables.
const AMBIENT_CREDENTIALS: &[&str] = &["access_token", "sas_token", "account_key", "connection_string"];

/// Under `auth: auto`, an explicit credential (a `PLUGIN_*` or `INPUT_*` variable) always
/// wins over an ambient one: the runner's environment never silently overrides what the
/// pipeline wrote. Returns the ambient variables to set aside (those that are set):
/// `AZURE_STORAGE_SAS_TOKEN`, `AZURE_STORAGE_KEY`, `AZURE_STORAGE_CONNECTION_STRING` and
/// `AZURE_ACCESS_TOKEN` behind any explicit credential; and, unless federation is asked
/// for explicitly (a token setting, or both `tenant_id` and `client_id`), the ambient CI
/// token sources (`AZURE_FEDERATED_TOKEN_FILE`, the Actions token endpoint). They are
/// neither used nor checked; the start line names them ([`precedence_note`]).
pub(super) fn ambient_set_aside(raw: &RawSettings, mode: AuthMode) -> Vec<&'static str> {
    if mode != AuthMode::Auto {
        return vec![];
    }
    let explicit = |name: &str| raw.is_explicit(name);
    let explicit_federated = ["federated_token", "oidc_token_id", "federated_token_file"].iter().any(|n| explicit(n))
        || (explicit("tenant_id") && explicit("client_id"));
    let explicit_static = AMBIENT_CREDENTIALS.iter().any(|n| explicit(n));
    if !explicit_static && !explicit_federated {
        return vec![];
    }
    let mut vars: Vec<&'static str> = AMBIENT_CREDENTIALS
        .iter()
        .filter(|n| !explicit(n))
        .flat_map(|n| settings::find(n).map(|s| s.env_fallback).unwrap_or(&[]).iter().copied())
        .collect();
    if !explicit_federated {
        vars.extend(settings::find("federated_token_file").map(|s| s.env_fallback).unwrap_or(&[]));
        vars.extend(["ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"]);
    }
    vars.retain(|v| raw.var(v).is_some_and(|v| !v.trim().is_empty()) || raw.is_not_utf8(v));
    vars
}

/// What the start line says about ambient variables set aside, if any.
pub(super) fn precedence_note(set_aside: &[&str]) -> Option<String> {
    (!set_aside.is_empty())
        .then(|| format!("explicit PLUGIN_* credentials win over ambient variables: {} ignored", set_aside.join(", ")))
}

/// `federated_token_file` and what named it (the setting or `AZURE_FEDERATED_TOKEN_FILE`).
fn token_file(raw: &RawSettings) -> Option<(PathBuf, String)> {
    raw.get("federated_token_file").map(|p| {
        let from = match raw.fallback_source("federated_token_file") {
            Some(var) => var.to_string(),
            None => "`federated_token_file` (PLUGIN_FEDERATED_TOKEN_FILE)".to_string(),
        };
        (PathBuf::from(p.trim()), from)
    })
}

/// The CI token source federation will use, checked now when the run will federate
/// ([`credential_source`]) and it is the one used ([`AuthSettings::ci_token_source`]): a
/// token file is read and its token checked (it is re-read at every exchange), the Actions
/// endpoint must be a URL. A runner pod may carry AZURE_FEDERATED_TOKEN_FILE, and an
/// Actions runner its endpoint, for a pipeline that uses another credential. Token values
/// (`federated_token`, `oidc_token_id`) are checked where they are read.
pub(super) fn check_ci_token(a: &AuthSettings, dry_run: bool, bad: &mut Problems) {
    if credential_source(a, dry_run) != CredentialSource::Federated {
        return;
    }
    match (a.ci_token_source(), &a.federated_token_file, &a.actions) {
        (Some(CiTokenSource::TokenFile), Some((path, from)), _) => match crate::jwt::read_token_file(path) {
            Ok(t) if t.trim().is_empty() => {
                bad.push("federated_token_file", format!("`{}` (from {from}) is empty", path.display()))
            }
            Ok(t) => {
                if let Err(e) = check_assertion(t.trim()) {
                    bad.push("federated_token_file", format!("the token in `{}` (from {from}) {e}", path.display()));
                }
            }
            Err(e) => bad.push("federated_token_file", format!("cannot read `{}` (from {from}): {e}", path.display())),
        },
        (Some(CiTokenSource::Actions), _, Some((url, _))) => {
            if let Err(m) = super::endpoint::http_url(url) {
                bad.push("ACTIONS_ID_TOKEN_REQUEST_URL", m);
            }
        }
        _ => {}
    }
}

/// `authority_host` (the settings table's default when unset): an https:// bare host URL.
fn authority_host(raw: &RawSettings, bad: &mut Problems) -> String {
    let authority_host =
        raw.get_or_default("authority_host").unwrap_or_default().trim().trim_end_matches('/').to_string();
    let from = raw.from_note("authority_host");
    match super::endpoint::http_url(&authority_host) {
        Ok(u) if u.scheme() == "https" || is_loopback_url(&u) => {
            if u.query().is_some() || (u.path() != "/" && !u.path().is_empty()) {
                bad.push("authority_host", format!("`{}`{from} must be a bare host URL such as https://login.microsoftonline.com (no path: the tenant is `tenant_id`)", shown(&authority_host)));
            }
        }
        Ok(_) => bad.push(
            "authority_host",
            format!("`{}`{from} must be an https:// URL (the CI token is sent there)", shown(&authority_host)),
        ),
        Err(e) => bad.push("authority_host", format!("{e}{from}")),
    }
    authority_host
}

/// `access_token`, checked (a JWT for storage, not expired) when it may be used.
fn parse_access_token(raw: &RawSettings, mode: AuthMode, bad: &mut Problems) -> Option<Secret> {
    let v = raw.get("access_token")?.trim().to_string();
    if matches!(mode, AuthMode::Auto | AuthMode::AccessToken) {
        // An account-scoped audience names the service URL.
        let endpoint = raw.get("endpoint").map(str::to_string).unwrap_or_else(|| {
            let service =
                if raw.get("service").is_some_and(|s| s.trim().eq_ignore_ascii_case("file")) { "file" } else { "blob" };
            let suffix = raw.get_or_default("endpoint_suffix").unwrap_or_default();
            format!("https://{}.{service}.{suffix}", raw.get("account_name").unwrap_or("").trim())
        });
        if let Err(e) = crate::jwt::check_access_token(&v, endpoint.trim()) {
            bad.push("access_token", e);
        }
    }
    Some(Secret::new(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base, raw};
    use crate::config::Config;

    #[test]
    fn connection_string_gives_account_and_endpoint() {
        let mut p = base();
        p.retain(|(k, _)| *k != "PLUGIN_ACCOUNT_NAME");
        p.push(("PLUGIN_CONNECTION_STRING", "UseDevelopmentStorage=true"));
        let c = Config::from_raw(&raw(&p)).unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(c.account, "devstoreaccount1");
    }

    const KEY: &str = "c2VjcmV0LWtleS12YWx1ZQ==";

    /// An ambient credential never beats an explicit one under `auto`.
    #[test]
    fn explicit_credentials_win_over_ambient_variables() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut p = base();
            p.extend_from_slice(extra);
            Config::from_raw(&raw(&p)).unwrap().auth
        };
        let a = with(&[("PLUGIN_ACCOUNT_KEY", KEY), ("AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x")]);
        assert!(a.sas_token.is_none() && a.account_key.is_some());
        assert_eq!(
            a.precedence.as_deref(),
            Some("explicit PLUGIN_* credentials win over ambient variables: AZURE_STORAGE_SAS_TOKEN ignored")
        );
        // Only ambient ones: the usual order, nothing set aside.
        let a = with(&[("AZURE_STORAGE_KEY", KEY), ("AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x")]);
        assert!(a.sas_token.is_some() && a.account_key.is_some() && a.precedence.is_none());
        // Two explicit ones keep their documented order (both kept).
        let a = with(&[("PLUGIN_ACCOUNT_KEY", KEY), ("PLUGIN_SAS_TOKEN", "sv=1&sig=x")]);
        assert!(a.sas_token.is_some() && a.account_key.is_some() && a.precedence.is_none());
        // A workload identity pod's ambient federation does not beat an explicit key...
        let a = with(&[
            ("INPUT_ACCOUNT_KEY", KEY),
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000"),
            ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", "https://token.example"),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t"),
            ("AZURE_ACCESS_TOKEN", "not.a.jwt"),
        ]);
        assert!(a.actions.is_none() && a.access_token.is_none() && a.account_key.is_some());
        let note = a.precedence.unwrap();
        assert!(
            note.contains("AZURE_ACCESS_TOKEN, ACTIONS_ID_TOKEN_REQUEST_URL, ACTIONS_ID_TOKEN_REQUEST_TOKEN ignored"),
            "an ambient token is neither used nor checked: {note}"
        );
        // ...but explicit tenant and client ask for federation: the ambient key is set aside.
        let a = with(&[
            ("PLUGIN_TENANT_ID", "00000000-0000-0000-0000-000000000000"),
            ("PLUGIN_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", "https://token.example"),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t"),
            ("AZURE_STORAGE_KEY", KEY),
        ]);
        assert!(a.actions.is_some() && a.account_key.is_none());
        // An explicit mode takes what it names, wherever it came from.
        let a = with(&[("PLUGIN_AUTH", "sas"), ("PLUGIN_ACCOUNT_KEY", KEY), ("AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x")]);
        assert!(a.sas_token.is_some() && a.precedence.is_none());
    }

    #[test]
    fn connection_strings_are_trimmed_and_keys_case_insensitive() {
        let text = format!(
            " DefaultEndpointsProtocol = http ; accountname = devstoreaccount1 ;ACCOUNTKEY= {KEY} ; BlobEndpoint = http://127.0.0.1:10000/devstoreaccount1/ ; "
        );
        let cs = ConnectionString::parse_all(&text).unwrap();
        assert_eq!(cs.account_name.as_deref(), Some("devstoreaccount1"));
        assert_eq!(cs.account_key.as_ref().map(Secret::expose), Some(KEY));
        assert_eq!(cs.blob_endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        assert_eq!(cs.protocol.as_deref(), Some("http"));
        // Through the config: the account is the trimmed name, the endpoint the built one.
        let mut p = base();
        p.retain(|(k, _)| *k != "PLUGIN_ACCOUNT_NAME");
        let cs = format!("DefaultEndpointsProtocol=https; AccountName = myacct1 ; AccountKey={KEY}; EndpointSuffix = core.chinacloudapi.cn");
        p.push(("PLUGIN_CONNECTION_STRING", &cs));
        let c = Config::from_raw(&raw(&p)).unwrap();
        assert_eq!(c.account, "myacct1");
        assert_eq!(c.endpoint, "https://myacct1.blob.core.chinacloudapi.cn");
    }

    /// Every problem of a connection string, each named, none printing a secret.
    #[test]
    fn connection_string_problems_are_each_named_without_secrets() {
        let cases: &[(&str, &str)] = &[
            ("AccountName=Bad_Name!;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==", "`AccountName`: `Bad_Name!` is not a storage account name"),
            ("AccountName=acct1;BlobEndpoint=notaurl", "`BlobEndpoint`: `notaurl` is not a URL"),
            ("AccountName=acct1;FileEndpoint=ftp://x/y", "`FileEndpoint`: `ftp://x/y` has the scheme `ftp`"),
            ("AccountName=acct1;BlobEndpoint=https://h.net/?sv=1&sig=TOPSECRET", "`BlobEndpoint`: `https://h.net/?…` carries a query string"),
            ("AccountName=acct1;DefaultEndpointsProtocol=gopher", "`DefaultEndpointsProtocol`: `gopher` is not `https` or `http`"),
            ("AccountName=acct1;EndpointSuffix=core windows.net", "`EndpointSuffix`: `core windows.net` is not a DNS suffix"),
            ("AccountName=acct1;AccountKey=TOP SECRET!", "`AccountKey` is not base64"),
            ("AccountName=acct1;SharedAccessSignature=sv=1&TOPSECRET", "`SharedAccessSignature` is not a SAS"),
            ("AccountName=acct1;TOPSECRET", "segment 2 of 2 has no `=`"),
            ("AccountName=acct1;=TOPSECRET", "segment 2 of 2 has no key"),
            ("AccountName=acct1;AccountName=acct2", "`AccountName` is given more than once"),
            ("AccountName=", "`AccountName=` has no value"),
            ("UseDevelopmentStorage=maybe", "`UseDevelopmentStorage`: `maybe` is not `true` or `false`"),
            ("AcountName=acct1;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==", "names no account: it needs `AccountName=` or a `BlobEndpoint=`/`FileEndpoint=` (keys not understood: `AcountName`)"),
        ];
        for (text, want) in cases {
            let errs = ConnectionString::parse_all(text).unwrap_err();
            let all = errs.join("\n");
            assert!(all.contains(want), "{text}: {all}");
            assert!(!all.contains("TOPSECRET") && !all.contains("c2VjcmV0"), "{text} leaked: {all}");
        }
        // All at once, through the config, named with the variable that gave the value.
        let mut p = base();
        p.retain(|(k, _)| *k != "PLUGIN_ACCOUNT_NAME");
        p.push(("AZURE_STORAGE_CONNECTION_STRING", "AccountName=Bad_Name!;AccountKey=TOP SECRET;BlobEndpoint=notaurl"));
        let e = Config::from_raw(&raw(&p)).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.0.iter().filter(|i| i.setting == "connection_string").count(), 3, "{text}");
        assert!(text.contains("`connection_string` (PLUGIN_CONNECTION_STRING): `AccountName`: `Bad_Name!`"), "{text}");
        assert!(text.contains("(from AZURE_STORAGE_CONNECTION_STRING)"), "{text}");
        assert!(!text.contains("TOP SECRET"), "{text}");
        assert!(!e.0.iter().any(|i| i.setting == "account_name"), "no second error for the same cause: {text}");
    }

    #[test]
    fn development_storage_and_a_blob_endpoint_alone_name_the_account() {
        let cs = ConnectionString::parse_all("UseDevelopmentStorage=true").unwrap();
        assert_eq!(cs.account_name.as_deref(), Some("devstoreaccount1"));
        let mut p = base();
        p.retain(|(k, _)| *k != "PLUGIN_ACCOUNT_NAME");
        p.push((
            "PLUGIN_CONNECTION_STRING",
            "BlobEndpoint=https://acct9.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x",
        ));
        let c = Config::from_raw(&raw(&p)).unwrap();
        assert_eq!((c.endpoint.as_str(), c.account.as_str()), ("https://acct9.blob.core.windows.net", "acct9"));
    }

    #[test]
    fn platform_endpoints_are_checked_when_they_may_be_used() {
        let mut p = base();
        p.extend([
            ("IDENTITY_ENDPOINT", "not a url"),
            ("IDENTITY_HEADER", "h"),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9/x"),
        ]);
        let e = Config::from_raw(&raw(&p)).unwrap_err().to_string();
        assert!(e.contains("IDENTITY_ENDPOINT: `not a url` contains a space"), "{e}");
        assert!(e.contains("AZURE_POD_IDENTITY_AUTHORITY_HOST: `http://127.0.0.1:9/x` must be a bare host URL"), "{e}");
        // With an account key they are never used, so never refused.
        p.push(("PLUGIN_ACCOUNT_KEY", KEY));
        assert!(Config::from_raw(&raw(&p)).is_ok());
        // authority_host: a fallback variable is named; user info is never printed.
        let mut p = base();
        p.push(("AZURE_AUTHORITY_HOST", "https://user:pw@login.example"));
        let e = Config::from_raw(&raw(&p)).unwrap_err().to_string();
        assert!(
            e.contains(
                "`authority_host` (PLUGIN_AUTHORITY_HOST): `https://***@login.example` carries a user name or password"
            ),
            "{e}"
        );
        assert!(e.contains("(from AZURE_AUTHORITY_HOST)") && !e.contains("pw"), "{e}");
    }

    /// `auth: auto` takes the first credential present, in its documented order; an explicit
    /// mode takes the one it names whatever else is there.
    #[test]
    fn auto_takes_the_first_credential_present_in_its_order() {
        use CredentialSource as S;
        let mut a = Config::from_raw(&raw(&base())).unwrap().auth;
        a.access_token = Some(Secret::new("token"));
        a.federated_token = Some(Secret::new("ci-token"));
        a.tenant_id = Some("00000000-0000-0000-0000-000000000000".into());
        a.client_id = Some("11111111-1111-1111-1111-111111111111".into());
        a.sas_token = Some(Secret::new("sv=1&sig=x"));
        a.account_key = Some(Secret::new(KEY));
        a.connection_string = Some(Secret::new(format!("AccountName=mystorage;AccountKey={KEY}")));
        assert_eq!(credential_source(&a, false), S::AccessToken);
        a.access_token = None;
        assert_eq!(credential_source(&a, false), S::Federated);
        // A CI token without both tenant and client is not federation.
        a.client_id = None;
        assert_eq!(credential_source(&a, false), S::Sas);
        a.sas_token = None;
        assert_eq!(credential_source(&a, false), S::SharedKey);
        a.account_key = None;
        assert_eq!(credential_source(&a, false), S::ConnectionString);
        // A connection string that names the account but holds no key nor SAS is passed over.
        a.connection_string = Some(Secret::new("BlobEndpoint=https://mystorage.blob.core.windows.net"));
        assert_eq!(credential_source(&a, false), S::ManagedIdentity);
        assert_eq!(credential_source(&a, true), S::None, "a dry run with nothing configured needs no credential");
        // An explicit mode.
        a.access_token = Some(Secret::new("token"));
        a.mode = AuthMode::ManagedIdentity;
        assert_eq!(credential_source(&a, true), S::ManagedIdentity);
        a.mode = AuthMode::SharedKey;
        assert_eq!(credential_source(&a, false), S::SharedKey);
    }

    /// `IDENTITY_ENDPOINT` and `AZURE_POD_IDENTITY_AUTHORITY_HOST` are refused when the run
    /// would use the managed identity, and only then: never for a run that takes another
    /// credential (a runner's environment may carry them for pipelines that never use them).
    #[test]
    fn identity_endpoints_are_checked_exactly_when_auto_would_use_the_identity() {
        use serde_json::json;
        use CredentialSource as S;
        let far = 4_000_000_000u64;
        let ci_token = crate::jwt::fake_jwt(&json!({"iss": "https://ci", "sub": "s", "aud": "a", "exp": far}));
        let access_token = crate::jwt::fake_jwt(&json!({"aud": "https://storage.azure.com", "exp": far}));
        let cs_key = format!("AccountName=mystorage;AccountKey={KEY}");
        let tenant = ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000");
        let client = ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111");
        let cases: Vec<(Vec<(&str, &str)>, S)> = vec![
            (vec![], S::ManagedIdentity),
            (vec![("PLUGIN_DRY_RUN", "true")], S::None),
            (vec![("PLUGIN_ACCESS_TOKEN", &access_token)], S::AccessToken),
            (vec![tenant, client, ("PLUGIN_FEDERATED_TOKEN", &ci_token)], S::Federated),
            // A user-assigned identity names its client id: still the managed identity.
            (vec![tenant, client], S::ManagedIdentity),
            (vec![("PLUGIN_SAS_TOKEN", "sv=1&sig=x")], S::Sas),
            (vec![("PLUGIN_ACCOUNT_KEY", KEY)], S::SharedKey),
            (vec![("PLUGIN_CONNECTION_STRING", &cs_key)], S::ConnectionString),
            (
                vec![("PLUGIN_CONNECTION_STRING", "BlobEndpoint=https://mystorage.blob.core.windows.net")],
                S::ManagedIdentity,
            ),
            (vec![("PLUGIN_AUTH", "managed_identity"), ("PLUGIN_ACCOUNT_KEY", KEY)], S::ManagedIdentity),
            (vec![("PLUGIN_AUTH", "managed_identity"), ("PLUGIN_DRY_RUN", "true")], S::ManagedIdentity),
            (vec![("PLUGIN_AUTH", "shared_key")], S::SharedKey),
        ];
        for (extra, want) in cases {
            let p = [base(), extra.clone()].concat();
            let c = Config::from_raw(&raw(&p)).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert_eq!(credential_source(&c.auth, c.dry_run), want, "{extra:?}");
            let bad = [
                p,
                vec![
                    ("IDENTITY_ENDPOINT", "not a url"),
                    ("IDENTITY_HEADER", "h"),
                    ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9/x"),
                ],
            ]
            .concat();
            let refused: Vec<String> = match Config::from_raw(&raw(&bad)) {
                Ok(_) => vec![],
                Err(e) => e.0.into_iter().map(|i| i.setting).collect(),
            };
            let expected: Vec<String> = match want {
                S::ManagedIdentity => vec!["IDENTITY_ENDPOINT".into(), "AZURE_POD_IDENTITY_AUTHORITY_HOST".into()],
                _ => vec![],
            };
            assert_eq!(refused, expected, "{extra:?} takes {want:?}");
        }
    }

    /// A CI token file or the Actions endpoint is checked exactly when federation will use
    /// it: not when `auto` takes a pre-minted access token first.
    #[test]
    fn the_ci_token_source_is_checked_exactly_when_federation_would_use_it() {
        let access_token =
            crate::jwt::fake_jwt(&serde_json::json!({"aud": "https://storage.azure.com", "exp": 4_000_000_000u64}));
        for (source, setting) in [
            (("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/azure-identity-token"), "federated_token_file"),
            (("ACTIONS_ID_TOKEN_REQUEST_URL", "not a url"), "ACTIONS_ID_TOKEN_REQUEST_URL"),
        ] {
            let mut p = base();
            p.extend([
                ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000"),
                ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t"),
                source,
            ]);
            let e = Config::from_raw(&raw(&p)).unwrap_err();
            let refused: Vec<&str> = e.0.iter().map(|i| i.setting.as_str()).collect();
            assert_eq!(refused, [setting], "{e}");
            p.push(("AZURE_ACCESS_TOKEN", &access_token));
            let c = Config::from_raw(&raw(&p)).unwrap_or_else(|e| panic!("{source:?}: {e}"));
            assert_eq!(credential_source(&c.auth, false), CredentialSource::AccessToken);
        }
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
}
