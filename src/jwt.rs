//! Reading a JWT's claims without verifying it, for checks and explanations only.
//!
//! The plugin never trusts a token it decodes here: Entra ID verifies the CI's token,
//! storage verifies Entra's. Decoding serves two purposes: catching a malformed or
//! expired CI token before it is sent anywhere, and printing the claims a platform
//! engineer needs (`iss`, `sub`, `aud`, `exp`) when Entra refuses the exchange.
//! Nothing in this module ever returns or prints the token, its header or its
//! signature: [`Claims`] holds only the decoded claim values.
//!
//! A leaf: config checks tokens with it before any network call, auth explains them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The most a token file may hold: a CI's OIDC token is a few KiB; a file past this
/// (`/dev/zero`, a log mistaken for the token) is refused rather than read into memory.
pub const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// A token file's text, read up to [`MAX_TOKEN_FILE`] bytes: longer is an error, never a
/// read without end. (A FIFO still blocks until written: the signal watcher ends the run.)
pub fn read_token_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it holds more than {} KiB: not a token", MAX_TOKEN_FILE / 1024),
        ));
    }
    Ok(text)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("is not a JWT: expected three base64url parts separated by `.`, found {0}")]
    Parts(usize),
    #[error("is not a JWT: its {0} is not base64url-encoded JSON")]
    Encoding(&'static str),
    #[error("is an encrypted token (JWE), not a signed JWT")]
    Encrypted,
}

/// The claims that matter for federation, decoded but not verified; text claims are kept
/// with control characters escaped ([`crate::escape::shown`]): they are for printing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// `aud` may be a string or an array; kept as a list.
    pub aud: Vec<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    /// Entra access tokens: the application (client) id and object id, for the start line.
    pub appid: Option<String>,
    pub oid: Option<String>,
}

/// Decodes a compact JWS (`header.claims.signature`). The signature is not checked.
pub fn decode(token: &str) -> Result<Claims, JwtError> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 5 {
        return Err(JwtError::Encrypted);
    }
    if parts.len() != 3 || parts[0].is_empty() || parts[1].is_empty() {
        return Err(JwtError::Parts(parts.len()));
    }
    let json = |part: &str, what: &'static str| -> Result<serde_json::Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|_| JwtError::Encoding(what))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Encoding(what))?;
        if v.is_object() {
            Ok(v)
        } else {
            Err(JwtError::Encoding(what))
        }
    };
    json(parts[0], "header")?;
    let c = json(parts[1], "claims part")?;
    // Claims are printed (the start line, Entra explanations) and never trusted: each is
    // kept as `escape::shown` prints it, so a line break in `oid` cannot forge a log line.
    let text = |v: &str| crate::escape::shown(v).into_owned();
    let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(text);
    let n = |k: &str| c.get(k).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
    let aud = match c.get("aud") {
        Some(serde_json::Value::String(a)) => vec![text(a)],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(text)).collect(),
        _ => vec![],
    };
    Ok(Claims {
        iss: s("iss"),
        sub: s("sub"),
        aud,
        exp: n("exp"),
        nbf: n("nbf"),
        iat: n("iat"),
        appid: s("appid").or_else(|| s("azp")),
        oid: s("oid"),
    })
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Claims {
    /// Whether `exp` has passed (with no leeway: Entra rejects an expired assertion).
    pub fn expired_at(&self, now: i64) -> bool {
        self.exp.map(|e| e <= now).unwrap_or(false)
    }

    /// `aud` as written in a federated credential (the first audience; Entra takes one).
    pub fn audience(&self) -> Option<&str> {
        self.aud.first().map(|s| s.as_str())
    }

    /// Indented `iss`/`sub`/`aud`/`exp` lines for error messages.
    pub fn describe(&self, indent: &str) -> String {
        let now = now_secs();
        let mut out = String::new();
        let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{indent}{k:<4} {v}\n"));
        line(&mut out, "iss:", self.iss.clone().unwrap_or_else(|| "(missing)".into()));
        line(&mut out, "sub:", self.sub.clone().unwrap_or_else(|| "(missing)".into()));
        line(&mut out, "aud:", if self.aud.is_empty() { "(missing)".into() } else { self.aud.join(", ") });
        line(&mut out, "exp:", self.exp.map(|e| time_and_distance(e, now)).unwrap_or_else(|| "(missing)".into()));
        out
    }
}

impl fmt::Display for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe("").trim_end())
    }
}

/// `2026-01-02T03:04:05Z (expired 3m ago)` / `(in 4m 10s)`.
pub fn time_and_distance(t: i64, now: i64) -> String {
    let when = httpdate_utc(t);
    let d = t.abs_diff(now);
    let span = human_span(Duration::from_secs(d));
    if t <= now {
        format!("{when} (expired {span} ago)")
    } else {
        format!("{when} (in {span})")
    }
}

