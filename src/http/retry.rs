//! The retry policy: which failures are retried, and how long to wait.
//!
//! Retried: 408, 429, 500, 502, 503, 504 and transport failures (connect, reset,
//! timeout, truncated body). Every request the plugin sends is idempotent or has its
//! effect checked when its retry is refused: Put Blob/Block/Block List and Put Range
//! rewrite the same bytes; a conditional write (`If-None-Match: *`) that gets 409 on a
//! retry is compared with what is stored (`our_write_landed`); a Files Rename retried
//! after it landed finds the source gone and the destination ours. Never retried: a request
//! that could not be built (an invalid URL, a scheme other than http/https), a redirect,
//! and a TLS failure (a `rustls::Error` in the cause chain: an untrusted certificate, a
//! fatal alert): each would fail the same way every time ([`transport_retryable`]). A
//! connection closed mid-handshake is an `io::Error` (`UnexpectedEof`), not a TLS refusal,
//! and is retried. The chain is read by type, never by wording. Also retried: a 400 whose
//! code says the body arrived corrupted (`Crc64Mismatch`, `Md5Mismatch`). The plugin
//! computed that checksum from the buffer it still holds, so a mismatch means the bytes
//! were damaged on the way (a transport fault), and re-sending the same buffer is safe
//! (every request that carries one is idempotent) and may succeed; a corruption that
//! persists still fails after the budget, naming the code. Waits are "full jitter"
//! exponential backoff (uniform in `[0, min(cap, base·2^n)]`), but never shorter than
//! what the service asks for in `Retry-After` / `x-ms-retry-after-ms`.

//!
//! Every loop ends at the policy's `deadline` (`retry_timeout`, default 3 minutes as
//! object_store's): an attempt still running then is dropped, and a wait that would end
//! past it is not begun; the error names the setting. A timed-out request whose method is
//! not idempotent (POST, PATCH) is not re-sent by the storage client.
//!
//! [`run`] is the one retry loop: storage requests (`Http::send`) and every token request
//! (Entra ID, the Actions endpoint, managed identity) go through it, so the budget, the
//! server's hint, the jittered wait and the log line are the same everywhere.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one attempt came to, as the caller's classifier reads it.
#[derive(Debug)]
pub enum Verdict<T, F, R = F> {
    /// Finished: the value.
    Done(T),
    /// Finished: an error that another attempt would not change.
    Fail(F),
    /// Worth another attempt after the backoff (at least `hint`, the server's
    /// `Retry-After`), while the budget lasts.
    Retry { error: R, hint: Option<Duration> },
    /// Send once more at once, outside the budget (a refused bearer token was dropped).
    Again,
}

/// Why [`run`] gave up.
#[derive(Debug)]
pub enum GaveUp<F, R = F> {
    /// The classifier said [`Verdict::Fail`].
    Failed(F),
    /// Every attempt of the budget was retryable; `last` is the last one's error.
    Exhausted { last: R, attempts: u32 },
    /// The policy's `deadline` (`retry_timeout`) passed: an attempt was cut short, or the
    /// next wait would have ended past it. `last` is the last attempt's error, if one ended.
    TimedOut { last: Option<R>, attempts: u32, after: Duration },
}

/// The words every deadline message ends with: the setting that bounds it.
pub fn deadline_message(after: Duration) -> String {
    format!(
        "gave up after {:.1}s: `retry_timeout` ({}) bounds the attempts and waits of one request together; raise it, or check the network and the service",
        after.as_secs_f64(),
        crate::settings::env_name("retry_timeout")
    )
}

impl<E> GaveUp<E, E> {
    /// The error, whichever way the loop ended (the error already names its attempts).
    pub fn into_error(self) -> E {
        match self {
            GaveUp::Failed(e) | GaveUp::Exhausted { last: e, .. } | GaveUp::TimedOut { last: Some(e), .. } => e,
            GaveUp::TimedOut { last: None, .. } => unreachable!("a deadline without an error is handled by the caller"),
        }
    }
}

