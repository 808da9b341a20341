//! Managed identity: an access token from the machine the step runs on.
//!
//! Two endpoints, chosen as the Azure SDKs choose them:
//! - **App Service / Functions / Container Apps** when `IDENTITY_ENDPOINT` and
//!   `IDENTITY_HEADER` are set: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=…`
//!   with `X-IDENTITY-HEADER: $IDENTITY_HEADER`
//!   (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>).
//! - **IMDS** otherwise (VMs, VM scale sets, AKS nodes):
//!   `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true`
//!   (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#get-a-token-using-http>).
//!   The host can be overridden with `AZURE_POD_IDENTITY_AUTHORITY_HOST`, the variable the
//!   Python, .NET, Java and JavaScript Azure SDKs honour for the same purpose (AAD Pod
//!   Identity's NMI, and tests that stand a fake IMDS up on loopback). `IMDS_ENDPOINT` is
//!   deliberately not used: in the SDKs it signals Azure Arc, whose challenge protocol
//!   this plugin does not implement.
//!
//! `client_id` (or `AZURE_CLIENT_ID`) selects a user-assigned identity; without it the
//! system-assigned identity answers. Retried, as Microsoft advises for IMDS: 404 (identity
//! still being assigned), 410 (IMDS updating), 429, 5xx and transport failures.
//!
//! Under `auth: auto`, IMDS is only used after a short probe (see [`probe_imds`]) finds it,
//! so a runner that is not on Azure does not wait for a timeout at every run.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::Secret;
use crate::http::retry::{run, Answer, GaveUp, Loop};
use crate::http::{RetryPolicy, Verdict};

use super::federated::seconds;
use super::token::{AccessToken, TokenSource};
use super::AuthError;

pub const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";

/// Which managed-identity endpoint answers.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Imds { host: String },
    AppService { endpoint: String, header: Secret },
}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Endpoint::Imds { host } => format!("IMDS ({host})"),
            Endpoint::AppService { endpoint, .. } => {
                let e = url::Url::parse(endpoint).map(|u| format!("{}://{}{}", u.scheme(), u.authority(), u.path()));
                format!("IDENTITY_ENDPOINT ({})", e.unwrap_or_else(|_| "?".into()))
            }
        }
    }
}

pub struct ManagedIdentitySource {
    pub endpoint: Endpoint,
    pub client_id: Option<String>,
    client: reqwest::Client,
    retry: RetryPolicy,
    /// The client id the endpoint reported (system-assigned identities too).
    seen_client_id: Mutex<Option<String>>,
}

impl ManagedIdentitySource {
    pub fn new(endpoint: Endpoint, client_id: Option<String>, client: reqwest::Client, retry: RetryPolicy) -> Self {
        ManagedIdentitySource { endpoint, client_id, client, retry, seen_client_id: Mutex::new(None) }
    }

    fn request(&self) -> Result<reqwest::RequestBuilder, AuthError> {
        let (base, version) = match &self.endpoint {
            Endpoint::Imds { host } => (format!("{}{IMDS_PATH}", host.trim_end_matches('/')), "2018-02-01"),
            Endpoint::AppService { endpoint, .. } => (endpoint.clone(), "2019-08-01"),
        };
        let mut url = url::Url::parse(&base)
            .map_err(|_| AuthError::ManagedIdentity(format!("{} is not a URL", self.endpoint.describe())))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", version).append_pair("resource", STORAGE_RESOURCE);
            if let Some(id) = &self.client_id {
                q.append_pair("client_id", id);
            }
        }
        let rb = self.client.get(url);
        Ok(match &self.endpoint {
            Endpoint::Imds { .. } => rb.header("Metadata", "true"),
            Endpoint::AppService { header, .. } => {
                let mut v = reqwest::header::HeaderValue::from_str(header.expose())
                    .map_err(|_| AuthError::ManagedIdentity("IDENTITY_HEADER is not a valid header value".into()))?;
                v.set_sensitive(true);
                rb.header("X-IDENTITY-HEADER", v)
            }
        })
    }
}

