//! `link_expiry`: a read-only link per uploaded blob, for people without access.
//!
//! A link is the blob's URL with a service SAS (`sr=b`, `sp=r`, `se` = now + `link_expiry`)
//! signed with the account key ([`SharedKey::sign_message`]), built locally: no request.
//! The string-to-sign is the one for service SAS version 2020-12-06 and later
//! ([`service_sas_string_to_sign`]). Links go only to the outputs, the manifest and the
//! Actions step summary ([`step_summary`]), never to the log. A SAS-token credential cannot
//! make a link (exit 2); an Entra credential would need a user-delegation key, not built yet
//! (exit 2, saying so).

use std::time::{Duration, SystemTime};

use crate::auth::{Credential, SharedKey};
use crate::config::human_bytes;
use crate::http::API_VERSION;

/// Makes the links of one run, all expiring at the same instant.
pub struct Linker {
    key: SharedKey,
    container: String,
    /// `se`, RFC 3339 UTC to the second.
    expiry: String,
}

impl Linker {
    /// The linker for `credential`, or why this credential cannot sign a link (a settings
    /// problem: exit 2).
    pub fn new(credential: &Credential, container: &str, now: SystemTime, valid: Duration) -> Result<Self, String> {
        let key = match credential {
            Credential::SharedKey(k) => k.clone(),
            Credential::Sas(_) => {
                return Err("`link_expiry` (PLUGIN_LINK_EXPIRY) cannot be used with a SAS token: a link must be signed with the account key (`account_key`, or a connection string with AccountKey); leave `link_expiry` out, or use the key".into())
            }
            Credential::Bearer(_) => {
                return Err("`link_expiry` (PLUGIN_LINK_EXPIRY) needs the account key for now: links signed with a user-delegation key (Entra credentials) are not built yet; leave `link_expiry` out, or use `account_key`".into())
            }
            Credential::None => return Err("`link_expiry` (PLUGIN_LINK_EXPIRY) needs a credential to sign links with".into()),
        };
        let at = now.checked_add(valid).unwrap_or(now).duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Ok(Linker { key, container: container.to_string(), expiry: crate::jwt::httpdate_utc(at.as_secs() as i64) })
    }

    /// When every link of this run expires (RFC 3339 UTC).
    pub fn expiry(&self) -> &str {
        &self.expiry
    }

    /// The link to blob `name`, whose URL is `url`.
    pub fn link(&self, name: &str, url: &str) -> String {
        let sts = service_sas_string_to_sign(self.key.account(), &self.container, name, &self.expiry, API_VERSION);
        let sig = self.key.sign_message(&sts);
        format!("{url}?sv={API_VERSION}&sr=b&sp=r&se={}&sig={}", query_encode(&self.expiry), query_encode(&sig))
    }
}

/// The string-to-sign of a read-only service SAS on one blob (version 2020-12-06 and
/// later): permissions, start, expiry, canonical resource, identifier, IP, protocol,
/// version, resource, snapshot time, encryption scope, and the five response headers.
pub fn service_sas_string_to_sign(account: &str, container: &str, blob: &str, expiry: &str, version: &str) -> String {
    [
        "r",
        "",
        expiry,
        &format!("/blob/{account}/{container}/{blob}"),
        "",
        "",
        "",
        version,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n")
}

/// Percent-encodes a query value: everything but the unreserved characters.
fn query_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One row of the step summary.
#[derive(Clone)]
pub struct Row {
    pub name: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: String,
}

/// The Markdown table appended to `GITHUB_STEP_SUMMARY`: name, size, SHA-256, link, expiry.
pub fn step_summary(rows: &[Row], expiry: &str) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut out =
        String::from("\n### Uploaded files\n\n| name | size | SHA-256 | link | expires |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | [download]({}) | {} |\n",
            cell(&r.name).replace('`', "'"),
            human_bytes(r.size),
            r.sha256.as_deref().unwrap_or(""),
            cell(&r.link).replace('(', "%28").replace(')', "%29"),
            expiry
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_to_sign_has_sixteen_fields_in_the_documented_order() {
        let s = service_sas_string_to_sign("acct", "c", "a b/é.txt", "2026-12-09T10:00:00Z", "2025-11-05");
        assert_eq!(s, "r\n\n2026-12-09T10:00:00Z\n/blob/acct/c/a b/é.txt\n\n\n\n2025-11-05\nb\n\n\n\n\n\n\n");
        assert_eq!(s.split('\n').count(), 16);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_encode("2026-12-09T10:00:00Z"), "2026-12-09T10%3A00%3A00Z");
        assert_eq!(query_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }

    #[test]
    fn a_name_cannot_break_the_summary_table() {
        let rows = [Row { name: "a|b`c\n.txt".into(), size: 3, sha256: None, link: "https://x/y?sig=a(b)".into() }];
        let t = step_summary(&rows, "2026-12-09T10:00:00Z");
        let line = t.lines().last().unwrap();
        assert_eq!(line.matches(" | ").count(), 4, "{line}");
        assert!(line.contains("(https://x/y?sig=a%28b%29)"), "{line}");
    }
}
