//! Shared Key request signing (account key).
//!
//! The string-to-sign follows
//! <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>:
//! verb, the standard headers, the canonicalized `x-ms-*` headers, and the canonicalized
//! resource `/<account><path>` followed by the sorted query parameters. The same format
//! serves Blob and Files (version 2009-09-19 and later).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use sha2::Sha256;

use crate::config::Secret;

/// An account name and its decoded key. `Debug` never shows the key.
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey").field("account", &self.account).field("key", &"***").finish()
    }
}

impl SharedKey {
    pub fn new(account: &str, key: &Secret) -> Result<Self, String> {
        let key = B64.decode(key.expose().trim()).map_err(|_| "the account key is not base64".to_string())?;
        // The account goes into the Authorization header: visible ASCII, no `:`.
        if !account.chars().all(|c| c.is_ascii_graphic() && c != ':') {
            return Err(format!(
                "the account name `{}` cannot sign a request: set `account_name` (3-24 lowercase letters and digits)",
                account.escape_debug()
            ));
        }
        Ok(SharedKey { account: account.to_string(), key })
    }

    /// The account the key belongs to.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The base64 HMAC-SHA256 of `message` under the key: the signature of a service SAS
    /// (`sig`). Goes only into a link, never into the log.
    pub fn sign_message(&self, message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(message.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// Adds `Authorization: SharedKey account:signature` to a request whose `x-ms-date` is set.
    pub fn sign(&self, req: &mut reqwest::Request) {
        let sig = self.sign_message(&string_to_sign(&self.account, req));
        // The account was checked in `new` and base64 is ASCII; were it not, the request
        // goes unsigned and the service answers 403, which names the problem.
        if let Ok(value) = HeaderValue::from_str(&format!("SharedKey {}:{}", self.account, sig)) {
            req.headers_mut().insert(AUTHORIZATION, value);
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Builds the Shared Key string-to-sign for a request.
pub fn string_to_sign(account: &str, req: &reqwest::Request) -> String {
    let h = req.headers();
    let len = req.body().and_then(|b| b.as_bytes()).map(|b| b.len()).unwrap_or(0);
    let content_length = if len == 0 { String::new() } else { len.to_string() };
    let mut s = String::with_capacity(256);
    s.push_str(req.method().as_str());
    s.push('\n');
    for (i, name) in [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ]
    .iter()
    .enumerate()
    {
        if i == 2 {
            s.push_str(&content_length);
        } else {
            s.push_str(header(h, name));
        }
        s.push('\n');
    }
    // Canonicalized headers: x-ms-*, lowercase, sorted, `name:value`.
    let mut ms: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").trim().to_string()))
        .collect();
    ms.sort();
    for (k, v) in ms {
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    // Canonicalized resource: /account/path, then sorted lowercase query params.
    s.push('/');
    s.push_str(account);
    s.push_str(req.url().path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in req.url().query_pairs() {
        let k = k.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vals)) => vals.push(v.into_owned()),
            None => params.push((k, vec![v.into_owned()])),
        }
    }
    params.sort();
    for (k, mut vals) in params {
        vals.sort();
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&vals.join(","));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_sign_layout() {
        let client = reqwest::Client::new();
        let mut req = client
            .put("http://127.0.0.1:10000/devstoreaccount1/c/a%20b.txt?comp=block&blockid=QUJD")
            .header("x-ms-version", "2025-11-05")
            .header("x-ms-date", "Mon, 23 Nov 2026 07:00:00 GMT")
            .header("content-type", "text/plain")
            .body("hello")
            .build()
            .unwrap();
        let sts = string_to_sign("devstoreaccount1", &req);
        assert_eq!(
            sts,
            "PUT\n\n\n5\n\ntext/plain\n\n\n\n\n\n\nx-ms-date:Mon, 23 Nov 2026 07:00:00 GMT\nx-ms-version:2025-11-05\n/devstoreaccount1/devstoreaccount1/c/a%20b.txt\nblockid:QUJD\ncomp:block"
        );
        let key = SharedKey::new("devstoreaccount1", &Secret::new(crate::config::DEVSTORE_KEY)).unwrap();
        key.sign(&mut req);
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.starts_with("SharedKey devstoreaccount1:"));
        assert!(!format!("{key:?}").contains("Eby8"));
    }
}
