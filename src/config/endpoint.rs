//! Service URLs from settings: every endpoint the plugin talks to is parsed here, once,
//! during validation, into a [`url::Url`] with an `http`/`https` scheme, a host, and no
//! query, fragment or user info, so that no later step can meet a URL it cannot build
//! (a panic, or a retried "builder error"). Also the storage account and DNS-suffix
//! rules, and [`shown`], which prints a rejected URL without what might be a secret.

use super::auth::{account_from_endpoint, ConnectionString};
use super::{Problems, RawSettings, Service};
use crate::settings;

/// What every service-URL error says is accepted.
pub(super) const ACCEPTED: &str = "an http:// or https:// URL with a host and no query, e.g. https://myaccount.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1";

/// Parses a storage service URL (`endpoint`, `BlobEndpoint=`, `FileEndpoint=`, or the one
/// built from `account_name` and `endpoint_suffix`). A trailing `/` is dropped.
pub(super) fn service_url(text: &str) -> Result<url::Url, String> {
    let t = text.trim();
    let t = t.trim_end_matches('/');
    let u = http_url(t)?;
    if u.query().is_some() {
        return Err(format!(
            "`{}` carries a query string (a SAS?): give the bare service URL and the SAS in `sas_token`",
            shown(t)
        ));
    }
    Ok(u)
}

/// The checks every URL from settings gets: no spaces or control characters (the URL
/// parser silently drops tabs and newlines), http or https, a host, no user info, no
/// fragment. Errors never print user info or a query.
pub(super) fn http_url(t: &str) -> Result<url::Url, String> {
    if t.is_empty() {
        return Err(format!("is empty: expected {ACCEPTED}"));
    }
    if let Some(c) = t.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{}` contains {}: expected {ACCEPTED}", shown(t), describe_char(c)));
    }
    let u = url::Url::parse(t).map_err(|e| format!("`{}` is not a URL ({e}): expected {ACCEPTED}", shown(t)))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("`{}` has the scheme `{}`: expected {ACCEPTED}", shown(t), u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{}` has no host: expected {ACCEPTED}", shown(t)));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "`{}` carries a user name or password: expected {ACCEPTED}; give credentials in their own settings",
            shown(t)
        ));
    }
    if u.fragment().is_some() {
        return Err(format!("`{}` carries a `#` fragment: expected {ACCEPTED}", shown(t)));
    }
    Ok(u)
}

/// A URL (or what was meant to be one) as it may be printed: without user info, query
/// or fragment, which may hold a password or a SAS signature.
pub fn shown(t: &str) -> String {
    let cut = t.find(['?', '#']).map(|i| &t[..i]).unwrap_or(t);
    let (scheme, rest) = match cut.find("://") {
        Some(i) => (&cut[..i + 3], &cut[i + 3..]),
        None => ("", cut),
    };
    let rest = match rest.find('/') {
        Some(slash) => match rest[..slash].rfind('@') {
            Some(at) => format!("***@{}", &rest[at + 1..]),
            None => rest.to_string(),
        },
        None => match rest.rfind('@') {
            Some(at) => format!("***@{}", &rest[at + 1..]),
            None => rest.to_string(),
        },
    };
    let elided = if cut.len() < t.len() { "?…" } else { "" };
    format!("{scheme}{rest}{elided}").chars().flat_map(char::escape_debug).collect()
}

/// `a space`, `U+0009 (a control character)`, ... for messages.
pub(super) fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("the character U+{:04X} (`{c}`)", c as u32),
    }
}

/// The storage account naming rule: 3-24 lowercase letters and digits.
pub(super) fn check_account_name(a: &str) -> Result<(), String> {
    if !(3..=24).contains(&a.len()) || !a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!("`{}` is not a storage account name: 3-24 lowercase letters and digits", a.escape_debug()));
    }
    Ok(())
}

/// A DNS suffix such as `core.windows.net`: dot-separated labels of letters, digits and
/// inner hyphens.
pub(super) fn check_dns_suffix(s: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || s.len() > 200 || !s.split('.').all(label_ok) {
        return Err(format!(
            "`{}` is not a DNS suffix: dot-separated labels of letters, digits and hyphens, e.g. core.windows.net or core.chinacloudapi.cn",
            s.escape_debug()
        ));
    }
    Ok(())
}

