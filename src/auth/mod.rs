//! Credentials: which one is used, and how a request is authorized with it.
//!
//! `resolve` builds the credential [`config::credential_source`](crate::config::credential_source)
//! picks from the settings; `Credential::authorize` is applied by the HTTP layer to every
//! attempt of every request, so a retried request is re-signed with a fresh date (Shared
//! Key) or carries the cache's current token (bearer).
//!
//! ## `auth: auto` order, and why managed identity comes last
//!
//! 0. **A pre-minted access token** (`access_token`): the pipeline handed over the bearer itself.
//! 1. **Federated** when a CI token source is present *and* `tenant_id` and `client_id`
//!    are set (see [`federated`] for the sources). Its inputs are explicit, so it wins.
//! 2. **SAS**, 3. **account key**, 4. **connection string** — explicit static secrets.
//! 5. **Managed identity**: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service and
//!    friends), else IMDS if a one-second probe finds it (at `AZURE_POD_IDENTITY_AUTHORITY_HOST`
//!    when set, which is how the tests point it at a loopback fake).
//!
//! Managed identity comes after the static secrets:
//! managed identity is *discovered* from the machine, not configured by the pipeline, so
//! a runner that happens to live on an Azure VM must not silently switch a pipeline that
//! configured `account_key` to the VM's identity (with different permissions, and a
//! one-second probe at every run). `auth: managed_identity` forces it.
//! An `auto` that finds nothing lists every source it looked for, and why each failed.
//!
//! Bearer tokens only travel over HTTPS: a bearer credential with an `http://` endpoint is
//! refused before any request (Azure and Azurite both refuse it anyway).

pub mod access_token;
pub mod entra_errors;
pub mod federated;
pub mod managed_identity;
pub mod shared_key;
pub mod token;

use std::sync::Arc;

use crate::config::{
    credential_source, AuthMode, AuthSettings, CiTokenSource, Config, ConnectionString, CredentialSource as Source,
    Secret,
};
use crate::http::authorize::{Authorize, AuthorizeError, TokenUsed};
use crate::http::{RetryPolicy, Verdict};
pub use entra_errors::EntraFailure;
use federated::{AssertionSource, FederatedSource};
use managed_identity::{Endpoint, ManagedIdentitySource};
pub use shared_key::SharedKey;
pub use token::{AccessToken, TokenCache};

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: {0}")]
    Missing(String),
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The CI token is unusable (unreadable, not a JWT, expired) — caught before sending it.
    #[error("{0}")]
    Assertion(String),
    /// Entra refused the exchange; the display explains the code.
    #[error("{0}")]
    Entra(Box<EntraFailure>),
    #[error("managed identity: {0}")]
    ManagedIdentity(String),
    #[error("{0}")]
    Network(String),
}

/// Which keyless mode a bearer credential uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerKind {
    /// A pre-minted token (`access_token`), used as it is.
    AccessToken,
    Federated,
    ManagedIdentity,
}

/// A bearer-token credential: a kind and the cache that keeps its token fresh.
pub struct Bearer {
    pub kind: BearerKind,
    pub cache: Arc<TokenCache>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer").field("kind", &self.kind).field("identity", &self.cache.identity()).finish()
    }
}

/// How requests are authorized.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Shared Key signing with the account key.
    SharedKey(SharedKey),
    /// A SAS query string appended to every request URL.
    Sas(Secret),
    /// An OAuth bearer token from Entra ID (federated) or a managed identity.
    Bearer(Arc<Bearer>),
    /// No credential: only for dry runs.
    None,
}

impl Credential {
    /// The mode and identity as printed on the start line (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Credential::SharedKey(_) => "shared key".into(),
            Credential::Sas(_) => "SAS token".into(),
            Credential::Bearer(b) => b.cache.identity(),
            Credential::None => "none (dry run)".into(),
        }
    }

    /// Whether requests carry an OAuth bearer token (Azure Files then needs
    /// `x-ms-file-request-intent: backup`).
    pub fn is_bearer(&self) -> bool {
        matches!(self, Credential::Bearer(_))
    }

    /// Fetches the first token now, so that an Entra or IMDS refusal is reported once,
    /// before any transfer, with its full explanation. No-op for other credentials.
    pub async fn prefetch(&self) -> Result<(), AuthError> {
        if let Credential::Bearer(b) = self {
            b.cache.get().await?;
        }
        Ok(())
    }

    /// Adds authorization to a request that is otherwise complete (`x-ms-date` set).
    /// Returns the bearer token used, so that a refusal can invalidate exactly it.
    pub async fn authorize(&self, req: &mut reqwest::Request) -> Result<Option<AccessToken>, AuthError> {
        match self {
            Credential::SharedKey(k) => k.sign(req),
            Credential::Sas(sas) => {
                let url = req.url_mut();
                let q = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{}", sas.expose()),
                    _ => sas.expose().to_string(),
                };
                url.set_query(Some(&q));
            }
            Credential::Bearer(b) => {
                let token = b.cache.get().await?;
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.secret().expose()))
                    .map_err(|_| AuthError::Invalid("the access token is not a valid header value".into()))?;
                v.set_sensitive(true);
                req.headers_mut().insert(reqwest::header::AUTHORIZATION, v);
                return Ok(Some(token));
            }
            Credential::None => {}
        }
        Ok(None)
    }
}

