//! The HTTP layer: one pooled client, authorization per attempt, retries, traceability.
//!
//! Every request carries `x-ms-version`, a fresh `x-ms-date`, a unique
//! `x-ms-client-request-id` (logged at debug, printed beside Azure's `x-ms-request-id`
//! on failure) and a `User-Agent` naming the plugin and the CI run. Bodies are
//! `Bytes`, so a retry re-sends the same buffer without copying. Responses are read
//! whole inside the attempt, so a connection dropped mid-body is retried like any
//! other transport failure, and bounded: an error body to [`MAX_ERROR_BODY`], a collected
//! answer to [`MAX_BODY`]. One request's attempts and waits together end at `retry_timeout`
//! (`RetryPolicy::deadline`). A header that cannot be encoded fails the request, naming
//! it. A bearer token that cannot be had mid-run stops the run (`stop::TOKEN_REFRESH_FAILED`).
//! Nothing here prints a URL's query string.
//!
//! Redirects are never followed (Azure Storage never redirects; a 3xx means a proxy or a
//! captive portal answered): a 3xx is a failure naming its `Location` without the query.
//! A refusal that will recur for every request trips the run-wide [`Stop`] (`stop.rs`).

pub mod authorize;
pub mod error;
pub mod retry;
pub mod stop;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;

pub use authorize::{Authorize, AuthorizeError, TokenUsed};
pub use error::HttpError;
pub use retry::{RetryPolicy, Verdict};
pub use stop::{Stop, StopReason};

/// The REST API version sent on every request (Azurite 3.37 accepts up to 2026-06-06).
pub const API_VERSION: &str = "2025-11-05";

/// How long a TCP (and TLS) connection may take to open, at most (the storage client and
/// the token client alike; a shorter `timeout` wins).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept per host, at least: enough for the default concurrency's bursts.
const MIN_IDLE_CONNECTIONS: usize = 8;

/// The most of an error body (4xx/5xx, 3xx, or a 2xx that Azure did not send) that is
/// read: Azure's `<Error>` is well under 1 KiB; the code and message sit at its start.
/// The rest is never read (the connection is dropped), so a proxy's page costs nothing.
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// The most of a successful collected body (listings, properties) that is read. A list
/// page holds at most 5,000 entries (`maxresults`), each with a name of at most 1,024
/// characters (up to 6 bytes each once XML-escaped), metadata of at most 8 KiB and about
/// 1.5 KiB of properties: under 80 MiB at the very worst, a few MiB in practice. Past
/// this the answer is refused, not retried (it would come back the same).
pub const MAX_BODY: usize = 128 << 20;

/// The header Azure Storage puts on every response it sends (the service's request id).
const AZURE_REQUEST_ID: &str = "x-ms-request-id";

/// A request, kept whole so that every attempt can rebuild it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: url::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Bytes expected back (ranged GET), to scale the timeout.
    pub expect_bytes: u64,
    /// The first header whose name or value could not be encoded (see [`Request::header`]):
    /// the request is then refused before it is sent, naming it.
    pub unencodable: Option<String>,
}

impl Request {
    pub fn new(method: Method, url: url::Url) -> Self {
        Request { method, url, headers: HeaderMap::new(), body: Bytes::new(), expect_bytes: 0, unencodable: None }
    }

    /// Adds a header. A value that is not header text (a control character, non-ASCII: an
    /// ETag from a hostile listing, say) is never dropped silently, which would lose an
    /// `If-Match` version pin without a word: the request is refused when sent, naming the
    /// header ([`Http::send`]).
    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => {
                self.headers.insert(HeaderName::from_static(name), v);
            }
            Err(_) => self.unencodable_header(name),
        }
        self
    }

    fn unencodable_header(&mut self, name: &str) {
        if self.unencodable.is_none() {
            self.unencodable = Some(name.to_string());
        }
    }

    pub fn header_opt(self, name: &'static str, value: Option<impl AsRef<str>>) -> Self {
        match value {
            Some(v) => self.header(name, v),
            None => self,
        }
    }

    /// Adds a header whose name is built at run time (metadata).
    pub fn dyn_header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.insert(n, v);
            }
            _ => self.unencodable_header(name),
        }
        self
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }
}

/// A response read whole (or, for [`Http::send_streamed`], with its body handed to a sink).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Bytes handed to the sink of a streamed request (0 otherwise).
    pub streamed: u64,
}

