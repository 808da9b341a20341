//! Safe, all-or-nothing extraction of a cache archive.
//!
//! The archive (zstd over tar) is read from a stream and unpacked into a fresh staging
//! directory inside the workspace, through directory descriptors only (`openat` with
//! `O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat`): no member is ever written through a
//! link. A member is refused — and the whole restore fails — when its name is absolute,
//! holds `..`, is not UTF-8 or lies outside the cached `source` directories; when it is a
//! device, a FIFO or another special type; when it is a symbolic link whose target leaves
//! the cached directories or a hard link to something outside them; when it appears
//! twice; when the archive expands past `max_restore_size` or needs a zstd window larger
//! than `max_memory`. Modes are restored less the process umask (as tar does for a user
//! other than root). Only after the whole stream was read, zstd's frame checksum held and
//! the SHA-256 of the compressed bytes equals the stored one are the cached directories
//! moved into place, as one [`Transaction`]: every old directory aside, every new one in,
//! all undone in reverse on any failure. On any failure the staging directory is removed
//! and the workspace is as it was.
//!
//! The staging directory is locked (`flock`) by its run and marked as the plugin's; a
//! later restore removes a marked one whose lock is free (its run was killed).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::transfer::dirfd;

/// A restored directory to give its mode and mtime once its content is in place.
type DirMeta = (Vec<String>, u32, u64);

/// What was restored.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub entries: u64,
    pub bytes: u64,
}

/// Limits of one restore, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_restore_size`: file contents plus 512 bytes per entry.
    pub max_size: u64,
    /// `max_memory`: the largest zstd window accepted.
    pub max_memory: u64,
}

/// Bytes counted per entry besides its content (one tar header block).
const ENTRY_COST: u64 = 512;

/// Name prefix of the staging directories (followed by 32 hex digits).
pub const STAGE_PREFIX: &str = ".plugin-azure-storage-cache-";
/// The file that marks a staging directory as the plugin's, created once it is locked.
const OWNER_MARK: &str = ".plugin-azure-storage-owner";
/// Where the old directories wait in the staging directory during the move into place.
const ASIDE_PREFIX: &str = ".old-";

/// A member's name as components, checked: relative, no `..`, UTF-8, under a source.
/// `None` for the archive's root (`./`). `cache_save` applies the same check, so that it
/// never stores an archive a restore refuses.
pub(crate) fn member_path(raw: &[u8], sources: &[Vec<String>]) -> Result<Option<Vec<String>>, String> {
    let shown = String::from_utf8_lossy(raw).escape_debug().to_string();
    let text = std::str::from_utf8(raw).map_err(|_| format!("`{shown}` is not a UTF-8 name"))?;
    if text.starts_with('/') {
        return Err(format!("`{shown}` is an absolute path"));
    }
    let mut comps = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("`{shown}` holds `..`")),
            p if p.contains('\\') || p.contains('\0') => return Err(format!("`{shown}` holds a backslash or NUL")),
            p => comps.push(p.to_string()),
        }
    }
    if comps.is_empty() {
        return Ok(None);
    }
    if !sources.iter().any(|s| comps.starts_with(s)) {
        return Err(format!("`{shown}` is outside the cached directories (`source`)"));
    }
    Ok(Some(comps))
}

/// Checks a symbolic link at `comps` (workspace-relative) pointing at `target`: it must
/// resolve inside the cached directories (`sources`), never above them, and may not be a
/// cached directory itself. `..` is accepted only at the start of the target:
/// after a name, that name may itself be a link and `..` would leave from where it points.
pub(crate) fn check_link(comps: &[String], target: &str, sources: &[Vec<String>]) -> Result<(), String> {
    if target.is_empty() {
        return Err("an empty target".into());
    }
    if target.starts_with('/') {
        return Err("an absolute target".into());
    }
    if sources.iter().any(|s| s.as_slice() == comps) {
        return Err("it is a cached directory itself".into());
    }
    let mut at: Vec<&str> = comps[..comps.len().saturating_sub(1)].iter().map(String::as_str).collect();
    let mut named = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if named => return Err("`..` after a name".into()),
            ".." => {
                at.pop().ok_or("it leaves the workspace")?;
            }
            p => {
                named = true;
                at.push(p);
            }
        }
    }
    if !sources.iter().any(|s| at.len() >= s.len() && at.iter().zip(s).all(|(a, b)| a == b)) {
        return Err("it points outside the cached directories (`source`)".into());
    }
    Ok(())
}

