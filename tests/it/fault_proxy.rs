//! A fault-injecting HTTP/1.1 proxy between the plugin and Azurite.
//!
//! It listens on `127.0.0.1:0`, reads each request the plugin sends, and either
//! forwards it to Azurite (one fresh upstream connection per request, `Connection:
//! close`, the response read whole and chunked encoding undone) or applies the fault
//! that a [`Rule`] schedules for it: "the Nth request matching M gets fault F". Every
//! request is recorded with the fault that fired and the status Azurite answered, so a
//! test can assert that its fault really happened (a fault test that never fires proves
//! nothing).
//!
//! Plain threads and blocking sockets, one thread per client connection, rather than
//! tokio: each fault is then a few straight lines (read half a body and close; sleep
//! before answering; wait on a gate), the proxy cannot stall on a test's blocking
//! calls, and a connection held forever costs one parked thread.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Azurite, DEV_ACCOUNT};

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Percent-decoded path, e.g. `/devstoreaccount1/c/big.bin`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
    /// The blob name (after account and container), if the path names one.
    pub fn blob(&self) -> Option<&str> {
        let mut parts = self.path.trim_start_matches('/').splitn(3, '/');
        let (_acct, _ctr) = (parts.next()?, parts.next()?);
        parts.next().filter(|b| !b.is_empty())
    }
    /// An operation name: `PutBlob`, `PutBlock`, `PutBlockList`, `GetBlob`, `GetBlockList`,
    /// `HeadBlob`, `ListBlobs`, `CreateContainer`, `GetContainer`, or `METHOD ?` otherwise.
    pub fn op(&self) -> String {
        let comp = self.q("comp");
        let restype = self.q("restype");
        match (self.method.as_str(), restype, comp) {
            ("PUT", Some("container"), None) => "CreateContainer",
            ("GET", Some("container"), None) => "GetContainer",
            ("GET", Some("container"), Some("list")) => "ListBlobs",
            ("PUT", None, Some("block")) => "PutBlock",
            ("PUT", None, Some("blocklist")) => "PutBlockList",
            ("GET", None, Some("blocklist")) => "GetBlockList",
            ("PUT", None, None) => "PutBlob",
            ("GET", None, None) => "GetBlob",
            ("HEAD", None, None) => "HeadBlob",
            (m, _, _) => return format!("{m} ?"),
        }
        .to_string()
    }
}

/// Turns a response body into another.
pub type BodyRewrite = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// What happens to a request a rule picked.
#[derive(Clone)]
pub enum Fault {
    /// Answer with this status, `x-ms-error-code: code`, an Azure error body and extra headers,
    /// without forwarding.
    Status { status: u16, code: &'static str, headers: Vec<(&'static str, String)> },
    /// Read `after` bytes of the request body (all of it if shorter), then close the
    /// connection without answering. The request never reaches Azurite.
    DropRequest { after: usize },
    /// Forward; send the response head and `body_bytes` bytes of its body (`None`: only
    /// half of the head), then close. The request did reach Azurite.
    DropResponse { body_bytes: Option<usize> },
    /// Forward, then wait this long before answering (the write landed; its answer is late).
    DelayResponse(Duration),
    /// Wait until the gate opens, then forward.
    Hold(Gate),
    /// Forward; flip one bit of the response body at this offset (modulo its length).
    FlipResponseByte { at: usize },
    /// Flip one bit of the request body at this offset (modulo its length), then forward.
    FlipRequestByte { at: usize },
    /// Forward; answer with only the first `keep` bytes of the body and a Content-Length
    /// that agrees (a consistent but short response).
    ShortBody { keep: usize },
    /// Forward; replace the response body by `f(body)`.
    Rewrite(BodyRewrite),
    /// Forward; add this header to the response when it lacks it (Azurite's answer to Get
    /// User Delegation Key has no `x-ms-request-id`, which Azure always sends).
    AddHeader(&'static str, &'static str),
    /// Answer with this raw HTTP response (head and body) without forwarding: what a
    /// captive portal or a stray proxy would say, with none of Azure's headers.
    Raw(&'static str),
}

impl Fault {
    pub fn status(status: u16, code: &'static str) -> Fault {
        Fault::Status { status, code, headers: vec![] }
    }
    pub fn status_with(status: u16, code: &'static str, header: &'static str, value: &str) -> Fault {
        Fault::Status { status, code, headers: vec![(header, value.to_string())] }
    }
}

