//! `compress`: files gzipped while they are uploaded (static sites: HTML, CSS, JS, SVG).
//!
//! The gzip stream is deterministic, so that the same file always gives the same stored
//! bytes and `overwrite: changed` / sync can compare like for like (the stored `sha256`
//! and size are those of the compressed bytes): raw deflate at a fixed level (6, zlib's
//! default) from `miniz_oxide`, wrapped in a gzip header with no file name, no time stamp
//! (`MTIME` 0), no extra flags and OS 255 ("unknown"), then the CRC-32 and the length of
//! the original bytes (RFC 1952). A compressed file is read whole and held in memory with
//! its compressed copy, so it must fit in `max_memory`.

/// Fixed deflate level: a change would make every compressed file look changed.
pub const LEVEL: u8 = 6;

/// The gzip stream of `data`, the same bytes every time for the same input.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // ID1 ID2, CM = deflate, FLG = 0, MTIME = 0, XFL = 0, OS = 255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_deterministic_and_round_trips() {
        let data = b"<html><body>hello hello hello hello</body></html>\n".repeat(50);
        let a = gzip(&data);
        assert_eq!(a, gzip(&data), "same input, same bytes");
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert!(a.len() < data.len() / 5, "{} of {}", a.len(), data.len());
        let body = &a[10..a.len() - 8];
        assert_eq!(miniz_oxide::inflate::decompress_to_vec(body).unwrap(), data);
        // CRC-32 of "123456789" is the standard check value; ISIZE is the input length.
        let g = gzip(b"123456789");
        assert_eq!(&g[g.len() - 8..g.len() - 4], &0xcbf4_3926u32.to_le_bytes());
        assert_eq!(&g[g.len() - 4..], &9u32.to_le_bytes());
        let e = gzip(b"");
        assert_eq!(miniz_oxide::inflate::decompress_to_vec(&e[10..e.len() - 8]).unwrap(), b"");
    }
}
