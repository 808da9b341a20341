//! What the HTTP layer needs of a credential, and nothing more: [`Authorize`].
//!
//! The HTTP layer knows no credential type. `auth::Credential` implements this trait;
//! the client calls it on every attempt (so a retried request is re-signed with a fresh
//! date, or carries the cache's current token) and tells it when storage refused the
//! token an attempt carried.

/// Names the bearer token one attempt carried, so that a refusal drops exactly it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsed(pub u64);

/// Why an attempt could not be authorized (no token could be had): not retried by the
/// HTTP layer, since the token source has already retried what was transient.
pub type AuthorizeError = Box<dyn std::error::Error + Send + Sync>;

/// A credential, as the HTTP layer uses it.
#[async_trait::async_trait]
pub trait Authorize: Send + Sync {
    /// Adds authorization to one attempt's request, otherwise complete (`x-ms-date` set).
    /// Returns the bearer token used, if any.
    async fn authorize(&self, req: &mut reqwest::Request) -> Result<Option<TokenUsed>, AuthorizeError>;

    /// Storage refused the token `used`: drop it, so the next attempt fetches a new one.
    fn refused(&self, used: TokenUsed);

    /// Whether requests carry an OAuth bearer token.
    fn is_bearer(&self) -> bool;

    /// What to add to the message of a refusal with Azure error `code` (a missing role,
    /// say), or `None`.
    fn refusal_hint(&self, _code: &str) -> Option<String> {
        None
    }

    /// The query a URL naming another resource of the request (a rename source) must carry
    /// to be authorized on its own: a SAS. `None` when the request's own authorization
    /// covers it.
    fn source_query(&self) -> Option<&str> {
        None
    }
}
