//! Entra ID errors, explained so that a platform engineer can act on them.
//!
//! When Entra refuses the client-assertion exchange it answers with JSON such as
//! `{"error":"invalid_client","error_description":"AADSTS700213: No matching federated
//! identity record found for presented assertion subject '…'…","error_codes":[700213],
//! "trace_id":"…","correlation_id":"…"}`
//! (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>).
//! [`EntraFailure`] turns that into: the code in plain words, the presented token's
//! `iss`/`sub`/`aud`/`exp` (decoded, never verified, never the signature or the token),
//! what the federated credential on the app registration must contain to match, and the
//! `az ad app federated-credential create` line that creates it. Entra's own trace and
//! correlation ids are printed too: support needs them.

use std::fmt;

use crate::jwt::{self, Claims};

/// What Entra said, plus the context to explain it.
#[derive(Debug, Clone)]
pub struct EntraFailure {
    pub status: u16,
    /// OAuth `error` (`invalid_client`, `invalid_request`, …).
    pub error: String,
    pub codes: Vec<u64>,
    /// First line of `error_description` (Entra's own words; it holds no secret).
    pub description: String,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
    pub client_id: String,
    pub tenant_id: String,
    /// Where the CI token came from, e.g. "`federated_token_file` (/var/run/…)".
    pub token_source: String,
    /// The presented token's claims (decoded, not verified).
    pub presented: Option<Claims>,
}

/// How a code is explained, and which fix applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fix {
    /// Create a federated credential matching the token (issuer/subject/audience).
    FederatedCredential,
    /// The token itself is expired or not yet valid.
    TokenLifetime,
    /// The client id / tenant id settings are wrong.
    AppOrTenant,
    /// Entra cannot verify the token's signature with the issuer's published keys.
    IssuerKeys,
    /// Nothing specific: Entra's text and the lookup page.
    Unknown,
}

/// Plain words for the codes federated sign-in meets most.
fn meaning(code: u64) -> (Fix, &'static str) {
    match code {
        700211 => (
            Fix::FederatedCredential,
            "no federated credential on the app registration has this token's issuer (`iss`)",
        ),
        700212 => (
            Fix::FederatedCredential,
            "no federated credential on the app registration has this token's audience (`aud`); the credential's audience is usually `api://AzureADTokenExchange`, and the CI must request its token for that audience",
        ),
        700213 => (
            Fix::FederatedCredential,
            "no federated credential on the app registration has this token's subject (`sub`); the subject must match exactly, character for character",
        ),
        7002138 => (
            Fix::FederatedCredential,
            "a federated credential matches this token only when letter case is ignored; Entra compares issuer and subject case-sensitively (since 2024), so copy them exactly as below",
        ),
        70021 => (
            Fix::FederatedCredential,
            "no federated credential on the app registration matches this token's issuer, subject and audience together",
        ),
        700024 => (
            Fix::TokenLifetime,
            "the CI's OIDC token is expired or not yet valid; CI tokens live minutes, so request the token in the same step (or use a token file the runner keeps fresh) and check the machine's clock",
        ),
        700016 => (
            Fix::AppOrTenant,
            "no application with this client id exists in this tenant: `client_id` must be the app registration's Application (client) ID (not its object ID) and `tenant_id` its Directory (tenant) ID",
        ),
        90002 | 900023 => (
            Fix::AppOrTenant,
            "the tenant does not exist or is not a valid tenant id: `tenant_id` must be the Directory (tenant) ID (a GUID) or a verified domain such as contoso.onmicrosoft.com",
        ),
        700027 | 50027 => (
            Fix::IssuerKeys,
            "Entra could not validate the token's signature: it fetches the issuer's keys from `<iss>/.well-known/openid-configuration`, which must be reachable from the internet (a private Kubernetes OIDC issuer is not)",
        ),
        _ => (Fix::Unknown, "Entra ID refused the token exchange"),
    }
}

/// Escapes a value for a single-quoted POSIX shell word.
fn shell_single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A federated-credential name derived from the subject (Entra: 3-120 chars, `[A-Za-z0-9-_]`).
fn credential_name(sub: &str) -> String {
    let mut n: String = sub.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    while n.contains("--") {
        n = n.replace("--", "-");
    }
    let n = n.trim_matches('-');
    let n: String = n.chars().take(100).collect();
    if n.len() < 3 {
        "ci-federation".into()
    } else {
        format!("ci-{n}")
    }
}

