//! An in-memory Azure Files server for the tests: no Files emulator exists.
//!
//! It enforces the rules the real service enforces on the calls the plugin makes, so a
//! plugin that breaks one fails here as it would against Azure:
//!
//! - authorization: Shared Key signatures re-derived here from the request as received
//!   (string-to-sign written from the docs, independently of the crate's signer) and
//!   checked with the account key; account SAS signatures, expiry and permissions (the
//!   SAS must also ride on a Rename File source URL); File service SAS (`sr=f`, the
//!   links `link_expiry` makes) on Get File: signature over the file's path, expiry,
//!   start, `sp`, signed with the account key or, when it carries `skoid`..`skv`, with a
//!   user delegation key (whose expiry must not be past); a bearer token must come with
//!   `x-ms-file-request-intent: backup` (except on Get User Delegation Key, an account call);
//! - Get User Delegation Key (`POST /<account>/?restype=service&comp=userdelegationkey`,
//!   x-ms-version ≥ 2025-07-05): a bearer token only; the key's value is derived from the
//!   fake's own secret and the key's fields, so the fake can rebuild it from a SAS;
//! - `x-ms-version` ≥ 2022-11-02 (a service SAS request may omit it: `sv` counts),
//!   `x-ms-date` within 15 minutes (not required with a service SAS);
//! - Create File: `x-ms-type: file`, `x-ms-content-length`, parent directory exists
//!   (404 `ParentNotFound`), not a directory (409 `ResourceTypeMismatch`);
//! - Put Range: `x-ms-write`, `x-ms-range` within the created length (416 `InvalidRange`),
//!   at most 4 MiB (413 `RequestBodyTooLarge`), body length = range length,
//!   `Content-MD5` checked when sent (400 `Md5Mismatch`);
//! - Create Directory: parent exists, 409 `ResourceAlreadyExists` when it does;
//! - Rename File: source exists, destination parent exists, 409 `ResourceAlreadyExists`
//!   without `x-ms-file-rename-replace-if-exists: true`;
//! - names are case-insensitive (case-preserving) as on Azure Files;
//! - metadata names are C# identifiers.
//!
//! Test hooks: flip a byte of a file's downloads, answer every Nth Put Range with 503,
//! plant a file under a name the real service would never list (hostile listings),
//! have "another writer" create a file just before a rename lands (the `overwrite: false`
//! race) or rewrite a file just before its nth Get File (a file changed mid-download).
//! Every request is logged as (operation, path, status).

#![allow(dead_code)]
// A refusal here *is* the response to send back; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response};
use md5::{Digest as _, Md5};
use sha2::Sha256;

