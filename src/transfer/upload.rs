//! Upload of one file: overwrite policy, then one Put Blob (small files) or bounded
//! read → hash → send stages (large files).
//!
//! Large files: a blocking reader thread reads block after block and a hasher thread
//! follows it, feeding the whole-file SHA-256 (and MD5 when asked) and computing each
//! block's checksum (CRC-64 or MD5), so reading overlaps hashing. The reader takes memory
//! from the shared budget *before* reading a block, so it stalls (back-pressure) when
//! the senders fall behind. Senders take a request permit from the budget shared by every
//! file. Blocks an earlier run already staged are recognised by their deterministic id
//! and not sent again. The block list is committed only after every block succeeded,
//! so readers never see a partial blob; the stored metadata `sha256` is the hash of
//! exactly the bytes sent.
//!
//! Files are opened through [`super::localfs::Root`]: resolved without following links
//! (or only inside the workspace), and checked to be the planned file (device, inode,
//! size). A file whose size, mtime or ctime differ after the last read from before the
//! first (tar's "file changed as we read it") is failed and nothing is committed.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use super::checksum::{hash_read, Digests, FileHasher, HASH_PIECE};
use super::localfs::{LocalError, PlannedFile};
use super::plan::UploadItem;
use super::report::{FileResult, Status};
use super::Engine;
use crate::config::Overwrite;
use crate::storage::BodySum;
use crate::storage::{mode_metadata, Chunk, RemoteItem, StorageError, UploadProps, MODE_METADATA};