/// The process umask, read without changing it (`/proc/self/status`); 022 when unknown.
pub(crate) fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())))
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o022)
}

/// Opens the directory `comps` under `base` ([`dirfd::walk`]: never through a link),
/// creating what is missing when `create`; a refusal is the system's error.
fn walk(base: &OwnedFd, comps: &[String], create: bool) -> io::Result<OwnedFd> {
    dirfd::walk(base, comps, dirfd::How::dir(create)).map_err(dirfd::Refusal::into_io)
}

fn split(comps: &[String]) -> (&[String], &str) {
    match comps.split_last() {
        Some((last, parent)) => (parent, last.as_str()),
        None => (&[], "."),
    }
}

/// Why reading the stream failed: a frame whose window is over the limit names
/// `max_memory`; anything else is a corrupt or truncated archive.
fn read_error(e: &io::Error, at: &str, limits: &Limits) -> String {
    if e.to_string().contains("too much memory") {
        return window_too_large(None, limits.max_memory);
    }
    format!("corrupt or truncated archive{at}: {e}")
}

/// The refusal of a zstd window (its size when known) larger than `max_memory`.
pub fn window_too_large(window: Option<u64>, max_memory: u64) -> String {
    let human = crate::config::human_bytes;
    format!(
        "the archive needs a zstd window {}larger than `max_memory` ({}) allows: not restored \
         (raise `max_memory`, PLUGIN_MAX_MEMORY, to restore it)",
        window.map(|w| format!("of {}, ", human(w))).unwrap_or_default(),
        human(max_memory)
    )
}

/// The window a zstd frame declares, from its first bytes (at most 14 are needed); `None`
/// when they are not the start of a zstd frame.
pub fn frame_window(head: &[u8]) -> Option<u64> {
    if head.get(..4)? != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let fhd = *head.get(4)?;
    if fhd & 0x20 == 0 {
        // Window_Descriptor: exponent and mantissa.
        let wd = *head.get(5)?;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        return Some(base + base / 8 * u64::from(wd & 7));
    }
    // Single segment: the window is the content size, after the dictionary id.
    let dict = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = [1usize, 2, 4, 8][usize::from(fhd >> 6)];
    let at = 5 + dict;
    let bytes = head.get(at..at + fcs)?;
    let mut v = bytes.iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
    if fcs == 2 {
        v += 256;
    }
    Some(v)
}

/// The largest zstd window (as a power of two) that fits in `max_memory`.
pub fn window_log_max(max_memory: u64) -> u32 {
    (63 - max_memory.max(1 << 10).leading_zeros()).min(31)
}