/// How the HTTP layer uses a credential (it knows no credential type).
#[async_trait::async_trait]
impl Authorize for Credential {
    async fn authorize(&self, req: &mut reqwest::Request) -> Result<Option<TokenUsed>, AuthorizeError> {
        let used = Credential::authorize(self, req).await?;
        Ok(used.map(|t| TokenUsed(t.serial())))
    }

    fn refused(&self, used: TokenUsed) {
        if let Credential::Bearer(b) = self {
            b.cache.invalidate_serial(used.0);
        }
    }

    fn is_bearer(&self) -> bool {
        Credential::is_bearer(self)
    }

    /// A bearer identity refused for lack of a data role: which roles to grant.
    fn refusal_hint(&self, code: &str) -> Option<String> {
        (self.is_bearer() && code == "AuthorizationPermissionMismatch").then(|| format!(
            " — the identity ({}) has no data role here: grant it `Storage Blob Data Contributor` (Files: `Storage File Data Privileged Contributor`) on the storage account or container",
            Credential::describe(self)
        ))
    }

    fn source_query(&self) -> Option<&str> {
        match self {
            Credential::Sas(sas) => Some(sas.expose()),
            _ => None,
        }
    }
}

/// A token request's transport failure: retried, unless it would recur on every attempt
/// (an unbuildable request, a TLS refusal); `fail` words that error.
pub(crate) fn transport_failure<T>(
    e: &reqwest::Error,
    fail: impl FnOnce(String) -> AuthError,
) -> Verdict<T, AuthError, String> {
    let d = crate::http::describe_transport(e);
    match crate::http::retry::transport_retryable(e) {
        true => Verdict::Retry { error: d, hint: None },
        false => Verdict::Fail(fail(format!("{d} (not retried)"))),
    }
}

/// The CI token source federation uses ([`AuthSettings::ci_token_source`]), with its value.
pub fn assertion_source(a: &AuthSettings) -> Option<AssertionSource> {
    Some(match a.ci_token_source()? {
        CiTokenSource::FederatedToken => {
            AssertionSource::Value { token: a.federated_token.clone()?, setting: "federated_token" }
        }
        CiTokenSource::TokenFile => {
            let (path, from) = a.federated_token_file.clone()?;
            AssertionSource::File { path, from }
        }
        CiTokenSource::OidcTokenId => {
            AssertionSource::Value { token: a.oidc_token_id.clone()?, setting: "oidc_token_id" }
        }
        CiTokenSource::Actions => {
            let (url, request_token) = a.actions.clone()?;
            AssertionSource::Actions { url, request_token }
        }
    })
}

const FEDERATED_SOURCES: &str = "`federated_token` (PLUGIN_FEDERATED_TOKEN), `federated_token_file` (PLUGIN_FEDERATED_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE), `oidc_token_id` (PLUGIN_OIDC_TOKEN_ID, set by Harness), ACTIONS_ID_TOKEN_REQUEST_URL + ACTIONS_ID_TOKEN_REQUEST_TOKEN (GitHub/Forgejo Actions with `id-token: write`)";

/// The client for Entra, IMDS and the Actions endpoint (not the storage client).
fn token_client(cfg: &Config) -> Result<reqwest::Client, AuthError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(crate::http::CONNECT_TIMEOUT.min(cfg.timeout))
        .timeout(cfg.timeout)
        .user_agent(concat!("plugin-azure-storage/", env!("CARGO_PKG_VERSION")))
        // Entra ID, IMDS and the Actions endpoint answer directly: a redirect is refused.
        .redirect(reqwest::redirect::Policy::none());
    crate::http::tls::configure(builder)
        .map_err(AuthError::Network)?
        .build()
        .map_err(|e| AuthError::Network(format!("cannot build the HTTP client: {}", e.without_url())))
}

/// Token requests are retried at most this often, whatever `retries` says: a step should
/// learn soon that Entra or IMDS is refusing, and each answer is already explained.
const MAX_TOKEN_RETRIES: u32 = 5;

fn token_retry(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        max_retries: cfg.retries.min(MAX_TOKEN_RETRIES),
        deadline: cfg.retry_timeout,
        ..RetryPolicy::default()
    }
}