/// The most of a token endpoint's answer that is read (Entra ID, IMDS, the Actions
/// endpoint). A token answer is a JWT of a few KiB in a small JSON object, an error a few
/// hundred bytes: 1 MiB is hundreds of times either, and bounds what a hostile or broken
/// endpoint (or a proxy's page) can make the plugin hold.
pub const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// A token endpoint's answer, read whole up to [`MAX_TOKEN_ANSWER`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The server's `Retry-After`.
    pub hint: Option<Duration>,
    pub body: bytes::Bytes,
    /// The body went on past [`MAX_TOKEN_ANSWER`] (only the first bytes were kept, the
    /// rest never read): not a token answer; the caller fails it naming the endpoint.
    pub oversized: bool,
}

impl Answer {
    /// Sends a plain (non-storage) request and reads its answer. A body cut short is the
    /// transport error it is (retried like a reset), never an empty body.
    pub async fn fetch(rb: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let hint = server_hint(resp.headers());
        let (body, oversized) = read_capped(resp, MAX_TOKEN_ANSWER).await?;
        Ok(Answer { status, hint, body, oversized })
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The message of an oversized answer from `what`.
    pub fn oversized_message(what: &str) -> String {
        format!(
            "{what} answered more than {} KiB: not a token answer (a proxy or another server?)",
            MAX_TOKEN_ANSWER >> 10
        )
    }
}

/// Reads a response's body, at most `cap` bytes: `(body, true)` when more was coming
/// (the rest is left unread and the connection dropped). A body error is returned.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<(bytes::Bytes, bool), reqwest::Error> {
    let hint = resp.content_length().unwrap_or(0).min(cap as u64) as usize;
    let mut body = bytes::BytesMut::with_capacity(hint);
    while let Some(frame) = resp.chunk().await? {
        let room = cap - body.len();
        if frame.len() > room {
            body.extend_from_slice(&frame[..room]);
            return Ok((body.freeze(), true));
        }
        body.extend_from_slice(&frame);
    }
    Ok((body.freeze(), false))
}

/// How a loop logs and counts.
pub struct Loop<'a> {
    pub policy: &'a RetryPolicy,
    /// What is retried, for the log line (`Entra ID token exchange`); `None` when the
    /// error names it already (a storage request's method and path).
    pub what: Option<&'a str>,
    /// Counts every retry (the summary's retries).
    pub retries: Option<&'a AtomicU64>,
}

/// Runs `op` (given the 1-based attempt number) until `classify` says done or failed, or
/// the policy's retries are spent, or its `deadline` passes (an attempt still running then
/// is dropped; a wait that would end past it is not begun). A [`Verdict::Again`] does not
/// count against the budget.
pub async fn run<O, T, F, R, Op, Fut, C>(lp: &Loop<'_>, mut classify: C, mut op: Op) -> Result<T, GaveUp<F, R>>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = O>,
    C: FnMut(O, u32) -> Verdict<T, F, R>,
    R: std::fmt::Display,
{
    let started = tokio::time::Instant::now();
    let deadline = started + lp.policy.deadline;
    let mut attempt = 0u32;
    let mut free = 0u32;
    loop {
        attempt += 1;
        let outcome = match tokio::time::timeout_at(deadline, op(attempt)).await {
            Ok(o) => o,
            Err(_) => return Err(GaveUp::TimedOut { last: None, attempts: attempt, after: started.elapsed() }),
        };
        let (error, hint) = match classify(outcome, attempt) {
            Verdict::Done(v) => return Ok(v),
            Verdict::Fail(e) => return Err(GaveUp::Failed(e)),
            Verdict::Again => {
                free += 1;
                continue;
            }
            Verdict::Retry { error, hint } => (error, hint),
        };
        if attempt - free > lp.policy.max_retries {
            return Err(GaveUp::Exhausted { last: error, attempts: attempt });
        }
        let wait = lp.policy.delay(attempt, hint);
        if tokio::time::Instant::now() + wait >= deadline {
            return Err(GaveUp::TimedOut { last: Some(error), attempts: attempt, after: started.elapsed() });
        }
        if let Some(r) = lp.retries {
            r.fetch_add(1, Ordering::Relaxed);
        }
        match lp.what {
            Some(what) => tracing::warn!("{what}: {error}; retrying in {:.1}s", wait.as_secs_f64()),
            None => tracing::warn!("retrying in {:.1}s: {error}", wait.as_secs_f64()),
        }
        tokio::time::sleep(wait).await;
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
    /// The most one request may take, its attempts and waits together (`retry_timeout`).
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            deadline: Self::DEFAULT_DEADLINE,
        }
    }
}