/// Unpacks the archive read from `reader` into the directory `stage`; returns the counts,
/// the directories to give their mode and mtime, and the reader (read to the end of the
/// zstd stream, so the frame checksum was checked).
fn unpack<R: Read>(
    reader: R,
    stage: &OwnedFd,
    sources: &[Vec<String>],
    limits: &Limits,
) -> Result<(Restored, Vec<DirMeta>, R), String> {
    let mut dec = zstd::stream::read::Decoder::new(reader).map_err(|e| format!("cannot start zstd: {e}"))?;
    dec.window_log_max(window_log_max(limits.max_memory)).map_err(|e| format!("cannot start zstd: {e}"))?;
    let mut ar = tar::Archive::new(dec);
    let mut done = Restored::default();
    let mut dirs = Vec::new();
    let mask = !umask() & 0o1777;
    let too_big = || {
        format!(
            "the archive expands past max_restore_size ({}): nothing restored (raise `max_restore_size`, \
             PLUGIN_MAX_RESTORE_SIZE, if the cache really is that large)",
            crate::config::human_bytes(limits.max_size)
        )
    };
    let mut expanded: u64 = 0;
    {
        let entries = ar.entries().map_err(|e| read_error(&e, "", limits))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error(&e, "", limits))?;
            expanded = expanded.saturating_add(ENTRY_COST).saturating_add(entry.size());
            if expanded > limits.max_size {
                return Err(too_big());
            }
            let path = entry.path_bytes().into_owned();
            let Some(comps) = member_path(&path, sources)? else { continue };
            let shown = comps.join("/");
            let at = |e: io::Error| format!("cannot restore `{shown}`: {e}");
            let h = entry.header();
            let kind = h.entry_type();
            let mode = h.mode().unwrap_or(0o644) & mask;
            let mtime = h.mtime().unwrap_or(0);
            let (parent, name) = split(&comps);
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let dir = walk(stage, parent, true).map_err(at)?;
                    let mut f = dirfd::create_new_at(&dir, name).map_err(at)?;
                    done.bytes +=
                        io::copy(&mut entry, &mut f).map_err(|e| read_error(&e, &format!(" at `{shown}`"), limits))?;
                    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(at)?;
                    f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime)).map_err(at)?;
                }
                tar::EntryType::Directory => {
                    let dir = walk(stage, parent, true).map_err(at)?;
                    match dirfd::mkdir_at(&dir, name) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            let st = dirfd::stat_at(&dir, name).map_err(at)?;
                            if !dirfd::is_dir(&st) {
                                return Err(format!("`{shown}` appears twice in the archive"));
                            }
                        }
                        Err(e) => return Err(at(e)),
                    }
                    dirs.push((comps.clone(), mode, mtime));
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    let target = std::str::from_utf8(&target)
                        .map_err(|_| format!("the link `{shown}` has a target that is not UTF-8"))?;
                    if let Err(why) = check_link(&comps, target, sources) {
                        return Err(format!("the link `{shown}` → `{}` is refused: {why}", target.escape_debug()));
                    }
                    let dir = walk(stage, parent, true).map_err(at)?;
                    dirfd::symlink_at(target, &dir, name).map_err(at)?;
                }
                tar::EntryType::Link => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    let to = member_path(&target, sources)
                        .map_err(|e| format!("the hard link `{shown}` points outside the cached directories: {e}"))?
                        .ok_or_else(|| format!("the hard link `{shown}` has no target"))?;
                    let (tparent, tname) = split(&to);
                    let from_dir = walk(stage, tparent, false).map_err(at)?;
                    let dir = walk(stage, parent, true).map_err(at)?;
                    dirfd::link_between(&from_dir, tname, &dir, name).map_err(at)?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    return Err(format!("`{shown}` is a device or FIFO: refused"));
                }
                other => return Err(format!("`{shown}` is of a type that is not restored ({other:?})")),
            }
            done.entries += 1;
        }
    }
    // The rest of the zstd stream: the frame ends (and its checksum is checked) only here.
    // What follows the tar's end counts too: zeros after it would otherwise be read for ever.
    let mut dec = ar.into_inner();
    let left = limits.max_size.saturating_sub(expanded);
    let rest = io::copy(&mut (&mut dec).take(left.saturating_add(1)), &mut io::sink())
        .map_err(|e| read_error(&e, "", limits))?;
    if rest > left {
        return Err(too_big());
    }
    let mut buffered = dec.finish();
    io::copy(&mut buffered, &mut io::sink()).map_err(|e| format!("cannot read the archive: {e}"))?;
    Ok((done, dirs, buffered.into_inner()))
}

/// Gives the restored directories their mode and mtime, deepest first (after their content).
fn finish_dirs(stage: &OwnedFd, mut dirs: Vec<DirMeta>) -> Result<(), String> {
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
    for (comps, mode, mtime) in dirs {
        let at = |e: io::Error| format!("cannot restore `{}`: {e}", comps.join("/"));
        let f = File::from(walk(stage, &comps, false).map_err(at)?);
        f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime)).map_err(at)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode | 0o700)).map_err(at)?;
    }
    Ok(())
}