fn human_span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// An RFC 3339 UTC timestamp without pulling in a date crate.
pub fn httpdate_utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// Checks a CI token before it is sent anywhere: a JWT, not expired. Returns its claims,
/// or what is wrong as a predicate ("is not a JWT: …", "has expired: …") for the caller
/// to put after the name of the setting the token came from.
pub fn check_assertion(token: &str) -> Result<Claims, String> {
    let claims = decode(token).map_err(|e| e.to_string())?;
    let now = now_secs();
    if claims.expired_at(now) {
        return Err(format!(
            "has expired: exp {}; CI OIDC tokens live minutes, so pass one minted for this run (a token file or the Actions endpoint is re-read when needed)",
            time_and_distance(claims.exp.unwrap_or(0), now)
        ));
    }
    Ok(claims)
}

/// The audience of a token minted for `https://storage.azure.com/.default`.
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com";

/// Checks a pre-minted token; `endpoint` is the storage service URL (an account-scoped
/// audience such as `https://acct.blob.core.windows.net` is accepted for it).
pub fn check_access_token(token: &str, endpoint: &str) -> Result<Claims, String> {
    const MINT: &str = "mint it for the scope https://storage.azure.com/.default (e.g. `az account get-access-token --resource https://storage.azure.com --query accessToken -o tsv`)";
    let claims = decode(token).map_err(|e| format!("{e}: it must be an Entra ID access token (a JWT); {MINT}"))?;
    let origin = url::Url::parse(endpoint).ok().map(|u| u.origin().ascii_serialization());
    let for_storage = claims.aud.iter().any(|a| {
        let a = a.trim_end_matches('/');
        a.eq_ignore_ascii_case(STORAGE_AUDIENCE) || origin.as_deref().is_some_and(|o| a.eq_ignore_ascii_case(o))
    });
    if !for_storage {
        let aud = if claims.aud.is_empty() { "(missing)".to_string() } else { claims.aud.join(", ") };
        return Err(format!(
            "is not a token for Azure Storage: its audience (`aud`) is {aud}, not {STORAGE_AUDIENCE}; {MINT}"
        ));
    }
    let now = now_secs();
    match claims.exp {
        None => return Err(format!("has no expiry (`exp`): it is not an Entra ID access token; {MINT}")),
        Some(exp) if exp <= now => {
            return Err(format!(
                "expired at {}: a pre-minted token cannot be refreshed; mint it in the same job, just before this step, or use federated auth",
                time_and_distance(exp, now)
            ))
        }
        Some(_) => {}
    }
    Ok(claims)
}

/// Builds a JWT with a placeholder signature from claims (unit tests only).
#[cfg(test)]
pub fn fake_jwt(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = URL_SAFE_NO_PAD.encode(b"not-a-real-signature");
    format!("{header}.{body}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_string_and_array_audiences() {
        let t = fake_jwt(
            &json!({"iss":"https://issuer","sub":"repo:o/r:ref:refs/heads/main","aud":"api://AzureADTokenExchange","exp":2000000000}),
        );
        let c = decode(&t).unwrap();
        assert_eq!(c.iss.as_deref(), Some("https://issuer"));
        assert_eq!(c.sub.as_deref(), Some("repo:o/r:ref:refs/heads/main"));
        assert_eq!(c.audience(), Some("api://AzureADTokenExchange"));
        assert_eq!(c.exp, Some(2_000_000_000));
        let t = fake_jwt(&json!({"aud":["a","b"]}));
        assert_eq!(decode(&t).unwrap().aud, vec!["a", "b"]);
    }

    /// A claim is printed on the start line: a line break in it cannot start a new line.
    #[test]
    fn text_claims_are_kept_escaped() {
        let t = fake_jwt(&json!({"oid":"x\n2026-01-01T00:00:00Z  INFO forged","aud":["a\rb"],"sub":"\u{1b}[2J"}));
        let c = decode(&t).unwrap();
        assert_eq!(c.oid.as_deref(), Some("x\\n2026-01-01T00:00:00Z  INFO forged"));
        assert_eq!(c.aud, vec!["a\\rb"]);
        assert_eq!(c.sub.as_deref(), Some("\\u{1b}[2J"));
    }

    #[test]
    fn rejects_what_is_not_a_jwt() {
        assert_eq!(decode("hello"), Err(JwtError::Parts(1)));
        assert_eq!(decode("a.b.c.d.e"), Err(JwtError::Encrypted));
        assert_eq!(decode("!!!.e30.x"), Err(JwtError::Encoding("header")));
        let h = URL_SAFE_NO_PAD.encode(b"{}");
        assert_eq!(decode(&format!("{h}.bm90IGpzb24.x")), Err(JwtError::Encoding("claims part")));
        // A JSON value that is not an object is not a claims set.
        assert_eq!(decode(&format!("{h}.{}.x", URL_SAFE_NO_PAD.encode(b"42"))), Err(JwtError::Encoding("claims part")));
        // An unsigned JWT (empty signature) still decodes: we never verify.
        assert!(decode(&format!("{h}.{h}.")).is_ok());
    }

    #[test]
    fn describe_never_contains_the_signature() {
        let t = fake_jwt(&json!({"iss":"i","sub":"s","aud":"a","exp":1}));
        let sig = t.rsplit('.').next().unwrap();
        let text = decode(&t).unwrap().describe("  ");
        assert!(!text.contains(sig));
        assert!(text.contains("expired"), "{text}");
    }

    #[test]
    fn utc_rendering() {
        assert_eq!(httpdate_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(httpdate_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(httpdate_utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
