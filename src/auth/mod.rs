//! Credentials: which one is used, and how a request is authorized with it.
//!
//! `resolve` picks the credential from the settings (`auth: auto` walks the list in
//! DESIGN.md §3 order; `auth: <mode>` forces one and fails clearly when its inputs are
//! missing). `Credential::authorize` is applied by the HTTP layer to every attempt of
//! every request, so a retried request is re-signed with a fresh date.
//!
//! Keyless modes (federated workload identity, managed identity) plug in here as
//! further `Credential` variants backed by a refreshing token cache.

pub mod shared_key;

use crate::config::{AuthMode, Config, ConnectionString, Secret};
pub use shared_key::SharedKey;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: {0}")]
    Missing(String),
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

/// How requests are authorized.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Shared Key signing with the account key.
    SharedKey(SharedKey),
    /// A SAS query string appended to every request URL.
    Sas(Secret),
    /// No credential: only for dry runs.
    None,
}

impl Credential {
    /// The mode's name as printed on the start line (never a secret).
    pub fn describe(&self) -> &'static str {
        match self {
            Credential::SharedKey(_) => "shared key",
            Credential::Sas(_) => "SAS token",
            Credential::None => "none (dry run)",
        }
    }

    /// Whether requests carry an OAuth bearer token (Azure Files then needs
    /// `x-ms-file-request-intent: backup`). No bearer credential exists yet in this
    /// build; the keyless modes will return `true` here.
    pub fn is_bearer(&self) -> bool {
        false
    }

    /// Adds authorization to a request that is otherwise complete (`x-ms-date` set).
    pub fn authorize(&self, req: &mut reqwest::Request) {
        match self {
            Credential::SharedKey(k) => k.sign(req),
            Credential::Sas(sas) => {
                let url = req.url_mut();
                let q = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{}", sas.expose()),
                    _ => sas.expose().to_string(),
                };
                url.set_query(Some(&q));
            }
            Credential::None => {}
        }
    }
}

/// Chooses the credential. `auto` order: SAS, account key, connection string (the keyless
/// modes come first once they are configured).
pub fn resolve(cfg: &Config) -> Result<Credential, AuthError> {
    let a = &cfg.auth;
    let cs = match &a.connection_string {
        Some(c) => Some(
            ConnectionString::parse(c.expose()).map_err(|e| AuthError::Invalid(format!("connection_string {e}")))?,
        ),
        None => None,
    };
    let shared_key =
        |key: &Secret| SharedKey::new(&cfg.account, key).map_err(|e| AuthError::Invalid(format!("account_key: {e}")));
    let from_cs = |cs: &ConnectionString| -> Result<Option<Credential>, AuthError> {
        if let Some(sas) = &cs.sas {
            return Ok(Some(Credential::Sas(Secret::new(sas.expose().trim_start_matches('?')))));
        }
        if let Some(key) = &cs.account_key {
            return Ok(Some(Credential::SharedKey(shared_key(key)?)));
        }
        Ok(None)
    };
    match a.mode {
        AuthMode::Sas => a
            .sas_token
            .clone()
            .map(Credential::Sas)
            .ok_or_else(|| AuthError::Missing("`auth: sas` needs `sas_token` (PLUGIN_SAS_TOKEN)".into())),
        AuthMode::SharedKey => match &a.account_key {
            Some(k) => Ok(Credential::SharedKey(shared_key(k)?)),
            None => Err(AuthError::Missing("`auth: shared_key` needs `account_key` (PLUGIN_ACCOUNT_KEY)".into())),
        },
        AuthMode::ConnectionString => match &cs {
            Some(cs) => from_cs(cs)?.ok_or_else(|| {
                AuthError::Missing("the connection string has neither `AccountKey=` nor `SharedAccessSignature=`".into())
            }),
            None => Err(AuthError::Missing(
                "`auth: connection_string` needs `connection_string` (PLUGIN_CONNECTION_STRING or AZURE_STORAGE_CONNECTION_STRING)".into(),
            )),
        },
        AuthMode::Federated | AuthMode::ManagedIdentity => Err(AuthError::Missing(format!(
            "`auth: {}` is not available in this build",
            if a.mode == AuthMode::Federated { "federated" } else { "managed_identity" }
        ))),
        AuthMode::Auto => {
            if let Some(sas) = &a.sas_token {
                return Ok(Credential::Sas(sas.clone()));
            }
            if let Some(k) = &a.account_key {
                return Ok(Credential::SharedKey(shared_key(k)?));
            }
            if let Some(cs) = &cs {
                if let Some(c) = from_cs(cs)? {
                    return Ok(c);
                }
            }
            if cfg.dry_run {
                return Ok(Credential::None);
            }
            Err(AuthError::Missing(
                "looked for `sas_token` (PLUGIN_SAS_TOKEN, AZURE_STORAGE_SAS_TOKEN), `account_key` (PLUGIN_ACCOUNT_KEY, AZURE_STORAGE_KEY) and `connection_string` (PLUGIN_CONNECTION_STRING, AZURE_STORAGE_CONNECTION_STRING); none is set"
                    .into(),
            ))
        }
    }
}