/// One rename done by a [`Transaction`], to undo.
struct Move {
    from_dir: OwnedFd,
    from: String,
    to_dir: OwnedFd,
    to: String,
}

/// Renames that are undone in reverse unless committed (as rustup's `Transaction`):
/// [`rollback`](Self::rollback) undoes them and says which could not be undone; dropping
/// an uncommitted transaction rolls it back too.
struct Transaction {
    done: Vec<Move>,
    committed: bool,
}

impl Transaction {
    fn new() -> Self {
        Transaction { done: Vec::new(), committed: false }
    }

    /// Renames `from` in `from_dir` to `to` in `to_dir`, remembering it.
    fn rename(&mut self, from_dir: &OwnedFd, from: &str, to_dir: &OwnedFd, to: &str) -> io::Result<()> {
        let (from_dir, to_dir) = (from_dir.try_clone()?, to_dir.try_clone()?);
        dirfd::rename_between(&from_dir, from, &to_dir, to)?;
        self.done.push(Move { from_dir, from: from.to_string(), to_dir, to: to.to_string() });
        Ok(())
    }

    /// Undoes every rename, last first; returns the ones that could not be undone.
    fn rollback(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(m) = self.done.pop() {
            if let Err(e) = dirfd::rename_between(&m.to_dir, &m.to, &m.from_dir, &m.from) {
                failed.push(format!("`{}` back to `{}`: {e}", m.to, m.from));
            }
        }
        failed
    }

    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.committed {
            for f in self.rollback() {
                tracing::error!("cannot undo the move of {f}");
            }
        }
    }
}

/// Why the move into place failed, and whether the staging directory must be kept (it
/// holds a previous directory that could not be moved back).
struct MoveFailed {
    message: String,
    keep_stage: bool,
}

/// Moves the cached directories from the staging directory into place, replacing what is
/// there, all or nothing: every old one aside (into the staging directory), then every new
/// one in; on any failure every move is undone in reverse.
fn move_into_place(ws: &Path, ws_fd: &OwnedFd, stage: &OwnedFd, sources: &[Vec<String>]) -> Result<(), MoveFailed> {
    let fail = |message: String| MoveFailed { message, keep_stage: false };
    // (new one's directory, place's directory, name, whether one is there, its name aside)
    let mut places = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let shown = s.join("/");
        let at = |e: &dyn std::fmt::Display| fail(format!("cannot move `{shown}` into place: {e}"));
        let (parent, name) = split(s);
        let Ok(from) = walk(stage, parent, false) else { continue };
        if dirfd::stat_at(&from, name).is_err() {
            continue;
        }
        let rel_parent: std::path::PathBuf = parent.iter().collect();
        let to = if parent.is_empty() {
            ws_fd.try_clone().map_err(|e| at(&e))?
        } else {
            dirfd::open_beneath(ws, &rel_parent, true).map_err(|e| at(&e))?
        };
        let had = dirfd::stat_at(&to, name).is_ok();
        places.push((from, to, name.to_string(), had, format!("{ASIDE_PREFIX}{i}"), shown));
    }
    let mut tx = Transaction::new();
    let moved = (|| {
        for (_, to, name, had, aside, shown) in &places {
            if *had {
                tx.rename(to, name, stage, aside).map_err(|e| format!("cannot move the old `{shown}` aside: {e}"))?;
            }
        }
        for (from, to, name, _, _, shown) in &places {
            tx.rename(from, name, to, name).map_err(|e| format!("cannot move `{shown}` into place: {e}"))?;
        }
        Ok::<_, String>(())
    })();
    match moved {
        Ok(()) => {
            tx.commit();
            Ok(())
        }
        Err(e) => {
            let failed = tx.rollback();
            if failed.is_empty() {
                Err(fail(format!("{e}; every directory was put back as it was")))
            } else {
                Err(MoveFailed {
                    message: format!("{e}; and cannot undo the move of {}", failed.join(", ")),
                    keep_stage: true,
                })
            }
        }
    }
}