fn require_https(cfg: &Config, what: &str) -> Result<(), AuthError> {
    if cfg.endpoint.starts_with("http://") {
        return Err(AuthError::Invalid(format!(
            "{what} gives a bearer token, which Azure Storage accepts only over HTTPS, but `endpoint` is {}",
            cfg.endpoint
        )));
    }
    Ok(())
}

fn federated(cfg: &Config, src: AssertionSource) -> Result<Credential, AuthError> {
    let a = &cfg.auth;
    let mut missing = vec![];
    if a.tenant_id.is_none() {
        missing.push("`tenant_id` (PLUGIN_TENANT_ID or AZURE_TENANT_ID)");
    }
    if a.client_id.is_none() {
        missing.push("`client_id` (PLUGIN_CLIENT_ID or AZURE_CLIENT_ID)");
    }
    if !missing.is_empty() {
        return Err(AuthError::Missing(format!(
            "federated auth (CI token from {}) also needs {}",
            src.label(),
            missing.join(" and ")
        )));
    }
    require_https(cfg, "federated auth")?;
    let source = FederatedSource::new(
        a.tenant_id.clone().unwrap_or_default(),
        a.client_id.clone().unwrap_or_default(),
        a.authority_host.clone(),
        a.audience.clone(),
        src,
        token_client(cfg)?,
        token_retry(cfg),
    );
    Ok(Credential::Bearer(Arc::new(Bearer { kind: BearerKind::Federated, cache: TokenCache::new(Box::new(source)) })))
}

fn pre_minted(cfg: &Config, token: &Secret) -> Result<Credential, AuthError> {
    require_https(cfg, "`access_token`")?;
    let claims = access_token::check(token.expose(), &cfg.endpoint)
        .map_err(|e| AuthError::Invalid(format!("`access_token` (PLUGIN_ACCESS_TOKEN, AZURE_ACCESS_TOKEN) {e}")))?;
    let source = access_token::StaticToken::new(token.clone(), claims);
    Ok(Credential::Bearer(Arc::new(Bearer { kind: BearerKind::AccessToken, cache: TokenCache::new(Box::new(source)) })))
}

fn managed_identity(cfg: &Config, endpoint: Endpoint) -> Result<Credential, AuthError> {
    require_https(cfg, "managed identity")?;
    let source = ManagedIdentitySource::new(endpoint, cfg.auth.client_id.clone(), token_client(cfg)?, token_retry(cfg));
    Ok(Credential::Bearer(Arc::new(Bearer {
        kind: BearerKind::ManagedIdentity,
        cache: TokenCache::new(Box::new(source)),
    })))
}

fn mi_endpoint(a: &AuthSettings) -> Endpoint {
    match &a.identity_endpoint {
        Some((endpoint, header)) => Endpoint::AppService { endpoint: endpoint.clone(), header: header.clone() },
        None => Endpoint::Imds { host: a.imds_host.clone() },
    }
}

/// Chooses the credential (see the module docs for the `auto` order). The only network
/// call is the IMDS probe under `auto` when nothing else is configured.
pub async fn resolve(cfg: &Config) -> Result<Credential, AuthError> {
    let a = &cfg.auth;
    let cs = match &a.connection_string {
        Some(c) => Some(
            ConnectionString::parse(c.expose()).map_err(|e| AuthError::Invalid(format!("connection_string {e}")))?,
        ),
        None => None,
    };
    let shared_key =
        |key: &Secret| SharedKey::new(&cfg.account, key).map_err(|e| AuthError::Invalid(format!("account_key: {e}")));
    let from_cs = |cs: &ConnectionString| -> Result<Option<Credential>, AuthError> {
        if let Some(sas) = &cs.sas {
            return Ok(Some(Credential::Sas(Secret::new(sas.expose().trim_start_matches('?')))));
        }
        if let Some(key) = &cs.account_key {
            return Ok(Some(Credential::SharedKey(shared_key(key)?)));
        }
        Ok(None)
    };
    match credential_source(a, cfg.dry_run) {
        Source::AccessToken => match &a.access_token {
            Some(t) => pre_minted(cfg, t),
            None => Err(AuthError::Missing(
                "`auth: access_token` needs `access_token` (PLUGIN_ACCESS_TOKEN or AZURE_ACCESS_TOKEN)".into(),
            )),
        },
        Source::Federated => match assertion_source(a) {
            Some(src) => federated(cfg, src),
            None => Err(AuthError::Missing(format!("`auth: federated` needs a CI OIDC token from one of: {FEDERATED_SOURCES}"))),
        },
        Source::Sas => a
            .sas_token
            .clone()
            .map(Credential::Sas)
            .ok_or_else(|| AuthError::Missing("`auth: sas` needs `sas_token` (PLUGIN_SAS_TOKEN)".into())),
        Source::SharedKey => match &a.account_key {
            Some(k) => Ok(Credential::SharedKey(shared_key(k)?)),
            None => Err(AuthError::Missing("`auth: shared_key` needs `account_key` (PLUGIN_ACCOUNT_KEY)".into())),
        },
        Source::ConnectionString => match &cs {
            Some(cs) => from_cs(cs)?.ok_or_else(|| {
                AuthError::Missing("the connection string has neither `AccountKey=` nor `SharedAccessSignature=`".into())
            }),
            None => Err(AuthError::Missing(
                "`auth: connection_string` needs `connection_string` (PLUGIN_CONNECTION_STRING or AZURE_STORAGE_CONNECTION_STRING)".into(),
            )),
        },
        Source::None => Ok(Credential::None),
        Source::ManagedIdentity if a.mode == AuthMode::ManagedIdentity || a.identity_endpoint.is_some() => {
            managed_identity(cfg, mi_endpoint(a))
        }
        Source::ManagedIdentity if managed_identity::probe_imds(&a.imds_host).await => {
            managed_identity(cfg, mi_endpoint(a))
        }
        Source::ManagedIdentity => Err(AuthError::Missing(format!(
            "`auth: auto` looked for these, in order, and found none:\n  - {}",
            auto_not_found(a, cs.is_some()).join("\n  - ")
        ))),
    }
}