/// Where the body of a successful streamed response goes: `write(pos, bytes)` with `pos`
/// counted from the start of the body. Every attempt starts again at 0, so a sink that
/// writes at `base + pos` (a file range) is simply overwritten by a retry.
pub type BodySink<'a> = &'a (dyn Fn(u64, &[u8]) -> std::io::Result<()> + Send + Sync);

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Counters for the summary.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

pub struct Http {
    client: reqwest::Client,
    credential: Arc<dyn Authorize>,
    retry: RetryPolicy,
    timeout: Duration,
    user_agent: String,
    pub stats: Arc<Stats>,
    /// Tripped by the first refusal that will recur for every request (see `stop.rs`).
    pub stop: Arc<Stop>,
}

impl Http {
    pub fn new(
        credential: impl Authorize + 'static,
        retry: RetryPolicy,
        timeout: Duration,
        ci_label: Option<&str>,
        pool: usize,
    ) -> Result<Self, String> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .pool_max_idle_per_host(pool.max(MIN_IDLE_CONNECTIONS))
            .tcp_nodelay(true)
            // Azure Storage never redirects: a 3xx is reported, never followed.
            .redirect(reqwest::redirect::Policy::none());
        let client = tls::configure(builder)?
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        let mut user_agent = concat!("plugin-azure-storage/", env!("CARGO_PKG_VERSION")).to_string();
        if let Some(l) = ci_label {
            user_agent.push_str(&format!(" ({l})"));
        }
        Ok(Http {
            client,
            credential: Arc::new(credential),
            retry,
            timeout,
            user_agent,
            stats: Arc::default(),
            stop: Arc::default(),
        })
    }

    pub fn credential(&self) -> &dyn Authorize {
        &*self.credential
    }

    /// Sends a request, retrying retryable failures. Returns the response for a 2xx
    /// status and an [`HttpError`] (with status, Azure code and both request ids) otherwise;
    /// a 3xx is an error naming its `Location` (query removed), never retried or followed.
    /// Once the run is stopped ([`Stop`]), nothing more is sent.
    ///
    /// With a bearer credential, a request refused as unauthenticated (401, or 403 with
    /// `InvalidAuthenticationInfo` / `AuthenticationFailed`, which is how Azurite refuses
    /// an expired token) drops the token it used and is sent once more with a fresh one;
    /// that extra attempt does not count against the retry budget.
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        self.send_inner(req, None).await
    }

    /// Like [`send`](Self::send), but a successful (2xx) body is handed to `sink` frame by
    /// frame as it arrives instead of being collected: a ranged download then never holds
    /// its range in memory. A connection dropped mid-body is retried from the body's start;
    /// a sink that fails (disk full) ends the request at once, without retry.
    pub async fn send_streamed(&self, req: Request, sink: BodySink<'_>) -> Result<Response, HttpError> {
        self.send_inner(req, Some(sink)).await
    }

    async fn send_inner(&self, req: Request, sink: Option<BodySink<'_>>) -> Result<Response, HttpError> {
        if let Some(name) = &req.unencodable {
            let message = format!(
                "not sent: the `{name}` header's value cannot be sent in HTTP (a control or non-ASCII character); this file fails rather than going without it"
            );
            return Err(error(&req, client_request_id(), 0, message));
        }
        let mut refreshed = false;
        // A body of N MiB gets N more seconds, per attempt (`allowance`) and overall.
        let policy = RetryPolicy { deadline: self.retry.deadline + allowance(&req), ..self.retry.clone() };
        let lp = retry::Loop { policy: &policy, what: None, retries: Some(&self.stats.retries) };
        let judge = |tried: Tried, attempt: u32| self.judge(&req, tried, attempt, &mut refreshed);
        match retry::run(&lp, judge, |_| self.attempt(&req, sink)).await {
            Ok(resp) => Ok(resp),
            Err(retry::GaveUp::TimedOut { last, attempts, after }) => {
                let mut e = last.unwrap_or_else(|| error(&req, client_request_id(), attempts, String::new()));
                e.attempts = attempts;
                let deadline = retry::deadline_message(after);
                e.message = if e.message.is_empty() { deadline } else { format!("{}; {deadline}", e.message) };
                Err(e)
            }
            Err(gave_up) => Err(gave_up.into_error()),
        }
    }

    /// What one attempt came to: a response to return, an error, a retry, or (once) the
    /// same request again with a fresh token.
    fn judge(&self, req: &Request, tried: Tried, attempt: u32, refreshed: &mut bool) -> Verdict<Response, HttpError> {
        let Tried { id, started, token, result } = tried;
        let resp = match result {
            Ok(resp) => resp,
            Err(Attempt::NotSent(r)) => return Verdict::Fail(not_sent(req, &r, id, attempt - 1)),
            // Failures on our side (no token, a local write) end the request: not retried here.
            Err(Attempt::Sink(e)) => {
                return Verdict::Fail(error(req, id, attempt, format!("cannot write the received data: {e}")))
            }
            Err(Attempt::Auth(e)) => {
                let e = error(req, id, attempt, format!("no access token: {e}"));
                // The run has one credential: once its token cannot be had (the source has
                // retried what was transient), every queued file would fail alike.
                self.stop.trip(StopReason {
                    status: 0,
                    code: Some(stop::TOKEN_REFRESH_FAILED.into()),
                    error: e.to_string(),
                });
                return Verdict::Fail(e);
            }
            Err(Attempt::Oversized) => {
                let m = format!(
                    "the answer is longer than {} MiB, more than any Azure Storage answer: refused",
                    MAX_BODY >> 20
                );
                return Verdict::Fail(error(req, id, attempt, m));
            }
            Err(Attempt::Transport(e)) => {
                let err = error(req, id, attempt, describe_transport(&e));
                // A timed-out request may have landed: only an idempotent one is sent again.
                if e.is_timeout() && !req.method.is_idempotent() {
                    return Verdict::Fail(err);
                }
                // An unbuildable request or a TLS refusal would fail the same way again.
                return match retry::transport_retryable(&e) {
                    true => Verdict::Retry { error: err, hint: None },
                    false => Verdict::Fail(err),
                };
            }
        };
        if let Some(token) = token {
            let code =
                resp.header("x-ms-error-code").map(str::to_string).or_else(|| error::parse_error_body(&resp.body).0);
            if !*refreshed && token_refused(resp.status, code.as_deref()) {
                *refreshed = true;
                tracing::info!(
                    "storage refused the access token ({} {}): fetching a new one and sending the request again",
                    resp.status,
                    code.as_deref().unwrap_or("")
                );
                self.credential.refused(token);
                return Verdict::Again;
            }
        }
        match resp.status {
            0..=299 if !resp.headers.contains_key(AZURE_REQUEST_ID) => {
                Verdict::Fail(self.not_from_azure(req, &resp, id, attempt))
            }
            0..=299 => {
                tracing::debug!(
                    method = %req.method, path = req.url.path(), status = resp.status,
                    client_request_id = id, ms = started.elapsed().as_millis() as u64, "request"
                );
                Verdict::Done(resp)
            }
            300..=399 => Verdict::Fail(self.redirected(req, &resp, id, attempt)),
            _ => self.refused(req, &resp, id, attempt),
        }
    }

    /// A 4xx/5xx: retried when worth it; otherwise the error, and the run stopped when
    /// every request would be refused alike.
    fn refused(&self, req: &Request, resp: &Response, id: String, attempt: u32) -> Verdict<Response, HttpError> {
        let (code, message) = error::parse_error_body(&resp.body);
        let code = resp.header("x-ms-error-code").map(str::to_string).or(code).filter(|c| !c.trim().is_empty());
        let mut message = message.unwrap_or_default();
        if let Some(hint) = code.as_deref().and_then(|c| self.credential.refusal_hint(c)) {
            message.push_str(&hint);
        }
        let retryable = RetryPolicy::retryable(resp.status, code.as_deref());
        let e = HttpError {
            status: Some(resp.status),
            code,
            request_id: resp.header(AZURE_REQUEST_ID).map(str::to_string),
            ..error(req, id, attempt, message)
        };
        if retryable {
            return Verdict::Retry { error: e, hint: retry::server_hint(&resp.headers) };
        }
        tracing::debug!(error = %e, "request failed");
        if stop::fatal_for_all(resp.status, e.code.as_deref()) {
            self.stop.trip(StopReason { status: resp.status, code: e.code.clone(), error: e.to_string() });
        }
        Verdict::Fail(e)
    }

    /// A 2xx without `x-ms-request-id`, which Azure Storage puts on every response: a
    /// captive portal, a proxy or another server answered, and nothing reached the
    /// service. Taking its `200 OK` would report uploads that never happened (a portal
    /// answering every request with a login page did exactly that, exit 0). Never
    /// retried, and the run stops: every request would be answered alike.
    fn not_from_azure(&self, req: &Request, resp: &Response, client_request_id: String, attempt: u32) -> HttpError {
        let what = resp.header("content-type").map(|t| format!(" ({t})")).unwrap_or_default();
        let e = HttpError {
            method: req.method.to_string(),
            path: req.url.path().to_string(),
            status: Some(resp.status),
            code: None,
            message: format!(
                "the answer{what} did not come from Azure Storage (no x-ms-request-id header): a captive portal, a proxy or another server answered at this endpoint, so nothing was stored or read; check `endpoint` and the runner's network"
            ),
            request_id: None,
            client_request_id,
            attempts: attempt,
        };
        self.stop.trip(StopReason { status: resp.status, code: None, error: e.to_string() });
        e
    }

    /// A 3xx: the error, and the run stopped (every request would be redirected alike).
    fn redirected(&self, req: &Request, resp: &Response, client_request_id: String, attempt: u32) -> HttpError {
        let location = resp.header("location").map(|l| stop::safe_location(&req.url, l));
        let message = match &location {
            Some(l) => format!(
                "redirected to {l}; not followed: Azure Storage never redirects, so something else answered (a proxy or a captive portal)"
            ),
            None => "a redirect without a Location; not followed: Azure Storage never redirects".into(),
        };
        let e = HttpError {
            method: req.method.to_string(),
            path: req.url.path().to_string(),
            status: Some(resp.status),
            code: None,
            message,
            request_id: resp.header("x-ms-request-id").map(str::to_string),
            client_request_id,
            attempts: attempt,
        };
        tracing::debug!(error = %e, "request redirected");
        self.stop.trip(StopReason { status: resp.status, code: None, error: e.to_string() });
        e
    }

    /// One attempt: nothing when the run has stopped, else the request built afresh
    /// (date, ids, authorization) and sent, its answer read whole or streamed.
    async fn attempt(&self, req: &Request, sink: Option<BodySink<'_>>) -> Tried {
        let id = client_request_id();
        let started = Instant::now();
        if let Some(r) = self.stop.reason() {
            return Tried { id, started, token: None, result: Err(Attempt::NotSent(r.clone())) };
        }
        let mut token = None;
        let result = self.exchange(req, sink, &id, &mut token).await;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Tried { id, started, token, result }
    }

    async fn exchange(
        &self,
        req: &Request,
        sink: Option<BodySink<'_>>,
        client_request_id: &str,
        used_token: &mut Option<TokenUsed>,
    ) -> Result<Response, Attempt> {
        let mut r = reqwest::Request::new(req.method.clone(), req.url.clone());
        *r.headers_mut() = req.headers.clone();
        let h = r.headers_mut();
        h.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        h.insert(
            "x-ms-date",
            HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())).expect("date"),
        );
        h.insert(
            "x-ms-client-request-id",
            HeaderValue::from_str(client_request_id).expect("a request id is hex and dashes"),
        );
        h.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_str(&self.user_agent).unwrap_or(HeaderValue::from_static("plugin-azure-storage")),
        );
        let send_body = req.method == Method::PUT || !req.body.is_empty();
        if send_body {
            h.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(req.body.len()));
            *r.body_mut() = Some(req.body.clone().into());
        }
        *r.timeout_mut() = Some(self.timeout + allowance(req));
        *used_token = self.credential.authorize(&mut r).await.map_err(Attempt::Auth)?;
        let resp = self.client.execute(r).await.map_err(Attempt::Transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // Only a body that Azure Storage sent is streamed into the sink (see `not_from_azure`).
        if let (Some(sink), true) = (sink, status < 300 && headers.contains_key(AZURE_REQUEST_ID)) {
            let mut resp = resp;
            let mut pos = 0u64;
            while let Some(frame) = resp.chunk().await.map_err(Attempt::Transport)? {
                sink(pos, &frame).map_err(Attempt::Sink)?;
                pos += frame.len() as u64;
            }
            return Ok(Response { status, headers, body: Bytes::new(), streamed: pos });
        }
        let from_azure = status < 300 && headers.contains_key(AZURE_REQUEST_ID);
        let cap = if from_azure { MAX_BODY } else { MAX_ERROR_BODY };
        let (body, oversized) = retry::read_capped(resp, cap).await.map_err(Attempt::Transport)?;
        if oversized && from_azure {
            return Err(Attempt::Oversized);
        }
        Ok(Response { status, headers, body, streamed: 0 })
    }
}