/// Why one file's upload failed: its text is the file's `reason` in the summary and the
/// manifest.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Not the planned file any more, or it changed while it was read.
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error("cannot read at offset {offset}: {source}")]
    ReadAt { offset: u64, source: std::io::Error },
    #[error("{0}")]
    Probe(#[source] std::io::Error),
    /// The file's length is not the planned one (`detail`); nothing was committed.
    #[error("changed size while being uploaded ({detail}); not {outcome}")]
    Resized { detail: String, outcome: &'static str },
    /// `overwrite: false` and the destination exists (seen before sending anything).
    #[error("already exists (overwrite: false)")]
    Exists,
    /// `overwrite: false` and the conditional write found the destination there.
    #[error("already exists (overwrite: false) [x-ms-client-request-id {0}]")]
    ExistsAtCommit(String),
    #[error("the {0} does not exist (create it, or set `create_container: true`)")]
    NoContainer(&'static str),
    #[error("block at offset {offset}: {source}")]
    Block { offset: u64, source: StorageError },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A reading or hashing stage ended early because the other one failed.
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    /// A file in `compress` is held in memory whole: it must fit in `max_memory`.
    #[error("is {size}, more than `max_memory` ({max}): a file in `compress` is held in memory whole; raise `max_memory` (PLUGIN_MAX_MEMORY) or leave it out of `compress` (PLUGIN_COMPRESS)")]
    TooLargeToCompress { size: String, max: String },
}

type Result<T, E = UploadError> = std::result::Result<T, E>;

/// Properties for a file, from the settings and its extension.
pub fn props_for(eng: &Engine, rel: &str) -> UploadProps {
    let cfg = &eng.cfg;
    let rule = |r: &Option<crate::config::ValueRule>| r.as_ref().and_then(|r| r.value_for(rel)).map(str::to_string);
    let content_type = rule(&cfg.content_type)
        .or_else(|| mime_guess::from_path(rel).first_raw().map(str::to_string))
        .unwrap_or_else(|| "application/octet-stream".into());
    UploadProps {
        content_type,
        cache_control: rule(&cfg.cache_control),
        content_encoding: rule(&cfg.content_encoding),
        content_disposition: rule(&cfg.content_disposition),
        metadata: cfg.metadata.clone(),
        access_tier: cfg.access_tier.clone(),
        content_md5: None,
        if_none_match: cfg.overwrite == Overwrite::False,
        tags: cfg.artifacts.tags.clone(),
    }
}

/// The permission bits of an opened file, as `preserve_mode` stores and compares them.
pub(crate) fn local_mode(f: &PlannedFile) -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(f.file.metadata().map_err(UploadError::Read)?.mode() & 0o777)
}

/// Whether the stored item's mode is not another than the local file's (`preserve_mode`;
/// always true without it). An item stored without a `mode` (another tool's, an older
/// version's) does not count as changed for that: its content decides, as before.
pub fn same_mode(preserve: bool, remote: &RemoteItem, local: u32) -> bool {
    !preserve || remote.mode.is_none_or(|m| u32::from(m) == local & 0o777)
}

/// Adds the metadata `mode` (with `preserve_mode`) to the properties of an upload.
fn with_mode(eng: &Engine, props: &mut UploadProps, mode: u32) {
    if eng.cfg.artifacts.preserve_mode {
        props.metadata.push((MODE_METADATA.into(), mode_metadata(mode)));
    }
}

/// Does the stored item hold the same bytes as the local digests?
pub fn same_content(remote: &RemoteItem, local: &Digests) -> bool {
    if remote.size != local.len {
        return false;
    }
    if let Some(sha) = &remote.sha256 {
        return sha.is_hex(&local.sha256);
    }
    match (&remote.content_md5, local.md5) {
        (Some(r), Some(l)) => r.bytes() == Some(l),
        _ => false,
    }
}

pub async fn upload_one(eng: Arc<Engine>, item: UploadItem) -> FileResult {
    upload_known(eng, item, None).await
}

/// [`upload_one`] when a listing already said what is stored under the name (sync):
/// `known` is `Some(None)` when nothing is, `Some(Some(item))` when `item` is. No lookup
/// is made then, unless the listing carries no checksum (Files) and the sizes could match.
pub async fn upload_known(eng: Arc<Engine>, item: UploadItem, known: Option<Option<RemoteItem>>) -> FileResult {
    let mut res = FileResult::new(&item.name, &item.rel, item.size, eng.store.url(&item.name));
    if let Err(e) = upload_inner(&eng, &item, &mut res, known).await {
        res.status = Status::Failed;
        res.reason = Some(e.to_string());
        tracing::error!("failed: {} → {}: {e}", item.rel, item.name);
    } else {
        tracing::debug!(name = %item.name, status = ?res.status, "file done");
    }
    eng.progress.counters.file_done();
    res
}

/// What is stored under the item's name: from the listing when there was one, else one
/// lookup when `look`. A listed Azure Files file (Files listings carry no metadata) is
/// looked up when its size could be that of the bytes to store.
async fn destination(
    eng: &Engine,
    item: &UploadItem,
    known: Option<Option<RemoteItem>>,
    look: bool,
    compressed: bool,
) -> Result<Option<RemoteItem>> {
    let lookup = || async { Ok(eng.with_request(eng.store.properties(&item.name)).await?) };
    match known {
        None if look => lookup().await,
        None | Some(None) => Ok(None),
        // Only a listing without checksums (Files) lacks them; a listed blob without one has none to get.
        Some(Some(r))
            if !eng.store.listing_has_checksums()
                && r.sha256.is_none()
                && r.content_md5.is_none()
                && (compressed || r.size == item.size) =>
        {
            lookup().await
        }
        Some(Some(r)) => Ok(Some(r)),
    }
}

async fn upload_inner(
    eng: &Arc<Engine>,
    item: &UploadItem,
    res: &mut FileResult,
    known: Option<Option<RemoteItem>>,
) -> Result<()> {
    let mut props = props_for(eng, &item.rel);
    let block = eng.block_size_for(item.size);
    let chunked = item.size > block;

    // One lookup of the destination, only for the modes that need it. A large file under
    // `overwrite: false` is checked first so that no gigabytes are sent in vain; the commit
    // is conditional anyway (no race).
    let look = match eng.cfg.overwrite {
        Overwrite::Skip | Overwrite::Changed => true,
        Overwrite::False => chunked,
        Overwrite::True => false,
    };
    let compressed = eng.cfg.compress.iter().any(|p| p.is_match(&item.rel));
    let existing = destination(eng, item, known, look, compressed).await?;
    if compressed {
        return upload_compressed(eng, item, res, existing, props).await;
    }
    if let Some(remote) = existing {
        if let Some(done) = settle_existing(eng, res, item.size, &remote) {
            return done;
        }
        // Hashed only when there is something to compare with: the sizes agree (MD5 only
        // when the stored copy has no `sha256`).
        if matches!(eng.cfg.overwrite, Overwrite::Changed) && remote.size == item.size {
            let it = item.clone();
            let md5 = remote.sha256.is_none();
            let (local, mode) = tokio::task::spawn_blocking(move || -> Result<(Digests, u32)> {
                let f = it.root.open_planned(&it.rel, &it.state)?;
                Ok((hash_read(&f.file, md5).map_err(UploadError::Read)?, local_mode(&f)?))
            })
            .await??;
            if same_content(&remote, &local) && same_mode(eng.cfg.artifacts.preserve_mode, &remote, mode) {
                skip(eng, res, item.size, Some(local.sha256), "unchanged (overwrite: changed)");
                return Ok(());
            }
        }
    }

    let (digests, etag, resumed) = if chunked {
        upload_chunked(eng, item, &mut props, block).await?
    } else {
        upload_small(eng, item, &mut props).await?
    };
    res.sha256 = Some(digests.sha256);
    res.etag = etag;
    res.resumed_bytes = resumed;
    res.status = Status::Transferred;
    Ok(())
}

/// What `overwrite` makes of a destination that exists, before any content is compared:
/// `Some` ends the file (`skip`: skipped; `false`: refused), `None` goes on (`changed`
/// compares the content next, each caller in its own way; `true` replaces).
fn settle_existing(eng: &Engine, res: &mut FileResult, size: u64, remote: &RemoteItem) -> Option<Result<()>> {
    match eng.cfg.overwrite {
        Overwrite::Skip => {
            skip(eng, res, size, remote.sha256_string(), "exists (overwrite: skip)");
            Some(Ok(()))
        }
        Overwrite::False => Some(Err(UploadError::Exists)),
        Overwrite::Changed | Overwrite::True => None,
    }
}

fn skip(eng: &Engine, res: &mut FileResult, size: u64, sha: Option<String>, why: &str) {
    res.status = Status::Skipped;
    res.reason = Some(why.to_string());
    res.sha256 = sha;
    eng.progress.counters.add_bytes(size);
    tracing::info!("skipped: {} ({why})", res.name);
}

/// Maps a conditional-write refusal to words; other errors keep their full detail.
fn commit_error(eng: &Engine, e: StorageError) -> UploadError {
    match &e {
        StorageError::AlreadyExists(h) => UploadError::ExistsAtCommit(h.client_request_id.clone()),
        StorageError::ContainerNotFound(_) => UploadError::NoContainer(eng.cfg.container_word()),
        _ => UploadError::Storage(e),
    }
}

/// After a conditional write was retried and got 409, the first attempt may have
/// succeeded: it did when the stored blob holds our hash.
async fn our_write_landed(eng: &Engine, name: &str, sha256: &str, e: &StorageError) -> bool {
    if !e.is_retried_conflict() {
        return false;
    }
    matches!(eng.with_request(eng.store.properties(name)).await, Ok(Some(r)) if r.has_sha256(sha256))
}

/// Reads a small file whole, opened safely (see [`super::localfs`]), and checks that it
/// did not change while it was read.
fn read_whole(item: &UploadItem) -> Result<(Vec<u8>, u32)> {
    let expected = item.size;
    let f = item.root.open_planned(&item.rel, &item.state)?;
    let mut buf = Vec::with_capacity(expected as usize + 1);
    (&f.file).take(expected + 1).read_to_end(&mut buf).map_err(UploadError::Read)?;
    if buf.len() as u64 != expected {
        return Err(UploadError::Resized {
            detail: format!(
                "planned {expected} bytes, read {}{}",
                buf.len(),
                if buf.len() as u64 > expected { "+" } else { "" }
            ),
            outcome: "uploaded",
        });
    }
    let mode = local_mode(&f)?;
    f.check_unchanged()?;
    Ok((buf, mode))
}

async fn upload_small(
    eng: &Arc<Engine>,
    item: &UploadItem,
    props: &mut UploadProps,
) -> Result<(Digests, Option<String>, u64)> {
    let _mem = eng.memory_for(item.size).await;
    let it = item.clone();
    let size = item.size;
    let kind = eng.store.body_checksum(eng.cfg.checksum);
    let (data, digests, sum, mode) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (buf, mode) = read_whole(&it)?;
        let mut h = FileHasher::new(false);
        h.update(&buf);
        let sum = BodySum::of(kind, &buf);
        Ok((Bytes::from(buf), h.finish(), sum, mode))
    })
    .await??;
    props.metadata.push(("sha256".into(), digests.sha256.clone()));
    with_mode(eng, props, mode);
    let put = eng.with_request(eng.store.put_whole(&item.name, data, sum, props)).await;
    let etag = match put {
        Ok(c) => c.etag,
        Err(e) if our_write_landed(eng, &item.name, &digests.sha256, &e).await => None,
        Err(e) => return Err(commit_error(eng, e)),
    };
    eng.progress.counters.add_bytes(size);
    Ok((digests, etag, 0))
}

