//! Per-request (wire) checksums: the transactional CRC-64/NVME or MD5 each request body
//! carries ([`BodySum`]). Whole-file hashing lives in `transfer::checksum`.
//!
//! Azure's `x-ms-content-crc64` is CRC-64/NVME (reflected polynomial
//! 0x9a6c9329ac4bc9b5, init and xorout all ones; check value 0xae8b14860a799888),
//! sent as the 8 little-endian bytes in base64. It is *not* CRC-64/XZ.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest as _, Md5};

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
            BodySum::Md5(m) => u64::from_be_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]),
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
}
