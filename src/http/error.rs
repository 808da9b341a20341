//! Errors from storage requests, with what support needs to find the call.
//!
//! Azure returns the error code in `x-ms-error-code` and an XML body
//! `<Error><Code>…</Code><Message>…</Message></Error>`
//! (<https://learn.microsoft.com/rest/api/storageservices/status-and-error-codes2>).
//! The URL in an error is printed without its query string, so a SAS never leaks.

use std::fmt;

#[derive(Debug)]
pub struct HttpError {
    pub method: String,
    /// Path only: never the query (it may hold a SAS).
    pub path: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    pub client_request_id: String,
    pub attempts: u32,
}

impl std::error::Error for HttpError {}

impl HttpError {
    pub fn is_status(&self, s: u16) -> bool {
        self.status == Some(s)
    }
    pub fn is_code(&self, c: &str) -> bool {
        self.code.as_deref() == Some(c)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.method, self.path)?;
        // The code and message are the server's words: escaped, so they cannot forge a log line.
        match (self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, "{s} {}", crate::escape::shown(c))?,
            (Some(s), None) => write!(f, "HTTP {s}")?,
            (None, _) => f.write_str("no response")?,
        }
        if !self.message.is_empty() {
            write!(f, " ({})", crate::escape::shown(&self.message))?;
        }
        write!(f, " after {} attempt{}", self.attempts, if self.attempts == 1 { "" } else { "s" })?;
        write!(f, " [x-ms-client-request-id {}", self.client_request_id)?;
        if let Some(r) = &self.request_id {
            write!(f, ", x-ms-request-id {r}")?;
        }
        f.write_str("]")
    }
}

/// Pulls `<Code>` and `<Message>` out of an Azure error body (first line of the message
/// only), read as XML events like every other response (`storage::walk_xml`, a layer above
/// this one); an element's first occurrence counts, whatever it is nested in. A body that
/// stops being XML gives what was read before that (an HTML page from a proxy: nothing).
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    use quick_xml::events::Event;
    let text = String::from_utf8_lossy(body);
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut code, mut message, mut detail) = (None, None, None);
    let mut open: Option<String> = None;
    let mut value = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                open = Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                value.clear();
            }
            Ok(Event::Text(t)) => match t.unescape() {
                Ok(t) => value.push_str(&t),
                Err(_) => value.push_str(&String::from_utf8_lossy(&t)),
            },
            Ok(Event::CData(c)) => value.push_str(&String::from_utf8_lossy(&c)),
            Ok(Event::End(_)) => {
                let first_line = || Some(value.lines().next().unwrap_or("").trim().to_string());
                match open.take().as_deref() {
                    Some("Code") if code.is_none() => code = first_line(),
                    Some("Message") if message.is_none() => message = first_line(),
                    Some("AuthenticationErrorDetail") if detail.is_none() => detail = first_line(),
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Some(detail) = detail {
        message = Some(match message {
            Some(m) => format!("{m} {detail}"),
            None => detail,
        });
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_azure_error_xml() {
        let body = b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobAlreadyExists</Code><Message>The specified blob already exists.\nRequestId:abc\nTime:2026</Message></Error>";
        let (c, m) = parse_error_body(body);
        assert_eq!(c.as_deref(), Some("BlobAlreadyExists"));
        assert_eq!(m.as_deref(), Some("The specified blob already exists."));
        assert_eq!(parse_error_body(b"not xml"), (None, None));
        let body = b"<Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:x</Message><AuthenticationErrorDetail>Signature did not match.</AuthenticationErrorDetail></Error>";
        let (c, m) = parse_error_body(body);
        assert_eq!(c.as_deref(), Some("AuthenticationFailed"));
        assert_eq!(m.as_deref(), Some("Server failed to authenticate the request. Signature did not match."));
        assert_eq!(parse_error_body(b"<html><body><h1>502 Bad Gateway</h1></body></html>"), (None, None));
    }

    #[test]
    fn display_names_ids_and_never_a_query() {
        let e = HttpError {
            method: "PUT".into(),
            path: "/acct/c/b".into(),
            status: Some(503),
            code: Some("ServerBusy".into()),
            message: "busy".into(),
            request_id: Some("req-1".into()),
            client_request_id: "cli-1".into(),
            attempts: 6,
        };
        let s = e.to_string();
        assert_eq!(s, "PUT /acct/c/b: 503 ServerBusy (busy) after 6 attempts [x-ms-client-request-id cli-1, x-ms-request-id req-1]");
    }
}
