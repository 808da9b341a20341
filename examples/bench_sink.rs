//! A minimal, fast, in-memory Blob-compatible server for benchmarks.
//!
//! Azurite spends most of an upload recomputing CRC-64s in JavaScript, so on Azurite the
//! wall time mostly measures the server. This sink does the least a Blob service must
//! do — Put Blob, Put Block, Put Block List, Get Block List, Get Blob (ranges), Get Blob
//! Properties, List Blobs, Delete Blob, Create / Get Container — keeping bodies in memory (no copies
//! beyond assembling a committed block list), checking no auth and verifying no
//! checksum (it only stores the MD5 of a one-request blob, as Azure does), so that the
//! *client's* cost becomes visible. It is a benchmark fixture,
//! not an emulator: anything it does not know is logged to stderr and answered 400. Each
//! blob's Last-Modified is the time it was written, which sync tools compare with local mtimes.
//!
//! With `--discard`, upload bodies are read frame by frame and dropped (only their lengths
//! are kept), so an upload benchmark measures the client and the loopback, not the sink
//! growing gigabytes of memory; such blobs cannot be read back (GET answers 400
//! `BodyDiscarded`). The benchmark uses it for upload runs and the storing mode for
//! download runs, which must serve back what was stored.
//!
//! `GET /_bench/mark?tag=T` re-arms the `first request at <unix time>` line (logged once
//! after start-up, and once after each mark), for time-to-first-request per run.
//!
//! Usage: `cargo run --release --example bench_sink -- [PORT] [--discard]` (PORT 0 = any);
//! it prints `listening on http://127.0.0.1:PORT` and serves path-style URLs
//! `/<account>/<container>/<blob>`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Clone, Default)]
struct Blob {
    /// Empty when the body was discarded (`--discard`).
    data: Bytes,
    len: u64,
    content_type: Option<String>,
    content_md5: Option<String>,
    metadata: Vec<(String, String)>,
    etag: u64,
    /// When it was written: sync tools (azcopy) compare it with the local file's mtime.
    modified: Option<std::time::SystemTime>,
}

fn last_modified(b: &Blob) -> String {
    httpdate::fmt_http_date(b.modified.unwrap_or(std::time::UNIX_EPOCH))
}

#[derive(Default)]
struct State {
    containers: HashMap<String, ()>,
    /// Sorted by (container, name), so that a List Blobs page costs O(log n + page) and a
    /// million blobs list in linear time, not quadratic.
    blobs: BTreeMap<(String, String), Blob>,
    /// Uncommitted blocks per blob.
    blocks: HashMap<(String, String), HashMap<String, (u64, Bytes)>>,
    etag: u64,
}

type Shared = Arc<Mutex<State>>;

fn resp(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert("x-ms-request-id", "sink".parse().unwrap());
    r.headers_mut().insert("x-ms-version", "2025-11-05".parse().unwrap());
    r
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let mut r = resp(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
        ),
    );
    r.headers_mut().insert("x-ms-error-code", code.parse().unwrap());
    r
}

fn query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect()
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn props_headers(r: &mut Response<Full<Bytes>>, b: &Blob) {
    let h = r.headers_mut();
    h.insert("etag", format!("\"0x{:x}\"", b.etag).parse().unwrap());
    h.insert("last-modified", last_modified(b).parse().unwrap());
    h.insert("x-ms-blob-type", "BlockBlob".parse().unwrap());
    h.insert("accept-ranges", "bytes".parse().unwrap());
    h.insert(
        "content-type",
        b.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()).parse().unwrap(),
    );
    if let Some(m) = &b.content_md5 {
        h.insert("content-md5", m.parse().unwrap());
    }
    for (k, v) in &b.metadata {
        if let (Ok(n), Ok(v)) = (hyper::header::HeaderName::from_bytes(format!("x-ms-meta-{k}").as_bytes()), v.parse())
        {
            h.insert(n, v);
        }
    }
}

fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let r = v.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() { len.checked_sub(1)? } else { b.parse::<u64>().ok()?.min(len.checked_sub(1)?) };
    (start <= end).then_some((start, end))
}

fn block_ids(xml: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('>') else { break };
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        if matches!(tag, "Latest" | "Committed" | "Uncommitted") {
            if let Some(end) = rest.find('<') {
                ids.push(rest[..end].trim().to_string());
                rest = &rest[end..];
            }
        }
    }
    ids
}

