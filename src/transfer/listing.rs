//! A download's listing, held compactly until each item is downloaded.
//!
//! A download lists everything it selected before it writes anything, so that two names
//! landing on one local path, and names the download rules refuse, are refused first
//! ([`super::plan::plan_download`]). A million listed blobs as [`RemoteItem`]s cost about
//! 200 bytes each; here they are columns, each page of the listing converted as it arrives
//! ([`super::list_selected_each`]) so its `RemoteItem`s are freed:
//!
//! - names in one buffer with a `u32` end each;
//! - sizes as `u64`; ETags as a `u64` when they have the `0x…` hex form Azure (and the
//!   bench sink) use, exactly as sent (case and all), else kept as text aside;
//! - permission bits (`mode` metadata) as a `u16`;
//! - SHA-256 digests in a temporary file (`TMPDIR`, else the working directory: the
//!   report's spool), 32 bytes at the item's place, read back when the item is downloaded;
//!   when no such file can be made they stay in memory;
//! - what few items have (a digest stored as text, a Content-MD5 where there is no
//!   SHA-256, the Archive tier, cache metadata) in a sparse side table.
//!
//! Not kept, because a download reads neither: `Last-Modified`, and a Content-MD5 beside a
//! SHA-256 (the SHA-256 is what is verified). Delete and sync, which read `Last-Modified`,
//! hold [`RemoteItem`]s ([`super::list_selected`]): a delete's listing is bounded by
//! `max_delete`, a sync's by the local tree it is compared with.
//!
//! An item becomes a [`RemoteItem`] again only when it is downloaded ([`Listing::item`]).

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::storage::digest::{Md5, Sha256, Stored};
use crate::storage::{Extra, RemoteItem};

/// No ETag was listed.
const NO_ETAG: u64 = u64::MAX;
/// The ETag is text, kept in `odd_etags` at the index in the low bits.
const TEXT_ETAG: u64 = 1 << 63;
/// The ETag is `0x` and lowercase hex digits (else uppercase).
const LOWER_ETAG: u64 = 1 << 62;
const NO_MODE: u16 = u16::MAX;
/// Pending digests are written to the file in blocks of this many bytes.
const FLUSH_AT: usize = 64 << 10;

/// The listed items a download selected, in listing order (see the module docs).
#[derive(Debug, Default)]
pub struct Listing {
    names: String,
    ends: Vec<u32>,
    sizes: Vec<u64>,
    etags: Vec<u64>,
    odd_etags: Vec<Box<str>>,
    modes: Vec<u16>,
    /// One bit per item: a SHA-256 is in `digests`.
    has_sha: Vec<u64>,
    digests: Digests,
    /// Item index → the rarer facts, in index order.
    rare: Vec<(u32, Box<Rare>)>,
}

#[derive(Debug, Default)]
struct Rare {
    sha256: Option<Sha256>,
    content_md5: Option<Md5>,
    extra: Option<Box<Extra>>,
}

/// The SHA-256 column: 32 bytes per item at `32 × index`.
#[derive(Debug)]
enum Digests {
    File { file: File, pending: Vec<u8>, written: u64 },
    Memory(Vec<u8>),
}

impl Default for Digests {
    fn default() -> Self {
        match super::report::open_spool() {
            Ok(file) => Digests::File { file, pending: Vec::with_capacity(FLUSH_AT), written: 0 },
            Err(e) => {
                tracing::debug!("the listing's digests stay in memory: no temporary file ({e})");
                Digests::Memory(Vec::new())
            }
        }
    }
}