/// The text of a validated service URL as the rest of the program keeps it: without the
/// trailing `/` the URL parser adds to a bare host.
pub(super) fn url_text(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

/// The service endpoint and account, from `endpoint`, the connection string's
/// `BlobEndpoint`/`FileEndpoint`, or `account_name` (or `AccountName=`) with
/// `endpoint_suffix` (or `EndpointSuffix=`) and `DefaultEndpointsProtocol=`, in that order.
/// Every source is validated; the endpoint is `None` when none gives one or it is invalid.
pub(super) fn resolve(
    raw: &RawSettings,
    cs: Option<&ConnectionString>,
    service: Service,
    bad: &mut Problems,
) -> Resolved {
    let suffix_setting = raw.get("endpoint_suffix").map(str::trim);
    let mut suffix_ok = true;
    if let Some(s) = suffix_setting {
        if let Err(e) = check_dns_suffix(s) {
            bad.push("endpoint_suffix", e + &raw.from_note("endpoint_suffix"));
            suffix_ok = false;
        }
    }
    let suffix = suffix_setting
        .map(str::to_ascii_lowercase)
        .or_else(|| cs.and_then(|c| c.endpoint_suffix.clone()))
        .unwrap_or_else(|| settings::find("endpoint_suffix").and_then(|s| s.default).unwrap_or_default().into());
    let account_setting = raw.get("account_name").map(|s| s.trim().to_string());
    let account_ok = match &account_setting {
        Some(a) => check_account_name(a).map_err(|e| bad.push("account_name", e)).is_ok(),
        None => true,
    };
    let cs_account = cs.and_then(|c| c.account_name.clone());
    let cs_endpoint = cs.and_then(|c| match service {
        Service::Blob => c.blob_endpoint.clone(),
        Service::File => c.file_endpoint.clone(),
    });

    let (mut given, mut built) = (true, false);
    let endpoint = if let Some(e) = raw.get("endpoint") {
        service_url(e).map_err(|m| bad.push("endpoint", m)).ok()
    } else if let Some(e) = cs_endpoint {
        // Already checked by the connection-string parser.
        service_url(&e).map_err(|m| bad.push("connection_string", m)).ok()
    } else if let Some(a) = account_setting.clone().or(cs_account.clone()) {
        let proto = cs.and_then(|c| c.protocol.clone()).unwrap_or_else(|| "https".into());
        let text = format!("{proto}://{a}.{}.{suffix}", service.as_str());
        built = true;
        if account_ok && suffix_ok {
            service_url(&text)
                .map_err(|m| bad.push("endpoint_suffix", format!("gives the endpoint `{}`, which {m}", shown(&text))))
                .ok()
        } else {
            None
        }
    } else {
        given = false;
        None
    };
    // Shared Key signs with the account name, so it must be the one the URL reaches: a
    // given endpoint's own account is used, and one named otherwise is refused.
    let named = account_setting.clone().map(|a| ("account_name", a)).or(cs_account.map(|a| ("connection_string", a)));
    let in_url = endpoint.as_ref().filter(|_| !built).and_then(endpoint_account);
    let account = match (named, in_url) {
        (Some((setting, a)), Some(e)) if a != e => {
            let url = endpoint.as_ref().map(url_text).unwrap_or_default();
            bad.push(
                setting,
                format!(
                    "names the account `{a}`{}, but the endpoint `{}` is the account `{e}`: Shared Key would sign for the wrong account and every request be refused; leave the account name out (the endpoint names it) or make them agree",
                    raw.from_note(setting),
                    shown(&url)
                ),
            );
            a
        }
        (Some((_, a)), _) => a,
        (None, Some(e)) => e,
        (None, None) => endpoint.as_ref().and_then(|u| account_from_endpoint(u.as_str())).unwrap_or_default(),
    };
    Resolved { endpoint, account, given }
}

/// The storage account a service URL reaches: the first path segment when it has one
/// (the emulator form, `http://127.0.0.1:10000/devstoreaccount1`, `http://azurite:10000/acct`),
/// else the first label of a `<account>.<service>.<suffix>` host (`acct.blob.core.windows.net`,
/// `acct.privatelink.file.core.usgovcloudapi.net`); `None` for any other host (a custom domain).
pub(super) fn endpoint_account(u: &url::Url) -> Option<String> {
    if let Some(seg) = u.path_segments().and_then(|mut s| s.find(|s| !s.is_empty())) {
        return Some(seg.to_string());
    }
    let host = u.host_str()?;
    let labels: Vec<&str> = host.split('.').collect();
    let service_at = labels.iter().position(|l| matches!(*l, "blob" | "file" | "dfs" | "queue" | "table"))?;
    (service_at >= 1 && labels.len() > service_at + 1).then(|| labels[0].to_string())
}

/// What [`resolve`] found.
pub(super) struct Resolved {
    pub endpoint: Option<url::Url>,
    pub account: String,
    /// Whether any setting gave (or tried to give) an endpoint.
    pub given: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_accepted_and_normalised() {
        for (given, want) in [
            ("https://acct.blob.core.windows.net", "https://acct.blob.core.windows.net"),
            ("https://acct.blob.core.windows.net/", "https://acct.blob.core.windows.net"),
            (" http://127.0.0.1:10000/devstoreaccount1/ ", "http://127.0.0.1:10000/devstoreaccount1"),
            ("HTTPS://Acct.Blob.Core.Windows.Net", "https://acct.blob.core.windows.net"),
            ("http://[::1]:10000/devstoreaccount1", "http://[::1]:10000/devstoreaccount1"),
        ] {
            assert_eq!(url_text(&service_url(given).unwrap()), want, "{given}");
        }
    }

    #[test]
    fn service_urls_refused_with_a_reason() {
        for (given, reason) in [
            ("notaurl", "is not a URL"),
            ("", "is empty"),
            ("ftp://host/x", "scheme `ftp`"),
            ("file:///etc/passwd", "scheme `file`"),
            ("https://acct.blob.core windows.net", "a space"),
            ("https://acct.blob\n.core.windows.net", "control character U+000A"),
            ("https://a\tb.net", "control character U+0009"),
            ("https://user:pw@acct.blob.core.windows.net", "user name or password"),
            ("https://acct.blob.core.windows.net/?sv=1&sig=SECRET", "query string"),
            ("https://acct.blob.core.windows.net/#x", "fragment"),
            ("http://", "not a URL"),
            ("https://:443/x", "not a URL"),
            ("unix:/run/x.sock", "scheme `unix`"),
        ] {
            let e = service_url(given).unwrap_err();
            assert!(e.contains(reason), "{given:?}: {e}");
            assert!(!e.contains("SECRET") && !e.contains("pw@"), "{given:?} leaked: {e}");
        }
    }

    #[test]
    fn shown_drops_what_may_be_secret() {
        assert_eq!(shown("https://u:pw@h.net/p?sig=abc"), "https://***@h.net/p?…");
        assert_eq!(shown("https://h.net/p"), "https://h.net/p");
        assert_eq!(shown("u:pw@h"), "***@h");
        assert_eq!(shown("a\nb"), "a\\nb");
    }

    #[test]
    fn the_account_a_service_url_reaches() {
        for (url, want) in [
            ("http://127.0.0.1:10000/devstoreaccount1", Some("devstoreaccount1")),
            ("http://azurite:10000/devstoreaccount1", Some("devstoreaccount1")),
            ("http://localhost:10000/acct2/", Some("acct2")),
            ("https://acct.blob.core.windows.net", Some("acct")),
            ("https://acct.privatelink.file.core.usgovcloudapi.net/", Some("acct")),
            ("https://acct.dfs.core.chinacloudapi.cn", Some("acct")),
            ("https://files.example.com", None),
            ("https://blob.example.com", None),
            ("http://127.0.0.1:10000", None),
        ] {
            assert_eq!(endpoint_account(&service_url(url).unwrap()).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn account_names_and_suffixes() {
        assert!(check_account_name("devstoreaccount1").is_ok());
        for bad in ["Bad_Name!", " devstoreaccount1", "ab", "a".repeat(25).as_str(), "UPPER", "é12"] {
            assert!(check_account_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_dns_suffix("core.windows.net").is_ok());
        assert!(check_dns_suffix("core.chinacloudapi.cn").is_ok());
        for bad in ["core windows.net", "", "core..net", "-core.net", "core.net/", "core.net?x", "ü.net"] {
            assert!(check_dns_suffix(bad).is_err(), "{bad:?}");
        }
    }
}