/// A file in `compress`: read whole, gzipped (deterministically, see [`super::compress`]),
/// compared with the stored copy by the compressed bytes' size and SHA-256, then stored with
/// `Content-Encoding: gzip` in one request or in blocks from memory.
async fn upload_compressed(
    eng: &Arc<Engine>,
    item: &UploadItem,
    res: &mut FileResult,
    existing: Option<RemoteItem>,
    mut props: UploadProps,
) -> Result<()> {
    if item.size > eng.memory_total {
        return Err(UploadError::TooLargeToCompress {
            size: crate::config::human_bytes(item.size),
            max: crate::config::human_bytes(eng.memory_total),
        });
    }
    let _mem = eng.memory_for(item.size.saturating_mul(2)).await;
    let it = item.clone();
    let with_md5 = eng.cfg.content_md5;
    let (data, digests, mode) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (buf, mode) = read_whole(&it)?;
        let gz = super::compress::gzip(&buf);
        let mut h = FileHasher::new(with_md5);
        h.update(&gz);
        Ok((Bytes::from(gz), h.finish(), mode))
    })
    .await??;
    if let Some(remote) = existing {
        if let Some(done) = settle_existing(eng, res, item.size, &remote) {
            return done;
        }
        if matches!(eng.cfg.overwrite, Overwrite::Changed)
            && same_content(&remote, &digests)
            && same_mode(eng.cfg.artifacts.preserve_mode, &remote, mode)
        {
            skip(eng, res, item.size, Some(digests.sha256), "unchanged (overwrite: changed)");
            return Ok(());
        }
    }
    props.content_encoding = Some("gzip".into());
    props.metadata.push(("sha256".into(), digests.sha256.clone()));
    with_mode(eng, &mut props, mode);
    props.content_md5 = digests.md5;
    res.etag = match put_bytes(eng, &item.name, &data, &props).await {
        Ok(c) => c.etag,
        Err(e) if our_write_landed(eng, &item.name, &digests.sha256, &e).await => None,
        Err(e) => return Err(commit_error(eng, e)),
    };
    eng.progress.counters.add_bytes(item.size);
    res.sha256 = Some(digests.sha256);
    res.status = Status::Transferred;
    Ok(())
}