/// Refuses, before anything is downloaded, a cached directory the move into place cannot
/// replace as a whole: one that is (or lies under) a symbolic link or a mount point.
pub fn check_sources(ws: &Path, sources: &[String]) -> Result<(), String> {
    let ws_fd = dirfd::open_dir(ws).map_err(|e| format!("cannot open the workspace: {e}"))?;
    let (dev, _) = dirfd::identity(&ws_fd).map_err(|e| format!("cannot open the workspace: {e}"))?;
    let mounts = mount_points();
    let real_ws = std::fs::canonicalize(ws).unwrap_or_else(|_| ws.to_path_buf());
    for s in sources {
        let mut dir = ws_fd.try_clone().map_err(|e| format!("cannot open the workspace: {e}"))?;
        let mut at = String::new();
        let comps: Vec<&str> = s.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        for (i, c) in comps.iter().enumerate() {
            at = if at.is_empty() { c.to_string() } else { format!("{at}/{c}") };
            let refuse = |what: &str| {
                Err(format!(
                    "`source` `{s}`: `{at}` is {what}: a cached directory is replaced as a whole, so it must be \
                     a plain directory of the workspace; nothing restored"
                ))
            };
            let st = match dirfd::stat_at(&dir, c) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(format!("`source` `{s}`: cannot read `{at}`: {e}")),
            };
            if dirfd::is_symlink(&st) {
                return refuse("a symbolic link");
            }
            // Directories only: overlayfs may report a file's lower device. (A btrfs
            // subvolume counts too: a rename cannot cross it either.) `dev_t` is u64 on
            // Linux; only compared for equality.
            #[allow(clippy::unnecessary_cast)]
            if (dirfd::is_dir(&st) && st.st_dev as u64 != dev) || mounts.contains(&real_ws.join(&at)) {
                return refuse("a mount point");
            }
            if i + 1 == comps.len() || !dirfd::is_dir(&st) {
                break;
            }
            dir =
                walk(&dir, &[c.to_string()], false).map_err(|e| format!("`source` `{s}`: cannot open `{at}`: {e}"))?;
        }
    }
    Ok(())
}

/// The mount points of this process (`/proc/self/mountinfo`; none when it cannot be read).
fn mount_points() -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| std::path::PathBuf::from(unescape_mount(p))).collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mount(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct =
            b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], oct) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes the exclusive `flock` of `f` without waiting; it is released when the process
/// ends, however it ends.
fn try_lock(f: &File) -> io::Result<()> {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)
}

/// A staging directory of this run: locked for as long as it lives, then marked.
struct Stage {
    name: String,
    fd: OwnedFd,
    _lock: File,
}

impl Stage {
    fn create(ws_fd: &OwnedFd) -> Result<Stage, String> {
        let name = format!("{STAGE_PREFIX}{:032x}", fastrand::u128(..));
        let e = |e: io::Error| format!("cannot create the staging directory: {e}");
        dirfd::mkdir_at(ws_fd, &name).map_err(e)?;
        let fd = walk(ws_fd, std::slice::from_ref(&name), false).map_err(e)?;
        let lock = File::from(fd.try_clone().map_err(e)?);
        try_lock(&lock).map_err(|err| format!("cannot lock the staging directory: {err}"))?;
        dirfd::create_new_at(&fd, OWNER_MARK).map_err(e)?;
        Ok(Stage { name, fd, _lock: lock })
    }
}

