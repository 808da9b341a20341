//! Azure Files (FileREST): one method per REST call, each linked to its docs page, and
//! the [`Store`] the transfer engine drives — the same engine as Blob, not a copy.
//!
//! ## Upload: temporary name, then Rename File (all-or-nothing for readers)
//!
//! Files has no block commit: bytes written by Put Range are visible at once, so a reader
//! listing the share mid-upload would see a half-written file under its final name. This
//! store therefore writes every upload under a temporary name in the *same directory*,
//! `.<name>.azpart-<run tag>` (the same shape as the engine's local download temp files),
//! and renames it into place as the last step with
//! [Rename File](https://learn.microsoft.com/rest/api/storageservices/rename-file)
//! (x-ms-version ≥ 2021-04-10; this crate sends [`crate::http::API_VERSION`]):
//!
//! 1. Create Directory for each missing parent (cached per run, see below);
//! 2. Create File (temporary name) with `x-ms-content-length`, the content headers and
//!    the metadata (`sha256` included when it is known up front — single-request files);
//! 3. Put Range (`x-ms-write: update`) per chunk of at most 4 MiB, each with a
//!    transactional `Content-MD5` (the engine computes it once, in its hasher stage, as
//!    `Store::body_checksum` asks);
//! 4. chunked files only: Set File Metadata (with `sha256`, now known) and, when the
//!    whole-file MD5 was computed (`content_md5: true`), Set File Properties (content
//!    headers again — the call clears the ones it is not given — plus `x-ms-content-md5`).
//!    Single-range files always get their `x-ms-content-md5` on Create File: the service
//!    never computes one, and the bytes are in hand;
//! 5. Rename File onto the final name with `x-ms-file-rename-replace-if-exists` =
//!    `true`, or `false` for `overwrite: false`: the service then refuses with 409
//!    `ResourceAlreadyExists` if the name exists at that instant, so `overwrite: false`
//!    is race-free (the engine's pre-check of large files only saves sending bytes).
//!
//! A stream of unknown length (the cache archive, `begin_chunked` with size 0) starts
//! as an empty file; before a Put Range that would pass its end, Set File Properties
//! grows it (`x-ms-content-length`, doubling, at least 8 MiB, the content headers
//! repeated), and the commit sets the exact length before the metadata and the rename.
//!
//! A failed upload deletes its temporary file (best effort; a killed run can leave one
//! behind, recognisable by its name). Listings skip names of that shape, so a download
//! never picks up another run's upload in flight. The run tag is random per run, so two
//! pipelines uploading the same name never write into the same temporary file.
//! Unlike Blob's uncommitted blocks, nothing here lets a re-run know which ranges of a
//! leftover temporary file are good, so a failed large upload is re-sent whole.
//!
//! ## Directories
//!
//! Files has real directories: a file's parent must exist (404 `ParentNotFound`).
//! Each directory is created at most once per run: a map from path to a `OnceCell` makes
//! concurrent uploads into the same new directory wait for one Create Directory instead
//! of racing; "already exists" (409 `ResourceAlreadyExists`) counts as success, and a
//! failure leaves the cell empty so the next file tries again.
//!
//! ## Download
//!
//! List Directories and Files returns neither metadata nor Content-MD5, so listed items
//! carry only name, size and ETag; the engine asks Get File Properties for the checksum
//! before it downloads. Listing walks the directory tree (a bounded number of directory
//! listings in flight, every page followed) and refuses to walk a directory entry whose
//! name could escape its parent (`..`, `/`, …).
//!
//! ## Auth
//!
//! Shared Key uses the same string-to-sign as Blob (the signer is service-agnostic); a
//! SAS is appended to every URL, and to the Rename File source URL, which the service
//! authorizes separately. With an OAuth bearer token every request carries
//! `x-ms-file-request-intent: backup` (required by Files OAuth over REST, x-ms-version
//! ≥ 2022-11-02). The share's existence is checked with Get Directory Properties on its
//! root rather than Get Share Properties: a directory operation works with every
//! credential and role that can write files, while share-level calls need share-level
//! rights that a least-privilege data role may not have.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use md5::{Digest as _, Md5};
use reqwest::Method;
use tokio::sync::OnceCell;

use super::blob::{encode_path, list_page_size};
use super::checksum::{check_echo, BodySum, Echo};
use super::{listed_name, same_etag, walk_xml, Chunk, Committed, RemoteItem, Result, StorageError, Store, UploadProps};
use crate::config::Checksum;
use crate::http::{BodySink, Http, Request};