pub const ACCOUNT: &str = "fakefiles";
/// The fake's account key (base64 of 64 bytes, like a real one).
pub fn account_key() -> String {
    B64.encode((0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect::<Vec<u8>>())
}
pub const MAX_RANGE: usize = 4 << 20;

#[derive(Debug, Clone, Default)]
pub struct StoredFile {
    /// Display path (case preserved).
    pub path: String,
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_md5: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub etag: u64,
}

#[derive(Debug, Clone)]
enum Node {
    Dir { path: String },
    File(StoredFile),
}

impl Node {
    fn path(&self) -> &str {
        match self {
            Node::Dir { path } => path,
            Node::File(f) => &f.path,
        }
    }
}

#[derive(Default)]
struct Share {
    /// Lowercased path → node (the root directory is implicit).
    nodes: BTreeMap<String, Node>,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub op: &'static str,
    pub path: String,
    pub status: u16,
    /// The request carried a transactional `Content-MD5`.
    pub md5: bool,
}

/// (lowercase path, which Get File, new data, new metadata).
type Rewrite = (String, u32, Vec<u8>, BTreeMap<String, String>);

#[derive(Default)]
pub struct State {
    shares: Mutex<BTreeMap<String, Share>>,
    pub log: Mutex<Vec<Logged>>,
    /// Paths (lowercase) whose downloads get one byte flipped.
    corrupt: Mutex<Vec<String>>,
    /// Every Nth Put Range answers 503 ServerBusy (0: never).
    pub busy_every: AtomicU32,
    put_ranges: AtomicU32,
    /// (share, path, data): created by "another writer" just before a rename onto `path`.
    race_on_rename: Mutex<Option<(String, String, Vec<u8>)>>,
    /// When set, a bearer token must equal it.
    pub bearer: Mutex<Option<String>>,
    /// Get User Delegation Key answers 403 AuthorizationPermissionMismatch (the identity
    /// lacks `fileServices/generateUserDelegationKey`).
    pub refuse_delegation: std::sync::atomic::AtomicBool,
    /// (share, lowercase parent dir, name, is a directory): listed, never stored.
    hostile: Mutex<Vec<(String, String, String, bool)>>,
    etags: AtomicU64,
    /// (lowercase path, n, data, metadata): "another writer" rewrites the file just before
    /// its nth Get File is served (a file changed while it is downloaded).
    rewrite_on_get: Mutex<Option<Rewrite>>,
    /// The same, before the nth Get File Properties (a sync's check before Delete File).
    rewrite_on_properties: Mutex<Option<Rewrite>>,
}

pub struct FilesFake {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    pub scheme: &'static str,
}

type Resp = Response<Full<Bytes>>;

fn lower(p: &str) -> String {
    p.to_lowercase()
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map(|i| &p[..i]).unwrap_or("")
}

fn base_of(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

impl FilesFake {
    /// Starts a fake over HTTP on 127.0.0.1:0, on its own runtime; it lives as long as the process.
    pub fn start() -> FilesFake {
        Self::start_with(None)
    }

    /// Starts a fake over HTTPS with the given PEM certificate and key.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> FilesFake {
        Self::start_with(Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> FilesFake {
        let state = Arc::new(State::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let acceptor = tls.map(|(c, k)| tls_acceptor(&c, &k));
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let st = st.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let st = st.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&st, req).await) }
                        });
                        let builder = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(a) => {
                                if let Ok(s) = a.accept(stream).await {
                                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                            }
                        }
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        FilesFake { addr, state, scheme }
    }

    /// The service endpoint, path-style: `<scheme>://127.0.0.1:<port>/<account>`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}/{ACCOUNT}", self.scheme, self.addr)
    }

    pub fn create_share(&self, share: &str) {
        self.state.shares.lock().unwrap().entry(share.to_string()).or_default();
    }

    /// A stored file (path matched case-insensitively, as the service does).
    pub fn file(&self, share: &str, path: &str) -> Option<StoredFile> {
        let shares = self.state.shares.lock().unwrap();
        match shares.get(share)?.nodes.get(&lower(path))? {
            Node::File(f) => Some(f.clone()),
            Node::Dir { .. } => None,
        }
    }

    /// Every file path in a share, sorted.
    pub fn files(&self, share: &str) -> Vec<String> {
        let shares = self.state.shares.lock().unwrap();
        let mut v: Vec<String> = shares
            .get(share)
            .map(|s| {
                s.nodes
                    .values()
                    .filter_map(|n| match n {
                        Node::File(f) => Some(f.path.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every directory path in a share, sorted.
    pub fn dirs(&self, share: &str) -> Vec<String> {
        let shares = self.state.shares.lock().unwrap();
        let mut v: Vec<String> = shares
            .get(share)
            .map(|s| {
                s.nodes
                    .values()
                    .filter_map(|n| match n {
                        Node::Dir { path } if !path.is_empty() => Some(path.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Puts a file in place directly, creating its directories (no request, no checks).
    pub fn plant(&self, share: &str, path: &str, data: &[u8], metadata: &[(&str, &str)]) {
        let mut shares = self.state.shares.lock().unwrap();
        let s = shares.entry(share.to_string()).or_default();
        let mut dir = String::new();
        let parent = parent_of(path);
        if !parent.is_empty() {
            for part in parent.split('/') {
                dir = if dir.is_empty() { part.to_string() } else { format!("{dir}/{part}") };
                s.nodes.entry(lower(&dir)).or_insert(Node::Dir { path: dir.clone() });
            }
        }
        let f = StoredFile {
            path: path.to_string(),
            data: data.to_vec(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            etag: self.state.etags.fetch_add(1, Ordering::Relaxed),
            ..StoredFile::default()
        };
        s.nodes.insert(lower(path), Node::File(f));
    }

    /// Makes listings of `dir` show an entry named `name` that the real service could never
    /// hold (`..`, `../x`): what a hostile or broken endpoint could send.
    pub fn plant_hostile(&self, share: &str, dir: &str, name: &str, is_dir: bool) {
        self.state.hostile.lock().unwrap().push((share.to_string(), lower(dir), name.to_string(), is_dir));
    }

    pub fn corrupt(&self, path: &str) {
        self.state.corrupt.lock().unwrap().push(lower(path));
    }

    /// Rewrites `path` (new data, metadata and ETag) just before its `nth` Get File is served.
    pub fn rewrite_on_get(&self, path: &str, nth: u32, data: &[u8], metadata: &[(&str, &str)]) {
        let md = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        *self.state.rewrite_on_get.lock().unwrap() = Some((lower(path), nth, data.to_vec(), md));
    }

    /// Rewrites `path` just before its `nth` Get File Properties is served.
    pub fn rewrite_on_properties(&self, path: &str, nth: u32, data: &[u8], metadata: &[(&str, &str)]) {
        let md = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        *self.state.rewrite_on_properties.lock().unwrap() = Some((lower(path), nth, data.to_vec(), md));
    }

    pub fn race_on_rename(&self, share: &str, path: &str, data: &[u8]) {
        *self.state.race_on_rename.lock().unwrap() = Some((share.to_string(), lower(path), data.to_vec()));
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn count(&self, op: &str) -> usize {
        self.log().iter().filter(|l| l.op == op && l.status < 300).count()
    }

    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Authorization, written from the docs: authorize-with-shared-key, create-account-sas.

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The Shared Key string-to-sign of a request as the service receives it.
pub fn shared_key_string_to_sign(
    account: &str,
    method: &str,
    raw_path: &str,
    query: &str,
    headers: &HeaderMap,
) -> String {
    let mut lines: Vec<String> = vec![method.to_string()];
    for name in [
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
    ] {
        let v = h(headers, name);
        // Since 2015-02-21 a zero Content-Length is signed as the empty string.
        lines.push(if name == "content-length" && v == "0" { String::new() } else { v.to_string() });
    }
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| {
            let v = v.to_str().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            (k.as_str().to_ascii_lowercase(), v)
        })
        .collect();
    ms.sort();
    let mut s = lines.join("\n");
    s.push('\n');
    for (k, v) in ms {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push_str(&format!("/{account}{raw_path}"));
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        params.entry(k.to_lowercase()).or_default().push(v.into_owned());
    }
    for (k, mut v) in params {
        v.sort();
        s.push_str(&format!("\n{k}:{}", v.join(",")));
    }
    s
}

pub fn hmac_b64(key_b64: &str, msg: &str) -> String {
    let key = B64.decode(key_b64).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(msg.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// An account SAS for the Files service (version 2020-12-06 string-to-sign).
pub fn account_sas(perms: &str, expiry: &str) -> String {
    let sv = "2022-11-02";
    let sts = format!("{ACCOUNT}\n{perms}\nf\nsco\n\n{expiry}\n\nhttps,http\n{sv}\n\n");
    let sig = hmac_b64(&account_key(), &sts);
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("sv", sv)
        .append_pair("ss", "f")
        .append_pair("srt", "sco")
        .append_pair("sp", perms)
        .append_pair("se", expiry)
        .append_pair("spr", "https,http")
        .append_pair("sig", &sig);
    q.finish()
}

/// Checks an account SAS in a query; Err(reason) when it does not authorize `need`.
fn check_sas(query: &str, need: Option<char>) -> Result<(), String> {
    let q: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let g = |k: &str| q.get(k).cloned().unwrap_or_default();
    let sts = format!(
        "{ACCOUNT}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        g("sp"),
        g("ss"),
        g("srt"),
        g("st"),
        g("se"),
        g("sip"),
        g("spr"),
        g("sv"),
        g("ses")
    );
    if hmac_b64(&account_key(), &sts) != g("sig") {
        return Err("Signature did not match".into());
    }
    if !g("ss").contains('f') {
        return Err("SAS is not for the File service".into());
    }
    let expiry = httpdate_from_iso(&g("se")).ok_or("bad se")?;
    if expiry < std::time::SystemTime::now() {
        return Err("Signed expiry time has passed".into());
    }
    if let Some(need) = need.filter(|c| !g("sp").contains(*c)) {
        return Err(format!("SAS lacks permission `{need}`"));
    }
    Ok(())
}

/// A service SAS carries `sr` (the signed resource); an account SAS carries `ss` instead.
fn is_service_sas(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "sr")
}

/// The string-to-sign of a File service SAS (create-service-sas, the File service form,
/// version 2015-04-05 and later): permissions, start, expiry, canonical resource
/// (`/file/<account>/<share>/<path>`, decoded), identifier, IP, protocol, version, then
/// rscc, rscd, rsce, rscl, rsct. No signedResource line (Blob has one).
pub fn file_sas_string_to_sign(q: &BTreeMap<String, String>, canonical: &str) -> String {
    let g = |k: &str| q.get(k).cloned().unwrap_or_default();
    [
        g("sp"),
        g("st"),
        g("se"),
        canonical.to_string(),
        g("si"),
        g("sip"),
        g("spr"),
        g("sv"),
        g("rscc"),
        g("rscd"),
        g("rsce"),
        g("rscl"),
        g("rsct"),
    ]
    .join("\n")
}

/// A File service SAS for one file, signed with the account key (for the fake's own tests).
pub fn file_sas(share: &str, path: &str, perms: &str, expiry: &str) -> String {
    let q: BTreeMap<String, String> =
        [("sv", "2025-11-05"), ("sr", "f"), ("sp", perms), ("se", expiry)].map(|(k, v)| (k.into(), v.into())).into();
    let sig = hmac_b64(&account_key(), &file_sas_string_to_sign(&q, &format!("/file/{ACCOUNT}/{share}/{path}")));
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    out.extend_pairs(&q).append_pair("sig", &sig);
    out.finish()
}

/// The fake's secret, from which every user delegation key it hands out is derived.
const DELEGATION_SECRET: &str = "ZmFrZS1maWxlcy11c2VyLWRlbGVnYXRpb24tc2VjcmV0";
/// The identity the fake's delegation keys are for.
pub const DELEGATION_OID: &str = "0f0f0f0f-1111-2222-3333-444444444444";
pub const DELEGATION_TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// The value (base64) of the key with these fields: the service rebuilds a key from the
/// `sk*` fields of a SAS, and so does the fake.
fn delegation_key_value(oid: &str, tid: &str, start: &str, expiry: &str, service: &str, version: &str) -> String {
    hmac_b64(DELEGATION_SECRET, &[oid, tid, start, expiry, service, version].join("\n"))
}

/// The string-to-sign of a user-delegation SAS on Azure Files (create-user-delegation-sas,
/// version 2025-07-05 and later, the File form): permissions, start, expiry, canonical
/// resource, skoid, sktid, skt, ske, sks, skv, skdutid, sduoid, IP, protocol, version,
/// then rscc, rscd, rsce, rscl, rsct.
pub fn file_user_delegation_string_to_sign(q: &BTreeMap<String, String>, canonical: &str) -> String {
    let g = |k: &str| q.get(k).cloned().unwrap_or_default();
    [
        g("sp"),
        g("st"),
        g("se"),
        canonical.to_string(),
        g("skoid"),
        g("sktid"),
        g("skt"),
        g("ske"),
        g("sks"),
        g("skv"),
        g("skdutid"),
        g("sduoid"),
        g("sip"),
        g("spr"),
        g("sv"),
        g("rscc"),
        g("rscd"),
        g("rsce"),
        g("rscl"),
        g("rsct"),
    ]
    .join("\n")
}

/// Get User Delegation Key: the key for `start`..`expiry` of the request's body.
fn user_delegation_key(st: &State, headers: &HeaderMap, body: &[u8]) -> Resp {
    if !h(headers, "authorization").starts_with("Bearer ") {
        return error(403, "AuthenticationFailed", "Only an OAuth token may get a user delegation key.");
    }
    if h(headers, "x-ms-version") < "2025-07-05" {
        return error(400, "InvalidHeaderValue", "Azure Files has user delegation keys from x-ms-version 2025-07-05.");
    }
    if st.refuse_delegation.load(Ordering::SeqCst) {
        return error(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        );
    }
    let body = String::from_utf8_lossy(body);
    let field = |name: &str| -> Option<String> {
        let (_, rest) = body.split_once(&format!("<{name}>"))?;
        Some(rest.split_once(&format!("</{name}>"))?.0.to_string())
    };
    let (Some(start), Some(expiry)) = (field("Start"), field("Expiry")) else {
        return error(400, "InvalidXmlDocument", "KeyInfo needs Start and Expiry.");
    };
    let (Some(s), Some(e)) = (httpdate_from_iso(&start), httpdate_from_iso(&expiry)) else {
        return error(400, "InvalidXmlNodeValue", "Start and Expiry are ISO 8601 UTC times.");
    };
    let now = std::time::SystemTime::now();
    if e <= s || e > now + std::time::Duration::from_secs(7 * 86400) {
        return error(400, "InvalidXmlNodeValue", "The key must expire after it starts, within 7 days of now.");
    }
    let version = "2025-11-05";
    let value = delegation_key_value(DELEGATION_OID, DELEGATION_TID, &start, &expiry, "f", version);
    let xml = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey><SignedOid>{DELEGATION_OID}</SignedOid><SignedTid>{DELEGATION_TID}</SignedTid><SignedStart>{start}</SignedStart><SignedExpiry>{expiry}</SignedExpiry><SignedService>f</SignedService><SignedVersion>{version}</SignedVersion><Value>{value}</Value></UserDelegationKey>"
    );
    ok(200).header("content-type", "application/xml").body(Full::new(Bytes::from(xml))).unwrap()
}

/// Checks a File service SAS in a query for a request on `raw_path` (as received):
/// Err(reason) when it does not authorize `op` (which needs permission `need`). Only
/// `sr=f` on Get File / Get File Properties is served: the links the plugin makes.
fn check_file_sas(query: &str, raw_path: &str, op: &str, need: char) -> Result<(), String> {
    let q: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let g = |k: &str| q.get(k).cloned().unwrap_or_default();
    // The signature covers the decoded path: a link moved to another file does not match.
    let path = percent_encoding::percent_decode_str(raw_path).decode_utf8().map_err(|_| "path is not UTF-8")?;
    let canonical = format!("/file{path}");
    if q.contains_key("skoid") {
        // A user-delegation SAS: the key is rebuilt from its fields, and must be one of
        // this fake's (for Files: `sks=f`), not expired.
        let fields = ["skoid", "sktid", "skt", "ske", "sks", "skv"].map(g);
        if fields.iter().any(String::is_empty) {
            return Err("a user delegation SAS needs skoid, sktid, skt, ske, sks and skv".into());
        }
        if fields[4] != "f" {
            return Err(format!("a key for service `{}` does not sign Azure Files SAS", fields[4]));
        }
        let [oid, tid, skt, ske, sks, skv] = &fields;
        let key = delegation_key_value(oid, tid, skt, ske, sks, skv);
        if hmac_b64(&key, &file_user_delegation_string_to_sign(&q, &canonical)) != g("sig") {
            return Err("Signature did not match".into());
        }
        if httpdate_from_iso(ske).ok_or("bad ske")? < std::time::SystemTime::now() {
            return Err("The user delegation key has expired".into());
        }
    } else if hmac_b64(&account_key(), &file_sas_string_to_sign(&q, &canonical)) != g("sig") {
        return Err("Signature did not match".into());
    }
    if g("sr") != "f" || !matches!(op, "Get File" | "Get File Properties") {
        return Err(format!("this fake serves file SAS (sr=f) on Get File only, not sr={} on {op}", g("sr")));
    }
    let expiry = httpdate_from_iso(&g("se")).ok_or("bad se")?;
    if expiry < std::time::SystemTime::now() {
        return Err("Signed expiry time has passed".into());
    }
    if !g("st").is_empty() && httpdate_from_iso(&g("st")).ok_or("bad st")? > std::time::SystemTime::now() {
        return Err("Signed start time is in the future".into());
    }
    if !g("sp").contains(need) {
        return Err(format!("SAS lacks permission `{need}`"));
    }
    Ok(())
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ`.
fn httpdate_from_iso(s: &str) -> Option<std::time::SystemTime> {
    let (d, t) = s.trim_end_matches('Z').split_once('T')?;
    let d: Vec<u64> = d.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<u64> = t.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (y, m, day) = (d[0] as i64, d[1] as i64, d[2] as i64);
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days as u64 * 86400 + t[0] * 3600 + t[1] * 60 + t.get(2).copied().unwrap_or(0);
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------
// Requests.

fn error(status: u16, code: &str, message: &str) -> Resp {
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:fake\nTime:now</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("x-ms-error-code", code)
        .header("x-ms-request-id", "fake-request-id")
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn ok(status: u16) -> hyper::http::response::Builder {
    Response::builder().status(status).header("x-ms-request-id", "fake-request-id").header("x-ms-version", "2025-11-05")
}

fn empty(status: u16) -> Resp {
    ok(status).body(Full::new(Bytes::new())).unwrap()
}

/// The (operation, share, path) a request addresses.
fn classify(method: &Method, q: &BTreeMap<String, String>, headers: &HeaderMap) -> &'static str {
    let restype = q.get("restype").map(String::as_str);
    let comp = q.get("comp").map(String::as_str);
    match (method.as_str(), restype, comp) {
        ("PUT", Some("share"), None) => "Create Share",
        ("GET" | "HEAD", Some("share"), None) => "Get Share Properties",
        ("PUT", Some("directory"), None) => "Create Directory",
        ("GET" | "HEAD", Some("directory"), None) => "Get Directory Properties",
        ("GET", Some("directory"), Some("list")) => "List Directories and Files",
        ("PUT", None, Some("range")) => "Put Range",
        ("PUT", None, Some("properties")) => "Set File Properties",
        ("PUT", None, Some("metadata")) => "Set File Metadata",
        ("PUT", None, Some("rename")) => "Rename File",
        ("PUT", None, None) if headers.contains_key("x-ms-type") || headers.contains_key("x-ms-content-length") => {
            "Create File"
        }
        ("PUT", None, None) => "Create File (no x-ms-type)",
        ("GET", None, None) => "Get File",
        ("HEAD", None, None) => "Get File Properties",
        ("DELETE", None, None) => "Delete File",
        ("DELETE", Some("directory"), None) => "Delete Directory",
        ("POST", Some("service"), Some("userdelegationkey")) => "Get User Delegation Key",
        _ => "unsupported",
    }
}

async fn handle(st: &State, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "InvalidInput", "body could not be read"),
    };
    let raw_path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let q: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let op = classify(&parts.method, &q, &parts.headers);
    let decoded = percent_encoding::percent_decode_str(&raw_path).decode_utf8_lossy().into_owned();
    let md5 = parts.headers.contains_key("content-md5");
    let resp = serve(st, op, &parts.method, &raw_path, &decoded, &query, &q, &parts.headers, body);
    st.log.lock().unwrap().push(Logged { op, path: decoded, status: resp.status().as_u16(), md5 });
    resp
}

/// Authorizes a request: Err(response) when refused.
fn authorize(
    st: &State,
    op: &str,
    method: &Method,
    raw_path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<(), Resp> {
    let auth = h(headers, "authorization");
    if let Some(rest) = auth.strip_prefix("SharedKey ") {
        let (acct, sig) = rest.split_once(':').unwrap_or(("", ""));
        let sts = shared_key_string_to_sign(ACCOUNT, method.as_str(), raw_path, query, headers);
        if acct != ACCOUNT || hmac_b64(&account_key(), &sts) != sig {
            return Err(error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            ));
        }
        return Ok(());
    }
    if let Some(token) = auth.strip_prefix("Bearer ") {
        if let Some(want) = st.bearer.lock().unwrap().as_deref() {
            if token != want {
                return Err(error(
                    401,
                    "InvalidAuthenticationInfo",
                    "Authentication information is not given in the correct format.",
                ));
            }
        }
        if h(headers, "x-ms-file-request-intent") != "backup" && op != "Get User Delegation Key" {
            return Err(error(
                403,
                "AuthorizationFailure",
                "x-ms-file-request-intent: backup is required with an OAuth token.",
            ));
        }
        return Ok(());
    }
    if query.contains("sig=") {
        let need = match (method.as_str(), op) {
            ("GET" | "HEAD", "List Directories and Files") => 'l',
            ("GET" | "HEAD", _) => 'r',
            ("DELETE", _) => 'd',
            (_, "Create Share" | "Create Directory" | "Create File") => 'c',
            _ => 'w',
        };
        let checked = if is_service_sas(query) {
            check_file_sas(query, raw_path, op, need)
        } else {
            check_sas(query, Some(need))
        };
        return checked.map_err(|m| error(403, "AuthenticationFailed", &m));
    }
    Err(error(401, "NoAuthenticationInformation", "Server failed to authenticate the request."))
}

fn valid_md_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn metadata_of(headers: &HeaderMap) -> Result<BTreeMap<String, String>, Resp> {
    let mut m = BTreeMap::new();
    for (k, v) in headers {
        if let Some(name) = k.as_str().strip_prefix("x-ms-meta-") {
            if !valid_md_name(name) {
                return Err(error(400, "InvalidMetadata", "The metadata specified is invalid."));
            }
            m.insert(name.to_string(), v.to_str().unwrap_or("").to_string());
        }
    }
    Ok(m)
}

fn opt(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn file_headers(b: hyper::http::response::Builder, f: &StoredFile) -> hyper::http::response::Builder {
    let mut b = b.header("x-ms-type", "File").header("etag", format!("\"0x{:X}\"", f.etag));
    for (name, v) in [
        ("content-type", &f.content_type),
        ("content-encoding", &f.content_encoding),
        ("cache-control", &f.cache_control),
        ("content-disposition", &f.content_disposition),
    ] {
        if let Some(v) = v {
            b = b.header(name, v);
        }
    }
    for (k, v) in &f.metadata {
        b = b.header(format!("x-ms-meta-{k}"), v);
    }
    b
}

/// Parses `bytes=a-b`.
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b))
}

#[allow(clippy::too_many_arguments)]
fn serve(
    st: &State,
    op: &'static str,
    method: &Method,
    raw_path: &str,
    path: &str,
    query: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Resp {
    if let Err(r) = authorize(st, op, method, raw_path, query, headers) {
        return r;
    }
    // A request with a service SAS (a link) needs no headers: the service takes the version
    // from `sv`, and the SAS's own times bound it instead of `x-ms-date`.
    let link = q.contains_key("sr") && q.contains_key("sig");
    let version = match h(headers, "x-ms-version") {
        "" if link => q.get("sv").map(String::as_str).unwrap_or(""),
        v => v,
    };
    if version.is_empty() {
        return error(
            400,
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified. x-ms-version",
        );
    }
    if version < "2022-11-02" {
        return error(400, "InvalidHeaderValue", "x-ms-version must be 2022-11-02 or later here.");
    }
    match httpdate::parse_http_date(h(headers, "x-ms-date")) {
        Err(_) if link && !headers.contains_key("x-ms-date") => {}
        Ok(t) => {
            let skew = t.duration_since(std::time::SystemTime::now()).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
            if skew > std::time::Duration::from_secs(900) {
                return error(403, "AuthenticationFailed", "Request date header too old.");
            }
        }
        Err(_) => return error(400, "MissingRequiredHeader", "x-ms-date"),
    }
    if op == "Get User Delegation Key" {
        if path.trim_matches('/') != ACCOUNT {
            return error(400, "InvalidUri", "Get User Delegation Key is a call on the account.");
        }
        return user_delegation_key(st, headers, &body);
    }
    // /<account>/<share>/<path...>
    let mut segs = path.trim_start_matches('/').splitn(3, '/');
    if segs.next() != Some(ACCOUNT) {
        return error(400, "InvalidUri", "The requested URI does not represent any resource on the server.");
    }
    let share_name = segs.next().unwrap_or("").to_string();
    let fpath = segs.next().unwrap_or("").to_string();
    if let Some(bad) =
        fpath.split('/').find(|c| c.chars().any(|ch| matches!(ch, '"' | '\\' | ':' | '|' | '<' | '>' | '*' | '?')))
    {
        return error(
            400,
            "InvalidResourceName",
            &format!("The specifed resource name contains invalid characters: {bad}"),
        );
    }
    let key = lower(&fpath);
    let mut shares = st.shares.lock().unwrap();

    if op == "Create Share" {
        if shares.contains_key(&share_name) {
            return error(409, "ShareAlreadyExists", "The specified share already exists.");
        }
        shares.insert(share_name, Share::default());
        return empty(201);
    }
    let Some(share) = shares.get_mut(&share_name) else {
        return error(404, "ShareNotFound", "The specified share does not exist.");
    };
    let parent_exists = |share: &Share, p: &str| {
        let parent = lower(parent_of(p));
        parent.is_empty() || matches!(share.nodes.get(&parent), Some(Node::Dir { .. }))
    };

    match op {
        "Get Share Properties" => empty(200),
        "Get Directory Properties" => match share.nodes.get(&key) {
            _ if key.is_empty() => empty(200),
            Some(Node::Dir { .. }) => empty(200),
            _ => error(404, "ResourceNotFound", "The specified resource does not exist."),
        },
        "Create Directory" => {
            if !parent_exists(share, &fpath) {
                return error(404, "ParentNotFound", "The specified parent path does not exist.");
            }
            match share.nodes.get(&key) {
                Some(Node::Dir { .. }) => error(409, "ResourceAlreadyExists", "The specified resource already exists."),
                Some(Node::File(_)) => error(
                    409,
                    "ResourceTypeMismatch",
                    "The specified resource type does not match the type of the resource.",
                ),
                None => {
                    share.nodes.insert(key, Node::Dir { path: fpath });
                    empty(201)
                }
            }
        }
        "List Directories and Files" => {
            if !key.is_empty() && !matches!(share.nodes.get(&key), Some(Node::Dir { .. })) {
                return error(404, "ResourceNotFound", "The specified resource does not exist.");
            }
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            let max: usize = q.get("maxresults").and_then(|m| m.parse().ok()).unwrap_or(5000);
            let marker = q.get("marker").cloned().unwrap_or_default();
            // (name, Some((length, etag)) for a file, None for a directory)
            // A directory's children are the keys under `key/` with no further `/` (one range
            // of the sorted map, so listing a big share is not a scan of all of it per page).
            let under = if key.is_empty() { String::new() } else { format!("{key}/") };
            let mut children: Vec<(String, Option<(usize, u64)>)> = share
                .nodes
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under))
                .filter(|(k, _)| !k.is_empty() && !k[under.len()..].contains('/'))
                .map(|(_, n)| n)
                .map(|n| match n {
                    Node::Dir { path } => (base_of(path).to_string(), None),
                    Node::File(f) => (base_of(&f.path).to_string(), Some((f.data.len(), f.etag))),
                })
                .collect();
            for (hs, hdir, name, is_dir) in st.hostile.lock().unwrap().iter() {
                if *hs == share_name && *hdir == key {
                    children.push((name.clone(), if *is_dir { None } else { Some((3, 0)) }));
                }
            }
            children.retain(|(n, _)| n.starts_with(&prefix) && (marker.is_empty() || *n > marker));
            children.sort_by(|a, b| a.0.cmp(&b.0));
            let page = &children[..children.len().min(max)];
            let next = if children.len() > max { page[page.len() - 1].0.clone() } else { String::new() };
            let mut xml = format!(
                "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"http://fake/\" ShareName=\"{share_name}\" DirectoryPath=\"{}\"><Prefix>{}</Prefix><MaxResults>{max}</MaxResults><DirectoryId>0</DirectoryId><Entries>",
                xml_escape(&fpath),
                xml_escape(&prefix)
            );
            for (name, file) in page {
                let name = xml_escape(name);
                match file {
                    None => xml.push_str(&format!("<Directory><FileId>1</FileId><Name>{name}</Name><Properties /></Directory>")),
                    Some((len, etag)) => xml.push_str(&format!(
                        "<File><FileId>2</FileId><Name>{name}</Name><Properties><Content-Length>{len}</Content-Length><Etag>\"0x{etag:X}\"</Etag></Properties></File>"
                    )),
                }
            }
            xml.push_str(&format!("</Entries><NextMarker>{}</NextMarker></EnumerationResults>", xml_escape(&next)));
            ok(200).header("content-type", "application/xml").body(Full::new(Bytes::from(xml))).unwrap()
        }
        "Create File (no x-ms-type)" => error(400, "MissingRequiredHeader", "x-ms-type"),
        "Create File" => {
            if h(headers, "x-ms-type") != "file" {
                return error(400, "InvalidHeaderValue", "x-ms-type must be `file`.");
            }
            let Ok(len) = h(headers, "x-ms-content-length").parse::<u64>() else {
                return error(400, "MissingRequiredHeader", "x-ms-content-length");
            };
            if len > 64 << 20 {
                return error(400, "InvalidHeaderValue", "the fake keeps files in memory: at most 64 MiB");
            }
            if !parent_exists(share, &fpath) {
                return error(404, "ParentNotFound", "The specified parent path does not exist.");
            }
            if let Some(Node::Dir { .. }) = share.nodes.get(&key) {
                return error(
                    409,
                    "ResourceTypeMismatch",
                    "The specified resource type does not match the type of the resource.",
                );
            }
            let metadata = match metadata_of(headers) {
                Ok(m) => m,
                Err(r) => return r,
            };
            // An existing file keeps the case of its name (case-preserving, case-insensitive).
            let display = match share.nodes.get(&key) {
                Some(n) => n.path().to_string(),
                None => fpath.clone(),
            };
            let f = StoredFile {
                path: display,
                data: vec![0; len as usize],
                content_type: opt(headers, "x-ms-content-type"),
                content_encoding: opt(headers, "x-ms-content-encoding"),
                cache_control: opt(headers, "x-ms-cache-control"),
                content_disposition: opt(headers, "x-ms-content-disposition"),
                content_md5: opt(headers, "x-ms-content-md5"),
                metadata,
                etag: st.etags.fetch_add(1, Ordering::Relaxed),
            };
            share.nodes.insert(key, Node::File(f));
            empty(201)
        }
        "Put Range" => {
            let n = st.put_ranges.fetch_add(1, Ordering::Relaxed) + 1;
            let every = st.busy_every.load(Ordering::Relaxed);
            if every > 0 && n.is_multiple_of(every) {
                return Response::builder()
                    .status(503)
                    .header("x-ms-error-code", "ServerBusy")
                    .header("retry-after", "0")
                    .body(Full::new(Bytes::from_static(
                        b"<Error><Code>ServerBusy</Code><Message>busy</Message></Error>",
                    )))
                    .unwrap();
            }
            let write = h(headers, "x-ms-write");
            if write != "update" && write != "clear" {
                return error(400, "MissingRequiredHeader", "x-ms-write must be `update` or `clear`.");
            }
            let Some((a, b)) = parse_range(h(headers, "x-ms-range")).or_else(|| parse_range(h(headers, "range")))
            else {
                return error(400, "InvalidHeaderValue", "x-ms-range");
            };
            let len = (b - a + 1) as usize;
            if len > MAX_RANGE {
                return error(
                    413,
                    "RequestBodyTooLarge",
                    "The request body is too large and exceeds the maximum permissible limit.",
                );
            }
            let Some(Node::File(f)) = share.nodes.get_mut(&key) else {
                return error(404, "ResourceNotFound", "The specified resource does not exist.");
            };
            if b >= f.data.len() as u64 {
                return error(
                    416,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                );
            }
            if write == "update" {
                if body.len() != len {
                    return error(400, "InvalidHeaderValue", "Content-Length does not match the range.");
                }
                if let Some(md5) = opt(headers, "content-md5") {
                    if B64.encode(Md5::digest(&body)) != md5 {
                        return error(400, "Md5Mismatch", "The MD5 value specified in the request did not match with the MD5 value calculated by the server.");
                    }
                }
                f.data[a as usize..=b as usize].copy_from_slice(&body);
            } else {
                f.data[a as usize..=b as usize].fill(0);
            }
            f.etag = st.etags.fetch_add(1, Ordering::Relaxed);
            empty(201)
        }
        "Set File Properties" => {
            let Some(Node::File(f)) = share.nodes.get_mut(&key) else {
                return error(404, "ResourceNotFound", "The specified resource does not exist.");
            };
            // Omitted content headers are cleared, as the docs say.
            f.content_type = opt(headers, "x-ms-content-type");
            f.content_encoding = opt(headers, "x-ms-content-encoding");
            f.cache_control = opt(headers, "x-ms-cache-control");
            f.content_disposition = opt(headers, "x-ms-content-disposition");
            f.content_md5 = opt(headers, "x-ms-content-md5");
            if let Ok(len) = h(headers, "x-ms-content-length").parse::<usize>() {
                f.data.resize(len, 0);
            }
            f.etag = st.etags.fetch_add(1, Ordering::Relaxed);
            empty(200)
        }
        "Set File Metadata" => {
            let metadata = match metadata_of(headers) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let Some(Node::File(f)) = share.nodes.get_mut(&key) else {
                return error(404, "ResourceNotFound", "The specified resource does not exist.");
            };
            f.metadata = metadata;
            f.etag = st.etags.fetch_add(1, Ordering::Relaxed);
            empty(200)
        }
        "Rename File" => {
            let source = h(headers, "x-ms-file-rename-source");
            let Ok(src) = url::Url::parse(source) else {
                return error(400, "InvalidHeaderValue", "x-ms-file-rename-source must be a URL.");
            };
            // A SAS-authorized rename must carry a SAS on its source too.
            if query.contains("sig=") {
                if let Err(m) = check_sas(src.query().unwrap_or(""), None) {
                    return error(403, "AuthenticationFailed", &format!("source: {m}"));
                }
            }
            let spath = percent_encoding::percent_decode_str(src.path()).decode_utf8_lossy().into_owned();
            let prefix = format!("/{ACCOUNT}/{share_name}/");
            let Some(sfile) = spath.strip_prefix(&prefix) else {
                return error(400, "InvalidHeaderValue", "the rename source must be in the same share");
            };
            let skey = lower(sfile);
            if !parent_exists(share, &fpath) {
                return error(404, "ParentNotFound", "The specified parent path does not exist.");
            }
            if let Some((rs, rp, data)) = st.race_on_rename.lock().unwrap().take() {
                if rs == share_name && rp == key {
                    let f = StoredFile {
                        path: fpath.clone(),
                        data,
                        etag: st.etags.fetch_add(1, Ordering::Relaxed),
                        ..StoredFile::default()
                    };
                    share.nodes.insert(key.clone(), Node::File(f));
                }
            }
            let Some(Node::File(mut f)) = share.nodes.get(&skey).cloned() else {
                return error(404, "ResourceNotFound", "The specified resource does not exist.");
            };
            match share.nodes.get(&key) {
                Some(Node::Dir { .. }) => return error(409, "ResourceTypeMismatch", "The destination is a directory."),
                Some(Node::File(_)) if h(headers, "x-ms-file-rename-replace-if-exists") != "true" => {
                    return error(409, "ResourceAlreadyExists", "The specified resource already exists.")
                }
                _ => {}
            }
            share.nodes.remove(&skey);
            f.path = fpath;
            f.etag = st.etags.fetch_add(1, Ordering::Relaxed);
            let etag = f.etag;
            share.nodes.insert(key, Node::File(f));
            ok(200).header("etag", format!("\"0x{etag:X}\"")).body(Full::new(Bytes::new())).unwrap()
        }
        "Get File" | "Get File Properties" => {
            {
                let mut hook =
                    if op == "Get File" { st.rewrite_on_get.lock() } else { st.rewrite_on_properties.lock() }.unwrap();
                let fire = match hook.as_mut() {
                    Some((k, n, _, _)) if *k == key => {
                        *n -= 1;
                        *n == 0
                    }
                    _ => false,
                };
                if let Some((_, _, data, md)) = hook.take_if(|_| fire) {
                    if let Some(Node::File(f)) = share.nodes.get_mut(&key) {
                        (f.data, f.metadata, f.content_md5) = (data, md, None);
                        f.etag = st.etags.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let Some(Node::File(f)) = share.nodes.get(&key) else {
                return error(404, "ResourceNotFound", "The specified resource does not exist.");
            };
            if op == "Get File Properties" {
                let mut b = file_headers(ok(200), f).header("content-length", f.data.len());
                if let Some(m) = &f.content_md5 {
                    b = b.header("content-md5", m);
                }
                return b.body(Full::new(Bytes::new())).unwrap();
            }
            let total = f.data.len() as u64;
            let (status, a, b) = match parse_range(h(headers, "x-ms-range")) {
                Some((a, b)) if a < total => (206, a, b.min(total - 1)),
                Some(_) => {
                    return error(
                        416,
                        "InvalidRange",
                        "The range specified is invalid for the current size of the resource.",
                    )
                }
                None => (200, 0, total.saturating_sub(1)),
            };
            let mut data = if total == 0 { Vec::new() } else { f.data[a as usize..=b as usize].to_vec() };
            if st.corrupt.lock().unwrap().contains(&key) && !data.is_empty() {
                data[0] ^= 0x01;
            }
            let mut resp = file_headers(ok(status), f);
            if status == 206 {
                resp = resp.header("content-range", format!("bytes {a}-{b}/{total}"));
            } else if let Some(m) = &f.content_md5 {
                resp = resp.header("content-md5", m);
            }
            resp.body(Full::new(Bytes::from(data))).unwrap()
        }
        "Delete File" => match share.nodes.get(&key) {
            Some(Node::File(_)) => {
                share.nodes.remove(&key);
                empty(202)
            }
            _ => error(404, "ResourceNotFound", "The specified resource does not exist."),
        },
        "Delete Directory" => {
            let prefix = format!("{key}/");
            match share.nodes.get(&key) {
                Some(Node::Dir { .. }) if share.nodes.keys().any(|k| k.starts_with(&prefix)) => {
                    error(409, "DirectoryNotEmpty", "The specified directory is not empty.")
                }
                Some(Node::Dir { .. }) => {
                    share.nodes.remove(&key);
                    empty(202)
                }
                _ => error(404, "ResourceNotFound", "The specified resource does not exist."),
            }
        }
        _ => error(400, "UnsupportedHttpVerb", &format!("{method} with this query is not supported by the fake")),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[test]
fn fake_parses_sas_dates() {
    let t = httpdate_from_iso("2030-01-02T03:04:05Z").unwrap();
    assert_eq!(httpdate::fmt_http_date(t), "Wed, 02 Jan 2030 03:04:05 GMT");
}
