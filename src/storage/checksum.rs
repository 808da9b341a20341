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
        let mut h = Self::hasher(kind);
        h.update(data);
        h.finish()
    }

    /// Computes the checksum of bytes given piece by piece ([`BodySumHasher`]), so a
    /// stage that already walks a block (the whole-file hash) can feed both while each
    /// piece is in the cache.
    pub fn hasher(kind: Checksum) -> BodySumHasher {
        match kind {
            Checksum::Crc64 => BodySumHasher::Crc64(crc64fast_nvme::Digest::new()),
            Checksum::Md5 => BodySumHasher::Md5(Md5::new()),
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

/// A [`BodySum`] being computed (see [`BodySum::hasher`]).
pub enum BodySumHasher {
    Crc64(crc64fast_nvme::Digest),
    Md5(Md5),
}

impl BodySumHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            BodySumHasher::Crc64(d) => d.write(data),
            BodySumHasher::Md5(m) => m.update(data),
        }
    }

    pub fn finish(self) -> BodySum {
        match self {
            BodySumHasher::Crc64(d) => BodySum::Crc64(d.sum64()),
            BodySumHasher::Md5(m) => BodySum::Md5(m.finalize().into()),
        }
    }
}

/// Which echoes a write's answer must carry (see [`check_echo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Compare what is there; an answer without an echo is accepted (Azure Files, which
    /// test doubles and older service versions answer without one).
    IfPresent,
    /// Azure always echoes a Blob write (Put Block: the CRC-64 it computed when one was
    /// sent; Put Blob: the blob's Content-MD5): an answer without one is not the service's.
    Required,
}

/// Compares the checksums a write's answer echoes (`x-ms-content-crc64`, `Content-MD5`:
/// Azure computes them from the bytes it received) with the body sent, whose checksum was
/// `sent`; the other kind is computed from `body` only when the answer carries it. A
/// mismatch means the bytes stored are not the ones sent, or the answer did not come from
/// the service (a forged 201): the write must not count as stored. Returns what differs.
pub fn check_echo(
    sent: BodySum,
    body: &[u8],
    crc_echo: Option<&str>,
    md5_echo: Option<&str>,
    rule: Echo,
) -> Result<(), String> {
    let crc_echo = crc_echo.map(str::trim).filter(|v| !v.is_empty());
    let md5_echo = md5_echo.map(str::trim).filter(|v| !v.is_empty());
    if let Some(echo) = crc_echo {
        let ours = crc64_header(match sent {
            BodySum::Crc64(c) => c,
            BodySum::Md5(_) => crc64(body),
        });
        if echo != ours {
            return Err(format!(
                "the answer's x-ms-content-crc64 `{}` is not the CRC-64 of the body sent (`{ours}`)",
                crate::escape::shown(echo)
            ));
        }
    }
    if let Some(echo) = md5_echo {
        let ours = B64.encode(match sent {
            BodySum::Md5(m) => m,
            BodySum::Crc64(_) => Md5::digest(body).into(),
        });
        if echo != ours {
            return Err(format!(
                "the answer's Content-MD5 `{}` is not the MD5 of the body sent (`{ours}`)",
                crate::escape::shown(echo)
            ));
        }
    }
    if rule == Echo::Required && crc_echo.is_none() && md5_echo.is_none() {
        return Err("the answer carries neither x-ms-content-crc64 nor Content-MD5, which Azure Storage always returns for this write: it did not come from the service".into());
    }
    Ok(())
}

pub fn crc64(data: &[u8]) -> u64 {
    let mut d = crc64fast_nvme::Digest::new();
    d.write(data);
    d.sum64()
}

/// Header value for `x-ms-content-crc64`.
pub fn crc64_header(crc: u64) -> String {
    B64.encode(crc.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_fed_piece_by_piece_is_the_sum_of_the_whole() {
        let body: Vec<u8> = (0..1_000_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        // Each against the whole body's CRC-64 and MD5 computed on their own.
        let whole =
            [(Checksum::Crc64, BodySum::Crc64(crc64(&body))), (Checksum::Md5, BodySum::Md5(Md5::digest(&body).into()))];
        for (kind, want) in whole {
            for piece in [1, 7, 4096, 256 << 10, body.len()] {
                let mut h = BodySum::hasher(kind);
                body.chunks(piece).for_each(|c| h.update(c));
                assert_eq!(h.finish(), want, "{kind:?} in pieces of {piece}");
            }
            assert_eq!(BodySum::of(kind, &body), want, "{kind:?} of the whole body");
        }
    }

    #[test]
    fn an_echo_that_is_not_the_body_sent_is_refused() {
        let body = b"hello, block";
        let crc = BodySum::Crc64(crc64(body));
        let md5 = BodySum::Md5(Md5::digest(body).into());
        let crc_h = crc64_header(crc64(body));
        let md5_h = B64.encode(Md5::digest(body));
        for sent in [crc, md5] {
            assert_eq!(check_echo(sent, body, Some(&crc_h), None, Echo::Required), Ok(()));
            assert_eq!(check_echo(sent, body, None, Some(&md5_h), Echo::Required), Ok(()));
            assert_eq!(check_echo(sent, body, Some(&crc_h), Some(&md5_h), Echo::Required), Ok(()));
            assert_eq!(check_echo(sent, body, None, None, Echo::IfPresent), Ok(()));
            let e = check_echo(sent, body, Some("AAAAAAAAAAA="), None, Echo::IfPresent).unwrap_err();
            assert!(e.contains("x-ms-content-crc64 `AAAAAAAAAAA=` is not the CRC-64"), "{e}");
            let e =
                check_echo(sent, body, Some(&crc_h), Some("1B2M2Y8AsgTpgAmY7PhCfg=="), Echo::IfPresent).unwrap_err();
            assert!(e.contains("Content-MD5"), "{e}");
            let e = check_echo(sent, body, None, Some(""), Echo::Required).unwrap_err();
            assert!(e.contains("neither x-ms-content-crc64 nor Content-MD5"), "{e}");
        }
        // A server's text is escaped in the message.
        let e = check_echo(crc, body, Some("x\nINFO forged"), None, Echo::Required).unwrap_err();
        assert!(e.contains("x\\nINFO forged"), "{e}");
    }

    #[test]
    fn crc64_is_nvme_not_xz() {
        assert_eq!(crc64(b"123456789"), 0xae8b14860a799888);
        assert_ne!(crc64(b"123456789"), 0x995dc9bbdf1939fa); // CRC-64/XZ
        assert_eq!(crc64(b""), 0);
        assert_eq!(crc64_header(0), "AAAAAAAAAAA=");
    }

    #[test]
    fn crc64_of_a_block_is_the_bitwise_definition() {
        // Long and unaligned enough for the SIMD path, checked against the definition.
        fn bitwise(data: &[u8]) -> u64 {
            let mut crc = !0u64;
            for &b in data {
                crc ^= u64::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 { (crc >> 1) ^ 0x9a6c9329ac4bc9b5 } else { crc >> 1 };
                }
            }
            !crc
        }
        let mut x = 0x2545f4914f6cdd1du64;
        let data: Vec<u8> = (0..(256 << 10) + 13)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(crc64(&data[3..]), bitwise(&data[3..]));
    }

    #[test]
    fn crc64_header_is_little_endian() {
        let v = crc64_header(0x0102030405060708);
        assert_eq!(B64.decode(v).unwrap(), vec![8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