type Page<'a> = Vec<(String, Option<&'a Blob>)>;

/// One List Blobs page: up to `max + 1` entries (one more than fit tells that there are more)
/// after `marker`, in name order, each a blob or (with a delimiter) a folded `BlobPrefix`
/// (None). A walk of the sorted map from the first candidate name: O(log n + page), and a
/// folded prefix skips all its names at once.
fn list_page<'a>(
    blobs: &'a BTreeMap<(String, String), Blob>,
    container: &str,
    prefix: &str,
    marker: &str,
    delimiter: &str,
    max: usize,
) -> Page<'a> {
    let key = |n: &str| (container.to_string(), n.to_string());
    let mut from: Bound<(String, String)> =
        if marker >= prefix { Excluded(key(marker)) } else { Included(key(prefix)) };
    let mut entries: Page<'a> = Vec::new();
    'walk: loop {
        for ((c, n), b) in blobs.range((from.clone(), Unbounded)) {
            if c != container || !n.starts_with(prefix) || entries.len() > max {
                break 'walk;
            }
            let rest = &n[prefix.len()..];
            match (!delimiter.is_empty()).then(|| rest.find(delimiter)).flatten() {
                Some(i) => {
                    let p = format!("{prefix}{}", &rest[..i + delimiter.len()]);
                    // Resume after every name below this prefix.
                    from = Excluded(key(&format!("{p}\u{10ffff}")));
                    entries.push((p, None));
                    continue 'walk;
                }
                None => entries.push((n.clone(), Some(b))),
            }
        }
        break;
    }
    entries
}

static DISCARD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether the next request is the first since start-up or since the last mark.
static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `GET /_bench/mark?tag=T` (answered 200, not a Blob request): logs `mark T` and arms the
/// first-request report again, so a server shared by several timed runs reports each run's
/// first request (the harness marks just before it starts a tool).
fn mark(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if req.uri().path() != "/_bench/mark" {
        return None;
    }
    let tag = query(req.uri().query()).remove("tag").unwrap_or_default();
    eprintln!("bench-sink: mark {tag}");
    FIRST.store(true, std::sync::atomic::Ordering::SeqCst);
    Some(resp(StatusCode::OK, ""))
}

