//! A pre-minted Entra ID access token (`access_token`, or `AZURE_ACCESS_TOKEN`): used as
//! the bearer as it is, e.g. the token Harness's `plugins/azure-oidc` step exports, or one
//! minted by an earlier step (`az account get-access-token --resource https://storage.azure.com`).
//!
//! It is checked before any request, without verifying its signature (storage does that):
//! a JWT, for Azure Storage (`aud` `https://storage.azure.com`, or the account's own service
//! URL), not expired. It cannot be refreshed: once it expires, requests fail with a message
//! that says so. The start line names its `oid` / `appid`, never the token.

use std::time::{Duration, UNIX_EPOCH};

use crate::config::Secret;

use super::token::{AccessToken, TokenSource};
use super::AuthError;
pub use crate::jwt::check_access_token as check;
use crate::jwt::{self, Claims};

/// The identity a token names, for the start line: `oid` and `appid` (or `azp`).
pub fn identity(claims: &Claims) -> String {
    let mut parts = Vec::new();
    if let Some(o) = &claims.oid {
        parts.push(format!("oid {o}"));
    }
    if let Some(a) = &claims.appid {
        parts.push(format!("appid {a}"));
    }
    if let Some(e) = claims.exp {
        parts.push(format!("expires {}", jwt::time_and_distance(e, jwt::now_secs())));
    }
    format!("access token ({})", parts.join(", "))
}

/// Serves the one token until it expires.
pub struct StaticToken {
    token: Secret,
    claims: Claims,
}

impl StaticToken {
    pub fn new(token: Secret, claims: Claims) -> Self {
        StaticToken { token, claims }
    }
}

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        let exp = self.claims.exp.unwrap_or(0);
        let now = jwt::now_secs();
        if exp <= now {
            return Err(AuthError::Invalid(format!(
                "`access_token` (PLUGIN_ACCESS_TOKEN, AZURE_ACCESS_TOKEN) expired at {}: a pre-minted token cannot be refreshed; mint a longer-lived one just before this step, or use federated auth",
                jwt::time_and_distance(exp, now)
            )));
        }
        let expires_at = UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64);
        Ok(AccessToken::new(self.token.clone(), expires_at))
    }

    fn identity(&self) -> String {
        identity(&self.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::STORAGE_AUDIENCE;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn token(claims: serde_json::Value) -> String {
        format!("{}.{}.sig", URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[test]
    fn storage_audience_and_expiry_are_checked() {
        let exp = jwt::now_secs() + 600;
        let ep = "https://acct.blob.core.windows.net";
        let ok =
            token(serde_json::json!({"aud": "https://storage.azure.com/", "exp": exp, "oid": "o-1", "appid": "a-1"}));
        let c = check(&ok, ep).unwrap();
        assert!(identity(&c).starts_with("access token (oid o-1, appid a-1, expires "), "{}", identity(&c));
        assert!(check(&token(serde_json::json!({"aud": ep, "exp": exp})), ep).is_ok());
        let e = check(&token(serde_json::json!({"aud": "https://management.azure.com", "exp": exp})), ep).unwrap_err();
        assert!(e.contains("not a token for Azure Storage") && e.contains("management.azure.com"), "{e}");
        let e = check(&token(serde_json::json!({"aud": STORAGE_AUDIENCE, "exp": 1000})), ep).unwrap_err();
        assert!(e.contains("expired at 1970-01-01"), "{e}");
        assert!(check(&token(serde_json::json!({"aud": STORAGE_AUDIENCE})), ep).unwrap_err().contains("no expiry"));
        let e = check("not-a-token", ep).unwrap_err();
        assert!(e.contains("is not a JWT") && !e.contains("not-a-token"), "{e}");
    }
}