/// A [`Fault::Rewrite`] that adds `entries` (raw `<Blob>…</Blob>` XML) to a List Blobs
/// page, as a hostile or intercepted endpoint would; an empty page (`<Blobs />`) too.
pub fn inject_into_listing(entries: String) -> Fault {
    Fault::Rewrite(Arc::new(move |body: &[u8]| {
        let body = String::from_utf8_lossy(body).replacen("<Blobs />", "<Blobs></Blobs>", 1);
        let body = body.replacen("<Blobs/>", "<Blobs></Blobs>", 1);
        body.replacen("</Blobs>", &format!("{entries}</Blobs>"), 1).into_bytes()
    }))
}

/// Which of a rule's matching requests get the fault (1-based).
#[derive(Debug, Clone, Copy)]
pub enum Times {
    Nth(usize),
    /// The Nth and every later one.
    From(usize),
    Every,
}

impl Times {
    fn includes(self, n: usize) -> bool {
        match self {
            Times::Nth(k) => n == k,
            Times::From(k) => n >= k,
            Times::Every => true,
        }
    }
}

type Matcher = Box<dyn Fn(&Req) -> bool + Send + Sync>;

/// "The `times` request matching `when` gets `fault`", named by `label` in the records.
pub struct Rule {
    pub label: &'static str,
    when: Matcher,
    times: Times,
    fault: Fault,
    seen: AtomicUsize,
}

impl Rule {
    pub fn new(
        label: &'static str,
        when: impl Fn(&Req) -> bool + Send + Sync + 'static,
        times: Times,
        fault: Fault,
    ) -> Self {
        Rule { label, when: Box::new(when), times, fault, seen: AtomicUsize::new(0) }
    }
}

/// Matches an operation (see [`Req::op`]), optionally on one blob name.
pub fn op(name: &'static str) -> impl Fn(&Req) -> bool + Send + Sync + 'static {
    move |r: &Req| r.op() == name
}

pub fn op_on(name: &'static str, blob: &'static str) -> impl Fn(&Req) -> bool + Send + Sync + 'static {
    move |r: &Req| r.op() == name && r.blob() == Some(blob)
}

/// A gate that held requests wait on until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Self {
        Gate::default()
    }
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    fn wait(&self) {
        let mut open = self.0 .0.lock().unwrap();
        while !*open {
            open = self.0 .1.wait(open).unwrap();
        }
    }
}

/// One request, what the proxy did with it, and what Azurite said.
#[derive(Debug, Clone)]
pub struct Record {
    pub at: Instant,
    pub req: Req,
    /// The label of the rule that fired, if one did.
    pub fault: Option<&'static str>,
    /// Azurite's status, when the request was forwarded and answered.
    pub upstream: Option<u16>,
    /// Request body bytes forwarded to Azurite.
    pub forwarded: usize,
}