/// Largest Put Range body the service accepts.
pub const MAX_RANGE: u64 = 4 << 20;
/// Directory listings in flight at once while walking a tree.
const LIST_CONCURRENCY: usize = 8;
/// Smallest step a streamed upload's file grows by (it doubles beyond), keeping the
/// Set File Properties calls few: about log2(size / 8 MiB) of them.
const GROW_MIN: u64 = 8 << 20;
/// Largest file Azure Files holds (4 TiB).
const MAX_FILE: u64 = 4 << 40;
/// Marker in temporary upload names (shared with the engine's local temp files).
const TEMP_MARK: &str = ".azpart-";

/// Why Azure Files would refuse a path, if it would (beyond the checks shared with Blob).
///
/// From [Naming and referencing shares, directories, files, and metadata](https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-shares--directories--files--and-metadata):
/// components of at most 255 characters, a path of at most 2,048 characters and 250
/// directory levels, none of `" \ : | < > * ?`, no control characters; a trailing dot
/// is stripped by the service (we refuse it rather than store a different name).
pub fn check_file_name(name: &str) -> std::result::Result<(), String> {
    if name.chars().count() > 2048 {
        return Err("the path is longer than 2,048 characters (the Azure Files limit)".into());
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 251 {
        return Err("the path is more than 250 directories deep (the Azure Files limit)".into());
    }
    for p in parts {
        if p.chars().count() > 255 {
            return Err(format!(
                "the component `{}…` is longer than 255 characters",
                p.chars().take(20).collect::<String>()
            ));
        }
        if let Some(c) = p.chars().find(|c| matches!(c, '"' | '\\' | ':' | '|' | '<' | '>' | '*' | '?')) {
            return Err(format!("the component `{p}` contains `{c}`, which Azure Files does not allow"));
        }
        if p.ends_with('.') {
            return Err(format!("the component `{p}` ends with `.`, which Azure Files strips"));
        }
    }
    Ok(())
}

/// Whether a listed name is an upload in flight (or a leftover) of this store.
pub fn is_temp_name(base: &str) -> bool {
    match base.rfind(TEMP_MARK) {
        Some(i) => {
            let tag = &base[i + TEMP_MARK.len()..];
            base.starts_with('.') && tag.len() == 8 && tag.chars().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The body's MD5: the engine's, as [`FilesStore::body_checksum`] asks it for MD5.
fn body_md5(sum: BodySum, data: &[u8]) -> [u8; 16] {
    match sum {
        BodySum::Md5(m) => m,
        BodySum::Crc64(_) => md5_of(data),
    }
}

/// Splits `a/b/c` into (`a/b`, `c`); a top-level name has parent "".
fn split_parent(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

pub struct FilesStore {
    http: Arc<Http>,
    endpoint: String,
    base: Option<url::Url>,
    share: String,
    /// OAuth: every request needs `x-ms-file-request-intent: backup`.
    intent: bool,
    /// Random per run: names this run's temporary files.
    run_tag: String,
    /// Directories created (or found) in this run.
    dirs: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
    /// Streamed uploads of unknown length (begun with size 0), by temporary name: the
    /// file's current length, grown before a Put Range would pass it.
    growing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Growing>>>>,
}

/// A streamed upload's temporary file: its length now and the content headers that Set
/// File Properties must repeat (it clears the ones it is not given).
struct Growing {
    len: u64,
    props: UploadProps,
}

impl FilesStore {
    pub fn new(http: Arc<Http>, endpoint: &str, share: &str) -> Self {
        let intent = http.credential().is_bearer();
        FilesStore {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            base: super::parse_base(endpoint.trim_end_matches('/')),
            share: share.to_string(),
            intent,
            run_tag: format!("{:08x}", fastrand::u32(..)),
            dirs: Mutex::new(HashMap::new()),
            growing: Mutex::new(HashMap::new()),
        }
    }

    /// A request with what every Files call needs (the intent header under OAuth).
    fn req(&self, method: Method, url: url::Url) -> Request {
        let r = Request::new(method, url);
        if self.intent {
            r.header("x-ms-file-request-intent", "backup")
        } else {
            r
        }
    }

    /// URL of a path in the share ("" is the root directory).
    fn path_url(&self, path: &str, query: &[(&str, &str)]) -> Result<url::Url> {
        let mut s = encode_path(&self.share);
        if !path.is_empty() {
            s.push('/');
            s.push_str(&encode_path(path));
        }
        super::request_url(self.base.as_ref(), &self.endpoint, &s, query)
    }

    /// The temporary name an upload of `name` uses in this run (same directory).
    fn temp_name(&self, name: &str) -> String {
        let (dir, base) = split_parent(name);
        // Keep the component within 255 characters; a hash keeps long names apart.
        let base = if base.chars().count() > 200 {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            base.hash(&mut h);
            format!("{}~{:016x}", base.chars().take(180).collect::<String>(), h.finish())
        } else {
            base.to_string()
        };
        join(dir, &format!(".{base}{TEMP_MARK}{}", self.run_tag))
    }

    /// Content headers of Create File / Set File Properties (the latter clears omitted ones).
    fn content_headers(req: Request, props: &UploadProps) -> Request {
        req.header("x-ms-content-type", &props.content_type)
            .header_opt("x-ms-cache-control", props.cache_control.as_ref())
            .header_opt("x-ms-content-encoding", props.content_encoding.as_ref())
            .header_opt("x-ms-content-disposition", props.content_disposition.as_ref())
            .header_opt("x-ms-content-md5", props.content_md5.map(|m| B64.encode(m)))
    }

    fn with_metadata(mut req: Request, metadata: &[(String, String)]) -> Request {
        for (k, v) in metadata {
            req = req.dyn_header(&format!("x-ms-meta-{k}"), v);
        }
        req
    }

    /// [Create Directory](https://learn.microsoft.com/rest/api/storageservices/create-directory);
    /// an existing directory is success.
    async fn create_directory(&self, path: &str) -> Result<()> {
        let req = self.req(Method::PUT, self.path_url(path, &[("restype", "directory")])?);
        match self.http.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(409) && e.is_code("ResourceAlreadyExists") => Ok(()),
            Err(e) if e.is_status(409) && e.is_code("ResourceTypeMismatch") => Err(StorageError::Protocol {
                op: "Create Directory",
                detail: format!("`{path}` exists as a file, so it cannot be a directory"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates every missing directory above `name`, each at most once per run.
    async fn ensure_parents(&self, name: &str) -> Result<()> {
        let (parent, _) = split_parent(name);
        if parent.is_empty() {
            return Ok(());
        }
        let mut end = 0;
        loop {
            end = match parent[end..].find('/') {
                Some(i) => end + i,
                None => parent.len(),
            };
            let dir = &parent[..end];
            let cell = {
                let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
                dirs.entry(dir.to_ascii_lowercase()).or_default().clone()
            };
            cell.get_or_try_init(|| self.create_directory(dir)).await?;
            if end == parent.len() {
                return Ok(());
            }
            end += 1;
        }
    }

    /// [Create File](https://learn.microsoft.com/rest/api/storageservices/create-file):
    /// allocates `size` bytes (zeros) with the content headers and metadata.
    async fn create_file(&self, name: &str, size: u64, props: &UploadProps) -> Result<()> {
        let req = self
            .req(Method::PUT, self.path_url(name, &[])?)
            .header("x-ms-type", "file")
            .header("x-ms-content-length", size.to_string());
        let req = Self::with_metadata(Self::content_headers(req, props), &props.metadata);
        self.http.send(req).await?;
        Ok(())
    }

    /// [Put Range](https://learn.microsoft.com/rest/api/storageservices/put-range)
    /// (`x-ms-write: update`, at most 4 MiB, with a transactional Content-MD5).
    /// `md5` is the body's, computed by the engine while it hashed the file.
    async fn put_range(&self, name: &str, offset: u64, data: Bytes, md5: [u8; 16]) -> Result<()> {
        debug_assert!(!data.is_empty() && data.len() as u64 <= MAX_RANGE);
        let end = offset + data.len() as u64 - 1;
        let req = self
            .req(Method::PUT, self.path_url(name, &[("comp", "range")])?)
            .header("x-ms-range", format!("bytes={offset}-{end}"))
            .header("x-ms-write", "update")
            .header("content-md5", B64.encode(md5))
            .body(data.clone());
        let resp = self.http.send(req).await?;
        // Azure echoes the Content-MD5 it computed; one that is not the body's did not store it.
        check_echo(
            BodySum::Md5(md5),
            &data,
            resp.header("x-ms-content-crc64"),
            resp.header("content-md5"),
            Echo::IfPresent,
        )
        .map_err(|detail| StorageError::Protocol { op: "Put Range", detail })?;
        Ok(())
    }

    /// [Set File Properties](https://learn.microsoft.com/rest/api/storageservices/set-file-properties):
    /// the content headers and the whole-file `x-ms-content-md5`, and with `length` the
    /// file's new length (`x-ms-content-length`; else the length is left alone).
    async fn set_file_properties(&self, name: &str, props: &UploadProps, length: Option<u64>) -> Result<()> {
        let mut req = self.req(Method::PUT, self.path_url(name, &[("comp", "properties")])?);
        if let Some(len) = length {
            req = req.header("x-ms-content-length", len.to_string());
        }
        self.http.send(Self::content_headers(req, props)).await?;
        Ok(())
    }

    /// The growth state of a streamed upload's temporary file, if `tmp` is one.
    fn growing(&self, tmp: &str) -> Option<Arc<tokio::sync::Mutex<Growing>>> {
        self.growing.lock().ok()?.get(tmp).cloned()
    }

    fn forget_growing(&self, tmp: &str) -> Option<Arc<tokio::sync::Mutex<Growing>>> {
        self.growing.lock().ok()?.remove(tmp)
    }

    /// Grows a streamed upload's file (doubling, at least [`GROW_MIN`]) so that `end` fits.
    async fn grow_to(&self, tmp: &str, end: u64) -> Result<()> {
        let Some(g) = self.growing(tmp) else { return Ok(()) };
        let mut g = g.lock().await;
        if end > g.len {
            let len = end.max(g.len.saturating_mul(2).clamp(GROW_MIN, MAX_FILE));
            self.set_file_properties(tmp, &g.props, Some(len)).await?;
            g.len = len;
        }
        Ok(())
    }

    /// [Set File Metadata](https://learn.microsoft.com/rest/api/storageservices/set-file-metadata)
    /// (replaces all metadata).
    async fn set_file_metadata(&self, name: &str, metadata: &[(String, String)]) -> Result<()> {
        let req = self.req(Method::PUT, self.path_url(name, &[("comp", "metadata")])?);
        self.http.send(Self::with_metadata(req, metadata)).await?;
        Ok(())
    }

    /// [Rename File](https://learn.microsoft.com/rest/api/storageservices/rename-file) `from` → `to`
    /// in this share; with `replace: false` an existing `to` is a 409 `ResourceAlreadyExists`.
    async fn rename_file(&self, from: &str, to: &str, replace: bool) -> Result<Committed> {
        let mut source = self.path_url(from, &[])?.to_string();
        // The source is authorized on its own: a SAS travels with it.
        if let Some(sas) = self.http.credential().source_query() {
            source.push('?');
            source.push_str(sas);
        }
        let req = self
            .req(Method::PUT, self.path_url(to, &[("comp", "rename")])?)
            .dyn_header("x-ms-file-rename-source", &source)
            .header("x-ms-file-rename-replace-if-exists", if replace { "true" } else { "false" });
        let resp = self.http.send(req).await?;
        Ok(Committed { etag: resp.header("etag").map(str::to_string) })
    }

    /// [Delete File](https://learn.microsoft.com/rest/api/storageservices/delete-file2)
    async fn delete_file(&self, name: &str) -> Result<()> {
        match self.http.send(self.req(Method::DELETE, self.path_url(name, &[])?)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames the finished temporary file into place.
    async fn finish(&self, tmp: &str, name: &str, props: &UploadProps) -> Result<Committed> {
        match self.rename_file(tmp, name, !props.if_none_match).await {
            Ok(c) => Ok(c),
            // A retried rename whose first attempt landed finds its source gone.
            Err(e) if e.http().is_some_and(|h| h.attempts > 1) && e.is_status(404) => {
                let want = props.metadata.iter().find(|(k, _)| k == "sha256").map(|(_, v)| v.as_str());
                match self.properties(name).await? {
                    Some(r) if want.is_some_and(|w| r.has_sha256(w)) => Ok(Committed { etag: r.etag_string() }),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a temporary file after a failure; a failure to remove it is only logged.
    async fn discard(&self, tmp: &str) {
        if let Err(e) = self.delete_file(tmp).await {
            tracing::warn!("could not remove the temporary file `{tmp}`: {e}");
        }
    }

    /// [List Directories and Files](https://learn.microsoft.com/rest/api/storageservices/list-directories-and-files),
    /// one page of one directory. `Ok(None)` when the directory does not exist.
    async fn list_page(&self, dir: &str, prefix: &str, marker: Option<&str>) -> Result<Option<ListPage>> {
        let page = list_page_size();
        let mut q =
            vec![("restype", "directory"), ("comp", "list"), ("include", "ETag"), ("maxresults", page.as_str())];
        if !prefix.is_empty() {
            q.push(("prefix", prefix));
        }
        if let Some(m) = marker {
            q.push(("marker", m));
        }
        let resp = match self.http.send(self.req(Method::GET, self.path_url(dir, &q)?)).await {
            Ok(r) => r,
            Err(e) if e.is_status(404) && !e.is_code("ShareNotFound") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let page = parse_list(&resp.body)?;
        tracing::debug!(
            dir,
            prefix,
            files = page.files.len(),
            dirs = page.dirs.len(),
            more = page.next.is_some(),
            "list page"
        );
        Ok(Some(page))
    }

    /// Every page of one directory.
    async fn list_dir(
        &self,
        dir: String,
        prefix: String,
    ) -> Result<(String, Vec<(String, u64, Option<String>)>, Vec<String>)> {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        let mut marker: Option<String> = None;
        loop {
            let Some(page) = self.list_page(&dir, &prefix, marker.as_deref()).await? else { break };
            files.extend(page.files);
            dirs.extend(page.dirs);
            match page.next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        Ok((dir, files, dirs))
    }
}

/// One page of a directory listing.
#[derive(Debug, Default)]
pub struct ListPage {
    /// (name, size, etag)
    pub files: Vec<(String, u64, Option<String>)>,
    pub dirs: Vec<String>,
    pub next: Option<String>,
}

/// The [`Store`]: each method is one FileREST call, or the documented sequence of them
/// (module docs) made of the calls above.
#[async_trait]
impl Store for FilesStore {
    fn info(&self) -> super::StoreInfo {
        super::StoreInfo {
            label: "Azure Files",
            roles: "`Storage File Data Privileged Contributor` (download: `… Privileged Reader`)",
            sas: super::sas::Resource::File,
        }
    }
    fn check_name(&self, name: &str) -> std::result::Result<(), super::NameError> {
        super::names::check_remote_name(name)?;
        check_file_name(name).map_err(super::NameError::from)
    }
    /// Azure Files names are case-insensitive (case-preserving).
    fn name_key<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
    fn has_directories(&self) -> bool {
        true
    }
    /// List Directories and Files returns neither metadata nor Content-MD5.
    fn listing_has_checksums(&self) -> bool {
        false
    }
    fn url(&self, name: &str) -> String {
        format!("{}/{}/{}", self.endpoint, encode_path(&self.share), encode_path(name))
    }

    fn max_chunk(&self) -> u64 {
        MAX_RANGE
    }

    fn body_checksum(&self, _wanted: Checksum) -> Checksum {
        // Put Range verifies Content-MD5 (the `checksum` setting is for Blob).
        Checksum::Md5
    }

    /// [Create Share](https://learn.microsoft.com/rest/api/storageservices/create-share) with
    /// `create` (one that exists is success), then
    /// [Get Directory Properties](https://learn.microsoft.com/rest/api/storageservices/get-directory-properties)
    /// of the share's root: does the share exist?
    async fn ensure_container(&self, create: bool) -> Result<()> {
        if create {
            let req = self.req(Method::PUT, self.path_url("", &[("restype", "share")])?);
            match self.http.send(req).await {
                Err(e) if !e.is_code("ShareAlreadyExists") => return Err(e.into()),
                _ => {}
            }
        }
        let req = self.req(Method::HEAD, self.path_url("", &[("restype", "directory")])?);
        match self.http.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(404) => Err(StorageError::NoContainer {
                what: "share",
                name: self.share.clone(),
                hint: " (create it, or set `create_container: true`)",
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// [Get File Properties](https://learn.microsoft.com/rest/api/storageservices/get-file-properties)
    async fn properties(&self, name: &str) -> Result<Option<RemoteItem>> {
        let resp = match self.http.send(self.req(Method::HEAD, self.path_url(name, &[])?)).await {
            Ok(r) => r,
            Err(e) if e.is_status(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if resp.header("x-ms-type").is_some_and(|t| !t.eq_ignore_ascii_case("file")) {
            return Ok(None);
        }
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StorageError::Protocol { op: "Get File Properties", detail: "no Content-Length".into() })?;
        Ok(Some(
            RemoteItem {
                name: name.to_string(),
                size,
                etag: resp.header("etag").map(Into::into),
                content_md5: resp.header("content-md5").filter(|s| !s.is_empty()).map(super::digest::Md5::parse),
                sha256: resp.header("x-ms-meta-sha256").map(|s| super::digest::Sha256::parse(&s.to_ascii_lowercase())),
                last_modified: resp.header("last-modified").and_then(|v| httpdate::parse_http_date(v).ok()),
                extra: None,
                mode: resp.header("x-ms-meta-mode").and_then(|v| super::parse_mode(name, v)),
            }
            .with_meta_headers(&resp.headers),
        ))
    }

    /// [List Directories and Files](https://learn.microsoft.com/rest/api/storageservices/list-directories-and-files)
    /// of the prefix's directory and every directory under it, every page (see "Download").
    /// The listing is handed over as one page, sorted by name, once every directory is read.
    async fn list_pages(&self, prefix: &str, on_page: &mut (dyn FnMut(Vec<RemoteItem>) + Send)) -> Result<()> {
        let (dir, leaf) = split_parent(prefix);
        let mut out = Vec::new();
        let mut pending = FuturesUnordered::new();
        pending.push(self.list_dir(dir.to_string(), leaf.to_string()));
        let mut queue: Vec<String> = Vec::new();
        while let Some(r) = pending.next().await {
            let (dir, files, dirs) = r?;
            for (name, size, etag) in files {
                if is_temp_name(&name) {
                    tracing::debug!("not listed: {}: an upload in flight", join(&dir, &name));
                    continue;
                }
                out.push(RemoteItem {
                    name: join(&dir, &name),
                    size,
                    etag: etag.map(String::into_boxed_str),
                    ..RemoteItem::default()
                });
            }
            for d in dirs {
                if d.is_empty() || d == "." || d == ".." || d.contains(['/', '\\', '\0']) {
                    return Err(StorageError::Protocol {
                        op: "List Directories and Files",
                        detail: format!("the service listed a directory named {d:?} in `{dir}`; refusing to walk it"),
                    });
                }
                queue.push(join(&dir, &d));
            }
            while pending.len() < LIST_CONCURRENCY {
                let Some(d) = queue.pop() else { break };
                pending.push(self.list_dir(d, String::new()));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        on_page(out);
        Ok(())
    }

    /// [Get File](https://learn.microsoft.com/rest/api/storageservices/get-file) with `x-ms-range`.
    /// The body goes to `sink` as it arrives. Get File takes no `If-Match`, so with `etag`
    /// the response's ETag is compared with it instead: another one means the file was
    /// rewritten since ([`StorageError::Changed`]; the bytes given to `sink` are of the
    /// other version and must be discarded).
    async fn get_range(
        &self,
        name: &str,
        etag: Option<&str>,
        offset: u64,
        len: u64,
        sink: BodySink<'_>,
    ) -> Result<u64> {
        let req = super::ranged(self.req(Method::GET, self.path_url(name, &[])?), offset, len);
        let resp = self.http.send_streamed(req, sink).await?;
        if let (Some(want), Some(got)) = (etag, resp.header("etag")) {
            if !same_etag(want, got) {
                return Err(StorageError::Changed {
                    name: name.to_string(),
                    expected: want.to_string(),
                    now: got.to_string(),
                });
            }
        }
        Ok(resp.streamed)
    }

    /// Create File, Put Range, Rename File (see "Upload"), under a temporary name.
    async fn put_whole(&self, name: &str, data: Bytes, sum: BodySum, props: &UploadProps) -> Result<Committed> {
        self.ensure_parents(name).await?;
        let tmp = self.temp_name(name);
        // Files computes no Content-MD5 itself: store the whole file's, which is the body's.
        let md5 = body_md5(sum, &data);
        let props = UploadProps { content_md5: Some(md5), ..props.clone() };
        self.create_file(&tmp, data.len() as u64, &props).await?;
        let r = async {
            if !data.is_empty() {
                self.put_range(&tmp, 0, data, md5).await?;
            }
            self.finish(&tmp, name, &props).await
        }
        .await;
        if r.is_err() {
            self.discard(&tmp).await;
        }
        r
    }

    /// Create Directory for each missing parent, then Create File under the temporary name.
    /// `size` 0 is a stream of unknown length (the cache archive): the file starts empty
    /// and [`FilesStore::grow_to`] grows it before a range would pass its end; `commit`
    /// then sets the exact length.
    async fn begin_chunked(&self, name: &str, size: u64, props: &UploadProps) -> Result<HashSet<String>> {
        self.ensure_parents(name).await?;
        let tmp = self.temp_name(name);
        self.create_file(&tmp, size, props).await?;
        if size == 0 {
            let g = Growing { len: 0, props: props.clone() };
            if let Ok(mut m) = self.growing.lock() {
                m.insert(tmp, Arc::new(tokio::sync::Mutex::new(g)));
            }
        }
        Ok(HashSet::new())
    }

    fn chunk_key(&self, chunk: &Chunk) -> String {
        format!("{}+{}", chunk.offset, chunk.len)
    }

    /// [Put Range](https://learn.microsoft.com/rest/api/storageservices/put-range) into the temporary file.
    async fn put_chunk(&self, name: &str, chunk: Chunk, data: Bytes) -> Result<()> {
        let md5 = body_md5(chunk.sum, &data);
        let tmp = self.temp_name(name);
        self.grow_to(&tmp, chunk.offset + chunk.len).await?;
        self.put_range(&tmp, chunk.offset, data, md5).await
    }

    /// Set File Properties, Set File Metadata, Rename File (see "Upload").
    async fn commit(&self, name: &str, size: u64, _chunks: &[Chunk], props: &UploadProps) -> Result<Committed> {
        let tmp = self.temp_name(name);
        // A streamed upload gets its exact length now (the content headers repeated).
        let exact = self.forget_growing(&tmp).map(|_| size);
        let r = async {
            if props.content_md5.is_some() || exact.is_some() {
                self.set_file_properties(&tmp, props, exact).await?;
            }
            self.set_file_metadata(&tmp, &props.metadata).await?;
            self.finish(&tmp, name, props).await
        }
        .await;
        if r.is_err() {
            self.discard(&tmp).await;
        }
        r
    }

    /// [Delete File](https://learn.microsoft.com/rest/api/storageservices/delete-file2) takes no `If-Match` (only a lease id), so the file's ETag is read first
    /// (Get File Properties) and compared with the listed one; a file rewritten between that
    /// read and the delete (one round trip) is still deleted: a window this narrows, not closes.
    async fn delete(&self, item: &RemoteItem) -> Result<()> {
        let listed = super::listed_etag(item)?;
        match self.properties(&item.name).await? {
            None => Ok(()),
            Some(now) => match now.etag.as_deref() {
                Some(e) if same_etag(e, listed) => self.delete_file(&item.name).await,
                other => Err(StorageError::Changed {
                    name: item.name.clone(),
                    expected: listed.to_string(),
                    now: other.unwrap_or("none").to_string(),
                }),
            },
        }
    }

    /// [Delete Directory](https://learn.microsoft.com/rest/api/storageservices/delete-directory):
    /// `Ok(false)` when the directory is not empty (409 `DirectoryNotEmpty`) or already gone.
    async fn remove_dir_if_empty(&self, dir: &str) -> Result<bool> {
        let req = self.req(Method::DELETE, self.path_url(dir, &[("restype", "directory")])?);
        match self.http.send(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_status(409) && e.is_code("DirectoryNotEmpty") => Ok(false),
            Err(e) if e.is_status(404) && !e.is_code("ShareNotFound") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Get User Delegation Key on the File service itself (REST 2025-07-05 and later: each
    /// service hands out its own key, `sks=f`, as the Python SDK's
    /// `ShareServiceClient.get_user_delegation_key` asks it): a key valid from `start` to
    /// `expiry` for the identity of the bearer token. Like the SDK, without the intent
    /// header: the call acts on the account, not on a file.
    async fn user_delegation_key(&self, start: &str, expiry: &str) -> Result<Option<super::blob::UserDelegationKey>> {
        super::blob::get_user_delegation_key(&self.http, self.base.as_ref(), &self.endpoint, start, expiry)
            .await
            .map(Some)
    }

    async fn abandon(&self, name: &str) {
        let tmp = self.temp_name(name);
        self.forget_growing(&tmp);
        self.discard(&tmp).await;
    }
}

/// Parses a List Directories and Files page. Names are taken exactly as sent (see
/// [`walk_xml`]: a leading space is legal); names Azure had to encode are decoded.
pub fn parse_list(body: &[u8]) -> Result<ListPage> {
    let op = "List Directories and Files";
    let bad = |detail: String| StorageError::Protocol { op, detail };
    let mut page = ListPage::default();
    let (mut name, mut size, mut etag): (Option<String>, Option<u64>, Option<String>) = (None, None, None);
    walk_xml(body, op, "EnumerationResults", |path, encoded, v| {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["EnumerationResults", "Entries", "File" | "Directory", "Name"] => name = Some(listed_name(v, encoded)),
            ["EnumerationResults", "Entries", "File", "Properties", "Content-Length"] => {
                size = Some(v.trim().parse().map_err(|_| bad(format!("Content-Length `{}`", v.trim())))?)
            }
            ["EnumerationResults", "Entries", "File", "Properties", "Etag"] => etag = Some(v.trim().to_string()),
            ["EnumerationResults", "Entries", kind @ ("File" | "Directory")] => {
                let n = name.take().ok_or_else(|| bad(format!("a <{kind}> without a <Name>")))?;
                if *kind == "File" {
                    let len = size.take().ok_or_else(|| bad(format!("<File> `{n}` has no Content-Length")))?;
                    page.files.push((n, len, etag.take()));
                } else {
                    page.dirs.push(n);
                }
                (size, etag) = (None, None);
            }
            ["EnumerationResults", "NextMarker"] => page.next = Some(v.trim().to_string()).filter(|m| !m.is_empty()),
            _ => {}
        }
        Ok(())
    })?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_azure_files_refuses() {
        assert!(check_file_name("a/b c/é.tar.gz").is_ok());
        assert!(check_file_name("a/b:c").is_err());
        assert!(check_file_name("a|b").is_err());
        assert!(check_file_name("what?").is_err());
        assert!(check_file_name("dir./x").is_err());
        assert!(check_file_name(&format!("{}/x", "d".repeat(256))).is_err());
        // 250 directory levels and a file are allowed; one level more is not.
        assert!(check_file_name(&["x"; 251].join("/")).is_ok());
        assert!(check_file_name(&["x"; 252].join("/")).is_err());
    }

    #[test]
    fn temp_names_are_recognised_and_stay_short() {
        assert!(is_temp_name(".app.tar.azpart-0a1b2c3d"));
        assert!(!is_temp_name("app.tar.azpart-0a1b2c3d"));
        assert!(!is_temp_name(".app.azpart-xyz"));
        assert!(!is_temp_name("plain.txt"));
    }

    #[test]
    fn parses_a_listing_page_with_files_directories_and_encoded_names() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://a.file.core.windows.net/" ShareName="s" DirectoryPath="d">
<Prefix>p</Prefix><MaxResults>3</MaxResults><DirectoryId>13835128424026341376</DirectoryId>
<Entries>
 <File><FileId>1</FileId><Name>p1.txt</Name><Properties><Content-Length>12</Content-Length><Etag>"0x8D"</Etag></Properties></File>
 <Directory><FileId>2</FileId><Name>pdir</Name><Properties><Etag>"0x9"</Etag></Properties></Directory>
 <File><FileId>3</FileId><Name Encoded="true">p%01x</Name><Properties><Content-Length>0</Content-Length></Properties></File>
</Entries><NextMarker>m2</NextMarker></EnumerationResults>"#;
        let p = parse_list(xml.as_bytes()).unwrap();
        assert_eq!(p.files, vec![("p1.txt".into(), 12, Some("\"0x8D\"".into())), ("p\u{1}x".into(), 0, None)]);
        assert_eq!(p.dirs, vec!["pdir".to_string()]);
        assert_eq!(p.next.as_deref(), Some("m2"));
        let p = parse_list(b"<EnumerationResults><Entries /><NextMarker /></EnumerationResults>").unwrap();
        assert!(p.files.is_empty() && p.dirs.is_empty() && p.next.is_none());
    }

    #[test]
    fn listed_names_keep_their_spaces_and_broken_listings_are_refused() {
        let xml = "<EnumerationResults><Entries><File><Name> a.txt</Name><Properties><Content-Length>3</Content-Length></Properties></File><File><Name>a.txt</Name><Properties><Content-Length>1</Content-Length></Properties></File><Directory><Name> d </Name></Directory></Entries></EnumerationResults>";
        let p = parse_list(xml.as_bytes()).unwrap();
        assert_eq!(p.files, vec![(" a.txt".into(), 3, None), ("a.txt".into(), 1, None)]);
        assert_eq!(p.dirs, vec![" d ".to_string()]);
        for bad in [
            "<EnumerationResults><Entries><File><Name>x</Name></File></Entries></EnumerationResults>",
            "<EnumerationResults><Entries><Directory /></Entries></EnumerationResults>",
            "<EnumerationResults><Entries><File><Name>x</Name><Properties><Content-Length>x</Content-Length></Properties></File>",
            "<Error/>",
        ] {
            assert!(parse_list(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1024, failure_persistence: None, ..Default::default() })]
        #[test]
        fn the_listing_parser_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_list(&b);
        }
    }

    #[test]
    fn splits_and_joins_paths() {
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("c"), ("", "c"));
        assert_eq!(split_parent("a/"), ("a", ""));
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", "x"), "a/x");
    }
}
