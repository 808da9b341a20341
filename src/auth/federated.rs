//! Workload identity federation: a CI's OIDC token exchanged for an Entra ID access token.
//!
//! The CI token comes from the first source present (docs/auth.md):
//! 1. `federated_token` — the token itself, usually from a CI secret or variable;
//! 2. `federated_token_file` / `AZURE_FEDERATED_TOKEN_FILE` — a file that Kubernetes
//!    (Azure Workload Identity) rotates, so it is **re-read at every exchange**;
//! 3. `oidc_token_id` — `PLUGIN_OIDC_TOKEN_ID`, which Harness sets only for its own
//!    `plugins/azure-oidc` image (for this image, Harness users pass `access_token`);
//! 4. GitHub / Forgejo Actions — `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=<audience>`
//!    with `Authorization: Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, JSON field `value`;
//!    asked again at every exchange, since Actions tokens live minutes.
//!
//! Every token is checked before it is sent: it must decode as a JWT and must not be
//! expired, otherwise the error names the setting it came from (no network call).
//! The exchange is the OAuth client-credentials grant with a client assertion
//! (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential>):
//! `POST {authority_host}/{tenant_id}/oauth2/v2.0/token`. Transient failures (429, 5xx,
//! transport) are retried with the run's retry policy; a refusal is explained by
//! [`super::entra_errors`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::config::Secret;
use crate::http::retry::{run, Answer, GaveUp, Loop};
use crate::http::{RetryPolicy, Verdict};

use super::entra_errors::{self, EntraFailure};
use super::token::{AccessToken, TokenSource};
use super::AuthError;
use crate::jwt::{self, check_assertion, Claims};

/// Scope requested from Entra: Azure Storage (the same in every cloud).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Where the CI's OIDC token comes from.
#[derive(Debug, Clone)]
pub enum AssertionSource {
    /// A token given as a setting value (`federated_token`, `oidc_token_id`).
    Value { token: Secret, setting: &'static str },
    /// A token file, re-read at every exchange. `from` names the setting or variable.
    File { path: PathBuf, from: String },
    /// The Actions ID-token endpoint (GitHub, Forgejo).
    Actions { url: String, request_token: Secret },
}

impl AssertionSource {
    /// Names the source in messages (never its value).
    pub fn label(&self) -> String {
        match self {
            AssertionSource::Value { setting, .. } => {
                format!("`{setting}` ({})", crate::settings::env_name(setting))
            }
            AssertionSource::File { path, from } => format!("{from} ({})", path.display()),
            AssertionSource::Actions { .. } => {
                "the Actions ID-token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL)".to_string()
            }
        }
    }

