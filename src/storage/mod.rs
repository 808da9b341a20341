//! The storage interface the transfer engine talks to.
//!
//! Blob (`blob.rs`) and Azure Files (`files.rs`) implement it, so the engine (plan,
//! chunking, hashing, verification, output) exists once. Each method is
//! one logical operation; the implementations map it to one REST call (or a short,
//! documented sequence) and link the Microsoft docs page. A store's `impl Store` is its
//! REST layer and its only surface (no public inherent calls beside it), so a store is
//! replaced in one file (docs/design.md, "Azure SDK"). The engine asks a store what it can
//! do ([`Store::has_directories`], [`Store::listing_has_checksums`], [`Store::name_key`]),
//! never which service it is.

pub mod blob;
pub mod checksum;
pub mod digest;
pub mod files;
pub mod names;
pub mod sas;

use std::borrow::Cow;
use std::collections::HashSet;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::Checksum;
use crate::http::{BodySink, HttpError, Request};
pub use checksum::BodySum;
pub use names::NameError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Http(Box<HttpError>),
    /// 409 to a conditional write: the destination exists (Blob `BlobAlreadyExists`,
    /// Files `ResourceAlreadyExists`).
    #[error(transparent)]
    AlreadyExists(Box<HttpError>),
    /// 404: the container or share itself is missing (`ContainerNotFound`, `ShareNotFound`).
    #[error(transparent)]
    ContainerNotFound(Box<HttpError>),
    #[error("the {what} `{name}` does not exist{hint}")]
    NoContainer { what: &'static str, name: String, hint: &'static str },
    #[error("unexpected response from {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
    /// The item is no longer the version a read asked for (Blob: 412 to `If-Match`;
    /// Files: a response with another ETag): it was rewritten while it was read.
    #[error("`{name}` changed while it was read (ETag {expected} → {now})")]
    Changed { name: String, expected: String, now: String },
    /// A request whose path a URL library would rewrite (a `.` or `..` segment): it would
    /// address another item than the one named, so it is never sent.
    #[error(
        "refusing to send a request for `{0}`: its path has a `.` or `..` segment, so it would address another item"
    )]
    UnsafePath(String),
    /// Settings validation refuses such an endpoint; kept as an error, not a panic.
    #[error("cannot build a request URL from the endpoint `{0}`: check `endpoint` (PLUGIN_ENDPOINT)")]
    BadEndpoint(String),
}

/// Service error codes become typed variants here, so the engine never matches a code.
impl From<HttpError> for StorageError {
    fn from(e: HttpError) -> Self {
        if e.is_status(409) && (e.is_code("BlobAlreadyExists") || e.is_code("ResourceAlreadyExists")) {
            StorageError::AlreadyExists(Box::new(e))
        } else if e.is_status(404) && (e.is_code("ContainerNotFound") || e.is_code("ShareNotFound")) {
            StorageError::ContainerNotFound(Box::new(e))
        } else {
            StorageError::Http(Box::new(e))
        }
    }
}

impl StorageError {
    pub fn http(&self) -> Option<&HttpError> {
        match self {
            StorageError::Http(h) | StorageError::AlreadyExists(h) | StorageError::ContainerNotFound(h) => Some(h),
            _ => None,
        }
    }
    /// A conditional write found the destination there.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StorageError::AlreadyExists(_))
    }
    /// The container or share does not exist.
    pub fn is_container_not_found(&self) -> bool {
        matches!(self, StorageError::ContainerNotFound(_))
    }
    /// A request that was sent more than once and finally got 409: its first attempt may
    /// have been the write that made the destination exist.
    pub fn is_retried_conflict(&self) -> bool {
        self.http().map(|h| h.attempts > 1 && h.is_status(409)).unwrap_or(false)
    }
    pub fn is_status(&self, s: u16) -> bool {
        self.http().map(|h| h.is_status(s)).unwrap_or(false)
    }
    /// The item changed since the version a read was pinned to (see [`Store::get_range`]).
    pub fn is_changed(&self) -> bool {
        matches!(self, StorageError::Changed { .. })
    }
}

