//! Checksums as a listing or the properties carry them, held compactly: a SHA-256 in
//! metadata (lowercase hex) as its 32 bytes, a Content-MD5 (base64) as its 16, parsed once
//! as the listing is read. A value in any other form (written by another tool) is kept as
//! its text, so every message and comparison sees exactly what was stored.
//!
//! As `String`s the two would take 48 bytes inline and two heap blocks (~112 bytes) per
//! listed item, in a listing of 100,000 blobs; as bytes they take 64 inline and none.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// A stored checksum of `N` bytes: its bytes when its text is in the canonical form for
/// them ([`Sha256`]: lowercase hex; [`Md5`]: padded base64), else the text as stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Stored<const N: usize> {
    Bytes([u8; N]),
    Text(Box<str>),
}

/// A `sha256` metadata value (lowercased when read).
pub type Sha256 = Stored<32>;
/// A Content-MD5 value.
pub type Md5 = Stored<16>;

impl Sha256 {
    /// From the text as read (already lowercased by the caller where it should be).
    pub fn parse(text: &str) -> Self {
        let mut out = [0u8; 32];
        let hex = text.as_bytes();
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if hex.len() == 64 {
            let parsed = out.iter_mut().zip(hex.chunks_exact(2)).all(|(o, p)| match (digit(p[0]), digit(p[1])) {
                (Some(h), Some(l)) => {
                    *o = h << 4 | l;
                    true
                }
                _ => false,
            });
            if parsed {
                return Stored::Bytes(out);
            }
        }
        Stored::Text(text.into())
    }
}

impl Md5 {
    pub fn parse(text: &str) -> Self {
        let mut out = [0u8; 16];
        // Canonical only: 24 characters that decode to 16 bytes and encode back the same.
        match B64.decode_slice(text, &mut out) {
            Ok(16) if text.len() == 24 && B64.encode(out) == text => Stored::Bytes(out),
            _ => Stored::Text(text.into()),
        }
    }

    /// The 16 bytes, when the value is a well-formed MD5.
    pub fn bytes(&self) -> Option<[u8; 16]> {
        match self {
            Stored::Bytes(b) => Some(*b),
            Stored::Text(_) => None,
        }
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stored::Bytes(b) => b.iter().try_for_each(|x| write!(f, "{x:02x}")),
            Stored::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Display for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stored::Bytes(b) => f.write_str(&B64.encode(b)),
            Stored::Text(t) => f.write_str(t),
        }
    }
}

impl<const N: usize> fmt::Debug for Stored<N>
where
    Stored<N>: fmt::Display,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Sha256 {
    /// Whether this is the SHA-256 whose hex is `hex` (either case), as a text comparison
    /// of what was stored would say.
    pub fn is_hex(&self, hex: &str) -> bool {
        match self {
            Stored::Bytes(_) => hex.len() == 64 && Sha256::parse(&hex.to_ascii_lowercase()) == *self,
            Stored::Text(t) => t.eq_ignore_ascii_case(hex),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_exactly_as_stored() {
        let sha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        for text in [sha, "abcd", "", "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9", "not hex"] {
            let v = Sha256::parse(text);
            assert_eq!(v.to_string(), text);
            assert_eq!(matches!(v, Stored::Bytes(_)), text == sha, "{text}");
        }
        assert!(Sha256::parse(sha).is_hex(&sha.to_ascii_uppercase()) && Sha256::parse(sha).is_hex(sha));
        assert!(!Sha256::parse(sha).is_hex("abcd") && Sha256::parse("abcd").is_hex("ABCD"));
        for text in ["XUFAKrxLKna5cZ2REBfFkg==", "XUFAKrxLKna5cZ2REBfFkh==", "short", "", "XUFAKrxLKna5cZ2REBfFkg"] {
            let v = Md5::parse(text);
            assert_eq!(v.to_string(), text);
            assert_eq!(v.bytes().is_some(), text == "XUFAKrxLKna5cZ2REBfFkg==", "{text}");
        }
        assert_eq!(std::mem::size_of::<Option<Sha256>>(), 40);
        assert_eq!(std::mem::size_of::<Option<Md5>>(), 24);
    }
}