/// Removes the staging directories of restores that were killed: a directory of this
/// user named like ours, marked as ours, whose lock no live process holds. One that holds
/// an old directory moved aside (the run died while moving into place) is left, named.
pub fn remove_stale_stages(ws: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
    let Ok(entries) = std::fs::read_dir(ws) else { return };
    let Ok(ws_fd) = dirfd::open_dir(ws) else { return };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let Some(id) = name.strip_prefix(STAGE_PREFIX) else { continue };
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(st) = dirfd::stat_at(&ws_fd, &name) else { continue };
        if !dirfd::is_dir(&st) || st.st_uid != me {
            continue;
        }
        let Ok(fd) = walk(&ws_fd, std::slice::from_ref(&name), false) else { continue };
        if !dirfd::stat_at(&fd, OWNER_MARK).is_ok_and(|m| dirfd::is_file(&m)) {
            continue;
        }
        let Ok(lock) = fd.try_clone().map(File::from) else { continue };
        if try_lock(&lock).is_err() {
            continue; // a live restore holds it
        }
        // Read through the descriptor just opened (never through a link).
        let aside = rustix::fs::Dir::read_from(&fd)
            .map(|d| d.flatten().any(|e| e.file_name().to_bytes().starts_with(ASIDE_PREFIX.as_bytes())))
            .unwrap_or(true);
        if aside {
            tracing::warn!(
                "`{name}` was left by a restore killed while moving directories into place and holds the previous ones \
                 (`{ASIDE_PREFIX}*`): not removed; move back what you need and delete it"
            );
            continue;
        }
        match std::fs::remove_dir_all(ws.join(&name)) {
            Ok(()) => tracing::info!("removed `{name}`, the staging directory of an interrupted restore"),
            Err(e) => tracing::warn!("cannot remove `{name}`, the staging directory of an interrupted restore: {e}"),
        }
    }
}