impl RetryPolicy {
    pub fn retryable_status(status: u16) -> bool {
        matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
    }

    /// Is a failed response worth another attempt? `code` is the Azure error code.
    pub fn retryable(status: u16, code: Option<&str>) -> bool {
        Self::retryable_status(status) || (status == 400 && matches!(code, Some("Crc64Mismatch" | "Md5Mismatch")))
    }

    /// The longest wait a server's `Retry-After` may ask for: a bogus or hostile header
    /// must not stall a CI step for hours.
    pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(120);

    /// `retry_timeout`'s default, as object_store's: 3 minutes.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(180);

    /// Wait before retry number `retry` (1-based), given the server's hint.
    pub fn delay(&self, retry: u32, server_hint: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << retry.min(16));
        let ceiling = exp.min(self.cap);
        let jitter = ceiling.mul_f64(fastrand::f64());
        match server_hint {
            // Honour the server, within MAX_SERVER_WAIT.
            Some(h) => h.min(Self::MAX_SERVER_WAIT).max(jitter / 4),
            None => jitter.max(Duration::from_millis(10)),
        }
    }
}

/// Is a transport failure (no response) worth another attempt? Connects refused or
/// reset, timeouts and bodies cut short are; a request that could not be built, a
/// redirect and a TLS failure are not: they recur on every attempt. Decided by the error's
/// *types* (as uv does), never its wording: see [`transport_class`].
pub fn transport_retryable(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    transport_class(e) != TransportClass::Final
}

/// What the cause chain of a transport error says about another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportClass {
    /// A `rustls::Error`: the peer's certificate is refused, it sent a fatal alert, speaks
    /// no TLS we accept (TLS to a plain-HTTP port reads as a corrupt message). Every
    /// attempt would meet the same refusal.
    Final,
    /// The connection was reset, aborted or closed mid-way (an `io::Error` of kind
    /// `ConnectionReset`, `ConnectionAborted`, `BrokenPipe`, `UnexpectedEof`): a load
    /// balancer dropping a handshake reads like this, and the next connection may pass.
    Dropped,
    /// Anything else (a timeout, a refused connect, a DNS failure): retried.
    Other,
}

/// Walks the error's causes by type. `io::Error` hides its inner error from `source()`
/// (it returns the inner error's *source*), so each `io::Error` is opened with `get_ref`.
pub fn transport_class(e: &(dyn std::error::Error + 'static)) -> TransportClass {
    let mut dropped = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return TransportClass::Final;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) {
                return TransportClass::Final;
            }
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof) {
                dropped = true;
            }
            if let Some(inner) = io.get_ref() {
                // The inner error's own chain (an io::Error's `source()` skips it).
                if transport_class(inner) == TransportClass::Final {
                    return TransportClass::Final;
                }
            }
        }
        src = s.source();
    }
    if dropped {
        TransportClass::Dropped
    } else {
        TransportClass::Other
    }
}

