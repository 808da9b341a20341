//! Writing the cache archive: tar (PAX for long names and link targets; modes, mtimes,
//! symbolic links stored as links, empty directories) compressed with zstd (with the frame
//! checksum; workers, window and tables sized to a memory budget by [`ZstdPlan`]), written
//! straight into a [`Write`] (the upload's block sink).
//!
//! Nothing a restore would refuse is stored: a member whose name a restore refuses, or a
//! symbolic link whose target leaves the cached directories (a Python venv's absolute
//! links), fails the save naming it.
//!
//! The tree is walked without following links and every file is opened through
//! [`Root::open_file`] (resolved beneath the workspace, never through a link); a file that
//! yields fewer bytes than its size said fails the archive instead of corrupting it.
//! Sockets, FIFOs and devices are left out with a warning; `.git` (and, for `source: .`,
//! hidden top-level entries) unless `include_hidden` ([`cache_leaves_out`]), unread.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::extract::{check_link, member_path};
use crate::transfer::localfs::Root;
use crate::transfer::plan::cache_leaves_out;

/// zstd's job size with several workers (its minimum is 512 KiB).
const JOB_SIZE: u32 = 1 << 20;

/// zstd's default (window, chain, hash) logs of levels 1-19 for inputs over 256 KiB
/// (zstd 1.5.7, lib/compress/clevels.h).
const LEVELS: [(u32, u32, u32); 19] = [
    (19, 13, 14),
    (20, 15, 16),
    (21, 16, 17),
    (21, 18, 18),
    (21, 18, 19),
    (21, 18, 19),
    (21, 19, 20),
    (21, 19, 20),
    (22, 20, 21),
    (22, 21, 22),
    (22, 21, 22),
    (22, 22, 23),
    (22, 22, 22),
    (22, 22, 23),
    (22, 23, 23),
    (22, 22, 22),
    (23, 23, 22),
    (23, 23, 22),
    (23, 24, 22),
];

/// The smallest logs a plan goes down to (a 128 KiB window, 64 KiB tables).
const MIN_WINDOW_LOG: u32 = 17;
const MIN_TABLE_LOG: u32 = 14;

/// zstd's workers (0: compress on the calling thread), window and table sizes for a level
/// within a memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdPlan {
    pub workers: u32,
    pub window_log: u32,
    pub chain_log: u32,
    pub hash_log: u32,
}

impl ZstdPlan {
    /// Estimated memory: the window (once), and per compressor its hash and chain tables
    /// (4 bytes an entry) and 1 MiB of working space; with workers, each also holds about
    /// three jobs of input and output.
    pub fn memory(&self) -> u64 {
        let tables = 4 * ((1u64 << self.hash_log) + (1u64 << self.chain_log)) + (1 << 20);
        let window = 1u64 << self.window_log;
        match self.workers {
            0 => window + tables,
            n => window + u64::from(n) * (tables + 3 * u64::from(JOB_SIZE)),
        }
    }

    /// The level's own parameters on all `cores`, reduced until [`memory`](Self::memory)
    /// fits `budget`: fewer workers first (the ratio stays), then the largest of the
    /// window and the two tables, one power of two at a time.
    pub fn for_budget(level: i32, cores: u32, budget: u64) -> ZstdPlan {
        let (window_log, chain_log, hash_log) = LEVELS[(level.clamp(1, 19) - 1) as usize];
        let mut p = ZstdPlan { workers: if cores > 1 { cores } else { 0 }, window_log, chain_log, hash_log };
        while p.memory() > budget {
            if p.workers > 0 {
                p.workers -= 1;
                continue;
            }
            let (w, c, h) = (1u64 << p.window_log, 4u64 << p.chain_log, 4u64 << p.hash_log);
            if c >= w && c >= h && p.chain_log > MIN_TABLE_LOG {
                p.chain_log -= 1;
            } else if h >= w && p.hash_log > MIN_TABLE_LOG {
                p.hash_log -= 1;
            } else if p.window_log > MIN_WINDOW_LOG {
                p.window_log -= 1;
            } else if p.chain_log > MIN_TABLE_LOG {
                p.chain_log -= 1;
            } else if p.hash_log > MIN_TABLE_LOG {
                p.hash_log -= 1;
            } else {
                break;
            }
        }
        p
    }
}

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

