//! The run-wide stop: a refusal that will recur for every request ends the run early.
//!
//! A wrong account key, an expired SAS, a missing role, a storage firewall, a container
//! deleted mid-run or a redirect (Azure Storage never redirects: a proxy or captive portal
//! answered) fails every file the same way. Sending the rest would only repeat it, so the
//! first such refusal *trips* the [`Stop`]: the HTTP layer sends nothing more, and the
//! engine starts no queued file (it reports them as not attempted). A bearer token has
//! already been refreshed once when a refusal arrives here (see `Http::send`).
//!
//! The stop is *armed* only while files are being transferred: before that (the container
//! check, listings) a refusal either ends the run by itself or is tolerated on purpose
//! (a SAS scoped to blobs may not read the container's properties).
//!
//! An interrupt (SIGTERM, SIGINT) stops every run in the process at once ([`interrupt`]):
//! from then on every [`Stop`] reads as stopped, armed or not, so no request is sent
//! (no block committed) and no queued file starts, whatever task is still running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The `code` of a stop because the run's only credential could not produce a token
/// mid-run (Entra, the token file, the Actions endpoint or the managed identity failed
/// after the first token): `status` is then 0 (no response).
pub const TOKEN_REFRESH_FAILED: &str = "TokenRefreshFailed";

/// Set once by [`interrupt`]; read by every [`Stop`].
static INTERRUPTED: OnceLock<StopReason> = OnceLock::new();

/// Stops the process's run now (SIGTERM or SIGINT, named in `signal`): nothing more is
/// sent, whichever task asks. Later calls change nothing.
pub fn interrupt(signal: &str) {
    let _ = INTERRUPTED.set(StopReason { status: 0, code: None, error: format!("interrupted by {signal}") });
}

/// What stopped the run.
#[derive(Debug, Clone)]
pub struct StopReason {
    /// The refusal's HTTP status; 0 when no response caused it ([`TOKEN_REFRESH_FAILED`]).
    pub status: u16,
    pub code: Option<String>,
    /// The failed request in full (method, path, status, code, request ids).
    pub error: String,
}

#[derive(Debug, Default)]
pub struct Stop {
    armed: AtomicBool,
    reason: OnceLock<StopReason>,
}

impl Stop {
    /// From now on, a refusal that will recur for every request stops the run.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Records the first reason (when armed); later ones are the same failure again.
    pub fn trip(&self, reason: StopReason) {
        if self.armed.load(Ordering::SeqCst) {
            let _ = self.reason.set(reason);
        }
    }

    /// The refusal that stopped the run, else the interrupt, if either happened.
    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get().or_else(|| INTERRUPTED.get())
    }

    pub fn is_stopped(&self) -> bool {
        self.reason.get().is_some()
    }
}

/// 403 codes that mean "this credential, network or account refuses us", whatever the blob.
const FATAL_403: &[&str] = &[
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationProtocolMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "AuthorizationSourceIPMismatch",
    "InvalidAuthenticationInfo",
    "InsufficientAccountPermissions",
    "KeyBasedAuthenticationNotPermitted",
    "AccountIsDisabled",
];

/// Will this refusal recur for every request of the run? Redirects, 401, the 403s of
/// [`FATAL_403`] (or a 403 without a code: a HEAD carries no body), and a missing
/// container or share. Anything about one blob (404 BlobNotFound, 409, 412) is not.
pub fn fatal_for_all(status: u16, code: Option<&str>) -> bool {
    match status {
        300..=399 | 401 => true,
        403 => code.is_none_or(|c| FATAL_403.contains(&c)),
        404 => matches!(code, Some("ContainerNotFound" | "ShareNotFound")),
        _ => false,
    }
}

/// A `Location` made safe to print: resolved against the request URL, without its query
/// (it may hold a SAS), fragment or user info.
pub fn safe_location(base: &url::Url, location: &str) -> String {
    match base.join(location) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "an unreadable Location".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_refusals_stop_the_run() {
        for s in [301, 302, 303, 304, 307, 308, 401] {
            assert!(fatal_for_all(s, None), "{s}");
        }
        for c in ["AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch"] {
            assert!(fatal_for_all(403, Some(c)), "{c}");
        }
        assert!(fatal_for_all(403, None), "a HEAD's 403 has no code in a body");
        assert!(fatal_for_all(404, Some("ContainerNotFound")));
        assert!(fatal_for_all(404, Some("ShareNotFound")));
        assert!(!fatal_for_all(404, Some("BlobNotFound")));
        assert!(!fatal_for_all(404, None));
        assert!(!fatal_for_all(409, Some("BlobAlreadyExists")));
        assert!(!fatal_for_all(412, Some("ConditionNotMet")));
        assert!(!fatal_for_all(403, Some("BlobArchived")), "one blob's state, not the credential");
        assert!(!fatal_for_all(500, None));
    }

    #[test]
    fn a_stop_trips_only_when_armed_and_keeps_the_first_reason() {
        let r = |status| StopReason { status, code: None, error: format!("{status}") };
        let s = Stop::default();
        s.trip(r(401));
        assert!(!s.is_stopped(), "not armed: the container check may tolerate a 403");
        s.arm();
        s.trip(r(403));
        s.trip(r(401));
        assert_eq!(s.reason().map(|r| r.status), Some(403));
    }

    #[test]
    fn a_location_is_printed_without_query_fragment_or_user_info() {
        let base: url::Url = "https://acct.blob.core.windows.net/c/a.txt?sv=1&sig=SECRET".parse().unwrap();
        assert_eq!(
            safe_location(&base, "http://user:pw@portal.example:8080/login?sig=SECRET#x"),
            "http://portal.example:8080/login"
        );
        assert_eq!(safe_location(&base, "/elsewhere?sig=SECRET"), "https://acct.blob.core.windows.net/elsewhere");
    }
}