/// Reads `x-ms-retry-after-ms` or `Retry-After` (seconds or an HTTP date).
pub fn server_hint(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) =
        headers.get("x-ms-retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[tokio::test]
    async fn the_loop_counts_its_budget_and_a_free_attempt_does_not() {
        let policy = RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let retries = AtomicU64::new(0);
        let lp = Loop { policy: &policy, what: Some("test"), retries: Some(&retries) };
        let got: Result<(), GaveUp<String>> = run(
            &lp,
            |n: u32, _| if n == 1 { Verdict::Again } else { Verdict::Retry { error: format!("e{n}"), hint: None } },
            |n| async move { n },
        )
        .await;
        match got {
            Err(GaveUp::Exhausted { last, attempts }) => assert_eq!((last.as_str(), attempts), ("e4", 4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(retries.load(Ordering::Relaxed), 2, "the free attempt is not a retry");
        let got: Result<u32, GaveUp<String>> = run(
            &lp,
            |n: u32, _| if n < 3 { Verdict::Retry { error: "busy".into(), hint: None } } else { Verdict::Done(n) },
            |n| async move { n },
        )
        .await;
        assert_eq!(got.unwrap(), 3);
        let got: Result<(), GaveUp<&str>> = run(&lp, |_: u32, _| Verdict::Fail("no"), |n| async move { n }).await;
        assert!(matches!(got, Err(GaveUp::Failed("no"))));
    }

    /// A server asking for long waits cannot keep one request alive past the deadline; an
    /// attempt that hangs is cut at it.
    #[tokio::test]
    async fn the_deadline_bounds_attempts_and_waits_together() {
        let deadline = Duration::from_millis(300);
        let policy = RetryPolicy { max_retries: 50, deadline, ..RetryPolicy::default() };
        let lp = Loop { policy: &policy, what: None, retries: None };
        let started = std::time::Instant::now();
        let got: Result<(), GaveUp<String>> = run(
            &lp,
            |_: u32, _| Verdict::Retry { error: "busy".into(), hint: Some(Duration::from_millis(200)) },
            |n| async move { n },
        )
        .await;
        match got {
            // The second wait would end past the deadline: not begun.
            Err(GaveUp::TimedOut { last: Some(e), attempts: 2, .. }) => assert_eq!(e, "busy"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < deadline, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        let got: Result<(), GaveUp<String>> =
            run(&lp, |_: u32, _| Verdict::Fail("unreachable".to_string()), |_| std::future::pending::<u32>()).await;
        assert!(matches!(got, Err(GaveUp::TimedOut { last: None, attempts: 1, .. })), "{got:?}");
        assert!(started.elapsed() >= deadline && started.elapsed() < deadline * 3, "{:?}", started.elapsed());
        assert!(deadline_message(Duration::from_secs(3)).contains("`retry_timeout` (PLUGIN_RETRY_TIMEOUT)"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            assert!(p.delay(1, None) <= Duration::from_millis(200));
            assert!(p.delay(10, None) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn server_hint_wins() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(p.delay(1, Some(Duration::from_secs(9999))), Duration::from_secs(120));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(server_hint(&h), Some(Duration::from_secs(7)));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(server_hint(&h), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn transport_failures_are_classified_by_type_not_by_wording() {
        use std::io::{Error, ErrorKind};
        // tokio-rustls's words for a peer that closed mid-handshake: retried, although
        // they say "handshake" (the class comes from the error's kind, not its text).
        let eof = Error::new(ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(transport_class(&eof), TransportClass::Dropped);
        let reset = Error::from(ErrorKind::ConnectionReset);
        assert_eq!(transport_class(&reset), TransportClass::Dropped);
        // A certificate refusal, as hyper-rustls wraps it: final.
        let cert = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(transport_class(&cert), TransportClass::Final);
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(transport_class(&alert), TransportClass::Final);
        // Words alone decide nothing: a message naming a certificate is not a TLS error.
        let worded = Error::other("certificate handshake fatal alert");
        assert_eq!(transport_class(&worded), TransportClass::Other);
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_cap_and_no_further() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(500).set_body_bytes(vec![b'x'; 1 << 20]))
            .mount(&server)
            .await;
        let resp = reqwest::get(server.uri()).await.unwrap();
        let (body, oversized) = read_capped(resp, 64 << 10).await.unwrap();
        assert_eq!((body.len(), oversized), (64 << 10, true));
        let resp = reqwest::get(server.uri()).await.unwrap();
        let (body, oversized) = read_capped(resp, 1 << 20).await.unwrap();
        assert_eq!((body.len(), oversized), (1 << 20, false), "exactly the cap is not over it");
    }

    #[test]
    fn which_statuses_retry() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(RetryPolicy::retryable_status(s));
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert!(!RetryPolicy::retryable_status(s));
            assert!(!RetryPolicy::retryable(s, Some("InvalidHeaderValue")));
        }
        // A body damaged on the way is re-sent; other 400s are not.
        assert!(RetryPolicy::retryable(400, Some("Crc64Mismatch")));
        assert!(RetryPolicy::retryable(400, Some("Md5Mismatch")));
        assert!(!RetryPolicy::retryable(400, None));
        assert!(!RetryPolicy::retryable(409, Some("Crc64Mismatch")));
    }
}
