//! Azure Blob Storage: one method per REST call, each linked to its docs page.
//!
//! Block ids are deterministic: `hex(offset) hex(len) hex(crc64)` base64-encoded, all the
//! same length, so a re-run of an interrupted upload recognises the blocks it already
//! staged (Get Block List, uncommitted) and sends only the missing ones.

use std::collections::HashSet;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;

use super::checksum::{check_echo, crc64, crc64_header, BodySum, Echo};
use super::digest::{Md5, Sha256};
use super::{
    is_archive_tier, listed_name, quoted_etag, walk_xml, Chunk, Committed, RemoteItem, Result, StorageError, Store,
    UploadProps, MODE_METADATA,
};
use crate::http::{BodySink, Http, Request, Response};

/// Azure allows 50,000 blocks per blob (Put Block List).
pub const MAX_BLOCKS: u64 = 50_000;

/// Characters left as-is in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a name segment by segment, keeping `/`.
pub fn encode_path(name: &str) -> String {
    name.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// Page size of listings: 5000 (the service maximum). `AZURE_STORAGE_LIST_PAGE_SIZE`
/// lowers it, a debugging knob that lets tests exercise pagination with few blobs.
pub fn list_page_size() -> String {
    std::env::var("AZURE_STORAGE_LIST_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (1..=5000).contains(n))
        .unwrap_or(5000)
        .to_string()
}

pub struct BlobStore {
    http: std::sync::Arc<Http>,
    endpoint: String,
    base: Option<url::Url>,
    container: String,
}

impl BlobStore {
    pub fn new(http: std::sync::Arc<Http>, endpoint: &str, container: &str) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        BlobStore { http, base: super::parse_base(&endpoint), endpoint, container: container.to_string() }
    }

    fn container_url(&self, query: &[(&str, &str)]) -> Result<url::Url> {
        super::request_url(self.base.as_ref(), &self.endpoint, &encode_path(&self.container), query)
    }

    fn blob_url(&self, name: &str, query: &[(&str, &str)]) -> Result<url::Url> {
        let path = format!("{}/{}", encode_path(&self.container), encode_path(name));
        super::request_url(self.base.as_ref(), &self.endpoint, &path, query)
    }

    /// A block's id: base64 of its offset, length and wire checksum (48 hex digits, so
    /// every id of a blob has one length, as Put Block List requires). Deterministic: a
    /// re-run of a failed upload computes the same ids, finds them in Get Block List and
    /// sends only the blocks that are missing or differ.
    fn block_id(chunk: &Chunk) -> String {
        B64.encode(format!("{:016x}{:016x}{:016x}", chunk.offset, chunk.len, chunk.sum.id_bits()))
    }

    /// Standard blob headers of an upload (Put Blob uses `x-ms-blob-*` too).
    fn with_props(mut req: Request, props: &UploadProps) -> Request {
        req = req
            .header("x-ms-blob-content-type", &props.content_type)
            .header_opt("x-ms-blob-cache-control", props.cache_control.as_ref())
            .header_opt("x-ms-blob-content-encoding", props.content_encoding.as_ref())
            .header_opt("x-ms-blob-content-disposition", props.content_disposition.as_ref())
            .header_opt("x-ms-access-tier", props.access_tier.as_ref())
            .header_opt("x-ms-tags", props.tags.as_ref());
        if props.if_none_match {
            req = req.header("if-none-match", "*");
        }
        for (k, v) in &props.metadata {
            req = req.dyn_header(&format!("x-ms-meta-{k}"), v);
        }
        req
    }
}

/// The REST layer: each method is one Blob REST call (or its pages), linked to its docs page.
#[async_trait]
impl Store for BlobStore {
    fn info(&self) -> super::StoreInfo {
        super::StoreInfo {
            label: "Blob Storage",
            roles: "`Storage Blob Data Contributor` (download: `Storage Blob Data Reader`)",
            sas: super::sas::Resource::Blob,
        }
    }
    fn url(&self, name: &str) -> String {
        format!("{}/{}/{}", self.endpoint, encode_path(&self.container), encode_path(name))
    }

    fn max_chunk(&self) -> u64 {
        4000 << 20
    }

    fn max_chunks(&self) -> Option<u64> {
        Some(MAX_BLOCKS)
    }

    /// [Create Container](https://learn.microsoft.com/rest/api/storageservices/create-container)
    /// with `create` (one that exists is success), else
    /// [Get Container Properties](https://learn.microsoft.com/rest/api/storageservices/get-container-properties).
    async fn ensure_container(&self, create: bool) -> Result<()> {
        let method = if create { Method::PUT } else { Method::GET };
        let req = Request::new(method, self.container_url(&[("restype", "container")])?);
        match self.http.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if create && e.is_code("ContainerAlreadyExists") => Ok(()),
            Err(e) if create => Err(e.into()),
            Err(e) if e.is_status(404) => Err(StorageError::NoContainer {
                what: "container",
                name: self.container.clone(),
                hint: " (create it, or set `create_container: true`)",
            }),
            // A SAS scoped to blobs may not read container properties: carry on, the
            // first real request will tell.
            Err(e) if e.is_status(403) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [Get Blob Properties](https://learn.microsoft.com/rest/api/storageservices/get-blob-properties)
    async fn properties(&self, name: &str) -> Result<Option<RemoteItem>> {
        let req = Request::new(Method::HEAD, self.blob_url(name, &[])?);
        let resp = match self.http.send(req).await {
            Ok(r) => r,
            Err(e) if e.is_status(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StorageError::Protocol { op: "Get Blob Properties", detail: "no Content-Length".into() })?;
        let mut item = RemoteItem {
            name: name.to_string(),
            size,
            etag: resp.header("etag").map(Into::into),
            content_md5: resp.header("content-md5").map(Md5::parse),
            sha256: resp.header("x-ms-meta-sha256").map(|s| Sha256::parse(&s.to_ascii_lowercase())),
            last_modified: resp.header("last-modified").and_then(|v| httpdate::parse_http_date(v).ok()),
            mode: resp.header("x-ms-meta-mode").and_then(|v| super::parse_mode(name, v)),
            extra: None,
        }
        .with_meta_headers(&resp.headers);
        item.set_archived(resp.header("x-ms-access-tier").is_some_and(is_archive_tier));
        Ok(Some(item))
    }

    /// [List Blobs](https://learn.microsoft.com/rest/api/storageservices/list-blobs), every page.
    async fn list_pages(&self, prefix: &str, on_page: &mut (dyn FnMut(Vec<RemoteItem>) + Send)) -> Result<()> {
        let page = list_page_size();
        let mut marker: Option<String> = None;
        loop {
            let mut q = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("include", "metadata"),
                ("maxresults", page.as_str()),
            ];
            if !prefix.is_empty() {
                q.push(("prefix", prefix));
            }
            if let Some(m) = marker.as_deref() {
                q.push(("marker", m));
            }
            let resp = self.http.send(Request::new(Method::GET, self.container_url(&q)?)).await?;
            let (items, next) = parse_list_blobs(&resp.body)?;
            tracing::debug!(prefix, items = items.len(), more = next.is_some(), "list page");
            on_page(items);
            match next {
                Some(m) if !m.is_empty() => marker = Some(m),
                _ => break,
            }
        }
        Ok(())
    }

    /// [Get Blob](https://learn.microsoft.com/rest/api/storageservices/get-blob) with `x-ms-range`.
    /// The body goes to `sink` as it arrives. With `etag`, `If-Match` pins the read to that
    /// version ([conditional headers](https://learn.microsoft.com/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations)):
    /// a blob rewritten since answers 412 `ConditionNotMet`, reported as [`StorageError::Changed`].
    async fn get_range(
        &self,
        name: &str,
        etag: Option<&str>,
        offset: u64,
        len: u64,
        sink: BodySink<'_>,
    ) -> Result<u64> {
        let mut req = super::ranged(Request::new(Method::GET, self.blob_url(name, &[])?), offset, len);
        if let Some(e) = etag {
            req = req.header("if-match", quoted_etag(e));
        }
        match self.http.send_streamed(req, sink).await {
            Ok(resp) => Ok(resp.streamed),
            Err(e) if e.is_status(412) => Err(StorageError::Changed {
                name: name.to_string(),
                expected: etag.unwrap_or_default().to_string(),
                now: format!("a newer one: {e}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// [Put Blob](https://learn.microsoft.com/rest/api/storageservices/put-blob) (block blob, one request).
    /// The answer's echo (Content-MD5, x-ms-content-crc64) must be the body's ([`echoed`]).
    async fn put_whole(&self, name: &str, data: Bytes, sum: BodySum, props: &UploadProps) -> Result<Committed> {
        let (h, v) = sum.header();
        let req =
            Request::new(Method::PUT, self.blob_url(name, &[])?).header("x-ms-blob-type", "BlockBlob").header(h, v);
        // Azure and Azurite refuse a CRC64 together with an MD5 header on Put Blob; the service
        // computes and stores the Content-MD5 of a single-request blob itself.
        let props = UploadProps { content_md5: None, ..props.clone() };
        let resp = self.http.send(Self::with_props(req, &props).body(data.clone())).await?;
        echoed("Put Blob", sum, &data, &resp)?;
        Ok(Committed { etag: resp.header("etag").map(str::to_string) })
    }

    /// [Get Block List](https://learn.microsoft.com/rest/api/storageservices/get-block-list),
    /// uncommitted blocks: the ids an interrupted run already staged.
    async fn begin_chunked(&self, name: &str, _size: u64, _props: &UploadProps) -> Result<HashSet<String>> {
        let req =
            Request::new(Method::GET, self.blob_url(name, &[("comp", "blocklist"), ("blocklisttype", "uncommitted")])?);
        let resp = match self.http.send(req).await {
            Ok(r) => r,
            Err(e) if e.is_status(404) => return Ok(HashSet::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(parse_block_list(&resp.body)?.into_iter().map(|(id, _)| id).collect())
    }

    fn chunk_key(&self, chunk: &Chunk) -> String {
        Self::block_id(chunk)
    }

    /// [Put Block](https://learn.microsoft.com/rest/api/storageservices/put-block)
    async fn put_chunk(&self, name: &str, chunk: Chunk, data: Bytes) -> Result<()> {
        let (h, v) = chunk.sum.header();
        let id = Self::block_id(&chunk);
        let req = Request::new(Method::PUT, self.blob_url(name, &[("comp", "block"), ("blockid", &id)])?)
            .header(h, v)
            .body(data.clone());
        let resp = self.http.send(req).await?;
        echoed("Put Block", chunk.sum, &data, &resp)?;
        Ok(())
    }

    /// [Put Block List](https://learn.microsoft.com/rest/api/storageservices/put-block-list)
    async fn commit(&self, name: &str, _size: u64, chunks: &[Chunk], props: &UploadProps) -> Result<Committed> {
        let mut xml = String::with_capacity(64 + chunks.len() * 90);
        xml.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for c in chunks {
            xml.push_str("<Latest>");
            xml.push_str(&Self::block_id(c));
            xml.push_str("</Latest>");
        }
        xml.push_str("</BlockList>");
        let body = Bytes::from(xml);
        let mut req = Request::new(Method::PUT, self.blob_url(name, &[("comp", "blocklist")])?)
            .header("x-ms-content-crc64", crc64_header(crc64(&body)))
            .header("content-type", "application/xml");
        if let Some(md5) = props.content_md5 {
            req = req.header("x-ms-blob-content-md5", B64.encode(md5));
        }
        let resp = self.http.send(Self::with_props(req, props).body(body)).await?;
        Ok(Committed { etag: resp.header("etag").map(str::to_string) })
    }

    /// [Delete Blob](https://learn.microsoft.com/rest/api/storageservices/delete-blob), with
    /// its snapshots (`x-ms-delete-snapshots: include`: a blob with snapshots cannot be deleted
    /// alone), pinned to the listed version (`If-Match`): a blob rewritten since answers 412
    /// and stays, reported as [`StorageError::Changed`]. A blob already gone (404) is not an
    /// error.
    async fn delete(&self, item: &RemoteItem) -> Result<()> {
        let etag = super::listed_etag(item)?;
        let req = Request::new(Method::DELETE, self.blob_url(&item.name, &[])?)
            .header("x-ms-delete-snapshots", "include")
            .header("if-match", quoted_etag(etag));
        match self.http.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(412) => Err(StorageError::Changed {
                name: item.name.clone(),
                expected: etag.to_string(),
                now: "a newer one".into(),
            }),
            Err(e) if e.is_status(404) && !e.is_code("ContainerNotFound") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Get User Delegation Key on the Blob service ([`get_user_delegation_key`]).
    async fn user_delegation_key(&self, start: &str, expiry: &str) -> Result<Option<UserDelegationKey>> {
        get_user_delegation_key(&self.http, self.base.as_ref(), &self.endpoint, start, expiry).await.map(Some)
    }
}

/// [Get User Delegation Key](https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key)
/// on the service at `endpoint` (Blob, or Files since REST 2025-07-05, each handing out its
/// own key): a key valid from `start` to `expiry` (RFC 3339 UTC, at most 7 days from now),
/// for the identity of the bearer token the request carries.
pub(super) async fn get_user_delegation_key(
    http: &Http,
    base: Option<&url::Url>,
    endpoint: &str,
    start: &str,
    expiry: &str,
) -> Result<UserDelegationKey> {
    let url = super::request_url(base, endpoint, "", &[("restype", "service"), ("comp", "userdelegationkey")])?;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{start}</Start><Expiry>{expiry}</Expiry></KeyInfo>"
    );
    let req = Request::new(Method::POST, url).header("content-type", "application/xml").body(Bytes::from(body));
    let resp = http.send(req).await?;
    parse_user_delegation_key(&resp.body)
}

/// A user delegation key ([Get User Delegation Key](https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key)):
/// what signs a user-delegation SAS, and the `sk*` fields the SAS carries so the service can
/// rebuild the key. `Debug` never shows the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserDelegationKey {
    /// `skoid`, `sktid`: the identity's object and tenant ids.
    pub oid: String,
    pub tid: String,
    /// `skt`, `ske`: when the key starts and expires.
    pub start: String,
    pub expiry: String,
    /// `sks`, `skv`: the service (`b`, or `f` for Azure Files) and the version that made the key.
    pub service: String,
    pub version: String,
    /// The key, decoded.
    value: Vec<u8>,
}

impl std::fmt::Debug for UserDelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDelegationKey")
            .field("oid", &self.oid)
            .field("tid", &self.tid)
            .field("start", &self.start)
            .field("expiry", &self.expiry)
            .field("service", &self.service)
            .field("version", &self.version)
            .field("value", &"***")
            .finish()
    }
}

impl UserDelegationKey {
    /// The base64 HMAC-SHA256 of `message` under the key: a user-delegation SAS's `sig`.
    pub fn sign(&self, message: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.value).expect("HMAC takes any key length");
        mac.update(message.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// A key with these fields and the base64 `value` (tests).
    #[cfg(test)]
    pub fn for_test(fields: [&str; 6], value: &str) -> Self {
        let [oid, tid, start, expiry, service, version] = fields.map(str::to_string);
        UserDelegationKey { oid, tid, start, expiry, service, version, value: B64.decode(value).unwrap() }
    }
}

/// Parses a Get User Delegation Key response; every field is required.
pub fn parse_user_delegation_key(body: &[u8]) -> Result<UserDelegationKey> {
    const OP: &str = "Get User Delegation Key";
    let mut k = UserDelegationKey::default();
    let mut value = None;
    walk_xml(body, OP, "UserDelegationKey", |path, _, v| {
        let v = v.trim().to_string();
        match path {
            [_, f] if f == "SignedOid" => k.oid = v,
            [_, f] if f == "SignedTid" => k.tid = v,
            [_, f] if f == "SignedStart" => k.start = v,
            [_, f] if f == "SignedExpiry" => k.expiry = v,
            [_, f] if f == "SignedService" => k.service = v,
            [_, f] if f == "SignedVersion" => k.version = v,
            [_, f] if f == "Value" => value = Some(v),
            _ => {}
        }
        Ok(())
    })?;
    let missing = [
        ("SignedOid", &k.oid),
        ("SignedTid", &k.tid),
        ("SignedStart", &k.start),
        ("SignedExpiry", &k.expiry),
        ("SignedService", &k.service),
        ("SignedVersion", &k.version),
    ]
    .into_iter()
    .find(|(_, v)| v.is_empty());
    if let Some((field, _)) = missing {
        return Err(StorageError::Protocol { op: OP, detail: format!("no <{field}>") });
    }
    k.value = value
        .and_then(|v| B64.decode(v).ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| StorageError::Protocol { op: OP, detail: "no base64 <Value>".into() })?;
    Ok(k)
}

/// A `<Blob>` being read.
#[derive(Default)]
struct BlobEntry {
    item: RemoteItem,
    name: Option<String>,
    size: Option<u64>,
}

/// Parses a List Blobs page. Names are taken exactly as sent (see [`walk_xml`]: a name
/// may begin or end with spaces); names Azure had to encode (`Encoded="true"`) are
/// percent-decoded.
pub fn parse_list_blobs(body: &[u8]) -> Result<(Vec<RemoteItem>, Option<String>)> {
    let bad = |detail: String| StorageError::Protocol { op: "List Blobs", detail };
    let mut cur = BlobEntry::default();
    let mut items = Vec::new();
    let mut next_marker = None;
    walk_xml(body, "List Blobs", "EnumerationResults", |path, encoded, v| {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["EnumerationResults", "Blobs", "Blob", "Name"] => cur.name = Some(listed_name(v, encoded)),
            ["EnumerationResults", "Blobs", "Blob", "Properties", prop] => match *prop {
                "Content-Length" => {
                    cur.size = Some(v.trim().parse().map_err(|_| bad(format!("Content-Length `{}`", v.trim())))?)
                }
                "Content-MD5" => cur.item.content_md5 = Some(v.trim()).filter(|s| !s.is_empty()).map(Md5::parse),
                "Etag" => cur.item.etag = Some(v.trim().into()),
                "AccessTier" => cur.item.set_archived(is_archive_tier(v.trim())),
                "Last-Modified" => cur.item.last_modified = httpdate::parse_http_date(v.trim()).ok(),
                _ => {}
            },
            ["EnumerationResults", "Blobs", "Blob", "Metadata", key] if key.eq_ignore_ascii_case("sha256") => {
                cur.item.sha256 = Some(Sha256::parse(&v.trim().to_ascii_lowercase()))
            }
            ["EnumerationResults", "Blobs", "Blob", "Metadata", key] if key.eq_ignore_ascii_case(MODE_METADATA) => {
                cur.item.mode = super::parse_mode(cur.name.as_deref().unwrap_or_default(), &v)
            }
            ["EnumerationResults", "Blobs", "Blob", "Metadata", key] => cur.item.push_meta(key, &v),
            ["EnumerationResults", "Blobs", "Blob"] => {
                let BlobEntry { mut item, name, size } = std::mem::take(&mut cur);
                let name = name.ok_or_else(|| bad("a <Blob> without a <Name>".into()))?;
                item.size = size.ok_or_else(|| bad(format!("<Blob> `{name}` has no Content-Length")))?;
                item.name = name;
                items.push(item);
            }
            ["EnumerationResults", "NextMarker"] => next_marker = Some(v.trim().to_string()).filter(|m| !m.is_empty()),
            _ => {}
        }
        Ok(())
    })?;
    Ok((items, next_marker))
}

/// Parses a Get Block List response: the uncommitted blocks' names and sizes, in order.
pub fn parse_block_list(body: &[u8]) -> Result<Vec<(String, u64)>> {
    let bad = |detail: String| StorageError::Protocol { op: "Get Block List", detail };
    let (mut name, mut size) = (None, None);
    let mut blocks = Vec::new();
    walk_xml(body, "Get Block List", "BlockList", |path, _, v| {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["BlockList", "UncommittedBlocks", "Block", "Name"] => name = Some(v.trim().to_string()),
            ["BlockList", "UncommittedBlocks", "Block", "Size"] => {
                size = Some(v.trim().parse::<u64>().map_err(|_| bad(format!("block Size `{}`", v.trim())))?)
            }
            ["BlockList", "UncommittedBlocks", "Block"] => {
                let name = name.take().ok_or_else(|| bad("a <Block> without a <Name>".into()))?;
                let size = size.take().ok_or_else(|| bad(format!("block `{name}` has no <Size>")))?;
                blocks.push((name, size));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(blocks)
}

/// The checksum a Blob write's answer echoes must be the body's: Azure always returns one
/// (Put Block: `x-ms-content-crc64` when a CRC-64 was sent, `Content-MD5` when an MD5 was;
/// Put Blob: the blob's `Content-MD5`), so an answer without one, or with another value,
/// did not store these bytes (a forged or misrouted 201) and the write fails. Put Block
/// with an MD5 is compared when echoed only: Azurite does not echo it.
fn echoed(op: &'static str, sum: BodySum, data: &[u8], resp: &Response) -> Result<()> {
    let rule = match (op, sum) {
        ("Put Block", BodySum::Md5(_)) => Echo::IfPresent,
        _ => Echo::Required,
    };
    check_echo(sum, data, resp.header("x-ms-content-crc64"), resp.header("content-md5"), rule)
        .map_err(|detail| StorageError::Protocol { op, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented response shape (Get User Delegation Key).
    const UDK: &str = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey><SignedOid>o-1</SignedOid><SignedTid>t-1</SignedTid><SignedStart>2026-12-03T06:00:00Z</SignedStart><SignedExpiry>2026-12-04T06:00:00Z</SignedExpiry><SignedService>b</SignedService><SignedVersion>2025-11-05</SignedVersion><Value>c2VjcmV0LWtleQ==</Value></UserDelegationKey>";

    #[test]
    fn a_user_delegation_key_is_read_whole_and_never_shown() {
        let k = parse_user_delegation_key(UDK.as_bytes()).unwrap();
        let want = UserDelegationKey::for_test(
            ["o-1", "t-1", "2026-12-03T06:00:00Z", "2026-12-04T06:00:00Z", "b", "2025-11-05"],
            "c2VjcmV0LWtleQ==",
        );
        assert_eq!(k, want);
        let shown = format!("{k:?}");
        assert!(shown.contains("o-1") && !shown.contains("c2VjcmV0") && !shown.contains("secret-key"), "{shown}");
        for (bad, why) in [
            (UDK.replace("<SignedTid>t-1</SignedTid>", ""), "no <SignedTid>"),
            (UDK.replace("c2VjcmV0LWtleQ==", "not base64!"), "no base64 <Value>"),
            (UDK.replace("<Value>c2VjcmV0LWtleQ==</Value>", ""), "no base64 <Value>"),
            ("<Error><Code>x</Code></Error>".to_string(), "not <UserDelegationKey>"),
        ] {
            let e = parse_user_delegation_key(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("Get User Delegation Key") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn encodes_segments_not_slashes() {
        assert_eq!(encode_path("a b/c+d/é.txt"), "a%20b/c%2Bd/%C3%A9.txt");
    }

    #[test]
    fn block_ids_are_fixed_length_and_deterministic() {
        let a = BlobStore::block_id(&Chunk { offset: 0, len: 4 << 20, sum: BodySum::Crc64(1) });
        let b = BlobStore::block_id(&Chunk { offset: 1 << 40, len: 7, sum: BodySum::Crc64(u64::MAX) });
        let m = BlobStore::block_id(&Chunk { offset: 1 << 40, len: 7, sum: BodySum::Md5([0xff; 16]) });
        assert_eq!(a.len(), b.len());
        assert_eq!(b.len(), m.len(), "Azure wants every block id of a blob the same length");
        assert_eq!(a, BlobStore::block_id(&Chunk { offset: 0, len: 4 << 20, sum: BodySum::Crc64(1) }));
        assert!(a.len() <= 64 * 4 / 3 + 4);
    }

    #[test]
    fn parses_a_list_page_with_metadata_and_encoded_names() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Prefix>p/</Prefix><MaxResults>2</MaxResults>
<Blobs>
 <Blob><Name>p/a.txt</Name><Properties><Content-Length>5</Content-Length><Content-MD5>XUFAKrxLKna5cZ2REBfFkg==</Content-MD5><Etag>0x1</Etag><AccessTier>Hot</AccessTier></Properties><Metadata><sha256>ABCD</sha256><ci_repo>o/r</ci_repo></Metadata></Blob>
 <Blob><Name Encoded="true">p/%00bad</Name><Properties><Content-Length>0</Content-Length><Content-MD5 /></Properties><Metadata /></Blob>
</Blobs><NextMarker>tok</NextMarker></EnumerationResults>"#;
        let (items, next) = parse_list_blobs(xml.as_bytes()).unwrap();
        assert_eq!(next.as_deref(), Some("tok"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "p/a.txt");
        assert_eq!(items[0].size, 5);
        assert_eq!(items[0].sha256_string().as_deref(), Some("abcd"));
        assert_eq!(items[0].content_md5.as_ref().map(ToString::to_string).as_deref(), Some("XUFAKrxLKna5cZ2REBfFkg=="));
        assert!(!items[0].is_archived());
        assert_eq!(items[1].name, "p/\0bad");
        assert_eq!(items[1].content_md5, None);
        let (items, next) =
            parse_list_blobs(b"<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>").unwrap();
        assert!(items.is_empty() && next.is_none());
    }

    #[test]
    fn names_keep_their_spaces_and_required_fields_are_required() {
        let xml = "<EnumerationResults><Blobs><Blob><Name> a.txt </Name><Properties><Content-Length> 3 </Content-Length></Properties></Blob><Blob><Name>a.txt</Name><Properties><Content-Length>1</Content-Length></Properties></Blob></Blobs></EnumerationResults>";
        let (items, _) = parse_list_blobs(xml.as_bytes()).unwrap();
        assert_eq!(
            items.iter().map(|i| (i.name.as_str(), i.size)).collect::<Vec<_>>(),
            vec![(" a.txt ", 3), ("a.txt", 1)]
        );
        for bad in [
            "<EnumerationResults><Blobs><Blob><Properties><Content-Length>1</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
            "<EnumerationResults><Blobs><Blob><Name>x</Name></Blob></Blobs></EnumerationResults>",
            "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Content-Length>-1</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
            "<EnumerationResults><Blobs><Blob><Name>x</Name>",
            "<Error><Code>x</Code></Error>",
            "",
        ] {
            assert!(parse_list_blobs(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_uncommitted_blocks() {
        let xml = "<?xml version=\"1.0\"?><BlockList><CommittedBlocks/><UncommittedBlocks><Block><Name>QUFB</Name><Size>10</Size></Block><Block><Name>QkJC</Name><Size>0</Size></Block></UncommittedBlocks></BlockList>";
        assert_eq!(parse_block_list(xml.as_bytes()).unwrap(), vec![("QUFB".into(), 10), ("QkJC".into(), 0)]);
        // Committed blocks are not staged ones; no <UncommittedBlocks> is none staged.
        let xml =
            "<BlockList><CommittedBlocks><Block><Name>Q0ND</Name><Size>3</Size></Block></CommittedBlocks></BlockList>";
        assert_eq!(parse_block_list(xml.as_bytes()).unwrap(), vec![]);
        for bad in [
            "<BlockList><UncommittedBlocks><Block><Name>QUFB</Name></Block></UncommittedBlocks></BlockList>",
            "<BlockList><UncommittedBlocks><Block><Name>QUFB</Name><Size>-1</Size></Block></UncommittedBlocks></BlockList>",
            "<Error><Code>x</Code></Error>",
            "<BlockList><UncommittedBlocks>",
        ] {
            let e = parse_block_list(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("Get Block List"), "{bad}: {e}");
        }
    }
}

/// Property tests: the response parsers never panic, whatever the service (or a broken
/// proxy) sends, and read back what a well-formed listing says.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const LIST: &str = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Blobs><Blob><Name>p/a.txt</Name><Properties><Content-Length>5</Content-Length><Content-MD5>XUFAKrxLKna5cZ2REBfFkg==</Content-MD5><Etag>0x1</Etag></Properties><Metadata><sha256>ab</sha256></Metadata></Blob><Blob><Name Encoded="true">%00</Name><Properties><Content-Length>0</Content-Length></Properties></Blob></Blobs><NextMarker>m</NextMarker></EnumerationResults>"#;
    const BLOCKS: &str = "<?xml version=\"1.0\"?><BlockList><CommittedBlocks/><UncommittedBlocks><Block><Name>QUFB</Name><Size>10</Size></Block></UncommittedBlocks></BlockList>";

    /// A valid document with a few bytes changed, inserted or cut off.
    fn mutated(doc: &'static str) -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(edits, cut)| {
                let mut b = doc.as_bytes().to_vec();
                for (at, byte, kind) in edits {
                    let i = at.index(b.len());
                    match kind {
                        0 => b[i] = byte,
                        1 => b.insert(i, byte),
                        _ => {
                            b.remove(i);
                        }
                    }
                }
                let keep = cut.index(b.len() + 1).max(b.len() / 2);
                b.truncate(keep);
                b
            })
    }

    fn xml_escape(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_list_blobs(&b);
            let _ = parse_block_list(&b);
            let _ = parse_user_delegation_key(&b);
            let _ = crate::http::error::parse_error_body(&b);
        }

        #[test]
        fn parsers_never_panic_on_damaged_documents(list in mutated(LIST), blocks in mutated(BLOCKS)) {
            let _ = parse_list_blobs(&list);
            let _ = parse_block_list(&blocks);
            let _ = crate::http::error::parse_error_body(&list);
        }

        #[test]
        fn a_listing_reads_back_what_it_says(
            blobs in proptest::collection::vec(("[^\\p{Cc}]{1,20}", any::<u64>(), proptest::option::of("[0-9a-f]{64}")), 0..8),
            marker in proptest::option::of("[A-Za-z0-9!*]{1,20}"),
        ) {
            let mut xml = String::from("\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Blobs>");
            for (name, size, sha) in &blobs {
                xml.push_str(&format!(
                    "<Blob><Name>{}</Name><Properties><Content-Length>{size}</Content-Length></Properties>",
                    xml_escape(name)
                ));
                match sha {
                    Some(s) => xml.push_str(&format!("<Metadata><SHA256>{}</SHA256></Metadata></Blob>", s.to_ascii_uppercase())),
                    None => xml.push_str("<Metadata /></Blob>"),
                }
            }
            xml.push_str("</Blobs>");
            if let Some(m) = &marker {
                xml.push_str(&format!("<NextMarker>{m}</NextMarker>"));
            }
            xml.push_str("</EnumerationResults>");
            let (items, next) = parse_list_blobs(xml.as_bytes()).unwrap();
            prop_assert_eq!(next, marker);
            prop_assert_eq!(items.len(), blobs.len());
            for (it, (name, size, sha)) in items.iter().zip(&blobs) {
                prop_assert_eq!(&it.name, name);
                prop_assert_eq!(it.size, *size);
                prop_assert_eq!(&it.sha256_string(), sha);
            }
        }
    }
}
