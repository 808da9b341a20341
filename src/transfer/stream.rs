//! Streams of unknown or unwritten length, for the cache archive.
//!
//! Upload: [`BlockSink`] is a `Write` a producer thread (tar + zstd) writes into; it cuts
//! the bytes into blocks of the run's block size, each taken from the memory budget
//! *before* it is filled, hashes the whole stream (SHA-256) and each block (CRC-64 or
//! MD5) and hands the blocks to [`super::upload::send_chunks`], the chunked Put Block
//! path of files. No temporary file; memory stays within `max_memory`.
//!
//! Download: [`download_ordered`] reads one blob/file in parallel ranged GETs pinned to
//! its ETag and delivers the ranges *in order* to a channel, each range holding its share
//! of the memory budget until the consumer (a decompressor on a blocking thread, through
//! [`ChannelReader`]) has read it. Ranges are requested in order and the budget's
//! semaphore is fair, so the range the consumer waits for always gets memory first.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::checksum::hex;
use super::upload::ChunkMsg;
use super::Engine;
use crate::config::Checksum;
use crate::storage::checksum::BodySum;
use crate::storage::{Chunk, RemoteItem};

/// A `Write` that cuts a stream into blocks for [`super::upload::send_chunks`].
pub struct BlockSink {
    tx: mpsc::Sender<ChunkMsg>,
    eng: Arc<Engine>,
    handle: tokio::runtime::Handle,
    block: usize,
    kind: Checksum,
    max_blocks: Option<u64>,
    buf: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    offset: u64,
    blocks: u64,
    sha: Sha256,
}

impl BlockSink {
    /// Blocks of the run's block size (`block_size`, else 4 MiB, within the memory budget).
    pub fn new(eng: Arc<Engine>, tx: mpsc::Sender<ChunkMsg>, handle: tokio::runtime::Handle) -> Self {
        let block = eng.cfg.block_size.unwrap_or(super::DEFAULT_BLOCK).min(eng.max_block()).max(1) as usize;
        let kind = eng.store.body_checksum(eng.cfg.checksum);
        let max_blocks = eng.store.max_chunks();
        BlockSink {
            tx,
            eng,
            handle,
            block,
            kind,
            max_blocks,
            buf: Vec::new(),
            permit: None,
            offset: 0,
            blocks: 0,
            sha: Sha256::new(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.blocks += 1;
        if let Some(max) = self.max_blocks.filter(|m| self.blocks > *m) {
            return Err(io::Error::other(format!(
                "the archive needs more than {max} blocks of {}: set a larger `block_size` (PLUGIN_BLOCK_SIZE) and `max_memory`",
                crate::config::human_bytes(self.block as u64)
            )));
        }
        let data = std::mem::take(&mut self.buf);
        self.sha.update(&data);
        let chunk = Chunk { offset: self.offset, len: data.len() as u64, sum: BodySum::of(self.kind, &data) };
        self.offset += chunk.len;
        let permit = match self.permit.take() {
            Some(p) => p,
            None => self.handle.block_on(self.eng.memory_for(chunk.len)),
        };
        self.tx.blocking_send((chunk, Bytes::from(data), permit)).map_err(|_| io::Error::other("upload cancelled"))
    }

    /// Sends the last block; returns the stream's SHA-256 (hex) and length.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        self.send()?;
        Ok((hex(&self.sha.finalize()), self.offset))
    }
}

impl Write for BlockSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.permit.is_none() {
            self.permit = Some(self.handle.block_on(self.eng.memory_for(self.block as u64)));
            self.buf = crate::buffers::take(self.block);
        }
        let n = data.len().min(self.block - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.block {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One range of a download, holding its memory until dropped.
pub struct Piece {
    pub data: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// Why [`download_ordered`] ended early.
#[derive(Debug)]
pub enum StreamError {
    /// The consumer dropped its end (it failed on its own, and says why).
    ReaderGone,
    Failed(String),
}

/// Reads `item` in parallel ranges pinned to its ETag and sends them in order to `tx`;
/// `reserved` bytes of the budget are held by the consumer (a decompressor's window).
pub async fn download_ordered(
    eng: &Arc<Engine>,
    item: &RemoteItem,
    tx: mpsc::Sender<Piece>,
    reserved: u64,
) -> Result<(), StreamError> {
    // Each range is held whole until read: at most half of what the consumer left, so that
    // one can be read while the next arrives (a larger `block_size` would overdraw
    // `max_memory`).
    let budget = eng.memory_total.saturating_sub(reserved);
    let range = eng.range_size().min(budget / 2).max(64 << 10);
    let size = item.size;
    // Ranges in flight plus the one being read and the one queued stay within the budget.
    let parallel = (budget / range).saturating_sub(1).clamp(1, eng.cfg.concurrency as u64) as usize;
    let ranges = futures_util::stream::iter((0..size.div_ceil(range)).map(|i| i * range)).map(|offset| {
        let (eng, name, etag) = (eng.clone(), item.name.clone(), item.etag.clone());
        async move {
            let len = range.min(size - offset);
            let permit = eng.memory_for(len).await;
            let buf = Mutex::new(Vec::with_capacity(len as usize));
            let sink = |pos: u64, data: &[u8]| -> io::Result<()> {
                let mut b = buf.lock().map_err(|_| io::Error::other("range buffer poisoned"))?;
                b.truncate(pos as usize);
                b.extend_from_slice(data);
                Ok(())
            };
            let got = eng
                .with_request(eng.store.get_range(&name, etag.as_deref(), offset, len, &sink))
                .await
                .map_err(|e| format!("range at offset {offset}: {e}"))?;
            let data = buf.into_inner().map_err(|_| "range buffer poisoned".to_string())?;
            if got != len || data.len() as u64 != len {
                return Err(format!("range at offset {offset}: {got} of {len} bytes arrived"));
            }
            eng.progress.counters.add_bytes(len);
            Ok::<_, String>(Piece { data: Bytes::from(data), _permit: permit })
        }
    });
    let mut ranges = ranges.buffered(parallel);
    while let Some(piece) = ranges.next().await {
        let piece = piece.map_err(StreamError::Failed)?;
        if tx.send(piece).await.is_err() {
            return Err(StreamError::ReaderGone);
        }
    }
    Ok(())
}

/// A blocking `Read` over the ranges of [`download_ordered`], hashing what it reads.
pub struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    cur: Option<Piece>,
    pos: usize,
    sha: Sha256,
    read: u64,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Piece>) -> Self {
        ChannelReader { rx, cur: None, pos: 0, sha: Sha256::new(), read: 0 }
    }

    /// Reads what is left (to the end of the stream); returns the SHA-256 (hex) and length
    /// of everything read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex(&self.sha.finalize()), self.read))
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(p) = &self.cur {
                if self.pos < p.data.len() {
                    let n = out.len().min(p.data.len() - self.pos);
                    out[..n].copy_from_slice(&p.data[self.pos..self.pos + n]);
                    self.sha.update(&out[..n]);
                    self.pos += n;
                    self.read += n as u64;
                    return Ok(n);
                }
            }
            self.cur = None;
            self.pos = 0;
            match self.rx.blocking_recv() {
                Some(p) => self.cur = Some(p),
                None => return Ok(0),
            }
        }
    }
}