impl EntraFailure {
    /// The first AADSTS code (from `error_codes`, else from the description).
    pub fn code(&self) -> Option<u64> {
        self.codes.first().copied().or_else(|| {
            let i = self.description.find("AADSTS")? + 6;
            let digits: String = self.description[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
    }

    /// `az ad app federated-credential create …` for the presented token, if it has iss and sub.
    pub fn az_command(&self) -> Option<String> {
        let c = self.presented.as_ref()?;
        let iss = c.iss.as_deref()?;
        let sub = c.sub.as_deref()?;
        let aud = c.audience().unwrap_or("api://AzureADTokenExchange");
        let params = serde_json::json!({
            "name": credential_name(sub),
            "issuer": iss,
            "subject": sub,
            "audiences": [aud],
        });
        Some(format!(
            "az ad app federated-credential create --id {} --parameters {}",
            shell_single_quoted(&self.client_id),
            shell_single_quoted(&params.to_string())
        ))
    }
}

impl fmt::Display for EntraFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        let (fix, words) = code.map(meaning).unwrap_or((Fix::Unknown, "Entra ID refused the token exchange"));
        match code {
            Some(c) => write!(f, "Entra ID refused the token exchange: AADSTS{c}: {words}")?,
            None => write!(f, "Entra ID refused the token exchange (HTTP {}, {}): {words}", self.status, self.error)?,
        }
        write!(f, "\n  app (client_id): {}   tenant_id: {}", self.client_id, self.tenant_id)?;
        if !self.description.is_empty() {
            write!(f, "\n  Entra said: {}", self.description)?;
        }
        match &self.presented {
            Some(c) => {
                write!(f, "\n  presented token, from {} (decoded, not verified):\n", self.token_source)?;
                f.write_str(c.describe("    ").trim_end_matches('\n'))?;
            }
            None => write!(f, "\n  presented token, from {}: (its claims could not be decoded)", self.token_source)?,
        }
        match fix {
            Fix::FederatedCredential => {
                if let Some(c) = &self.presented {
                    let aud = c.audience().unwrap_or("api://AzureADTokenExchange");
                    write!(
                        f,
                        "\n  the app registration needs a federated credential with exactly (case-sensitive):\n    issuer:   {}\n    subject:  {}\n    audience: {aud}",
                        c.iss.as_deref().unwrap_or("(the token has no iss)"),
                        c.sub.as_deref().unwrap_or("(the token has no sub)"),
                    )?;
                    if let Some(cmd) = self.az_command() {
                        write!(f, "\n  create it with:\n    {cmd}")?;
                    }
                    write!(
                        f,
                        "\n  (for a user-assigned managed identity: az identity federated-credential create --identity-name <name> --resource-group <group> --name <name> --issuer <issuer> --subject <subject> --audiences {aud})"
                    )?;
                }
            }
            Fix::TokenLifetime => {
                if let Some(c) = &self.presented {
                    let now = jwt::now_secs();
                    if let Some(nbf) = c.nbf.filter(|n| *n > now) {
                        write!(f, "\n  the token is not valid before {}", jwt::time_and_distance(nbf, now))?;
                    }
                }
            }
            Fix::AppOrTenant => {
                write!(f, "\n  check with: az ad app show --id {} --query '{{appId:appId,displayName:displayName}}' (signed in to tenant {})", shell_single_quoted(&self.client_id), self.tenant_id)?;
            }
            Fix::IssuerKeys => {
                if let Some(iss) = self.presented.as_ref().and_then(|c| c.iss.as_deref()) {
                    write!(f, "\n  check: curl -sf {iss}/.well-known/openid-configuration")?;
                }
            }
            Fix::Unknown => {
                if let Some(c) = code {
                    write!(f, "\n  look the code up: https://login.microsoftonline.com/error?code={c}")?;
                }
            }
        }
        if self.trace_id.is_some() || self.correlation_id.is_some() {
            write!(
                f,
                "\n  Entra trace id {}, correlation id {}",
                self.trace_id.as_deref().unwrap_or("-"),
                self.correlation_id.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

/// Parses Entra's error JSON. Anything that is not JSON becomes a description (first line).
pub fn parse(status: u16, body: &[u8]) -> (String, Vec<u64>, String, Option<String>, Option<String>) {
    #[derive(serde::Deserialize, Default)]
    struct Body {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
        #[serde(default)]
        error_codes: Vec<u64>,
        trace_id: Option<String>,
        correlation_id: Option<String>,
    }
    // Entra's words are printed: escaped, so none can forge a log line.
    let shown = |s: &str| crate::escape::shown(s).into_owned();
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => {
            let first = shown(b.error_description.lines().next().unwrap_or("").trim());
            let ids = |v: Option<String>| v.map(|v| shown(&v));
            (shown(&b.error), b.error_codes, first, ids(b.trace_id), ids(b.correlation_id))
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let first: String = text.lines().next().unwrap_or("").chars().take(200).collect();
            (format!("HTTP {status}"), vec![], shown(&first), None, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: u64) -> EntraFailure {
        EntraFailure {
            status: 400,
            error: "invalid_client".into(),
            codes: vec![code],
            description: format!("AADSTS{code}: something happened."),
            trace_id: Some("trace-1".into()),
            correlation_id: Some("corr-1".into()),
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            tenant_id: "00000000-0000-0000-0000-000000000000".into(),
            token_source: "`federated_token` (PLUGIN_FEDERATED_TOKEN)".into(),
            presented: Some(Claims {
                iss: Some("https://token.actions.githubusercontent.com".into()),
                sub: Some("repo:Org/App:ref:refs/heads/main".into()),
                aud: vec!["api://AzureADTokenExchange".into()],
                exp: Some(jwt::now_secs() - 120),
                ..Claims::default()
            }),
        }
    }

    #[test]
    fn federated_credential_codes_print_the_claims_and_the_az_line() {
        for code in [700211, 700212, 700213, 7002138, 70021] {
            let text = failure(code).to_string();
            assert!(text.contains(&format!("AADSTS{code}: ")), "{text}");
            assert!(text.contains("iss: https://token.actions.githubusercontent.com"), "{text}");
            assert!(text.contains("sub: repo:Org/App:ref:refs/heads/main"), "{text}");
            assert!(text.contains("aud: api://AzureADTokenExchange"), "{text}");
            assert!(text.contains("exp: "), "{text}");
            assert!(text.contains("subject:  repo:Org/App:ref:refs/heads/main"), "{text}");
            assert!(
                text.contains(r#"az ad app federated-credential create --id '11111111-1111-1111-1111-111111111111' --parameters '{"audiences":["api://AzureADTokenExchange"],"issuer":"https://token.actions.githubusercontent.com","name":"ci-repo-Org-App-ref-refs-heads-main","subject":"repo:Org/App:ref:refs/heads/main"}'"#),
                "{text}"
            );
            assert!(text.contains("trace id trace-1, correlation id corr-1"), "{text}");
        }
        assert!(failure(700213).to_string().contains("subject (`sub`)"));
        assert!(failure(700211).to_string().contains("issuer (`iss`)"));
        assert!(failure(700212).to_string().contains("audience (`aud`)"));
        assert!(failure(7002138).to_string().contains("case"));
    }

    #[test]
    fn expiry_tenant_and_unknown_codes() {
        let t = failure(700024).to_string();
        assert!(t.contains("expired or not yet valid"), "{t}");
        assert!(t.contains("expired 2m"), "{t}");
        assert!(!t.contains("federated-credential create"), "{t}");
        let t = failure(700016).to_string();
        assert!(t.contains("Application (client) ID"), "{t}");
        assert!(t.contains("az ad app show --id '11111111-1111-1111-1111-111111111111'"), "{t}");
        let t = failure(9999999).to_string();
        assert!(t.contains("AADSTS9999999: Entra ID refused the token exchange"), "{t}");
        assert!(t.contains("Entra said: AADSTS9999999: something happened."), "{t}");
        assert!(t.contains("https://login.microsoftonline.com/error?code=9999999"), "{t}");
    }

    #[test]
    fn entra_words_are_escaped() {
        let body = br#"{"error":"invalid_client\u001b[2J","error_description":"AADSTS7000215: bad\rINFO forged\nTrace ID: x","trace_id":"t\r1"}"#;
        let (error, _, description, trace, _) = parse(401, body);
        assert_eq!(error, "invalid_client\\u{1b}[2J");
        assert_eq!(description, "AADSTS7000215: bad\\rINFO forged");
        assert_eq!(trace.as_deref(), Some("t\\r1"));
    }

    #[test]
    fn code_from_the_description_when_the_list_is_missing() {
        let mut f = failure(700213);
        f.codes.clear();
        assert_eq!(f.code(), Some(700213));
    }

    #[test]
    fn parses_entra_json_and_junk() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found.\r\nTrace ID: x","error_codes":[700213],"trace_id":"t","correlation_id":"c"}"#;
        let (e, codes, d, t, c) = parse(400, body);
        assert_eq!(
            (e.as_str(), codes, d.as_str()),
            ("invalid_client", vec![700213], "AADSTS700213: No matching federated identity record found.")
        );
        assert_eq!((t.as_deref(), c.as_deref()), (Some("t"), Some("c")));
        let (e, codes, d, _, _) = parse(502, b"<html>bad gateway</html>");
        assert_eq!((e.as_str(), codes.len(), d.as_str()), ("HTTP 502", 0, "<html>bad gateway</html>"));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_single_quoted("a'b"), r"'a'\''b'");
        assert_eq!(credential_name("system:serviceaccount:ci:woodpecker"), "ci-system-serviceaccount-ci-woodpecker");
    }
}