/// The time a request's body (sent or expected back) adds to its timeout and deadline:
/// a body of N MiB gets N more seconds (at least 1 MiB/s must flow).
fn allowance(req: &Request) -> Duration {
    Duration::from_secs((req.body.len() as u64).saturating_add(req.expect_bytes) >> 20)
}

/// An error about `req` without a response (status, code and request id to be filled in).
fn error(req: &Request, client_request_id: String, attempts: u32, message: String) -> HttpError {
    HttpError {
        method: req.method.to_string(),
        path: req.url.path().to_string(),
        status: None,
        code: None,
        message,
        request_id: None,
        client_request_id,
        attempts,
    }
}

/// A fresh `x-ms-client-request-id`: 122 random bits in the UUID v4 layout that Azure's
/// logs show. It needs to be unique, not unguessable, so `fastrand` (already used for
/// jitter) serves instead of the `uuid` crate and its `getrandom` path.
fn client_request_id() -> String {
    const VERSION: u128 = 0xf << 76; // the 13th hex digit: 4, a random UUID
    const VARIANT: u128 = 0xc << 60; // the top bits of the 17th: 10, RFC 4122
    let v = (fastrand::u128(..) & !VERSION & !VARIANT) | (0x4 << 76) | (0x8 << 60);
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The error of a request not sent because the run had stopped.
fn not_sent(req: &Request, r: &StopReason, client_request_id: String, attempts: u32) -> HttpError {
    HttpError {
        method: req.method.to_string(),
        path: req.url.path().to_string(),
        status: None,
        code: None,
        message: match (r.status, r.code.as_deref()) {
            (0, code) => {
                format!("not sent: the run stopped ({}; see the error at the end)", code.unwrap_or("no response"))
            }
            (status, code) => format!(
                "not sent: the run stopped on {status} {} (see the error at the end)",
                code.unwrap_or("(redirect)")
            ),
        },
        request_id: None,
        client_request_id,
        attempts,
    }
}

/// One attempt, for [`Http::judge`].
struct Tried {
    /// Its `x-ms-client-request-id`.
    id: String,
    started: Instant,
    /// The bearer token it carried.
    token: Option<TokenUsed>,
    result: Result<Response, Attempt>,
}

/// Why an attempt produced no response.
enum Attempt {
    /// The run had stopped: not sent.
    NotSent(StopReason),
    Transport(reqwest::Error),
    /// No token could be had (Entra or IMDS refused, or is unreachable): not retried here,
    /// the token source has already retried what was transient.
    Auth(AuthorizeError),
    /// The sink of a streamed body refused it (a local write failed): not retried.
    Sink(std::io::Error),
    /// A successful body longer than [`MAX_BODY`]: not retried (it would come back alike).
    Oversized,
}

/// Whether a response means "this bearer token is not (or no longer) accepted".
/// Azure answers 401 `InvalidAuthenticationInfo`; Azurite answers 403 `AuthenticationFailed`.
/// A 403 with any other code (`AuthorizationPermissionMismatch`: the identity lacks a role)
/// is a real refusal that a new token would not change.
pub fn token_refused(status: u16, code: Option<&str>) -> bool {
    status == 401 || (status == 403 && matches!(code, Some("InvalidAuthenticationInfo" | "AuthenticationFailed")))
}

/// A transport error in words, without the URL (its query may hold a SAS).
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_builder() {
        "the request could not be built"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the response"
    } else if e.is_request() {
        "connection dropped while sending the request"
    } else {
        "transport error"
    };
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// No credential: requests go out as they are.
    struct Anonymous;

    #[async_trait::async_trait]
    impl Authorize for Anonymous {
        async fn authorize(&self, _: &mut reqwest::Request) -> Result<Option<TokenUsed>, AuthorizeError> {
            Ok(None)
        }
        fn refused(&self, _: TokenUsed) {}
        fn is_bearer(&self) -> bool {
            false
        }
    }

    fn client() -> Http {
        let retry = RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            ..RetryPolicy::default()
        };
        Http::new(Anonymous, retry, Duration::from_secs(5), None, 4).unwrap()
    }

    #[test]
    fn client_request_ids_are_random_uuid_v4() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| client_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
            assert!(parts[2].starts_with('4') && matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        }
    }

    #[tokio::test]
    async fn a_streamed_body_reaches_the_sink_in_order_and_whole() {
        let server = wiremock::MockServer::start().await;
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .respond_with(
                wiremock::ResponseTemplate::new(206)
                    .insert_header("x-ms-request-id", "r1")
                    .set_body_bytes(body.clone()),
            )
            .mount(&server)
            .await;
        let got = Mutex::new(Vec::new());
        let sink = |pos: u64, data: &[u8]| -> std::io::Result<()> {
            let mut g = got.lock().unwrap();
            assert_eq!(pos, g.len() as u64, "frames arrive in order, positions contiguous");
            g.extend_from_slice(data);
            Ok(())
        };
        let mut req = Request::new(Method::GET, format!("{}/c/b", server.uri()).parse().unwrap());
        req.expect_bytes = body.len() as u64;
        let resp = client().send_streamed(req, &sink).await.unwrap();
        assert_eq!(resp.status, 206);
        assert_eq!(resp.streamed, body.len() as u64);
        assert!(resp.body.is_empty(), "a streamed body is not also collected");
        assert!(*got.lock().unwrap() == body);
    }

    #[tokio::test]
    async fn a_sink_that_cannot_write_fails_the_request_without_retrying() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .respond_with(
                wiremock::ResponseTemplate::new(200)
                    .insert_header("x-ms-request-id", "r1")
                    .set_body_bytes(vec![7u8; 100_000]),
            )
            .expect(1)
            .mount(&server)
            .await;
        let sink = |_: u64, _: &[u8]| -> std::io::Result<()> {
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"))
        };
        let req = Request::new(Method::GET, format!("{}/c/b", server.uri()).parse().unwrap());
        let e = client().send_streamed(req, &sink).await.unwrap_err();
        assert_eq!(e.attempts, 1, "a local write failure is not a reason to ask the service again");
        assert!(e.message.contains("cannot write the received data: No space left on device"), "{}", e.message);
        server.verify().await;
    }

    #[tokio::test]
    async fn an_error_body_is_read_not_streamed() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .respond_with(
                wiremock::ResponseTemplate::new(404).insert_header("x-ms-error-code", "BlobNotFound").set_body_string(
                    "<?xml version=\"1.0\"?><Error><Code>BlobNotFound</Code><Message>gone</Message></Error>",
                ),
            )
            .mount(&server)
            .await;
        let sink = |_: u64, _: &[u8]| -> std::io::Result<()> { panic!("an error body reached the file") };
        let req = Request::new(Method::GET, format!("{}/c/b", server.uri()).parse().unwrap());
        let e = client().send_streamed(req, &sink).await.unwrap_err();
        assert!(e.is_code("BlobNotFound"), "{e}");
    }

    /// A captive portal answers every request `200 OK` with a login page: taken at its word,
    /// uploads were reported as stored (exit 0) while nothing reached Azure.
    #[tokio::test]
    async fn a_success_that_azure_did_not_send_is_a_failure_that_stops_the_run() {
        let portal = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(
                wiremock::ResponseTemplate::new(200)
                    .set_body_raw(&b"<html>Please log in to the hotel wifi</html>"[..], "text/html"),
            )
            .expect(2)
            .mount(&portal)
            .await;
        let http = client();
        http.stop.arm();
        let put = Request::new(Method::PUT, format!("{}/acct/c/a.txt", portal.uri()).parse().unwrap())
            .body(Bytes::from_static(b"data"));
        let e = http.send(put).await.unwrap_err();
        assert_eq!((e.status, e.attempts), (Some(200), 1), "not retried: {e}");
        assert!(e.to_string().contains("(text/html) did not come from Azure Storage (no x-ms-request-id"), "{e}");
        assert_eq!(http.stop.reason().map(|r| r.status), Some(200), "every request would be answered alike");
        // A streamed GET never writes the portal's page into the file.
        let http = client();
        let sink = |_: u64, _: &[u8]| -> std::io::Result<()> { panic!("the portal's page reached the file") };
        let get = Request::new(Method::GET, format!("{}/acct/c/a.txt", portal.uri()).parse().unwrap());
        http.send_streamed(get, &sink).await.unwrap_err();
        portal.verify().await;
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_nor_retried_and_its_location_is_printed_without_the_query() {
        let elsewhere = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(201))
            .expect(0)
            .mount(&elsewhere)
            .await;
        for status in [301u16, 302, 303, 307, 308] {
            let server = wiremock::MockServer::start().await;
            let to = format!("{}/acct/c/a.txt?sv=2025&sig=SECRET", elsewhere.uri());
            wiremock::Mock::given(wiremock::matchers::method("PUT"))
                .respond_with(wiremock::ResponseTemplate::new(status).insert_header("location", to.as_str()))
                .expect(1)
                .mount(&server)
                .await;
            let http = client();
            http.stop.arm();
            let req = Request::new(Method::PUT, format!("{}/acct/c/a.txt", server.uri()).parse().unwrap())
                .body(Bytes::from_static(b"data"));
            let e = http.send(req).await.unwrap_err();
            assert_eq!((e.status, e.attempts), (Some(status), 1), "{e}");
            let s = e.to_string();
            assert!(s.contains(&format!("redirected to {}/acct/c/a.txt;", elsewhere.uri())), "{s}");
            assert!(!s.contains("SECRET") && !s.contains("sv=2025"), "the query may hold a SAS: {s}");
            assert_eq!(http.stop.reason().map(|r| r.status), Some(status), "a redirect stops the run");
            server.verify().await;
        }
        elsewhere.verify().await;
    }

    #[tokio::test]
    async fn once_stopped_nothing_more_is_sent() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(403).insert_header("x-ms-error-code", "AuthenticationFailed"))
            .mount(&server)
            .await;
        let http = client();
        let url: url::Url = format!("{}/acct/c/a", server.uri()).parse().unwrap();
        http.send(Request::new(Method::GET, url.clone())).await.unwrap_err();
        assert!(!http.stop.is_stopped(), "not armed yet: a refusal before the transfers is the caller's to judge");
        http.stop.arm();
        let e = http.send(Request::new(Method::GET, url.clone())).await.unwrap_err();
        assert!(e.is_code("AuthenticationFailed"), "{e}");
        assert!(http.stop.is_stopped());
        let e = http.send(Request::new(Method::GET, url)).await.unwrap_err();
        assert!(e.message.starts_with("not sent: the run stopped on 403 AuthenticationFailed"), "{e}");
        assert_eq!(http.stats.requests.load(Ordering::Relaxed), 2);
        // The third request never left: the server saw two.
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_not_retried() {
        let retry = RetryPolicy {
            max_retries: 5,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let http = Http::new(Anonymous, retry, Duration::from_secs(5), None, 4).unwrap();
        let started = Instant::now();
        let e = http.send(Request::new(Method::GET, "ftp://127.0.0.1:1/acct/c/a".parse().unwrap())).await.unwrap_err();
        assert_eq!(e.attempts, 1, "{e}");
        assert_eq!(http.stats.retries.load(Ordering::Relaxed), 0);
        assert!(started.elapsed() < Duration::from_secs(2), "no backoff was waited");
    }

    #[tokio::test]
    async fn an_unencodable_header_fails_the_request_naming_it_and_nothing_is_sent() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(200).insert_header("x-ms-request-id", "r1"))
            .expect(0)
            .mount(&server)
            .await;
        let url: url::Url = format!("{}/acct/c/a", server.uri()).parse().unwrap();
        // An ETag from a listing with a line break: dropping it would lose the version pin.
        let req = Request::new(Method::GET, url.clone()).header("if-match", "\"0x8D\nX\"");
        let e = client().send(req).await.unwrap_err();
        assert!(e.message.contains("the `if-match` header's value cannot be sent"), "{e}");
        let req = Request::new(Method::PUT, url).dyn_header("x-ms-meta-note", "a\u{1}b");
        let e = client().send(req).await.unwrap_err();
        assert!(e.message.contains("`x-ms-meta-note`"), "{e}");
        server.verify().await;
    }

    #[test]
    fn which_refusals_mean_a_new_token() {
        assert!(token_refused(401, Some("InvalidAuthenticationInfo")));
        assert!(token_refused(401, None));
        assert!(token_refused(403, Some("AuthenticationFailed")), "Azurite's answer to an expired token");
        assert!(token_refused(403, Some("InvalidAuthenticationInfo")));
        assert!(!token_refused(403, Some("AuthorizationPermissionMismatch")), "a missing role is not a token problem");
        assert!(!token_refused(403, None));
        assert!(!token_refused(404, Some("BlobNotFound")));
    }
}