/// A read of `len` bytes from `offset` (`x-ms-range`, the same for Get Blob and Get File;
/// `len` 0 reads the whole item), with the timeout scaled to the bytes expected.
pub(crate) fn ranged(mut req: Request, offset: u64, len: u64) -> Request {
    if len > 0 {
        req = req.header("x-ms-range", format!("bytes={}-{}", offset, offset + len - 1));
    }
    req.expect_bytes = len;
    req
}

/// Whether two ETags name the same version: compared without the quotes that headers
/// carry and listings may not.
pub fn same_etag(a: &str, b: &str) -> bool {
    a.trim().trim_matches('"') == b.trim().trim_matches('"')
}

/// An ETag as a quoted entity tag, the form `If-Match` takes.
pub fn quoted_etag(e: &str) -> String {
    format!("\"{}\"", e.trim().trim_matches('"'))
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// The ETag a destructive request on a listed item is pinned to; an item listed without
/// one is not touched (a delete that cannot be pinned could remove another writer's version).
pub(crate) fn listed_etag(item: &RemoteItem) -> Result<&str> {
    item.etag.as_deref().filter(|e| !e.trim().is_empty()).ok_or_else(|| StorageError::Protocol {
        op: "the listing",
        detail: format!(
            "`{}` was listed without an ETag, so a delete cannot be pinned to the listed version",
            item.name
        ),
    })
}

/// Walks an XML response element by element, calling `on_end(path, encoded, text)` as
/// each element closes: `path` holds the element names from the root down to it,
/// `encoded` whether it carried `Encoded="true"`, `text` its text exactly as sent
/// (entities resolved, nothing trimmed). A parent closes after its children, so a
/// caller gathers an entry's fields and takes the entry when the entry itself closes.
///
/// Listings are read this way rather than through quick-xml's serde deserializer, which
/// trims every element's text: a name that begins or ends with a space (legal in Blob
/// and Files) would be listed as another name. Errors name the operation; a document
/// whose root is not `root`, or that ends inside an element, is refused.
pub(crate) fn walk_xml(
    body: &[u8],
    op: &'static str,
    root: &str,
    mut on_end: impl FnMut(&[String], bool, String) -> Result<()>,
) -> Result<()> {
    use quick_xml::events::Event;
    let bad = |detail: String| StorageError::Protocol { op, detail };
    let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8".into()))?.trim_start_matches('\u{feff}');
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut encoded: Vec<bool> = Vec::new();
    let mut value = String::new();
    let mut saw_root = false;
    loop {
        let (start, end) = match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::Start(e) => (Some(e.into_owned()), false),
            Event::Empty(e) => (Some(e.into_owned()), true),
            Event::End(_) => (None, true),
            Event::Text(t) => {
                value.push_str(&t.unescape().map_err(|e| bad(e.to_string()))?);
                continue;
            }
            Event::CData(c) => {
                value.push_str(&String::from_utf8_lossy(&c));
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        if let Some(e) = start {
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            if path.is_empty() {
                if name != root {
                    return Err(bad(format!("the document is a <{name}>, not <{root}>")));
                }
                saw_root = true;
            }
            let enc = e
                .try_get_attribute("Encoded")
                .ok()
                .flatten()
                .map(|a| a.value.eq_ignore_ascii_case(b"true"))
                .unwrap_or(false);
            path.push(name);
            encoded.push(enc);
            value.clear();
        }
        if end {
            if path.is_empty() {
                return Err(bad("a closing tag without an opening one".into()));
            }
            on_end(&path, encoded.pop().unwrap_or(false), std::mem::take(&mut value))?;
            path.pop();
        }
    }
    if !saw_root {
        return Err(bad(format!("no <{root}> element")));
    }
    if !path.is_empty() {
        return Err(bad(format!("the document ends inside <{}>", path.join("><"))));
    }
    Ok(())
}

/// A name from a listing: percent-decoded when the service marked it `Encoded="true"`.
pub(crate) fn listed_name(text: String, encoded: bool) -> String {
    if encoded {
        percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned()
    } else {
        text
    }
}

/// The service URL of a store, parsed once: `None` when `endpoint` is not a URL (validation
/// refuses that, and an upload dry run without an account has none), which makes every
/// request fail with [`StorageError::BadEndpoint`] instead of a panic.
pub(crate) fn parse_base(endpoint: &str) -> Option<url::Url> {
    url::Url::parse(endpoint).ok().filter(|u| !u.cannot_be_a_base() && u.query().is_none())
}

/// `base` with `path` (already percent-encoded, no leading `/`) appended and `query` added.
///
/// Every storage request URL is built here, so this is the one place that refuses a path
/// the URL library would normalise (`a/../b` becomes `b`, `%2e%2e` counts as `..`): the
/// request would address another item than the name it was built from
/// ([`StorageError::UnsafePath`]).
pub(crate) fn request_url(
    base: Option<&url::Url>,
    endpoint: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Result<url::Url> {
    let mut u = base.cloned().ok_or_else(|| StorageError::BadEndpoint(crate::config::shown_url(endpoint)))?;
    let full = format!("{}/{path}", u.path().trim_end_matches('/'));
    u.set_path(&full);
    if u.path() != full {
        let shown = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        return Err(StorageError::UnsafePath(shown.escape_debug().to_string()));
    }
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    Ok(u)
}

/// What the service says about one stored blob or file.
///
/// Held for every listed item by a sync, a delete and a cache lookup, so kept small: 144
/// bytes and the name's and the ETag's heap blocks (checksums as bytes, see [`digest`]). A
/// download holds its listing in columns instead (the engine's `transfer::listing`), and
/// makes an item again only when it is downloaded.
#[derive(Debug, Clone, Default)]
pub struct RemoteItem {
    pub name: String,
    pub size: u64,
    pub etag: Option<Box<str>>,
    /// Content-MD5, when stored.
    pub content_md5: Option<digest::Md5>,
    /// SHA-256 from metadata `sha256`, when stored.
    pub sha256: Option<digest::Sha256>,
    /// Last-Modified, when the listing or the properties carry it (cache `restore_keys`).
    pub last_modified: Option<std::time::SystemTime>,
    /// Permission bits from metadata `mode` ([`parse_mode`]), when stored and well-formed.
    pub mode: Option<u16>,
    /// What few items have (the Blob `Archive` tier, cache metadata): boxed, so an item
    /// without any costs one word.
    pub extra: Option<Box<Extra>>,
}

/// The rarer facts of a [`RemoteItem`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// In the Blob `Archive` tier, which cannot be read until rehydrated.
    pub archived: bool,
    /// Metadata whose name begins with `cache_` (lowercased), which cache archives carry;
    /// other metadata is not kept, so a listing of many blobs stays small.
    pub cache: Vec<(String, String)>,
}

impl RemoteItem {
    /// The stored `cache_*` metadata value of `name` (lowercase), when there is one.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.extra.as_deref()?.cache.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Keeps one metadata pair as the service sent it, when its name begins with `cache_`
    /// (at most 16 are kept).
    pub fn push_meta(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        if !name.starts_with("cache_") {
            return;
        }
        let m = &mut self.extra.get_or_insert_with(Default::default).cache;
        if m.len() < 16 {
            m.push((name, value.trim().to_string()));
        }
    }

    /// The metadata of a Get Properties response (`x-ms-meta-*` headers).
    pub fn with_meta_headers(mut self, headers: &reqwest::header::HeaderMap) -> Self {
        for (k, v) in headers {
            if let (Some(name), Ok(v)) = (k.as_str().strip_prefix("x-ms-meta-"), v.to_str()) {
                self.push_meta(name, v);
            }
        }
        self
    }

    /// In a tier that cannot be read until rehydrated (Blob `Archive`).
    pub fn is_archived(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.archived)
    }

    /// Records whether the item is in the Blob `Archive` tier.
    pub fn set_archived(&mut self, archived: bool) {
        if archived || self.extra.is_some() {
            self.extra.get_or_insert_with(Default::default).archived = archived;
        }
    }

    /// The ETag as results and messages carry it.
    pub fn etag_string(&self) -> Option<String> {
        self.etag.as_deref().map(str::to_string)
    }

    /// The stored `sha256` as results carry it (lowercase hex, or the text as stored).
    pub fn sha256_string(&self) -> Option<String> {
        self.sha256.as_ref().map(ToString::to_string)
    }

    /// Whether the stored `sha256` is `hex` (a write of ours, found after a retried
    /// request), compared as bytes rather than through a string of the stored value.
    pub fn has_sha256(&self, hex: &str) -> bool {
        self.sha256.as_ref().is_some_and(|s| s.is_hex(hex))
    }
}

/// The metadata name the permission bits of an uploaded file are stored under.
pub const MODE_METADATA: &str = "mode";

/// A file's permission bits as metadata `mode` stores them: four octal digits (`0755`),
/// never setuid, setgid or sticky.
pub fn mode_metadata(mode: u32) -> String {
    format!("{:04o}", mode & 0o777)
}

/// The permission bits of a stored `mode` value (3-4 octal digits; setuid, setgid and
/// sticky dropped). The value is outside data: anything else is ignored with a warning
/// naming the item, which then downloads as if it had no `mode`.
pub fn parse_mode(name: &str, v: &str) -> Option<u16> {
    let t = v.trim();
    if (3..=4).contains(&t.len()) && t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u16::from_str_radix(t, 8).ok().map(|m| m & 0o777);
    }
    tracing::warn!(
        "`{}`: its metadata `mode` `{}` is not 3-4 octal digits; ignored",
        crate::escape::shown(name),
        crate::escape::shown(&t.chars().take(32).collect::<String>())
    );
    None
}