    /// The CI token, read now (files and the Actions endpoint are asked every time).
    pub async fn read(
        &self,
        client: &reqwest::Client,
        audience: &str,
        retry: &RetryPolicy,
    ) -> Result<Secret, AuthError> {
        match self {
            AssertionSource::Value { token, .. } => Ok(token.clone()),
            AssertionSource::File { path, .. } => read_token_file(path, &self.label()),
            AssertionSource::Actions { url, request_token } => {
                actions_token(client, url, request_token, audience, retry).await
            }
        }
    }
}

/// Reads a token file (trimmed).
pub fn read_token_file(path: &std::path::Path, label: &str) -> Result<Secret, AuthError> {
    match crate::jwt::read_token_file(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
        Ok(_) => Err(AuthError::Assertion(format!("{label} is empty"))),
        Err(e) => Err(AuthError::Assertion(format!("cannot read {label}: {e}"))),
    }
}

/// `GET {url}&audience=…` on the Actions ID-token endpoint → JSON `value`.
async fn actions_token(
    client: &reqwest::Client,
    url: &str,
    request_token: &Secret,
    audience: &str,
    retry: &RetryPolicy,
) -> Result<Secret, AuthError> {
    let mut u =
        url::Url::parse(url).map_err(|_| AuthError::Assertion("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".into()))?;
    u.query_pairs_mut().append_pair("audience", audience);
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", request_token.expose()))
        .map_err(|_| AuthError::Assertion("ACTIONS_ID_TOKEN_REQUEST_TOKEN is not a valid header value".into()))?;
    auth.set_sensitive(true);
    let what = "the Actions ID-token endpoint";
    let lp = Loop { policy: retry, what: Some(what), retries: None };
    let send = |_| {
        Answer::fetch(
            client
                .get(u.clone())
                .header(reqwest::header::AUTHORIZATION, auth.clone())
                .header(reqwest::header::ACCEPT, "application/json; api-version=2.0"),
        )
    };
    match run(&lp, |sent, _| actions_verdict(sent), send).await {
        Ok(token) => Ok(token),
        Err(GaveUp::Failed(e)) => Err(e),
        Err(GaveUp::Exhausted { last, attempts }) => {
            Err(AuthError::Network(format!("{what} failed after {attempts} attempts: {last}")))
        }
        Err(GaveUp::TimedOut { last, attempts, after }) => Err(AuthError::Network(format!(
            "{what} failed after {attempts} attempt(s){}; {}",
            last.map(|l| format!(" ({l})")).unwrap_or_default(),
            crate::http::retry::deadline_message(after)
        ))),
    }
}

/// What one answer of the Actions ID-token endpoint means.
fn actions_verdict(sent: Result<Answer, reqwest::Error>) -> Verdict<Secret, AuthError, String> {
    let a = match sent {
        Ok(a) => a,
        Err(e) => {
            return super::transport_failure(&e, |d| AuthError::Network(format!("the Actions ID-token endpoint: {d}")))
        }
    };
    if a.oversized {
        return Verdict::Fail(AuthError::Network(Answer::oversized_message("the Actions ID-token endpoint")));
    }
    if a.is_success() {
        #[derive(serde::Deserialize)]
        struct Body {
            value: Option<String>,
        }
        return match serde_json::from_slice::<Body>(&a.body) {
            Ok(Body { value: Some(v) }) if !v.trim().is_empty() => Verdict::Done(Secret::new(v.trim())),
            Ok(_) => Verdict::Fail(AuthError::Assertion("the Actions ID-token endpoint returned no `value`".into())),
            Err(_) => Verdict::Fail(AuthError::Assertion(
                "the Actions ID-token endpoint answered something that is not JSON with a `value`".into(),
            )),
        };
    }
    let status = a.status;
    if !RetryPolicy::retryable_status(status) {
        return Verdict::Fail(AuthError::Assertion(format!(
            "the Actions ID-token endpoint answered HTTP {status}; the job needs `permissions: id-token: write` (GitHub) or `enable-openid-connect: true` (Forgejo), and the request token must be the current job's"
        )));
    }
    Verdict::Retry { error: format!("HTTP {status}"), hint: a.hint }
}

/// Exchanges CI tokens for storage access tokens.
pub struct FederatedSource {
    pub tenant_id: String,
    pub client_id: String,
    /// `https://login.microsoftonline.com` (no trailing `/`).
    pub authority: String,
    pub audience: String,
    pub source: AssertionSource,
    client: reqwest::Client,
    retry: RetryPolicy,
    /// Claims of the last token presented (for the start line).
    last: Mutex<Option<Claims>>,
}

impl FederatedSource {
    pub fn new(
        tenant_id: String,
        client_id: String,
        authority: String,
        audience: String,
        source: AssertionSource,
        client: reqwest::Client,
        retry: RetryPolicy,
    ) -> Self {
        // A value or file known now gives the identity before the first exchange.
        let known = match &source {
            AssertionSource::Value { token, .. } => jwt::decode(token.expose()).ok(),
            AssertionSource::File { path, .. } => {
                jwt::read_token_file(path).ok().and_then(|t| jwt::decode(t.trim()).ok())
            }
            AssertionSource::Actions { .. } => None,
        };
        FederatedSource {
            tenant_id,
            client_id,
            authority: authority.trim_end_matches('/').to_string(),
            audience,
            source,
            client,
            retry,
            last: Mutex::new(known),
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant_id)
    }
}

impl FederatedSource {
    /// What one answer of Entra ID's token endpoint means: a token, a refusal explained
    /// ([`entra_errors`]), or a transient failure to retry.
    fn exchange_verdict(
        &self,
        sent: Result<Answer, reqwest::Error>,
        url: &str,
        label: &str,
        claims: &Claims,
    ) -> Verdict<AccessToken, AuthError, String> {
        let a = match sent {
            Ok(a) => a,
            Err(e) => {
                return super::transport_failure(&e, |d| {
                    AuthError::Network(format!("the Entra ID token exchange ({url}): {d}"))
                })
            }
        };
        if a.oversized {
            return Verdict::Fail(AuthError::Network(Answer::oversized_message(&format!("Entra ID ({url})"))));
        }
        let status = a.status;
        if a.is_success() {
            let Ok(r) = serde_json::from_slice::<TokenResponse>(&a.body) else {
                return Verdict::Fail(AuthError::Network(format!(
                    "Entra ID ({url}) answered {status} with no token JSON"
                )));
            };
            let Some(token) = r.access_token.filter(|t| !t.is_empty()) else {
                return Verdict::Fail(AuthError::Network(format!("Entra ID ({url}) answered without an access_token")));
            };
            let expires_in = r.expires_in.as_ref().and_then(seconds).unwrap_or(600).max(1);
            tracing::debug!(
                client_id = %self.client_id, subject = claims.sub.as_deref().unwrap_or(""),
                expires_in, "Entra ID exchange succeeded"
            );
            let expires_at = super::token::expiry_in(SystemTime::now(), expires_in);
            return Verdict::Done(AccessToken::new(Secret::new(token), expires_at));
        }
        if RetryPolicy::retryable_status(status) {
            return Verdict::Retry { error: format!("HTTP {status}"), hint: a.hint };
        }
        let (error, codes, description, trace_id, correlation_id) = entra_errors::parse(status, &a.body);
        Verdict::Fail(AuthError::Entra(Box::new(EntraFailure {
            status,
            error,
            codes,
            description,
            trace_id,
            correlation_id,
            client_id: self.client_id.clone(),
            tenant_id: self.tenant_id.clone(),
            token_source: label.to_string(),
            presented: Some(claims.clone()),
        })))
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// `expires_in` / `expires_on` arrive as numbers or as strings of digits.
pub fn seconds(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

#[async_trait::async_trait]
impl TokenSource for FederatedSource {
    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        let label = self.source.label();
        let assertion = self.source.read(&self.client, &self.audience, &self.retry).await?;
        let claims = check_assertion(assertion.expose())
            .map_err(|e| AuthError::Assertion(format!("the CI token from {label} {e}")))?;
        *self.last.lock().expect("claims") = Some(claims.clone());
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", STORAGE_SCOPE)
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", assertion.expose())
            .finish();
        let body = Secret::new(body);
        let url = self.token_url();
        let lp = Loop { policy: &self.retry, what: Some("Entra ID token exchange"), retries: None };
        let send = |_| {
            Answer::fetch(
                self.client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(reqwest::header::ACCEPT, "application/json")
                    .body(body.expose().to_string()),
            )
        };
        match run(&lp, |sent, _| self.exchange_verdict(sent, &url, &label, &claims), send).await {
            Ok(token) => Ok(token),
            Err(GaveUp::Failed(e)) => Err(e),
            Err(GaveUp::Exhausted { last, attempts }) => Err(AuthError::Network(format!(
                "the Entra ID token exchange ({url}) failed after {attempts} attempts: {last}"
            ))),
            Err(GaveUp::TimedOut { last, attempts, after }) => Err(AuthError::Network(format!(
                "the Entra ID token exchange ({url}) failed after {attempts} attempt(s){}; {}",
                last.map(|l| format!(" ({l})")).unwrap_or_default(),
                crate::http::retry::deadline_message(after)
            ))),
        }
    }

    fn identity(&self) -> String {
        let last = self.last.lock().expect("claims");
        let mut s = format!("federated workload identity (client_id {}", self.client_id);
        if let Some(c) = last.as_ref() {
            if let Some(sub) = &c.sub {
                s.push_str(&format!(", subject `{sub}`"));
            }
            if let Some(iss) = &c.iss {
                s.push_str(&format!(", issuer {iss}"));
            }
        }
        s.push_str(&format!(", token from {})", self.source.label()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;
    use wiremock::matchers::{body_string, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn ci_token(sub: &str, exp_in: i64) -> String {
        jwt::fake_jwt(&json!({
            "iss": "https://token.actions.githubusercontent.com",
            "sub": sub,
            "aud": "api://AzureADTokenExchange",
            "iat": jwt::now_secs(),
            "exp": jwt::now_secs() + exp_in,
        }))
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
            ..RetryPolicy::default()
        }
    }

    fn source(server: &MockServer, src: AssertionSource) -> FederatedSource {
        FederatedSource::new(
            "tenant-1".into(),
            "client-1".into(),
            server.uri(),
            "api://AzureADTokenExchange".into(),
            src,
            reqwest::Client::new(),
            policy(),
        )
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }

    #[tokio::test]
    async fn exchange_sends_the_client_assertion_form() {
        let server = MockServer::start().await;
        let ci = ci_token("repo:o/r:ref:refs/heads/main", 300);
        Mock::given(method("POST"))
            .and(path("/tenant-1/oauth2/v2.0/token"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string(form(&[
                ("client_id", "client-1"),
                ("scope", "https://storage.azure.com/.default"),
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", &ci),
            ])))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"token_type":"Bearer","expires_in":3599,"access_token":"storage-token"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let s = source(&server, AssertionSource::Value { token: Secret::new(ci), setting: "federated_token" });
        let t = s.fetch().await.unwrap();
        assert_eq!(t.secret().expose(), "storage-token");
        let left = t.expires_at.duration_since(SystemTime::now()).unwrap().as_secs();
        assert!((3590..=3599).contains(&left), "{left}");
        assert!(s.identity().contains("subject `repo:o/r:ref:refs/heads/main`"), "{}", s.identity());
    }

    #[tokio::test]
    async fn token_file_is_reread_at_every_exchange() {
        let server = MockServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let first = ci_token("system:serviceaccount:ci:one", 300);
        let second = ci_token("system:serviceaccount:ci:two", 300);
        for (tok, access) in [(&first, "a1"), (&second, "a2")] {
            Mock::given(method("POST"))
                .and(wiremock::matchers::body_string_contains(format!("client_assertion={tok}")))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(json!({"expires_in":"3600","access_token":access})),
                )
                .expect(1)
                .mount(&server)
                .await;
        }
        std::fs::write(&file, format!("{first}\n")).unwrap();
        let s =
            source(&server, AssertionSource::File { path: file.clone(), from: "AZURE_FEDERATED_TOKEN_FILE".into() });
        assert_eq!(s.fetch().await.unwrap().secret().expose(), "a1");
        std::fs::write(&file, &second).unwrap();
        assert_eq!(s.fetch().await.unwrap().secret().expose(), "a2");
    }

    #[tokio::test]
    async fn actions_endpoint_gets_the_audience_and_the_bearer() {
        let server = MockServer::start().await;
        let ci = ci_token("repo:o/r:environment:prod", 300);
        Mock::given(method("GET"))
            .and(path("/idtoken"))
            .and(query_param("api-version", "2.0"))
            .and(query_param("audience", "api://AzureADTokenExchange"))
            .and(header("authorization", "Bearer request-token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 1, "value": ci})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(wiremock::matchers::body_string_contains(format!("client_assertion={ci}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"expires_in":3600,"access_token":"t"})))
            .expect(1)
            .mount(&server)
            .await;
        let s = source(
            &server,
            AssertionSource::Actions {
                url: format!("{}/idtoken?api-version=2.0", server.uri()),
                request_token: Secret::new("request-token"),
            },
        );
        assert_eq!(s.fetch().await.unwrap().secret().expose(), "t");
    }

    #[tokio::test]
    async fn actions_endpoint_refusal_names_the_permission() {
        let server = MockServer::start().await;
        Mock::given(method("GET")).respond_with(ResponseTemplate::new(403)).mount(&server).await;
        let s = source(
            &server,
            AssertionSource::Actions { url: format!("{}/idtoken", server.uri()), request_token: Secret::new("r") },
        );
        let e = s.fetch().await.unwrap_err().to_string();
        assert!(e.contains("id-token: write"), "{e}");
    }

    #[tokio::test]
    async fn expired_or_malformed_tokens_never_reach_entra() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
        let s = source(
            &server,
            AssertionSource::Value { token: Secret::new(ci_token("x", -60)), setting: "federated_token" },
        );
        let e = s.fetch().await.unwrap_err().to_string();
        assert!(e.contains("the CI token from `federated_token` (PLUGIN_FEDERATED_TOKEN) has expired"), "{e}");
        let s = source(&server, AssertionSource::Value { token: Secret::new("not-a-jwt"), setting: "oidc_token_id" });
        let e = s.fetch().await.unwrap_err().to_string();
        assert!(e.contains("the CI token from `oidc_token_id` (PLUGIN_OIDC_TOKEN_ID) is not a JWT"), "{e}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_refusals_explained() {
        let server = MockServer::start().await;
        let ci = ci_token("repo:o/r:ref:refs/heads/dev", 300);
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_client",
                "error_description": "AADSTS700213: No matching federated identity record found for presented assertion subject 'repo:o/r:ref:refs/heads/dev'.\r\nTrace ID: abc",
                "error_codes": [700213],
                "trace_id": "abc",
                "correlation_id": "def"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let s = source(&server, AssertionSource::Value { token: Secret::new(ci.clone()), setting: "federated_token" });
        let e = s.fetch().await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("AADSTS700213"), "{text}");
        assert!(text.contains("sub: repo:o/r:ref:refs/heads/dev"), "{text}");
        assert!(text.contains("--id 'client-1'"), "{text}");
        assert!(!text.contains(&ci), "the CI token leaked into the error: {text}");
        assert!(!text.contains(ci.rsplit('.').next().unwrap()), "the signature leaked: {text}");
    }
    /// A token answer cut mid-body is a transport failure, retried: not read as an empty
    /// body ("no token JSON") that fails the run at once.
    #[tokio::test]
    async fn a_token_answer_cut_mid_body_is_retried_not_taken_for_no_json() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 16 << 10];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"access_token":"good-token","expires_in":3600,"token_type":"Bearer"}"#;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let cut = if n == 0 { 12 } else { body.len() };
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body.as_bytes()[..cut]).await;
                let _ = conn.shutdown().await;
            }
        });
        let src = FederatedSource::new(
            "tenant-1".into(),
            "client-1".into(),
            format!("http://127.0.0.1:{port}"),
            "api://AzureADTokenExchange".into(),
            AssertionSource::Value { token: Secret::new(ci_token("repo:o/r", 300)), setting: "federated_token" },
            reqwest::Client::new(),
            policy(),
        );
        let t = src.fetch().await.unwrap();
        assert_eq!(t.secret().expose(), "good-token");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2, "the cut answer was retried once");
    }
}
