//! Credential and identity settings: [`AuthSettings`] (account key, SAS, connection
//! string, and the keyless federated / managed-identity settings, checked without the
//! network), connection-string parsing, Azurite's development key, and the account name
//! a service URL implies.

use std::path::PathBuf;

use super::values::parse_bool;
use super::{AuthMode, RawSettings, Secret};
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
pub(super) fn parse_keyless(raw: &RawSettings, mode: AuthMode, bad: &mut dyn FnMut(&str, String)) -> AuthSettings {
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
    let access_token = parse_access_token(raw, mode, bad);
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
    }
}

/// `access_token`, checked (a JWT for storage, not expired) when it may be used.
fn parse_access_token(raw: &RawSettings, mode: AuthMode, bad: &mut dyn FnMut(&str, String)) -> Option<Secret> {
    let v = raw.get("access_token")?.trim().to_string();
    if matches!(mode, AuthMode::Auto | AuthMode::AccessToken) {
        // An account-scoped audience names the service URL.
        let endpoint = raw.get("endpoint").map(str::to_string).unwrap_or_else(|| {
            let service =
                if raw.get("service").is_some_and(|s| s.trim().eq_ignore_ascii_case("file")) { "file" } else { "blob" };
            let suffix = raw.get("endpoint_suffix").unwrap_or("core.windows.net");
            format!("https://{}.{service}.{suffix}", raw.get("account_name").unwrap_or("").trim())
        });
        if let Err(e) = crate::auth::access_token::check(&v, endpoint.trim()) {
            bad("access_token", e);
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