/// Whether `tier` (as `x-ms-access-tier` or a listing's `AccessTier` says it) is Archive.
pub fn is_archive_tier(tier: &str) -> bool {
    tier == "Archive"
}

/// What messages say about a store: set by the store, so the engine never asks which
/// service it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreInfo {
    /// The service in messages, e.g. `Azure Files`.
    pub label: &'static str,
    /// The data roles an identity needs (upload and download), for a refusal's hint.
    pub roles: &'static str,
    /// What a link's SAS names: a blob or a file.
    pub sas: sas::Resource,
}

/// Properties written with an upload.
#[derive(Debug, Clone, Default)]
pub struct UploadProps {
    pub content_type: String,
    pub cache_control: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    /// Lowercase names; includes `sha256`.
    pub metadata: Vec<(String, String)>,
    pub access_tier: Option<String>,
    /// Whole-file MD5 to store (chunked uploads; single puts get it from the service).
    pub content_md5: Option<[u8; 16]>,
    /// Fail with 409 when the destination exists (`overwrite: false`).
    pub if_none_match: bool,
    /// Blob index tags (`x-ms-tags`, a query string: `expires-on=2027-01-01`); Blob only.
    pub tags: Option<String>,
}

/// One chunk of a chunked upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
    /// The chunk's transactional checksum (CRC-64/NVME or MD5, per `checksum`).
    pub sum: BodySum,
}

