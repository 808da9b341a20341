//! Writing the cache archive: tar (PAX for long names and link targets; modes, mtimes,
//! symbolic links stored as links, empty directories) compressed with zstd (on all cores,
//! with the frame checksum), written straight into a [`Write`] (the upload's block sink).
//!
//! The tree is walked without following links and every file is opened through
//! [`Root::open_file`] (resolved beneath the workspace, never through a link); a file that
//! yields fewer bytes than its size said fails the archive instead of corrupting it.
//! Sockets, FIFOs and devices are left out with a warning; `.git` (and, for `source: .`,
//! hidden top-level entries) unless `include_hidden` ([`cache_leaves_out`]), unread.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::transfer::localfs::Root;
use crate::transfer::plan::cache_leaves_out;

/// zstd's job size with several workers (its minimum is 512 KiB).
const JOB_SIZE: u32 = 1 << 20;

/// What was archived.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// Uncompressed bytes of file contents.
    pub bytes: u64,
    /// Hidden entries left out (a directory counts once).
    pub hidden: u64,
}

/// Reads exactly `left` bytes, failing when the file ends before.
struct Exact<R> {
    inner: R,
    left: u64,
    rel: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!("`{}` shrank while it was archived", self.rel)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Appends one entry, with PAX `path` / `linkpath` records when a name does not fit ustar.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    rel: &str,
    mut header: tar::Header,
    link: Option<&str>,
    data: impl Read,
) -> io::Result<()> {
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    if header.set_path(rel).is_err() {
        pax.push(("path", rel.as_bytes()));
        header.set_path("pax-long-name")?;
    }
    if let Some(l) = link {
        if header.set_link_name(l).is_err() {
            pax.push(("linkpath", l.as_bytes()));
            header.set_link_name("pax-long-link")?;
        }
    }
    if !pax.is_empty() {
        tar.append_pax_extensions(pax)?;
    }
    header.set_cksum();
    tar.append(&header, data)
}

fn header_for(meta: &std::fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(meta.mode() & 0o7777);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h
}

/// Archives `sources` (workspace-relative directories or files) into `out`; returns the
/// counts and `out` (flushed, the zstd frame finished).
pub fn write_archive<W: Write>(
    root: &Root,
    sources: &[String],
    include_hidden: bool,
    level: i32,
    out: W,
) -> Result<(Counts, W), String> {
    let io = |e: io::Error| format!("cannot write the archive: {e}");
    let mut enc = zstd::stream::write::Encoder::new(out, level).map_err(io)?;
    enc.include_checksum(true).map_err(io)?;
    let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    if threads > 1 {
        enc.multithread(threads).map_err(io)?;
        // zstd's default job is 4 windows (8 MiB at level 3) per worker, in and out: small
        // jobs keep the compressor's memory near that of the blocks in flight.
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE)).map_err(io)?;
    }
    let mut tar = tar::Builder::new(enc);
    let mut counts = Counts::default();
    for source in sources {
        append_tree(&mut tar, root, source, include_hidden, &mut counts)?;
    }
    if counts.hidden > 0 {
        tracing::info!("left out {} hidden entr{} (`.git`, or hidden at the top of `source: .`); set `include_hidden: true` to cache them", counts.hidden, if counts.hidden == 1 { "y" } else { "ies" });
    }
    let enc = tar.into_inner().map_err(io)?;
    let out = enc.finish().map_err(io)?;
    Ok((counts, out))
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Root,
    source: &str,
    include_hidden: bool,
    counts: &mut Counts,
) -> Result<(), String> {
    let io = |e: io::Error| format!("cannot write the archive: {e}");
    let base = root.path();
    let mut hidden = 0;
    // Left out before it is read: a hidden directory is never descended.
    let keep = |e: &walkdir::DirEntry| {
        let out = cache_leaves_out(source, e.depth(), e.file_name(), include_hidden);
        hidden += u64::from(out);
        !out
    };
    let walk = walkdir::WalkDir::new(base.join(source)).follow_links(false).sort_by_file_name();
    for entry in walk.into_iter().filter_entry(keep) {
        let entry = entry.map_err(|e| format!("cannot read `{source}`: {e}"))?;
        let rel = rel_of(base, entry.path())?;
        let meta = entry.metadata().map_err(|e| format!("cannot read `{rel}`: {e}"))?;
        let ft = entry.file_type();
        if ft.is_dir() {
            append(tar, &rel, header_for(&meta, tar::EntryType::Directory, 0), None, io::empty()).map_err(io)?;
            counts.dirs += 1;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| format!("cannot read the link `{rel}`: {e}"))?;
            let target = target.to_str().ok_or_else(|| format!("the link `{rel}` has a target that is not UTF-8"))?;
            let h = header_for(&meta, tar::EntryType::Symlink, 0);
            append(tar, &rel, h, Some(target), io::empty()).map_err(io)?;
            counts.links += 1;
        } else if ft.is_file() {
            let f = root.open_file(&rel).map_err(|e| format!("cannot open `{rel}`: {e}"))?;
            let meta = f.metadata().map_err(|e| format!("cannot read `{rel}`: {e}"))?;
            let size = meta.len();
            let data = Exact { inner: &f, left: size, rel: rel.clone() };
            append(tar, &rel, header_for(&meta, tar::EntryType::Regular, size), None, data).map_err(io)?;
            counts.files += 1;
            counts.bytes += size;
        } else {
            tracing::warn!("not cached: `{rel}` is a socket, FIFO or device");
        }
    }
    counts.hidden += hidden;
    Ok(())
}

/// `path` relative to the workspace, `/`-separated; refuses names that are not UTF-8.
fn rel_of(base: &Path, path: &Path) -> Result<String, String> {
    let rel = path.strip_prefix(base).map_err(|_| format!("`{}` is outside the workspace", path.display()))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/")).ok_or_else(|| format!("`{}` is not a UTF-8 name: cannot be cached", rel.display()))
}
