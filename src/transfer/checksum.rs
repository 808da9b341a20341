//! Whole-file digests: SHA-256 always, MD5 when asked, computed while streaming.
//! Per-request wire checksums live in `storage::checksum`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest as _, Md5};
use sha2::Sha256;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The piece a hashing stage takes at a time (after a read, or beside a request checksum):
/// small enough to stay in the L2 cache between the copy or the first pass and the hash.
pub const HASH_PIECE: usize = 256 << 10;

/// Streaming whole-file digests: SHA-256 always, MD5 when asked.
#[derive(Clone)]
pub struct FileHasher {
    sha: Sha256,
    md5: Option<Md5>,
    pub len: u64,
}

/// Finished digests of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Lowercase hex.
    pub sha256: String,
    pub md5: Option<[u8; 16]>,
    pub len: u64,
}

impl Digests {
    pub fn md5_base64(&self) -> Option<String> {
        self.md5.map(|m| B64.encode(m))
    }
}

impl FileHasher {
    pub fn new(with_md5: bool) -> Self {
        FileHasher { sha: Sha256::new(), md5: with_md5.then(Md5::new), len: 0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
        self.len += data.len() as u64;
    }

    pub fn finish(self) -> Digests {
        Digests { sha256: hex(&self.sha.finalize()), md5: self.md5.map(|m| m.finalize().into()), len: self.len }
    }
}

/// Hashes everything `f` yields (an upload's `overwrite: changed` check).
pub fn hash_read(mut f: impl std::io::Read, with_md5: bool) -> std::io::Result<Digests> {
    // One 128 KiB buffer per (pooled, blocking) thread: a fresh 1 MiB one per call was an
    // mmap and an munmap with a TLB shootdown for every file, much of a 10,000-file sync's CPU.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < 128 << 10 {
            buf.resize(128 << 10, 0);
        }
        let mut h = FileHasher::new(with_md5);
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finish())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_digests_match_known_values() {
        let mut h = FileHasher::new(true);
        h.update(b"hello ");
        h.update(b"world");
        let d = h.finish();
        assert_eq!(d.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(d.md5_base64().as_deref(), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
        assert_eq!(d.len, 11);
    }
}