impl ManagedIdentitySource {
    /// What one answer of the endpoint means. Retried, as Microsoft advises: 404 (identity
    /// still being assigned), 410 (IMDS updating), 429, 5xx and transport failures.
    fn verdict(
        &self,
        sent: Result<Answer, Option<reqwest::Error>>,
        what: &str,
    ) -> Verdict<AccessToken, AuthError, String> {
        let a = match sent {
            Ok(a) => a,
            Err(Some(e)) => {
                return super::transport_failure(&e, |d| AuthError::ManagedIdentity(format!("{what}: {d}")))
            }
            Err(None) => {
                return Verdict::Fail(AuthError::ManagedIdentity(format!("{what}: the request cannot be repeated")))
            }
        };
        if a.oversized {
            return Verdict::Fail(AuthError::ManagedIdentity(Answer::oversized_message(what)));
        }
        let status = a.status;
        if a.is_success() {
            return match self.token(&a.body, status, what) {
                Ok(t) => Verdict::Done(t),
                Err(e) => Verdict::Fail(e),
            };
        }
        let e: MiError = serde_json::from_slice(&a.body).unwrap_or_default();
        let detail = [e.error, e.error_description, e.message]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        if matches!(status, 404 | 410 | 429) || status >= 500 {
            return Verdict::Retry { error: format!("HTTP {status} {detail}").trim().to_string(), hint: a.hint };
        }
        let hint = if status == 400 && detail.to_ascii_lowercase().contains("identity not found") {
            match &self.client_id {
                Some(id) => format!("; no managed identity with client id {id} is assigned to this machine (`client_id` / AZURE_CLIENT_ID)"),
                None => "; this machine has no system-assigned managed identity: assign one, or set `client_id` to a user-assigned identity's client id".to_string(),
            }
        } else {
            String::new()
        };
        Verdict::Fail(AuthError::ManagedIdentity(format!(
            "{what} refused the token request: HTTP {status} {detail}{hint}"
        )))
    }

    /// The token of a successful answer.
    fn token(&self, body: &[u8], status: u16, what: &str) -> Result<AccessToken, AuthError> {
        let r: MiResponse = serde_json::from_slice(body)
            .map_err(|_| AuthError::ManagedIdentity(format!("{what} answered {status} without token JSON")))?;
        let token = r
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::ManagedIdentity(format!("{what} answered without an access_token")))?;
        let now = SystemTime::now();
        let expires_at = r
            .expires_on
            .as_ref()
            .and_then(seconds)
            .map(|on| super::token::expiry_at(now, on))
            .or_else(|| r.expires_in.as_ref().and_then(seconds).map(|s| super::token::expiry_in(now, s)))
            .unwrap_or(now + Duration::from_secs(600));
        if let Some(id) = r.client_id.or_else(|| self.client_id.clone()) {
            *self.seen_client_id.lock().expect("client id") = Some(id);
        }
        tracing::debug!("managed identity token from {what}");
        Ok(AccessToken::new(Secret::new(token), expires_at))
    }
}

#[derive(serde::Deserialize)]
struct MiResponse {
    access_token: Option<String>,
    expires_on: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    client_id: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct MiError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    message: String,
}

#[async_trait::async_trait]
impl TokenSource for ManagedIdentitySource {
    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        let what = self.endpoint.describe();
        let lp = Loop { policy: &self.retry, what: Some("managed identity"), retries: None };
        let request = self.request()?;
        let send = |_| async {
            match request.try_clone() {
                Some(rb) => Answer::fetch(rb).await.map_err(Some),
                None => Err(None),
            }
        };
        match run(&lp, |sent, _| self.verdict(sent, &what), send).await {
            Ok(token) => Ok(token),
            Err(GaveUp::Failed(e)) => Err(e),
            Err(GaveUp::Exhausted { last, attempts }) => {
                Err(AuthError::ManagedIdentity(format!("{what} gave no token after {attempts} attempts: {last}")))
            }
            Err(GaveUp::TimedOut { last, attempts, after }) => Err(AuthError::ManagedIdentity(format!(
                "{what} gave no token after {attempts} attempt(s){}; {}",
                last.map(|l| format!(" ({l})")).unwrap_or_default(),
                crate::http::retry::deadline_message(after)
            ))),
        }
    }

    fn identity(&self) -> String {
        let seen = self.seen_client_id.lock().expect("client id").clone();
        match seen.or_else(|| self.client_id.clone()) {
            Some(id) => format!("managed identity (client_id {id}, via {})", self.endpoint.describe()),
            None => format!("managed identity (system-assigned, via {})", self.endpoint.describe()),
        }
    }
}