/// Stores bytes held in memory: in one request when they fit in a block, else in blocks
/// ([`put_from_memory`], which stores `props.content_md5` as the whole file's MD5; one
/// request gets it from the service).
pub(crate) async fn put_bytes(
    eng: &Arc<Engine>,
    name: &str,
    data: &Bytes,
    props: &UploadProps,
) -> std::result::Result<crate::storage::Committed, StorageError> {
    let store = &eng.store;
    let block = eng.block_size_for(data.len() as u64);
    if data.len() as u64 <= block {
        let sum = BodySum::of(store.body_checksum(eng.cfg.checksum), data);
        eng.with_request(store.put_whole(name, data.clone(), sum, props)).await
    } else {
        put_from_memory(eng, name, data, block, props).await
    }
}

/// Stores bytes held in memory in chunks of `block` (in parallel under the request budget),
/// then commits them; a failed chunk abandons the upload.
async fn put_from_memory(
    eng: &Arc<Engine>,
    name: &str,
    data: &Bytes,
    block: u64,
    props: &UploadProps,
) -> std::result::Result<crate::storage::Committed, StorageError> {
    use futures_util::{StreamExt, TryStreamExt};
    let store = &eng.store;
    let len = data.len() as u64;
    let present = eng.with_request(store.begin_chunked(name, len, props)).await?;
    let kind = store.body_checksum(eng.cfg.checksum);
    let chunks: Vec<Chunk> = (0..len.div_ceil(block))
        .map(|i| {
            let (offset, l) = (i * block, block.min(len - i * block));
            Chunk { offset, len: l, sum: BodySum::of(kind, &data[offset as usize..(offset + l) as usize]) }
        })
        .collect();
    let sent = futures_util::stream::iter(chunks.iter().copied())
        .map(|c| {
            let body = data.slice(c.offset as usize..(c.offset + c.len) as usize);
            let present = &present;
            async move {
                if present.contains(&store.chunk_key(&c)) {
                    return Ok(());
                }
                eng.with_request(store.put_chunk(name, c, body)).await
            }
        })
        .buffer_unordered(eng.cfg.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await;
    if let Err(e) = sent {
        eng.with_request(store.abandon(name)).await;
        return Err(e);
    }
    eng.with_request(store.commit(name, len, &chunks, props)).await
}

/// A block ready to send: its chunk (offset, length, checksum), bytes and memory permit.
pub(crate) type ChunkMsg = (Chunk, Bytes, OwnedSemaphorePermit);

/// Room in the reader → sender channel (see `read_blocks`).
const CHUNK_QUEUE: usize = 1024;

/// Reads the planned file block after block, each after taking its memory (stage 1 of a
/// chunked upload), and checks at the end that it neither grew nor changed.
fn read_blocks(
    opened: &PlannedFile,
    size: u64,
    block: u64,
    eng: &Engine,
    handle: &tokio::runtime::Handle,
    out: &std::sync::mpsc::SyncSender<(u64, Vec<u8>, OwnedSemaphorePermit)>,
) -> Result<u32> {
    let mut f = &opened.file;
    let mut offset = 0u64;
    while offset < size {
        let len = block.min(size - offset);
        let permit = handle.block_on(eng.memory_for(len));
        // Read into the buffer's spare capacity (`Take::read_to_end` of a `File` reads into
        // uninitialised memory): no pass zeroing what the read overwrites anyway.
        let mut buf = crate::buffers::take(len as usize);
        let got = f.take(len).read_to_end(&mut buf).map_err(|source| UploadError::ReadAt { offset, source })?;
        if (got as u64) < len {
            return Err(UploadError::Resized {
                detail: format!("planned {size} bytes, file ended before"),
                outcome: "committed",
            });
        }
        if out.send((offset, buf, permit)).is_err() {
            return Err(UploadError::Cancelled);
        }
        offset += len;
    }
    let mut probe = [0u8; 1];
    if f.read(&mut probe).map_err(UploadError::Probe)? > 0 {
        return Err(UploadError::Resized {
            detail: format!("grew past the planned {size} bytes"),
            outcome: "committed",
        });
    }
    let mode = local_mode(opened)?;
    opened.check_unchanged()?;
    Ok(mode)
}

/// Starts the reading and hashing stages of a chunked upload; blocks come out of the
/// returned channel, and the returned future ends with the whole-file digests.
fn spawn_readers(
    eng: &Arc<Engine>,
    item: &UploadItem,
    block: u64,
) -> (mpsc::Receiver<ChunkMsg>, impl std::future::Future<Output = Result<(Digests, u32)>>) {
    // The whole-file MD5 is stored for Blob and Files alike (Files never computes one
    // itself); per-request checksums are the store's business (CRC-64 or Content-MD5).
    let with_md5 = eng.cfg.content_md5;
    let kind = eng.store.body_checksum(eng.cfg.checksum);
    // Blocks wait here only as long as their memory permit allows (`max_memory` bounds
    // them), so the channel's length never binds: it only has to exceed the most blocks
    // any budget admits at once.
    let (tx, rx) = mpsc::channel::<ChunkMsg>(CHUNK_QUEUE);
    let it = item.clone();
    let eng2 = eng.clone();
    let handle = tokio::runtime::Handle::current();
    // Stage 1 reads blocks; stage 2 hashes them in order and computes each block's
    // checksum, then hands them to the senders. Two threads, so reading the next block
    // overlaps hashing this one; a block is owned by one stage at a time (its buffer goes
    // back to the pool after its request), and the small channel between them bounds
    // what waits, on top of the memory budget taken before each read.
    let (read_tx, read_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>, OwnedSemaphorePermit)>(1);
    let read = tokio::task::spawn_blocking(move || -> Result<u32> {
        let opened = it.root.open_planned(&it.rel, &it.state)?;
        read_blocks(&opened, it.size, block, &eng2, &handle, &read_tx)
    });
    let hash = tokio::task::spawn_blocking(move || -> Result<Digests> {
        let mut h = FileHasher::new(with_md5);
        for (offset, buf, permit) in read_rx {
            // Both hashes piece by piece, so the block crosses memory once, not twice.
            let mut sum = BodySum::hasher(kind);
            for piece in buf.chunks(HASH_PIECE) {
                h.update(piece);
                sum.update(piece);
            }
            let chunk = Chunk { offset, len: buf.len() as u64, sum: sum.finish() };
            if tx.blocking_send((chunk, Bytes::from(buf), permit)).is_err() {
                return Err(UploadError::Cancelled);
            }
        }
        Ok(h.finish())
    });
    // The reader's error (a short or grown file) is the one that explains a failure.
    let reader = async move {
        let r = read.await.map_err(UploadError::from).and_then(|r| r);
        let h = hash.await.map_err(UploadError::from).and_then(|r| r);
        let (mode, digests) = (r?, h?);
        Ok((digests, mode))
    };
    (rx, reader)
}

async fn upload_chunked(
    eng: &Arc<Engine>,
    item: &UploadItem,
    props: &mut UploadProps,
    block: u64,
) -> Result<(Digests, Option<String>, u64)> {
    let store = eng.store.clone();
    let present = eng.with_request(store.begin_chunked(&item.name, item.size, props)).await?;
    let size = item.size;
    let (rx, reader) = spawn_readers(eng, item, block);

    let sent = send_chunks(eng, &item.name, &present, rx, size.div_ceil(block) as usize).await;
    let (chunks, resumed) = match sent {
        Ok(done) => done,
        Err(f) => {
            let _ = reader.await;
            eng.with_request(store.abandon(&item.name)).await;
            return Err(f);
        }
    };
    let (digests, mode) = match reader.await {
        Ok(d) => d,
        Err(e) => {
            eng.with_request(store.abandon(&item.name)).await;
            return Err(e);
        }
    };
    if resumed > 0 {
        tracing::info!(
            "resumed: {} had {} already staged by an earlier run",
            item.name,
            crate::config::human_bytes(resumed)
        );
    }
    props.metadata.push(("sha256".into(), digests.sha256.clone()));
    with_mode(eng, props, mode);
    props.content_md5 = digests.md5;
    let commit = eng.with_request(store.commit(&item.name, size, &chunks, props)).await;
    let etag = match commit {
        Ok(c) => c.etag,
        Err(e) if our_write_landed(eng, &item.name, &digests.sha256, &e).await => None,
        Err(e) => return Err(commit_error(eng, e)),
    };
    Ok((digests, etag, resumed))
}

/// Sends the blocks arriving on `rx` (in order), each under a request permit, skipping those
/// an earlier run staged (`present`), until the channel closes: the chunked Put Block path
/// of a file, and of a stream of unknown length (a cache archive). Returns the chunks in
/// order and the bytes resumed. On the first failure the remaining requests are aborted and
/// `rx` dropped, so the producer stops at its next send.
pub(crate) async fn send_chunks(
    eng: &Arc<Engine>,
    name: &str,
    present: &std::collections::HashSet<String>,
    mut rx: mpsc::Receiver<ChunkMsg>,
    expected: usize,
) -> Result<(Vec<Chunk>, u64)> {
    let store = eng.store.clone();
    let mut chunks: Vec<Chunk> = Vec::with_capacity(expected);
    let mut puts: JoinSet<Result<()>> = JoinSet::new();
    let mut resumed = 0u64;
    let mut receiving = true;
    while receiving || !puts.is_empty() {
        tokio::select! {
            msg = rx.recv(), if receiving => match msg {
                Some((chunk, data, permit)) => {
                    chunks.push(chunk);
                    if present.contains(&store.chunk_key(&chunk)) {
                        resumed += chunk.len;
                        eng.progress.counters.add_bytes(chunk.len);
                        crate::buffers::give(data);
                        drop(permit);
                        continue;
                    }
                    let (eng, store, name) = (eng.clone(), store.clone(), name.to_string());
                    puts.spawn(async move {
                        let r = eng.with_request(store.put_chunk(&name, chunk, data.clone())).await;
                        crate::buffers::give(data);
                        drop(permit);
                        r.map_err(|source| UploadError::Block { offset: chunk.offset, source })?;
                        eng.progress.counters.add_bytes(chunk.len);
                        Ok(())
                    });
                }
                None => receiving = false,
            },
            Some(done) = puts.join_next(), if !puts.is_empty() => {
                if let Err(e) = done.map_err(UploadError::from).and_then(|r| r) {
                    drop(rx);
                    puts.abort_all();
                    return Err(e);
                }
            }
        }
    }
    Ok((chunks, resumed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_mode_that_differs_is_a_change_and_a_missing_one_is_not() {
        let stored = |mode| RemoteItem { mode, ..RemoteItem::default() };
        assert!(same_mode(true, &stored(Some(0o755)), 0o100755));
        assert!(!same_mode(true, &stored(Some(0o644)), 0o100755));
        // Another tool's blob (no `mode`): its content decides, as before.
        assert!(same_mode(true, &stored(None), 0o100755));
        // `preserve_mode: false`: modes are not compared.
        assert!(same_mode(false, &stored(Some(0o644)), 0o100755));
    }
}
