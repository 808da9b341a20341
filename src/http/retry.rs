//! The retry policy: which failures are retried, and how long to wait.
//!
//! Retried: 408, 429, 500, 502, 503, 504 and transport failures (connect, reset,
//! timeout, truncated body), only for idempotent requests. Never retried: a request
//! that could not be built (an invalid URL, a scheme other than http/https), a redirect,
//! and a TLS failure (an untrusted certificate, a handshake refused): each would fail the
//! same way every time ([`transport_retryable`]). Also retried: a 400 whose
//! code says the body arrived corrupted (`Crc64Mismatch`, `Md5Mismatch`). The plugin
//! computed that checksum from the buffer it still holds, so a mismatch means the bytes
//! were damaged on the way (a transport fault), and re-sending the same buffer is safe
//! (every request that carries one is idempotent) and may succeed; a corruption that
//! persists still fails after the budget, naming the code. Waits are "full jitter"
//! exponential backoff (uniform in `[0, min(cap, base·2^n)]`), but never shorter than
//! what the service asks for in `Retry-After` / `x-ms-retry-after-ms`.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 5, base: Duration::from_millis(250), cap: Duration::from_secs(30) }
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

    /// Wait before retry number `retry` (1-based), given the server's hint.
    pub fn delay(&self, retry: u32, server_hint: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << retry.min(16));
        let ceiling = exp.min(self.cap);
        let jitter = ceiling.mul_f64(fastrand::f64());
        match server_hint {
            // Honour the server, bounded so a bogus header cannot stall a CI step for hours.
            Some(h) => h.min(Duration::from_secs(120)).max(jitter / 4),
            None => jitter.max(Duration::from_millis(10)),
        }
    }
}

/// Is a transport failure (no response) worth another attempt? Connects refused or
/// reset, timeouts and bodies cut short are; a request that could not be built, a
/// redirect and a TLS/certificate failure are not: they recur on every attempt.
pub fn transport_retryable(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    // The error's own text holds the URL (a host may contain any word): read its causes.
    std::error::Error::source(e).map(|s| !is_tls_failure(s)).unwrap_or(true)
}

/// Whether an error's cause chain is a TLS failure (rustls words: an invalid peer
/// certificate, a fatal alert, a handshake or a corrupt record, e.g. TLS spoken to a
/// plain-HTTP port). reqwest does not type these, so the chain's text is read.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let t = s.to_string().to_ascii_lowercase();
        if ["certificate", "fatal alert", "handshake", "corrupt message", "peer is incompatible", "peer misbehaved"]
            .iter()
            .any(|w| t.contains(w))
        {
            return true;
        }
        src = s.source();
    }
    false
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

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { max_retries: 5, base: Duration::from_millis(100), cap: Duration::from_secs(1) };
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