/// Whether an IMDS answers at `host`: an answer within a short connect timeout that has
/// the IMDS shape.
///
/// The probe carries no `Metadata` header, so a real IMDS answers 400 with a JSON error
/// (`{"error":"invalid_request","error_description":"Required metadata header not
/// specified"}`) without issuing a token (the Azure SDKs probe the same way). Any other
/// answer (a captive portal's page, a proxy's error, an empty 404) is not an IMDS: taking
/// it for one would switch `auth: auto` to a credential that then fails. Off Azure,
/// 169.254.169.254 does not answer and the probe gives up after about a second.
pub async fn probe_imds(host: &str) -> bool {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    let url = format!("{}{IMDS_PATH}?api-version=2018-02-01", host.trim_end_matches('/'));
    let resp = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("no IMDS at {host}: {}", crate::http::describe_transport(&e));
            return false;
        }
    };
    let status = resp.status().as_u16();
    let body = match crate::http::retry::read_capped(resp, 64 << 10).await {
        Ok((body, false)) => body,
        _ => return false,
    };
    let shaped = imds_shaped(status, &body);
    if !shaped {
        tracing::debug!("the answer at {host} (HTTP {status}) is not an IMDS's: not using a managed identity");
    }
    shaped
}

/// An IMDS answer to a request without `Metadata: true`: a 400 whose body is a JSON
/// object with an `error` string.
fn imds_shaped(status: u16, body: &[u8]) -> bool {
    status == 400
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| v.get("error").is_some_and(|e| e.is_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;
    use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn imds_request_shape_and_expiry() {
        let server = MockServer::start().await;
        let on = jwt_now() + 3600;
        Mock::given(method("GET"))
            .and(path(IMDS_PATH))
            .and(query_param("api-version", "2018-02-01"))
            .and(query_param("resource", "https://storage.azure.com"))
            .and(query_param("client_id", "mi-client"))
            .and(header("metadata", "true"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "mi-token", "expires_on": on.to_string(), "expires_in": "3600",
                "resource": "https://storage.azure.com", "token_type": "Bearer", "client_id": "mi-client"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let s = ManagedIdentitySource::new(
            Endpoint::Imds { host: server.uri() },
            Some("mi-client".into()),
            reqwest::Client::new(),
            policy(),
        );
        let t = s.fetch().await.unwrap();
        assert_eq!(t.secret().expose(), "mi-token");
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(on as u64));
        assert!(s.identity().contains("client_id mi-client"), "{}", s.identity());
    }

    #[tokio::test]
    async fn app_service_request_shape() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/msi/token"))
            .and(query_param("api-version", "2019-08-01"))
            .and(query_param("resource", "https://storage.azure.com"))
            .and(query_param_is_missing("client_id"))
            .and(header("x-identity-header", "header-secret"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "as-token", "expires_on": jwt_now() + 600, "client_id": "sys-assigned"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let s = ManagedIdentitySource::new(
            Endpoint::AppService {
                endpoint: format!("{}/msi/token", server.uri()),
                header: Secret::new("header-secret"),
            },
            None,
            reqwest::Client::new(),
            policy(),
        );
        assert_eq!(s.fetch().await.unwrap().secret().expose(), "as-token");
        assert!(s.identity().contains("sys-assigned"));
    }

    #[tokio::test]
    async fn retries_while_the_identity_is_assigned_and_explains_a_missing_one() {
        let server = MockServer::start().await;
        Mock::given(method("GET")).respond_with(ResponseTemplate::new(404)).up_to_n_times(2).mount(&server).await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_json(json!({"error":"invalid_request","error_description":"Identity not found"})),
            )
            .mount(&server)
            .await;
        let s =
            ManagedIdentitySource::new(Endpoint::Imds { host: server.uri() }, None, reqwest::Client::new(), policy());
        let e = s.fetch().await.unwrap_err().to_string();
        assert!(e.contains("no system-assigned managed identity"), "{e}");
        assert_eq!(server.received_requests().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn probe_finds_an_imds_and_not_a_closed_port() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(IMDS_PATH))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_request", "error_description": "Required metadata header not specified"
            })))
            .mount(&server)
            .await;
        assert!(probe_imds(&server.uri()).await);
        // A port nothing listens on (bound then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(!probe_imds(&format!("http://127.0.0.1:{port}")).await);
    }

    /// Anything that answers is not an IMDS: a portal's 200 page, an empty 404, a JSON
    /// answer without `error`, a proxy's 400 page.
    #[tokio::test]
    async fn probe_requires_the_imds_shape() {
        for (status, body) in [
            (200, "<html>Welcome to the hotel wifi</html>"),
            (404, ""),
            (400, "<html>Bad Request</html>"),
            (400, r#"{"message":"no"}"#),
            (200, r#"{"error":"invalid_request"}"#),
        ] {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(status).set_body_string(body))
                .mount(&server)
                .await;
            assert!(!probe_imds(&server.uri()).await, "{status} {body}");
        }
        assert!(imds_shaped(
            400,
            br#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#
        ));
    }

    fn jwt_now() -> i64 {
        crate::jwt::now_secs()
    }
}