/// Result of a committed upload.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub etag: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Public URL of an item (never with a SAS).
    fn url(&self, name: &str) -> String;
    /// Largest chunk a single request may carry.
    fn max_chunk(&self) -> u64;
    /// What messages say about this store.
    fn info(&self) -> StoreInfo;
    /// Why the service would refuse (or silently alter) `name`, if it would.
    fn check_name(&self, name: &str) -> std::result::Result<(), NameError> {
        names::check_remote_name(name)
    }
    /// The key under which two names are the same item (Azure Files folds case).
    fn name_key<'a>(&self, name: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(name)
    }
    /// Whether the store has real directories (Azure Files): a path cannot be both a file
    /// and the directory of another, and a directory emptied by deletes stays until
    /// [`remove_dir_if_empty`](Self::remove_dir_if_empty) removes it. Blob has none.
    fn has_directories(&self) -> bool {
        false
    }
    /// Whether a listing carries each item's stored checksums (`sha256` metadata,
    /// Content-MD5). Azure Files listings carry neither: an item's properties must be read.
    fn listing_has_checksums(&self) -> bool {
        true
    }
    /// Most chunks one item may be made of (`None`: no limit).
    fn max_chunks(&self) -> Option<u64> {
        None
    }
    /// The per-request checksum this store sends, given the `checksum` setting; the engine
    /// computes it while hashing, so a store never hashes a body again.
    fn body_checksum(&self, wanted: Checksum) -> Checksum {
        wanted
    }

    /// Checks the container/share exists, creating it when `create` is set.
    async fn ensure_container(&self, create: bool) -> Result<()>;
    /// Properties of one item, `None` when it does not exist.
    async fn properties(&self, name: &str) -> Result<Option<RemoteItem>>;
    /// Every item whose name starts with `prefix` (all pages), handed to `page` a page at a
    /// time as each arrives, so a caller that keeps the items in another form never holds
    /// the whole listing twice.
    async fn list_pages(&self, prefix: &str, page: &mut (dyn FnMut(Vec<RemoteItem>) + Send)) -> Result<()>;
    /// Streams `len` bytes from `offset` into `sink` as they arrive (positions relative to
    /// `offset`; a retried attempt starts again at 0) and returns how many bytes came.
    ///
    /// With `etag`, the read is pinned to that version: if the item was rewritten since,
    /// the call fails with [`StorageError::Changed`] (Blob sends `If-Match`, so a changed
    /// blob sends no bytes; Files has no conditional read, so each response's ETag is
    /// compared, and the bytes already handed to `sink` must be discarded).
    async fn get_range(&self, name: &str, etag: Option<&str>, offset: u64, len: u64, sink: BodySink<'_>)
        -> Result<u64>;
    /// Writes a whole small file in one request.
    async fn put_whole(&self, name: &str, data: Bytes, sum: BodySum, props: &UploadProps) -> Result<Committed>;
    /// Prepares a chunked upload; returns the chunk keys already stored by an earlier,
    /// interrupted run (resume), which need not be sent again.
    async fn begin_chunked(&self, name: &str, size: u64, props: &UploadProps) -> Result<HashSet<String>>;
    /// The key under which a chunk is stored (compared with `begin_chunked`'s set).
    fn chunk_key(&self, chunk: &Chunk) -> String;
    async fn put_chunk(&self, name: &str, chunk: Chunk, data: Bytes) -> Result<()>;
    /// Makes the chunks visible as the item, with its properties, atomically where the service allows.
    async fn commit(&self, name: &str, size: u64, chunks: &[Chunk], props: &UploadProps) -> Result<Committed>;
    /// Deletes one listed item (sync), pinned to the version the listing showed (its
    /// ETag): an item rewritten since is kept and the call fails with
    /// [`StorageError::Changed`]. One that is already gone (404) counts as deleted.
    async fn delete(&self, item: &RemoteItem) -> Result<()>;
    /// Removes the directory `dir` when it is empty (Files, after a sync deleted files in it);
    /// `Ok(false)` when it is not empty or already gone. Blob has no directories: nothing to do.
    async fn remove_dir_if_empty(&self, _dir: &str) -> Result<bool> {
        Ok(false)
    }
    /// A chunked upload begun with `begin_chunked` failed before `commit`: release what it
    /// holds (Files deletes its temporary file). Blob keeps its uncommitted blocks, which a
    /// re-run resumes from and the service discards after a week.
    async fn abandon(&self, _name: &str) {}
    /// A key valid from `start` to `expiry` (RFC 3339 UTC) that signs read-only links with
    /// an Entra credential ([`blob::UserDelegationKey`]), from this service's Get User
    /// Delegation Key; `None`: the store has none.
    async fn user_delegation_key(&self, _start: &str, _expiry: &str) -> Result<Option<blob::UserDelegationKey>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sync's or a delete's listing is held whole until each item is handled: its size
    /// is part of the run's memory, so it is kept at most 144 bytes (a download holds its
    /// listing in columns).
    #[test]
    fn a_listed_item_stays_small() {
        assert!(std::mem::size_of::<RemoteItem>() <= 144, "{}", std::mem::size_of::<RemoteItem>());
    }

    #[test]
    fn stored_modes_are_permission_bits_or_ignored() {
        assert_eq!(parse_mode("a", "0755"), Some(0o755));
        assert_eq!(parse_mode("a", "644"), Some(0o644));
        assert_eq!(parse_mode("a", " 0600 "), Some(0o600));
        // setuid, setgid and sticky are never taken from outside data.
        assert_eq!(parse_mode("a", "4755"), Some(0o755));
        assert_eq!(parse_mode("a", "7777"), Some(0o777));
        for bad in ["", "75", "0o755", "rwxr-xr-x", "0788", "10755", "-755", "+755", "７５５"] {
            assert_eq!(parse_mode("a", bad), None, "{bad}");
        }
        assert_eq!(mode_metadata(0o100755), "0755");
        assert_eq!(mode_metadata(0o4711), "0711");
        assert_eq!(mode_metadata(0o600), "0600");
    }

    #[test]
    fn a_listing_keeps_only_cache_metadata_and_the_archive_tier() {
        let page = br#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>
            <Blob><Name>c/trusted/k.tar.zst</Name><Properties><Content-Length>3</Content-Length></Properties>
            <Metadata><sha256>AB</sha256><Cache_Sources>target</Cache_Sources><team>x</team></Metadata></Blob>
            <Blob><Name>plain</Name><Properties><Content-Length>1</Content-Length><AccessTier>Archive</AccessTier></Properties></Blob>
            <Blob><Name>hot</Name><Properties><Content-Length>1</Content-Length><AccessTier>Hot</AccessTier></Properties></Blob>
            </Blobs></EnumerationResults>"#;
        let (items, _) = blob::parse_list_blobs(page).unwrap();
        assert_eq!(items[0].meta("cache_sources"), Some("target"));
        assert_eq!(items[0].meta("team"), None, "other metadata is not held");
        assert!(items[0].sha256.is_some() && !items[0].is_archived());
        assert!(items[1].is_archived() && items[1].meta("cache_sources").is_none());
        assert!(!items[2].is_archived() && items[2].extra.is_none(), "an ordinary item allocates nothing more");
    }

    #[test]
    fn request_urls_are_built_without_parsing_text_again() {
        for (endpoint, path, want) in [
            (
                "http://127.0.0.1:10000/devstoreaccount1",
                "c/a%20b",
                "http://127.0.0.1:10000/devstoreaccount1/c/a%20b?comp=block",
            ),
            (
                "https://acct.blob.core.windows.net",
                "c/x%3Fy%23z",
                "https://acct.blob.core.windows.net/c/x%3Fy%23z?comp=block",
            ),
        ] {
            let base = parse_base(endpoint);
            let u = request_url(base.as_ref(), endpoint, path, &[("comp", "block")]).unwrap();
            assert_eq!(u.as_str(), want);
        }
        // A path the URL library would normalise addresses another item: never sent.
        let base = parse_base("http://127.0.0.1:10000/devstoreaccount1");
        for path in ["c/site/../victim.txt", "c/./x", "c/a/..", "c/%2e%2e/x", "c/a/.%2E/x", "c/.."] {
            let e = request_url(base.as_ref(), "", path, &[]).unwrap_err();
            assert!(matches!(e, StorageError::UnsafePath(_)), "{path}: {e}");
        }
        for path in ["c/a..b/x", "c/.hidden", "c/a//b", "c/%252e%252e/x", "c/x."] {
            request_url(base.as_ref(), "", path, &[]).unwrap();
        }
        // No endpoint (an upload dry run without an account) or a bad one: an error, not a panic.
        for endpoint in ["", "notaurl", "https://h.net/?sig=SECRET"] {
            let e = request_url(parse_base(endpoint).as_ref(), endpoint, "c/x", &[]).unwrap_err();
            assert!(matches!(e, StorageError::BadEndpoint(_)), "{endpoint}: {e}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
    }
}
