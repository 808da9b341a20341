//! Access tokens and the cache that keeps one fresh for the whole run.
//!
//! A transfer may outlive its first access token (Entra issues 60-90 minute tokens;
//! workload-identity setups may issue shorter ones), so every request asks the
//! [`TokenCache`] for a token, and the cache refreshes it ahead of expiry:
//! 5 minutes before `expires_at`, or at half the lifetime for tokens shorter than
//! 10 minutes, so a short token is not refreshed at every request.
//!
//! Refreshing is single-flight. While the current token is still valid, one caller
//! refreshes (under a `tokio::sync::Mutex`, with `try_lock`) and every other caller
//! keeps using the current token, so a refresh never stalls the transfer. Only when no
//! valid token exists do callers wait for the refresh. A failed refresh is remembered
//! for a few seconds, so a refused exchange is not repeated by every waiting request.
//!
//! [`TokenCache::invalidate`] drops the token a request used when storage refused it
//! (401, or Azurite's 403 `AuthenticationFailed`); the next caller fetches a new one.
//! It only drops the token if it is still the cached one, so sixteen requests refused
//! at once cause one refresh, not sixteen.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Secret;

use super::AuthError;

/// Refresh this long before expiry, or at half-life for tokens shorter than twice this.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a failed refresh is replayed to callers instead of calling the source again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// The longest lifetime a token is believed to have (Entra's are 1-24 h): a token
/// endpoint's number never overflows the clock, and a wrong one costs a refresh, not a panic.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `now` plus a lifetime in seconds as a token endpoint sent it (`expires_in`), clamped
/// to `0..=MAX_LIFETIME`.
pub fn expiry_in(now: SystemTime, secs: i64) -> SystemTime {
    now + Duration::from_secs(secs.max(0) as u64).min(MAX_LIFETIME)
}

/// An absolute expiry in Unix seconds as a token endpoint sent it (`expires_on`), no
/// later than `now + MAX_LIFETIME` (and never an overflow).
pub fn expiry_at(now: SystemTime, unix_secs: i64) -> SystemTime {
    let latest = now + MAX_LIFETIME;
    std::time::UNIX_EPOCH.checked_add(Duration::from_secs(unix_secs.max(0) as u64)).map_or(latest, |t| t.min(latest))
}

/// An OAuth access token and when it stops being valid. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    token: Secret,
    pub expires_at: SystemTime,
    pub obtained_at: SystemTime,
    /// A serial number, so that `invalidate` can tell tokens apart without comparing secrets.
    serial: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("expires_in", &self.expires_at.duration_since(SystemTime::now()).unwrap_or_default())
            .finish()
    }
}

impl AccessToken {
    pub fn new(token: Secret, expires_at: SystemTime) -> Self {
        AccessToken { token, expires_at, obtained_at: SystemTime::now(), serial: 0 }
    }

    /// Tells tokens apart without comparing secrets (see [`TokenCache::invalidate`]).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn secret(&self) -> &Secret {
        &self.token
    }

    /// When the cache should fetch the next token.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self.expires_at.duration_since(self.obtained_at).unwrap_or_default();
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        self.expires_at - margin
    }

    pub fn is_valid_at(&self, t: SystemTime) -> bool {
        t < self.expires_at
    }
}

/// Something that can produce a fresh access token (the Entra exchange, IMDS, …).
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    async fn fetch(&self) -> Result<AccessToken, AuthError>;
    /// The identity in use, for the start line (never a secret).
    fn identity(&self) -> String;
}

struct State {
    token: Option<AccessToken>,
    /// The last failed refresh, replayed to callers for `FAILURE_MEMORY`.
    failure: Option<(Instant, AuthError)>,
    serial: u64,
}

/// One token shared by every request of the run.
pub struct TokenCache {
    source: Box<dyn TokenSource>,
    state: Mutex<State>,
    refresh: tokio::sync::Mutex<()>,
}

impl TokenCache {
    pub fn new(source: Box<dyn TokenSource>) -> Arc<Self> {
        Arc::new(TokenCache {
            source,
            state: Mutex::new(State { token: None, failure: None, serial: 0 }),
            refresh: tokio::sync::Mutex::new(()),
        })
    }

    pub fn identity(&self) -> String {
        self.source.identity()
    }

    fn current(&self) -> (Option<AccessToken>, Option<AuthError>) {
        let st = self.state.lock().expect("token state");
        let failure = st.failure.as_ref().filter(|(at, _)| at.elapsed() < FAILURE_MEMORY).map(|(_, e)| e.clone());
        (st.token.clone(), failure)
    }

