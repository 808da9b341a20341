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

/// Pulls `<Code>` and `<Message>` out of an Azure error body (first line of the message only).
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let grab = |tag: &str| -> Option<String> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&close)? + start;
        Some(text[start..end].lines().next().unwrap_or("").trim().to_string())
    };
    let code = grab("Code");
    let mut message = grab("Message");
    if let Some(detail) = grab("AuthenticationErrorDetail") {
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