struct Shared {
    upstream: SocketAddr,
    rules: Vec<Rule>,
    records: Mutex<Vec<Record>>,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy in front of `az` with a schedule of faults (empty: a counting proxy).
    pub fn start(az: &Azurite, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], az.port)),
            rules,
            records: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FaultProxy { port, shared }
    }

    /// The endpoint to give the plugin instead of Azurite's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    pub fn records(&self) -> Vec<Record> {
        self.shared.records.lock().unwrap().clone()
    }

    /// How many times the rule labelled `label` fired.
    pub fn fired(&self, label: &str) -> usize {
        self.records().iter().filter(|r| r.fault == Some(label)).count()
    }

    /// Records of one operation, in arrival order.
    pub fn ops(&self, name: &str) -> Vec<Record> {
        self.records().into_iter().filter(|r| r.req.op() == name).collect()
    }

    /// Request body bytes that reached Azurite in requests of one operation.
    pub fn bytes_forwarded(&self, name: &str) -> usize {
        self.ops(name).iter().map(|r| r.forwarded).sum()
    }

    /// Waits until `pred` holds for the records (false after `limit`).
    pub fn wait_until(&self, limit: Duration, pred: impl Fn(&[Record]) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if pred(&self.shared.records.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A one-line-per-request log, for assertion messages.
    pub fn log(&self) -> String {
        let t0 = self.records().first().map(|r| r.at);
        self.records()
            .iter()
            .map(|r| {
                format!(
                    "{:>6}ms {} {} {} fault={} upstream={:?} fwd={}",
                    t0.map(|t| r.at.duration_since(t).as_millis()).unwrap_or(0),
                    r.req.op(),
                    r.req.blob().unwrap_or(""),
                    r.req.q("blockid").unwrap_or(""),
                    r.fault.unwrap_or("-"),
                    r.upstream,
                    r.forwarded
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if lines.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines.iter().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn parse_request(head: &[String]) -> Option<(Req, String)> {
    let mut first = head[0].split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(&v.replace('+', " ")))
        })
        .collect();
    let headers = parse_headers(&head[1..]);
    let body_len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    Some((Req { method, path: decode(path), query, headers, body_len }, target))
}

/// Picks the fault for a request: every matching rule counts it; the first whose count
/// is scheduled fires.
fn choose(rules: &[Rule], req: &Req) -> Option<(&'static str, Fault)> {
    let mut chosen = None;
    for r in rules {
        if (r.when)(req) {
            let n = r.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if chosen.is_none() && r.times.includes(n) {
                chosen = Some((r.label, r.fault.clone()));
            }
        }
    }
    chosen
}

struct Upstream {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn forward(s: &Shared, head: &[String], body: &[u8]) -> std::io::Result<Upstream> {
    let mut up = TcpStream::connect(s.upstream)?;
    let mut out = Vec::with_capacity(body.len() + 1024);
    out.extend_from_slice(head[0].as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in &head[1..] {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(name.as_str(), "connection" | "keep-alive" | "proxy-connection") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    up.write_all(&out)?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("upstream response without a head"))?;
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n").map(str::to_string);
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = parse_headers(&lines.collect::<Vec<_>>());
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Upstream { status, status_line, headers, body })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol =
            data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| std::io::Error::other("bad chunked body"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[..size.min(data.len())]);
        data = &data[(size + 2).min(data.len())..];
    }
}

/// Serialises a response for the client; `head_only` for HEAD (length kept, no body).
fn serialise(up: &Upstream, body: &[u8], head_only: bool) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(up.status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in &up.headers {
        let lk = k.to_ascii_lowercase();
        if matches!(lk.as_str(), "transfer-encoding" | "connection" | "keep-alive")
            || (lk == "content-length" && !head_only)
        {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !head_only {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let head_len = out.len();
    if !head_only {
        out.extend_from_slice(body);
    }
    (out, head_len)
}

fn error_response(seq: usize, status: u16, code: &str, extra: &[(&'static str, String)], head_only: bool) -> Vec<u8> {
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nx-ms-error-code: {code}\r\nx-ms-request-id: fault-proxy-{seq}\r\n"
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if head_only {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    }
    out.into_bytes()
}

fn serve(client: TcpStream, s: &Shared) {
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else { return };
    let mut reader = BufReader::with_capacity(1 << 16, read_half);
    let mut writer = client;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        let Some((req, _target)) = parse_request(&head) else { return };
        let chosen = choose(&s.rules, &req);
        let head_only = req.method == "HEAD";
        let seq = {
            let mut recs = s.records.lock().unwrap();
            recs.push(Record {
                at: Instant::now(),
                req: req.clone(),
                fault: chosen.as_ref().map(|(l, _)| *l),
                upstream: None,
                forwarded: 0,
            });
            recs.len() - 1
        };
        let fault = chosen.map(|(_, f)| f);
        if let Some(Fault::DropRequest { after }) = &fault {
            let mut part = vec![0u8; (*after).min(req.body_len)];
            let _ = reader.read_exact(&mut part);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let mut body = vec![0u8; req.body_len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match &fault {
            Some(Fault::Status { status, code, headers }) => {
                if writer.write_all(&error_response(seq, *status, code, headers, head_only)).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Raw(text)) => {
                if writer.write_all(text.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Hold(gate)) => gate.wait(),
            Some(Fault::FlipRequestByte { at }) if !body.is_empty() => {
                let i = at % body.len();
                body[i] ^= 0x20;
            }
            _ => {}
        }
        let mut up = match forward(s, &head, &body) {
            Ok(u) => u,
            Err(_) => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        };
        {
            let mut recs = s.records.lock().unwrap();
            recs[seq].upstream = Some(up.status);
            recs[seq].forwarded = body.len();
        }
        let mut resp_body = up.body.clone();
        match &fault {
            Some(Fault::DelayResponse(d)) => std::thread::sleep(*d),
            Some(Fault::FlipResponseByte { at }) if !resp_body.is_empty() => {
                let i = at % resp_body.len();
                resp_body[i] ^= 0x20;
            }
            Some(Fault::ShortBody { keep }) => resp_body.truncate(*keep),
            Some(Fault::Rewrite(f)) => resp_body = f(&resp_body),
            Some(Fault::AddHeader(k, v)) if !up.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)) => {
                up.headers.push((k.to_string(), v.to_string()))
            }
            _ => {}
        }
        let (bytes, head_len) = serialise(&up, &resp_body, head_only);
        if let Some(Fault::DropResponse { body_bytes }) = &fault {
            let cut = match body_bytes {
                // An empty body cannot be cut: cut the head instead.
                Some(n) if !resp_body.is_empty() => head_len + (*n).min(resp_body.len() - 1),
                _ => head_len / 2,
            };
            let _ = writer.write_all(&bytes[..cut]);
            let _ = writer.flush();
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}