    /// A token valid now, refreshing it when due.
    pub async fn get(&self) -> Result<AccessToken, AuthError> {
        let now = SystemTime::now();
        let (token, failure) = self.current();
        match token {
            Some(t) if now < t.refresh_at() => return Ok(t),
            Some(t) if t.is_valid_at(now) => {
                // Due for refresh but still valid: one caller refreshes, the rest go on.
                if failure.is_some() {
                    return Ok(t);
                }
                if let Ok(_guard) = self.refresh.try_lock() {
                    match self.refresh_locked().await {
                        Ok(new) => return Ok(new),
                        Err(e) => {
                            tracing::warn!("refreshing the access token failed; the current one is still valid: {e}");
                            return Ok(t);
                        }
                    }
                }
                return Ok(t);
            }
            _ => {}
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let _guard = self.refresh.lock().await;
        // Someone else may have refreshed (or failed) while we waited.
        let (token, failure) = self.current();
        if let Some(t) = token {
            if SystemTime::now() < t.refresh_at() {
                return Ok(t);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.refresh_locked().await
    }

    /// Fetches a new token; the caller holds `self.refresh`.
    async fn refresh_locked(&self) -> Result<AccessToken, AuthError> {
        match self.source.fetch().await {
            Ok(mut t) => {
                let mut st = self.state.lock().expect("token state");
                st.serial += 1;
                t.serial = st.serial;
                st.token = Some(t.clone());
                st.failure = None;
                let lifetime = t.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
                tracing::debug!(
                    expires_in_s = lifetime.as_secs(),
                    refresh_in_s = t.refresh_at().duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                    "access token obtained"
                );
                Ok(t)
            }
            Err(e) => {
                let mut st = self.state.lock().expect("token state");
                st.failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Drops the token with this [`AccessToken::serial`] if it is still the cached one.
    pub fn invalidate_serial(&self, serial: u64) {
        let mut st = self.state.lock().expect("token state");
        if st.token.as_ref().map(|t| t.serial) == Some(serial) {
            st.token = None;
            tracing::debug!("access token refused by storage: dropped, the next request fetches a new one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counting {
        calls: Arc<AtomicU64>,
        lifetime: Duration,
        fail: bool,
        delay: Duration,
    }

    #[async_trait::async_trait]
    impl TokenSource for Counting {
        async fn fetch(&self) -> Result<AccessToken, AuthError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(AuthError::Network("exchange refused".into()));
            }
            Ok(AccessToken::new(Secret::new(format!("token-{n}")), SystemTime::now() + self.lifetime))
        }
        fn identity(&self) -> String {
            "test".into()
        }
    }

    fn cache(lifetime: Duration, fail: bool, delay: Duration) -> (Arc<TokenCache>, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        (TokenCache::new(Box::new(Counting { calls: calls.clone(), lifetime, fail, delay })), calls)
    }

    #[test]
    fn token_endpoint_lifetimes_never_overflow_the_clock() {
        let now = SystemTime::now();
        assert_eq!(expiry_in(now, i64::MAX), now + MAX_LIFETIME);
        assert_eq!(expiry_in(now, i64::MIN), now);
        assert_eq!(expiry_in(now, 3600), now + Duration::from_secs(3600));
        assert_eq!(expiry_at(now, i64::MAX), now + MAX_LIFETIME);
        assert_eq!(expiry_at(now, -5), std::time::UNIX_EPOCH);
    }

    #[test]
    fn refresh_point_is_five_minutes_or_half_life() {
        let now = SystemTime::now();
        let mut t = AccessToken::new(Secret::new("x"), now + Duration::from_secs(3600));
        t.obtained_at = now;
        assert_eq!(t.refresh_at(), now + Duration::from_secs(3300));
        t.expires_at = now + Duration::from_secs(60);
        assert_eq!(t.refresh_at(), now + Duration::from_secs(30));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_fetch() {
        let (c, calls) = cache(Duration::from_secs(3600), false, Duration::from_millis(50));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                tokio::spawn({
                    let c = c.clone();
                    async move { c.get().await.unwrap().secret().expose().to_string() }
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "token-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidate_refreshes_once_and_only_the_used_token() {
        let (c, calls) = cache(Duration::from_secs(3600), false, Duration::ZERO);
        let first = c.get().await.unwrap();
        c.invalidate_serial(first.serial());
        let second = c.get().await.unwrap();
        assert_eq!(second.secret().expose(), "token-2");
        // A late refusal of the old token must not drop the new one.
        c.invalidate_serial(first.serial());
        assert_eq!(c.get().await.unwrap().secret().expose(), "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_tokens_refresh_at_half_life() {
        let (c, calls) = cache(Duration::from_millis(400), false, Duration::ZERO);
        assert_eq!(c.get().await.unwrap().secret().expose(), "token-1");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(c.get().await.unwrap().secret().expose(), "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failure_is_replayed_not_repeated() {
        let (c, calls) = cache(Duration::from_secs(3600), true, Duration::ZERO);
        assert!(c.get().await.is_err());
        assert!(c.get().await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_hides_the_token() {
        let t = AccessToken::new(Secret::new("eyJsecret"), SystemTime::now());
        assert!(!format!("{t:?}").contains("eyJsecret"));
    }
}