/// Restores the archive read from `reader` (whose SHA-256 must be `want_sha256`) into the
/// workspace `ws`; `sources` are the cached directories (workspace-relative).
pub fn restore(
    ws: &Path,
    sources: &[String],
    reader: crate::transfer::stream::ChannelReader,
    want_sha256: &str,
    limits: &Limits,
) -> Result<Restored, String> {
    let sources: Vec<Vec<String>> = sources
        .iter()
        .map(|s| s.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect())
        .collect();
    let ws_fd = dirfd::open_dir(ws).map_err(|e| format!("cannot open the workspace: {e}"))?;
    let stage = Stage::create(&ws_fd)?;
    let mut keep_stage = false;
    let result = (|| {
        let (done, dirs, reader) = unpack(reader, &stage.fd, &sources, limits)?;
        let (sha, len) = reader.finish().map_err(|e| format!("cannot read the archive: {e}"))?;
        if !sha.eq_ignore_ascii_case(want_sha256) {
            return Err(format!(
                "the archive's SHA-256 ({sha}, {len} bytes) is not the stored one ({want_sha256}): corrupt or truncated; nothing restored"
            ));
        }
        finish_dirs(&stage.fd, dirs)?;
        move_into_place(ws, &ws_fd, &stage.fd, &sources).map_err(|f| {
            keep_stage = f.keep_stage;
            f.message
        })?;
        Ok(done)
    })();
    if keep_stage {
        tracing::error!("the previous directories are kept in `{}`: move them back by hand", stage.name);
    } else if let Err(e) = std::fs::remove_dir_all(ws.join(&stage.name)) {
        tracing::warn!("cannot remove the staging directory `{}`: {e}", stage.name);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srcs(s: &[&str]) -> Vec<Vec<String>> {
        s.iter().map(|s| s.split('/').map(str::to_string).collect()).collect()
    }

    #[test]
    fn member_names_are_checked() {
        let s = srcs(&["target", ".cargo/registry"]);
        assert_eq!(member_path(b"target/a/b", &s).unwrap().unwrap().join("/"), "target/a/b");
        assert_eq!(member_path(b"./target/a", &s).unwrap().unwrap().join("/"), "target/a");
        assert_eq!(member_path(b"./", &s).unwrap(), None);
        for (bad, why) in [
            (&b"/etc/passwd"[..], "absolute"),
            (b"target/../../x", "`..`"),
            (b"src/main.rs", "outside the cached"),
            (b".cargo/regis", "outside the cached"),
            (b"target/\xff", "not a UTF-8"),
        ] {
            let e = member_path(bad, &s).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn links_stay_inside_the_cached_directories() {
        let at = |p: &str| p.split('/').map(str::to_string).collect::<Vec<_>>();
        let s = srcs(&["target", ".cache"]);
        assert!(check_link(&at("target/a/l"), "../b", &s).is_ok());
        assert!(check_link(&at("target/a/l"), "./..", &s).is_ok(), "the cached directory itself");
        assert!(check_link(&at("target/a/l"), "./../..", &s).is_err(), "the workspace");
        assert!(check_link(&at("target/l"), "../.cache/x", &s).is_ok(), "another cached directory");
        for (link, target, why) in [
            ("target/l", "../src/x", "outside the cached"),
            ("target/l", "../../x", "leaves the workspace"),
            ("target/l", "/etc/passwd", "absolute"),
            ("target/l", "", "empty"),
            (".cache", "src", "cached directory itself"),
            (".cache/hooks", "../.git/hooks", "outside the cached"),
            ("target/a/l", "x/../../../..", "after a name"),
            ("target/a/l", "d/../x", "after a name"),
        ] {
            let e = check_link(&at(link), target, &s).unwrap_err();
            assert!(e.contains(why), "{link} -> {target}: {e}");
        }
    }

    #[test]
    fn the_window_limit_fits_in_max_memory() {
        assert_eq!(window_log_max(8 << 20), 23);
        assert_eq!(window_log_max((8 << 20) + 1), 23);
        assert_eq!(window_log_max((16 << 20) - 1), 23);
        assert_eq!(window_log_max(64 << 30), 31);
    }

    #[test]
    fn frame_windows_are_read_from_the_header() {
        let streamed = |level: i32, window: Option<u32>| {
            let mut z = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
            if let Some(w) = window {
                z.set_parameter(zstd::stream::raw::CParameter::WindowLog(w)).unwrap();
            }
            io::Write::write_all(&mut z, &[7u8; 5000]).unwrap();
            z.finish().unwrap()
        };
        assert_eq!(frame_window(&streamed(3, Some(27))), Some(128 << 20));
        assert_eq!(frame_window(&streamed(3, Some(21))), Some(2 << 20));
        // Content size known: a single segment, the window is the content.
        assert_eq!(frame_window(&zstd::bulk::compress(&[7u8; 5000], 3).unwrap()), Some(5000));
        assert_eq!(frame_window(&zstd::bulk::compress(&[7u8; 100], 3).unwrap()), Some(100));
        assert_eq!(frame_window(b"not zstd"), None);
        assert_eq!(frame_window(&[0x28, 0xb5, 0x2f, 0xfd]), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount("/work/my\\040dir"), "/work/my dir");
        assert_eq!(unescape_mount("/a\\b"), "/a\\b");
    }

    #[test]
    fn a_failed_transaction_puts_everything_back() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a", "b", "new-a", "stage"] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        std::fs::write(d.path().join("a/old.txt"), "old a").unwrap();
        std::fs::write(d.path().join("new-a/new.txt"), "new a").unwrap();
        let root = dirfd::open_dir(d.path()).unwrap();
        let stage = dirfd::open_dir(&d.path().join("stage")).unwrap();
        {
            let mut tx = Transaction::new();
            tx.rename(&root, "a", &stage, ".old-0").unwrap();
            tx.rename(&root, "b", &stage, ".old-1").unwrap();
            tx.rename(&root, "new-a", &root, "a").unwrap();
            // The second new directory is missing: the move fails, all is undone.
            assert!(tx.rename(&root, "new-b", &root, "b").is_err());
            assert!(tx.rollback().is_empty());
        }
        assert_eq!(std::fs::read_to_string(d.path().join("a/old.txt")).unwrap(), "old a");
        assert!(d.path().join("b").is_dir());
        assert_eq!(std::fs::read_to_string(d.path().join("new-a/new.txt")).unwrap(), "new a");
        assert_eq!(std::fs::read_dir(d.path().join("stage")).unwrap().count(), 0);
        // Dropped uncommitted: rolled back too.
        {
            let mut tx = Transaction::new();
            tx.rename(&root, "a", &stage, ".old-0").unwrap();
        }
        assert!(d.path().join("a/old.txt").exists());
    }
}