/// Why `auth: auto` found no credential: each source it looked for, in its order
/// ([`credential_source`]), and why it was not taken.
fn auto_not_found(a: &AuthSettings, connection_string: bool) -> Vec<String> {
    let mut notes: Vec<String> = vec!["`access_token` (PLUGIN_ACCESS_TOKEN, AZURE_ACCESS_TOKEN): not set".into()];
    match assertion_source(a) {
        Some(src) => notes.push(format!(
            "federated: found a CI token in {}, but {} is not set",
            src.label(),
            match (&a.tenant_id, &a.client_id) {
                (None, None) => "`tenant_id` (AZURE_TENANT_ID) nor `client_id` (AZURE_CLIENT_ID)",
                (None, _) => "`tenant_id` (AZURE_TENANT_ID)",
                _ => "`client_id` (AZURE_CLIENT_ID)",
            }
        )),
        None => notes.push(format!("federated: no CI OIDC token in {FEDERATED_SOURCES}")),
    }
    notes.push("`sas_token` (PLUGIN_SAS_TOKEN, AZURE_STORAGE_SAS_TOKEN): not set".into());
    notes.push("`account_key` (PLUGIN_ACCOUNT_KEY, AZURE_STORAGE_KEY): not set".into());
    notes.push(match connection_string {
        true => "`connection_string`: has neither `AccountKey=` nor `SharedAccessSignature=`".into(),
        false => "`connection_string` (PLUGIN_CONNECTION_STRING, AZURE_STORAGE_CONNECTION_STRING): not set".into(),
    });
    notes.push(format!(
        "managed identity: IDENTITY_ENDPOINT + IDENTITY_HEADER not set, and no IMDS answered at {}",
        a.imds_host
    ));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    struct Minting(Arc<AtomicU64>);

    #[async_trait::async_trait]
    impl token::TokenSource for Minting {
        async fn fetch(&self) -> Result<AccessToken, AuthError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            let token = Secret::new(format!("token-{n}"));
            Ok(AccessToken::new(token, std::time::SystemTime::now() + Duration::from_secs(3600)))
        }
        fn identity(&self) -> String {
            "test identity".into()
        }
    }

    #[tokio::test]
    async fn a_refused_token_is_refreshed_once_before_the_run_stops() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(
                wiremock::ResponseTemplate::new(401).insert_header("x-ms-error-code", "InvalidAuthenticationInfo"),
            )
            .mount(&server)
            .await;
        let minted = Arc::new(AtomicU64::new(0));
        let cache = TokenCache::new(Box::new(Minting(minted.clone())));
        let bearer = Bearer { kind: BearerKind::Federated, cache };
        let retry = RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            ..RetryPolicy::default()
        };
        let http = crate::http::Http::new(Credential::Bearer(Arc::new(bearer)), retry, Duration::from_secs(5), None, 4)
            .unwrap();
        http.stop.arm();
        let url: url::Url = format!("{}/acct/c/a", server.uri()).parse().unwrap();
        let e = http.send(crate::http::Request::new(reqwest::Method::GET, url)).await.unwrap_err();
        assert!(e.is_status(401), "{e}");
        let seen = server.received_requests().await.unwrap();
        assert_eq!(seen.len(), 2, "the refused token, then a fresh one");
        assert_eq!(seen[1].headers.get("authorization").unwrap(), "Bearer token-2");
        assert_eq!(minted.load(Ordering::SeqCst), 2);
        assert_eq!(http.stop.reason().map(|r| r.status), Some(401), "a fresh token refused too: the run stops");
    }
}
