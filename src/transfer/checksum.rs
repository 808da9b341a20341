//! Checksums: CRC-64/NVME or MD5 for request bodies ([`BodySum`]), SHA-256 and MD5 for
//! whole files.
//!
//! Azure's `x-ms-content-crc64` is CRC-64/NVME (reflected polynomial
//! 0x9a6c9329ac4bc9b5, init and xorout all ones; check value 0xae8b14860a799888),
//! sent as the 8 little-endian bytes in base64. It is *not* CRC-64/XZ.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::config::Checksum;

/// A request body's transactional checksum, of the kind the `checksum` setting chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodySum {
    Crc64(u64),
    Md5([u8; 16]),
}

impl BodySum {
    pub fn of(kind: Checksum, data: &[u8]) -> Self {
        match kind {
            Checksum::Crc64 => BodySum::Crc64(crc64(data)),
            Checksum::Md5 => BodySum::Md5(Md5::digest(data).into()),
        }
    }

    /// The header that carries it (`x-ms-content-crc64` or `Content-MD5`) and its value.
    pub fn header(&self) -> (&'static str, String) {
        match self {
            BodySum::Crc64(c) => ("x-ms-content-crc64", crc64_header(*c)),
            BodySum::Md5(m) => ("content-md5", B64.encode(m)),
        }
    }

    /// 64 bits of it, for deterministic block ids.
    pub fn id_bits(&self) -> u64 {
        match self {
            BodySum::Crc64(c) => *c,
            BodySum::Md5(m) => u64::from_be_bytes(m[..8].try_into().expect("8 bytes")),
        }
    }
}

pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
}

/// Header value for `x-ms-content-crc64`.
pub fn crc64_header(crc: u64) -> String {
    B64.encode(crc.to_le_bytes())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// Hashes a whole local file.
pub fn hash_file(path: &std::path::Path, with_md5: bool) -> std::io::Result<Digests> {
    hash_read(std::fs::File::open(path)?, with_md5)
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
    fn crc64_is_nvme_not_xz() {
        assert_eq!(crc64(b"123456789"), 0xae8b14860a799888);
        assert_ne!(crc64(b"123456789"), 0x995dc9bbdf1939fa); // CRC-64/XZ
        assert_eq!(crc64(b""), 0);
        assert_eq!(crc64_header(0), "AAAAAAAAAAA=");
    }

    #[test]
    fn crc64_header_is_little_endian() {
        let v = crc64_header(0x0102030405060708);
        assert_eq!(B64.decode(v).unwrap(), vec![8, 7, 6, 5, 4, 3, 2, 1]);
    }

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