async fn handle(state: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(r) = mark(&req) {
        return Ok(r);
    }
    // The benchmark measures how soon a client's first request arrives after it starts.
    if FIRST.load(std::sync::atomic::Ordering::Relaxed) && FIRST.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("bench-sink: first request at {:.6}", t.as_secs_f64());
    }
    let q = query(req.uri().query());
    let path = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy().into_owned();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let _account = parts.next().unwrap_or("");
    let container = parts.next().unwrap_or("").to_string();
    let blob = parts.next().unwrap_or("").to_string();
    let method = req.method().clone();
    let comp = q.get("comp").map(String::as_str).unwrap_or("");
    let restype = q.get("restype").map(String::as_str).unwrap_or("");
    let meta: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().strip_prefix("x-ms-meta-")?.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let content_type = header(&req, "x-ms-blob-content-type").or_else(|| header(&req, "content-type"));
    let if_none_match = header(&req, "if-none-match").is_some();
    let range = header(&req, "x-ms-range").or_else(|| header(&req, "range"));
    let put_md5 = header(&req, "x-ms-blob-content-md5");
    let body_md5 = header(&req, "content-md5");
    // Azure answers a write with the checksum it computed of the body (x-ms-content-crc64, or
    // Content-MD5), and the plugin refuses a write answered without one. The sink verifies
    // nothing: it echoes the checksum the client sent, which is what Azure's answer equals
    // when the body arrived intact.
    let echo = |mut r: Response<Full<Bytes>>, crc: &Option<String>, md5: &Option<String>| {
        for (name, v) in [("x-ms-content-crc64", crc), ("content-md5", md5)] {
            if let Some(v) = v.as_deref().and_then(|v| v.parse().ok()) {
                r.headers_mut().insert(name, v);
            }
        }
        r
    };
    let body_crc = header(&req, "x-ms-content-crc64");
    let discard = DISCARD.load(std::sync::atomic::Ordering::Relaxed)
        && method == Method::PUT
        && !blob.is_empty()
        && matches!(comp, "" | "block");
    let (body, body_len) = if discard {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "BodyReadFailed")),
            }
        }
        (Bytes::new(), n)
    } else {
        match req.into_body().collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                let n = b.len() as u64;
                (b, n)
            }
            Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "BodyReadFailed")),
        }
    };
    // Like Azure, a blob written by one Put Blob without a Content-MD5 gets the MD5 of its
    // body (Put Block List stores only what `x-ms-blob-content-md5` says). Download
    // benchmarks rely on it: the peers check a stored MD5 only when there is one. Computed
    // only for stored bodies, outside the lock; the discarding (upload) sink computes none.
    let put_blob = method == Method::PUT && comp.is_empty() && restype.is_empty() && !blob.is_empty();
    let service_md5 = (put_blob && !discard && put_md5.is_none() && body_md5.is_none()).then(|| {
        use base64::Engine as _;
        use md5::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body))
    });
    let key = (container.clone(), blob.clone());
    let mut st = state.lock().unwrap();
    let r = match (&method, blob.is_empty(), restype, comp) {
        (&Method::PUT, true, "container", "") => {
            if st.containers.insert(container.clone(), ()).is_some() {
                error(StatusCode::CONFLICT, "ContainerAlreadyExists")
            } else {
                resp(StatusCode::CREATED, "")
            }
        }
        (&Method::GET | &Method::HEAD, true, "container", "") => {
            if st.containers.contains_key(&container) {
                resp(StatusCode::OK, "")
            } else {
                error(StatusCode::NOT_FOUND, "ContainerNotFound")
            }
        }
        (&Method::GET, true, "container", "list") => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            let max: usize = q.get("maxresults").and_then(|m| m.parse().ok()).unwrap_or(5000);
            let marker = q.get("marker").cloned().unwrap_or_default();
            let delimiter = q.get("delimiter").cloned().unwrap_or_default();
            let mut entries = list_page(&st.blobs, &container, &prefix, &marker, &delimiter, max);
            let more = entries.len() > max;
            entries.truncate(max);
            let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Blobs>");
            for (n, blob) in &entries {
                let Some(b) = blob else {
                    xml.push_str(&format!("<BlobPrefix><Name>{}</Name></BlobPrefix>", xml_escape(n)));
                    continue;
                };
                xml.push_str(&format!(
                    "<Blob><Name>{}</Name><Properties><Content-Length>{}</Content-Length><Content-Type>{}</Content-Type><Content-MD5>{}</Content-MD5><Etag>0x{:x}</Etag><BlobType>BlockBlob</BlobType><Last-Modified>{}</Last-Modified></Properties><Metadata>",
                    xml_escape(n),
                    b.len,
                    xml_escape(b.content_type.as_deref().unwrap_or("application/octet-stream")),
                    b.content_md5.as_deref().unwrap_or(""),
                    b.etag,
                    last_modified(b)
                ));
                for (k, v) in &b.metadata {
                    xml.push_str(&format!("<{k}>{}</{k}>", xml_escape(v)));
                }
                xml.push_str("</Metadata></Blob>");
            }
            xml.push_str("</Blobs><NextMarker>");
            if more {
                // The marker is the last name returned; a folded prefix resumes after all its names.
                let (last, blob) = entries.last().unwrap();
                let m = if blob.is_none() { format!("{last}\u{10ffff}") } else { last.clone() };
                xml.push_str(&xml_escape(&m));
            }
            xml.push_str("</NextMarker></EnumerationResults>");
            let mut r = resp(StatusCode::OK, xml);
            r.headers_mut().insert("content-type", "application/xml".parse().unwrap());
            r
        }
        (&Method::PUT, false, _, "") => {
            if if_none_match && st.blobs.contains_key(&key) {
                error(StatusCode::CONFLICT, "BlobAlreadyExists")
            } else {
                st.etag += 1;
                let b = Blob {
                    data: body,
                    len: body_len,
                    content_type,
                    content_md5: put_md5.or(body_md5.clone()).or(service_md5),
                    metadata: meta,
                    etag: st.etag,
                    modified: Some(std::time::SystemTime::now()),
                };
                st.blobs.insert(key.clone(), b);
                st.blocks.remove(&key);
                echo(resp(StatusCode::CREATED, ""), &body_crc, &body_md5)
            }
        }
        (&Method::PUT, false, _, "block") => {
            let id = q.get("blockid").cloned().unwrap_or_default();
            st.blocks.entry(key).or_default().insert(id, (body_len, body));
            echo(resp(StatusCode::CREATED, ""), &body_crc, &body_md5)
        }
        (&Method::PUT, false, _, "blocklist") => {
            if if_none_match && st.blobs.contains_key(&key) {
                error(StatusCode::CONFLICT, "BlobAlreadyExists")
            } else {
                let ids = block_ids(&String::from_utf8_lossy(&body));
                let staged = st.blocks.remove(&key).unwrap_or_default();
                let committed = st.blobs.get(&key).map(|b| b.data.clone());
                let mut parts = Vec::with_capacity(ids.len());
                let mut missing = false;
                for id in &ids {
                    match staged.get(id) {
                        Some(b) => parts.push(b.clone()),
                        None => missing = true,
                    }
                }
                if missing && committed.is_none() {
                    error(StatusCode::BAD_REQUEST, "InvalidBlockList")
                } else {
                    let len: u64 = parts.iter().map(|p| p.0).sum();
                    let total: usize = parts.iter().map(|p| p.1.len()).sum();
                    let mut data = Vec::with_capacity(total);
                    for p in parts {
                        data.extend_from_slice(&p.1);
                    }
                    st.etag += 1;
                    let b = Blob {
                        data: data.into(),
                        len,
                        content_type,
                        content_md5: put_md5,
                        metadata: meta,
                        etag: st.etag,
                        modified: Some(std::time::SystemTime::now()),
                    };
                    st.blobs.insert(key, b);
                    resp(StatusCode::CREATED, "")
                }
            }
        }
        (&Method::GET, false, _, "blocklist") => {
            let mut xml = String::from(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><CommittedBlocks/><UncommittedBlocks>",
            );
            if let Some(bl) = st.blocks.get(&key) {
                for (id, b) in bl {
                    xml.push_str(&format!("<Block><Name>{id}</Name><Size>{}</Size></Block>", b.0));
                }
            }
            xml.push_str("</UncommittedBlocks></BlockList>");
            if st.blocks.contains_key(&key) || st.blobs.contains_key(&key) {
                resp(StatusCode::OK, xml)
            } else {
                error(StatusCode::NOT_FOUND, "BlobNotFound")
            }
        }
        (&Method::DELETE, false, _, "") => match st.blobs.remove(&key) {
            Some(_) => resp(StatusCode::ACCEPTED, ""),
            None => error(StatusCode::NOT_FOUND, "BlobNotFound"),
        },
        (&Method::HEAD, false, _, "") => match st.blobs.get(&key) {
            Some(b) => {
                let mut r = resp(StatusCode::OK, Bytes::new());
                props_headers(&mut r, b);
                r.headers_mut().insert("content-length", b.len.into());
                r
            }
            None => error(StatusCode::NOT_FOUND, "BlobNotFound"),
        },
        (&Method::GET, false, _, "") => match st.blobs.get(&key) {
            Some(b) if b.data.len() as u64 != b.len => error(StatusCode::BAD_REQUEST, "BodyDiscarded"),
            Some(b) => {
                let len = b.data.len() as u64;
                let (mut r, slice) = match range.as_deref().and_then(|v| parse_range(v, len)) {
                    Some((s, e)) => {
                        let mut r = resp(StatusCode::PARTIAL_CONTENT, b.data.slice(s as usize..=e as usize));
                        r.headers_mut().insert("content-range", format!("bytes {s}-{e}/{len}").parse().unwrap());
                        (r, true)
                    }
                    None => (resp(StatusCode::OK, b.data.clone()), false),
                };
                props_headers(&mut r, b);
                if slice {
                    r.headers_mut().remove("content-md5");
                }
                r
            }
            None => error(StatusCode::NOT_FOUND, "BlobNotFound"),
        },
        _ => {
            eprintln!("bench-sink: unsupported {method} {path}?{}", q.keys().cloned().collect::<Vec<_>>().join("&"));
            error(StatusCode::BAD_REQUEST, "UnsupportedBySink")
        }
    };
    Ok(r)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.iter().find_map(|p| p.parse().ok()).unwrap_or(0);
    DISCARD.store(args.iter().any(|a| a == "--discard"), std::sync::atomic::Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    let state: Shared = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