impl Digests {
    fn push(&mut self, d: &[u8; 32]) -> std::io::Result<()> {
        match self {
            Digests::Memory(v) => v.extend_from_slice(d),
            Digests::File { file, pending, written } => {
                pending.extend_from_slice(d);
                if pending.len() >= FLUSH_AT {
                    file.write_all_at(pending, *written)?;
                    *written += pending.len() as u64;
                    pending.clear();
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Digests::Memory(v) => v.shrink_to_fit(),
            Digests::File { file, pending, written } => {
                file.write_all_at(pending, *written)?;
                *written += pending.len() as u64;
                *pending = Vec::new();
            }
        }
        Ok(())
    }

    fn get(&self, i: usize) -> std::io::Result<[u8; 32]> {
        let mut out = [0u8; 32];
        match self {
            Digests::Memory(v) => out.copy_from_slice(&v[32 * i..32 * i + 32]),
            Digests::File { file, pending, written } => {
                let at = 32 * i as u64;
                if at >= *written {
                    let p = (at - *written) as usize;
                    out.copy_from_slice(&pending[p..p + 32]);
                } else {
                    file.read_exact_at(&mut out, at)?;
                }
            }
        }
        Ok(out)
    }
}

/// The ETag as one number when it is `0x` and hex digits, written back exactly as sent.
fn pack_etag(e: &str) -> Option<u64> {
    let hex = e.strip_prefix("0x")?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let v = u64::from_str_radix(hex, 16).ok().filter(|v| *v < LOWER_ETAG)?;
    if format!("{v:X}") == hex {
        Some(v)
    } else if format!("{v:x}") == hex {
        Some(v | LOWER_ETAG)
    } else {
        None
    }
}

impl Listing {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Adds one listed item; refuses a listing too large to index with `u32` (4 GiB of
    /// names or 4 billion items), and a failed write of the digests' temporary file.
    pub fn push(&mut self, it: RemoteItem) -> Result<(), String> {
        let i = self.ends.len();
        let index = u32::try_from(i).map_err(|_| "the listing has more than 4,294,967,295 items".to_string())?;
        let end = u32::try_from(self.names.len() + it.name.len())
            .map_err(|_| "the listing's names exceed 4 GiB".to_string())?;
        self.names.push_str(&it.name);
        self.ends.push(end);
        self.sizes.push(it.size);
        let etag = match it.etag {
            None => NO_ETAG,
            Some(e) => pack_etag(&e).unwrap_or_else(|| {
                self.odd_etags.push(e);
                TEXT_ETAG | (self.odd_etags.len() as u64 - 1)
            }),
        };
        self.etags.push(etag);
        self.modes.push(it.mode.unwrap_or(NO_MODE));
        if i.is_multiple_of(64) {
            self.has_sha.push(0);
        }
        let mut rare = Rare { extra: it.extra, ..Rare::default() };
        let spool = |e: std::io::Error| format!("cannot write the listing's digests to a temporary file: {e}");
        match it.sha256 {
            Some(Stored::Bytes(d)) => {
                self.digests.push(&d).map_err(spool)?;
                self.has_sha[i / 64] |= 1 << (i % 64);
            }
            other => {
                self.digests.push(&[0; 32]).map_err(spool)?;
                rare.content_md5 = if other.is_none() { it.content_md5 } else { None };
                rare.sha256 = other;
            }
        }
        if rare.sha256.is_some() || rare.content_md5.is_some() || rare.extra.is_some() {
            self.rare.push((index, Box::new(rare)));
        }
        Ok(())
    }

    /// Done adding: the columns are trimmed to their length and the digests written out.
    pub fn finish(&mut self) -> Result<(), String> {
        self.names.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.sizes.shrink_to_fit();
        self.etags.shrink_to_fit();
        self.modes.shrink_to_fit();
        self.has_sha.shrink_to_fit();
        self.rare.shrink_to_fit();
        self.digests.flush().map_err(|e| format!("cannot write the listing's digests to a temporary file: {e}"))
    }

    /// The name of item `i`.
    pub fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.names[start..self.ends[i] as usize]
    }

    pub fn size(&self, i: usize) -> u64 {
        self.sizes[i]
    }

    fn etag(&self, i: usize) -> Option<Box<str>> {
        match self.etags[i] {
            NO_ETAG => None,
            e if e & TEXT_ETAG != 0 => Some(self.odd_etags[(e & !TEXT_ETAG) as usize].clone()),
            e if e & LOWER_ETAG != 0 => Some(format!("0x{:x}", e & !LOWER_ETAG).into()),
            e => Some(format!("0x{e:X}").into()),
        }
    }

    /// Item `i` as the store listed it (but for what the module docs say is not kept).
    /// A digest that cannot be read back from the temporary file is left out, so the
    /// download reads the item's properties for it, as for a listing without checksums.
    pub fn item(&self, i: usize) -> RemoteItem {
        let rare = self.rare.binary_search_by_key(&(i as u32), |(at, _)| *at).ok().map(|at| &self.rare[at].1);
        let sha256 = if self.has_sha[i / 64] & (1 << (i % 64)) != 0 {
            match self.digests.get(i) {
                Ok(d) => Some(Stored::Bytes(d)),
                Err(e) => {
                    tracing::warn!(
                        "{}: cannot read its listed SHA-256 back from the temporary file ({e}); reading its properties",
                        self.name(i)
                    );
                    None
                }
            }
        } else {
            rare.and_then(|r| r.sha256.clone())
        };
        RemoteItem {
            name: self.name(i).to_string(),
            size: self.sizes[i],
            etag: self.etag(i),
            content_md5: rare.and_then(|r| r.content_md5.clone()),
            sha256,
            last_modified: None,
            mode: Some(self.modes[i]).filter(|m| *m != NO_MODE),
            extra: rare.and_then(|r| r.extra.clone()),
        }
    }

    /// A listing of `items` (tests build plans from names).
    #[cfg(test)]
    pub fn of(items: Vec<RemoteItem>) -> Self {
        let mut l = Listing::new();
        for it in items {
            l.push(it).unwrap();
        }
        l.finish().unwrap();
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, etag: Option<&str>) -> RemoteItem {
        RemoteItem { name: name.into(), size: name.len() as u64, etag: etag.map(Into::into), ..RemoteItem::default() }
    }

    /// What a download reads of a listed item comes back as it was listed: names (empty,
    /// spaced, non-ASCII), sizes, ETags in every form, modes, digests (bytes and text),
    /// a Content-MD5 where there is no SHA-256, the Archive tier.
    #[test]
    fn a_listed_item_comes_back_as_listed() {
        let sha = Sha256::parse(&"ab".repeat(32));
        let mut items = vec![
            item("a", Some("0x8DC5B1C1A2B3C4D")),
            item(" spaced name ", Some("0x1f")),
            item("ünï/cødé", Some("\"quoted\"")),
            item("x", Some("0x0012")),
            item("y", Some("0X12")),
            item("z", Some("0x123")),
            item("", None),
            item("w", Some("0xFFFFFFFFFFFFFFFF")),
        ];
        items[0].sha256 = Some(sha.clone());
        items[0].content_md5 = Some(Md5::parse("1B2M2Y8AsgTpgAmY7PhCfg=="));
        items[0].mode = Some(0o755);
        items[1].sha256 = Some(Sha256::parse("not hex"));
        items[2].content_md5 = Some(Md5::parse("1B2M2Y8AsgTpgAmY7PhCfg=="));
        items[3].set_archived(true);
        // Enough items that the digests are written to the file in more than one block.
        for n in 0..5000 {
            let mut it = item(&format!("d/{n}"), Some(&format!("0x{n:X}")));
            it.sha256 = Some(Stored::Bytes([n as u8; 32]));
            items.push(it);
        }
        let listing = Listing::of(items.clone());
        assert_eq!(listing.len(), items.len());
        for (i, want) in items.iter().enumerate() {
            let got = listing.item(i);
            assert_eq!(
                (got.name.as_str(), got.size, got.etag.as_deref()),
                (want.name.as_str(), want.size, want.etag.as_deref())
            );
            assert_eq!((got.mode, got.is_archived()), (want.mode, want.is_archived()), "{}", want.name);
            assert!(got.sha256 == want.sha256, "{}", want.name);
            assert_eq!(listing.name(i), want.name);
        }
        // A Content-MD5 beside a SHA-256 is not kept (the SHA-256 is what is verified).
        assert!(listing.item(0).content_md5.is_none());
        assert!(listing.item(2).content_md5 == items[2].content_md5 && items[2].content_md5.is_some());
    }

    #[test]
    fn etags_pack_only_when_they_come_back_the_same() {
        assert_eq!(pack_etag("0x8DC5B1C1A2B3C4D"), Some(0x8DC5B1C1A2B3C4D));
        assert_eq!(pack_etag("0x1f"), Some(0x1f | LOWER_ETAG));
        for odd in ["0x", "0x0012", "0xAbC", "0X12", "12", "0x12345678901234567", "0xFFFFFFFFFFFFFFFF", "\"0x1\""] {
            assert_eq!(pack_etag(odd), None, "{odd}");
        }
    }
}