/// Archives `sources` (workspace-relative directories or files) into `out`, compressed at
/// `level` as `plan` says; returns the counts and `out` (flushed, the zstd frame finished).
pub fn write_archive<W: Write>(
    root: &Root,
    sources: &[String],
    include_hidden: bool,
    level: i32,
    plan: ZstdPlan,
    out: W,
) -> Result<(Counts, W), String> {
    use zstd::stream::raw::CParameter;
    let io = |e: io::Error| format!("cannot write the archive: {e}");
    let mut enc = zstd::stream::write::Encoder::new(out, level).map_err(io)?;
    enc.include_checksum(true).map_err(io)?;
    enc.set_parameter(CParameter::WindowLog(plan.window_log)).map_err(io)?;
    enc.set_parameter(CParameter::ChainLog(plan.chain_log)).map_err(io)?;
    enc.set_parameter(CParameter::HashLog(plan.hash_log)).map_err(io)?;
    if plan.workers > 0 {
        enc.multithread(plan.workers).map_err(io)?;
        // zstd's default job is 4 windows (8 MiB at level 3) per worker, in and out: small
        // jobs keep the compressor's memory near that of the blocks in flight.
        enc.set_parameter(CParameter::JobSize(JOB_SIZE)).map_err(io)?;
    }
    let mut tar = tar::Builder::new(enc);
    let mut counts = Counts::default();
    let comps: Vec<Vec<String>> = sources.iter().map(|s| s.split('/').map(str::to_string).collect()).collect();
    for source in sources {
        append_tree(&mut tar, root, source, include_hidden, &comps, &mut counts)?;
    }
    if counts.hidden > 0 {
        tracing::info!(
            "left out {} hidden entr{} (`.git` directories); set `include_hidden: true` to cache them",
            counts.hidden,
            if counts.hidden == 1 { "y" } else { "ies" }
        );
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
    sources: &[Vec<String>],
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
        let refused = |e: String| format!("{e}: a restore would refuse it, so the cache is not saved");
        let comps = member_path(rel.as_bytes(), sources).map_err(refused)?.unwrap_or_default();
        let meta = entry.metadata().map_err(|e| format!("cannot read `{rel}`: {e}"))?;
        let ft = entry.file_type();
        if ft.is_dir() {
            append(tar, &rel, header_for(&meta, tar::EntryType::Directory, 0), None, io::empty()).map_err(io)?;
            counts.dirs += 1;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| format!("cannot read the link `{rel}`: {e}"))?;
            let target = target.to_str().ok_or_else(|| format!("the link `{rel}` has a target that is not UTF-8"))?;
            check_link(&comps, target, sources).map_err(|why| {
                refused(format!("the link `{rel}` → `{}` cannot be cached ({why})", target.escape_debug()))
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_plans_fit_their_budget() {
        // Level 3 on two cores with a large budget: zstd's own parameters.
        assert_eq!(
            ZstdPlan::for_budget(3, 2, 64 << 20),
            ZstdPlan { workers: 2, window_log: 21, chain_log: 16, hash_log: 17 }
        );
        for level in 1..=19 {
            for budget in [2u64 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20] {
                let p = ZstdPlan::for_budget(level, 4, budget);
                assert!(p.memory() <= budget, "level {level} in {budget}: {p:?} needs {}", p.memory());
            }
        }
        // Level 19 within 8 MiB: on one thread, a 2 MiB window and tables.
        let p = ZstdPlan::for_budget(19, 2, 8 << 20);
        assert_eq!(p.workers, 0);
        assert!(p.window_log >= 20, "{p:?}");
    }
}
