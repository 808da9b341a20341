//! Download of one item: parallel ranged GETs into a temporary file beside the
//! destination, in-order hashing, verification, then an atomic rename.
//!
//! Ranges are requested in order, at most `concurrency` at once, and each response is
//! written at its offset frame by frame as it arrives (`pwrite`): no range is assembled
//! in memory, so memory stays at the HTTP read buffers whatever the range size. A hasher
//! thread follows behind, reading each completed stretch back from the page cache in
//! file order ([`hash_in_order`]), so SHA-256 runs on one core while the other serves
//! the network, and the file's hash is of the bytes as they landed. A file that fits in
//! one range is hashed frame by frame as it is written instead ([`fetch_single`]): for
//! small files the hand-offs to a hasher thread and back cost more than the hashing, and
//! a small file is handled without leaving the runtime thread (its directories are opened
//! in place too).
//!
//! The file appears under its final name only after its SHA-256 (metadata `sha256`) or
//! Content-MD5 matched, with its stored mode (metadata `mode`, `preserve_mode`) already set; until then it is an unnamed file ([`TempFile`]), which nothing,
//! not even `SIGKILL`, can leave behind (or, where unnamed files are not supported, a
//! named one removed on failure and on SIGTERM/SIGINT).
//!
//! Nothing is written outside `target`, even if the workspace changes under a running
//! download: the target is opened once ([`Target`]) and every destination is reached
//! from its descriptor without following a link ([`dirfd::walk`]); the
//! temporary file is created in, and linked or renamed into, the directory descriptor
//! that walk ended in, so a directory swapped for a symbolic link cannot redirect the
//! write. Just before the link, the walk is repeated: if the path no longer leads to the
//! directory that was written into (swapped for a link, replaced, moved), the file fails
//! and is not linked anywhere.
//!
//! Every ranged GET is pinned to the ETag of the version whose checksum is verified
//! (Blob: `If-Match`; Files: each response's ETag compared). An item rewritten between
//! the listing and the read, or during it, is reported as changed, its properties are read
//! again and the new version is downloaded once, verified against its own checksum; a
//! second change fails the file.
//!
//! Each request is retried by the HTTP layer, but bytes that arrive damaged or short in
//! a well-formed response are only seen here (by the whole-file SHA-256 / MD5, or by a
//! range's length). Such a file is downloaded once more from scratch: a damaged
//! transfer then succeeds; a second mismatch means the stored data and its checksum
//! disagree, and the file fails. (Over HTTPS, which real Azure requires, TLS already
//! turns in-flight damage into a transport error; this covers proxies that re-encrypt.)

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rustix::io::Errno;

use super::checksum::{hash_read, Digests, FileHasher, HASH_PIECE};
use super::dirfd;
use super::plan::DownloadItem;
use super::report::{FileResult, Status};
use super::upload::same_content;
use super::Engine;
use crate::config::{Overwrite, Verify};
use crate::storage::RemoteItem;

/// Named temporary files not yet renamed or removed: (directory, name) by registration id.
static TEMP_FILES: Mutex<BTreeMap<u64, (Arc<OwnedFd>, String)>> = Mutex::new(BTreeMap::new());
static TEMP_IDS: AtomicU64 = AtomicU64::new(0);
/// Downloads written but not yet under their final name (named or unnamed).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Removes every named temporary download file still open (called on SIGTERM/SIGINT;
/// unnamed ones vanish with the process) and returns how many downloads were unfinished.
/// Each is removed relative to its directory's descriptor, as it was created.
pub fn remove_temp_files() -> usize {
    let files = std::mem::take(&mut *TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()));
    for (dir, name) in files.values() {
        let _ = dirfd::unlink_at(dir, name);
    }
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// How many downloads are unfinished now (read when interrupted, before their tasks are
/// cancelled: a cancelled task removes its own temporary file).
pub fn unfinished_downloads() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

fn unregister(id: u64) {
    TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

/// Why the download `target` could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open `target` (PLUGIN_TARGET) `{}`: {source}", path.display())]
pub struct TargetError {
    path: PathBuf,
    source: dirfd::BeneathError,
}

/// Why a destination's directory could not be reached, or is not where it was found.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create `{}`: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("`{}` is a symbolic link: refusing to write through it", .0.display())]
    Symlink(PathBuf),
    #[error("`{}` exists and is not a directory", .0.display())]
    NotADir(PathBuf),
    #[error("cannot open `{}`: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    /// Found again from the target, the directory is another one.
    #[error("it is another directory now")]
    Another,
    #[error("`{}` was replaced while the file was downloaded ({why}); not written", path.display())]
    Replaced { path: PathBuf, why: Box<DirError> },
    #[error("cannot check `{}`: {source}", path.display())]
    Check { path: PathBuf, source: std::io::Error },
}

/// The download target, opened once: every destination is resolved from this descriptor
/// down, never following a link ([`dirfd::walk`]).
pub struct Target {
    pub path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl Target {
    /// Opens (creating it as needed) the target `path`, never through a symbolic link
    /// inside `workspace` ([`dirfd::open_beneath`]): a workspace that holds `dist -> /etc`
    /// cannot turn `target: dist` into a write to `/etc`.
    pub fn open_in(workspace: &std::path::Path, path: PathBuf) -> Result<Self, TargetError> {
        let fd = match dirfd::open_beneath(workspace, &path, true) {
            Ok(fd) => fd,
            Err(source) => return Err(TargetError { path, source }),
        };
        Ok(Target { path, fd: Arc::new(fd) })
    }

    /// What [`open_in`](Self::open_in) would refuse, creating nothing (a dry run): a
    /// symbolic link or a non-directory on the way. A missing part is what the real run
    /// creates.
    pub fn check_in(workspace: &std::path::Path, path: &std::path::Path) -> Result<(), TargetError> {
        match dirfd::open_beneath(workspace, path, false) {
            Ok(_) => Ok(()),
            Err(dirfd::BeneathError::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TargetError { path: path.to_path_buf(), source }),
        }
    }
}

/// The open directory a file is downloaded into, and how it was reached.
struct Parent {
    fd: Arc<OwnedFd>,
    /// For messages: the target's path joined with the components.
    path: PathBuf,
    /// The components below the target (empty: the target itself).
    parts: Vec<String>,
}

/// Opens (creating as needed) the parent directories of `rel` from the target down,
/// refusing a symbolic link or a non-directory on the way.
fn open_parents(target: &Target, rel: &str) -> Result<Parent, DirError> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    parts.pop();
    let fd = reach(target, &parts, true)?;
    let mut path = target.path.clone();
    path.extend(&parts);
    Ok(Parent { fd, path, parts })
}

/// The directory `parts` below the target, [`dirfd::walk`]ed from its descriptor without
/// following a link (creating what is missing with `create`); a refusal in words.
fn reach(target: &Target, parts: &[String], create: bool) -> Result<Arc<OwnedFd>, DirError> {
    if parts.is_empty() {
        return Ok(target.fd.clone());
    }
    dirfd::walk(&*target.fd, parts, dirfd::How::dir(create)).map(Arc::new).map_err(|r| {
        let path = target.path.join(r.at());
        match r {
            dirfd::Refusal::Create { err, .. } => DirError::Create { path, source: err },
            dirfd::Refusal::Symlink { .. } => DirError::Symlink(path),
            dirfd::Refusal::NotDir { .. } => DirError::NotADir(path),
            r => DirError::Open { path, source: r.into_io() },
        }
    })
}

/// Checks that the parent directory still sits where it was found: walking the same
/// components from the target again (without following links, creating nothing) reaches
/// the very directory that is open. A directory swapped for a link or another directory
/// while the file was downloaded fails the file, so it is neither written where the
/// name no longer leads nor reported under a path that now means something else.
fn still_in_place(target: &Target, parent: &Parent) -> Result<(), DirError> {
    let replaced = |why: DirError| DirError::Replaced { path: parent.path.clone(), why: Box::new(why) };
    let fd = reach(target, &parent.parts, false).map_err(replaced)?;
    let (now, then) = (dirfd::identity(&*fd), dirfd::identity(&*parent.fd));
    match (now, then) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Ok(_), Ok(_)) => Err(replaced(DirError::Another)),
        (Err(e), _) | (_, Err(e)) => Err(DirError::Check { path: parent.path.clone(), source: e }),
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: take the named fallback on this thread, as on a system without
    /// `O_TMPFILE` (per thread: tests running meanwhile keep their unnamed files).
    static FORCE_NAMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether unnamed temporary files can be tried: Linux, with `/proc` mounted.
fn unnamed_files() -> bool {
    #[cfg(test)]
    if FORCE_NAMED.get() {
        return false;
    }
    cfg!(target_os = "linux") && Path::new("/proc/self/fd").is_dir()
}

/// Where a download is written until it is verified.
///
/// Preferably an *unnamed* file (`O_TMPFILE`) in the destination's directory, linked
/// under its final name only once verified: it never has a name to clean up, so even a
/// `SIGKILL` leaves nothing behind, and it takes the directory's lock once (the link)
/// instead of twice (create, then rename), which matters when many small files land in
/// one directory at once (measured: see docs/benchmarks.md). Where the filesystem or a
/// missing `/proc` does not allow it, a named `.name.azpart-XXXXXXXX` file beside the
/// destination, registered for removal on SIGTERM/SIGINT and on drop, then renamed.
/// Everything is relative to the directory's descriptor.
struct TempFile {
    file: Arc<File>,
    dir: Arc<OwnedFd>,
    /// For a named temporary file: its name and registration (removed on drop unless persisted).
    named: Option<(String, u64)>,
    base: String,
}

impl TempFile {
    /// Counts the download in flight; [`Drop`] uncounts it.
    fn new(file: File, dir: &Arc<OwnedFd>, named: Option<(String, u64)>, base: &str) -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        TempFile { file: Arc::new(file), dir: dir.clone(), named, base: base.into() }
    }

    /// An unnamed file on Linux where the filesystem allows it, else a named one
    /// (always on other systems: `O_TMPFILE` and `/proc/self/fd` are Linux's).
    fn create(dir: &Arc<OwnedFd>, base: &str) -> std::io::Result<Self> {
        if unnamed_files() {
            match dirfd::tmpfile_in(dir) {
                Ok(f) => return Ok(Self::new(f, dir, None, base)),
                // Not supported by this filesystem or kernel: fall back to a named file.
                Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL)) => {}
                Err(e) => return Err(e),
            }
        }
        Self::named(dir, base)
    }

    /// A named `.base.azpart-XXXXXXXX` file in `dir`, registered for [`remove_temp_files`].
    fn named(dir: &Arc<OwnedFd>, base: &str) -> std::io::Result<Self> {
        // Registered before it exists, so a SIGTERM between the two cannot miss it.
        let id = TEMP_IDS.fetch_add(1, Ordering::Relaxed);
        let (name, f) = fresh_name(base, |name| {
            TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (dir.clone(), name.to_string()));
            dirfd::create_new_at(dir, name)
        })
        .inspect_err(|_| unregister(id))?;
        Ok(Self::new(f, dir, Some((name, id)), base))
    }

    /// Gives the verified file its final name `base` in its directory, replacing what is
    /// there, or, without `replace` (`overwrite: false`), failing with `AlreadyExists` if
    /// something took the name since it was checked (a link never replaces).
    fn persist(mut self, replace: bool) -> std::io::Result<()> {
        if !replace {
            // Drop then removes the named temporary file; an unnamed one just closes.
            return match &self.named {
                Some((name, _)) => dirfd::link_name_at(&self.dir, name, &self.base),
                None => dirfd::link_at(&self.file, &self.dir, &self.base),
            };
        }
        let Some((name, id)) = self.named.take() else {
            // Link the unnamed file: directly when nothing is at `base`, else under a
            // temporary name first and renamed over it (a link cannot replace).
            match dirfd::link_at(&self.file, &self.dir, &self.base) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
            let (tmp, ()) = fresh_name(&self.base, |tmp| dirfd::link_at(&self.file, &self.dir, tmp))?;
            let r = dirfd::rename_at(&self.dir, &tmp, &self.base);
            if r.is_err() {
                let _ = dirfd::unlink_at(&self.dir, &tmp);
            }
            return r;
        };
        let r = dirfd::rename_at(&self.dir, &name, &self.base);
        if r.is_err() {
            self.named = Some((name, id));
            return r;
        }
        unregister(id);
        Ok(())
    }
}

/// Runs `make` on random temporary names `.base.azpart-XXXXXXXX` until one does not exist
/// yet; returns the name it succeeded with.
fn fresh_name<T>(base: &str, mut make: impl FnMut(&str) -> std::io::Result<T>) -> std::io::Result<(String, T)> {
    for _ in 0..16 {
        let name = format!(".{base}.azpart-{:08x}", fastrand::u32(..));
        match make(&name) {
            Ok(t) => return Ok((name, t)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot pick a temporary file name"))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        if let Some((name, id)) = &self.named {
            let _ = dirfd::unlink_at(&self.dir, name);
            unregister(*id);
        }
    }
}

/// The digests of the local file `base` in `dir`, opened without following a link; MD5
/// only `with_md5` (a remote without SHA-256 is compared by its Content-MD5).
fn hash_local(dir: &OwnedFd, base: &str, with_md5: bool) -> std::io::Result<Digests> {
    hash_read(dirfd::open_file_at(dir, base)?, with_md5)
}

pub async fn download_one(eng: Arc<Engine>, mut item: DownloadItem, target: Arc<Target>) -> FileResult {
    let local = target.path.join(item.rel());
    let name = item.remote.name.clone();
    let mut res = FileResult::new(&name, &local.to_string_lossy(), item.remote.size, eng.store.url(&name));
    let (mut healed, mut refreshed) = (false, false);
    let outcome = loop {
        match download_inner(&eng, &item.remote, item.rel(), &target, &mut res).await {
            Err(Failure::Integrity(why)) if !healed => {
                healed = true;
                tracing::warn!("{name}: {why}; downloading it again");
            }
            // Rewritten between the listing and the read (or while it was read): read what
            // it is now, once, and download that version, verified against its own checksum.
            Err(Failure::Changed(why)) if !refreshed => {
                refreshed = true;
                tracing::warn!("{why}: reading its properties again and downloading the new version");
                match eng.with_request(eng.store.properties(&name)).await {
                    Ok(Some(now)) => {
                        res.size = now.size;
                        // The properties of the same name, which the local path is part of.
                        item.remote = RemoteItem { name: std::mem::take(&mut item.remote.name), ..now };
                    }
                    Ok(None) => break Err(Failure::Other(format!("{why}, then was deleted; not written"))),
                    Err(e) => break Err(Failure::Other(format!("{why}; reading it again failed: {e}"))),
                }
            }
            other => break other,
        }
    };
    if let Err(e) = outcome {
        res.status = Status::Failed;
        res.reason = Some(e.into_message());
        tracing::error!("failed: {} → {}: {}", name, item.rel(), res.reason.as_deref().unwrap_or(""));
    }
    eng.progress.counters.file_done();
    res
}

/// Why a download attempt failed: integrity failures get one more attempt, and an item
/// that changed while it was read is read again once, as it is now.
enum Failure {
    /// The bytes received disagree with the stored checksum or the range asked for.
    Integrity(String),
    /// The item is no longer the version listed ([`crate::storage::StorageError::Changed`]).
    Changed(String),
    /// A destination directory that cannot be reached, or moved while written.
    Dir(DirError),
    Storage(crate::storage::StorageError),
    Task(tokio::task::JoinError),
    Other(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Integrity(m) => format!("{m} (twice; not written)"),
            Failure::Changed(m) => format!("{m}, again after it was read anew; not written"),
            Failure::Dir(e) => e.to_string(),
            Failure::Storage(e) => e.to_string(),
            Failure::Task(e) => e.to_string(),
            Failure::Other(m) => m,
        }
    }
}

impl From<DirError> for Failure {
    fn from(e: DirError) -> Self {
        Failure::Dir(e)
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure::Task(e)
    }
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure::Other(m)
    }
}

impl From<&str> for Failure {
    fn from(m: &str) -> Self {
        Failure::Other(m.to_string())
    }
}

enum Expect {
    Sha256(crate::storage::digest::Sha256),
    Md5(crate::storage::digest::Md5),
    SizeOnly,
}

/// What to do with the destination, decided from what is there now.
enum Dest {
    /// Download it (nothing there, or a regular file to replace).
    Write,
    /// Done already: the skip reason was recorded.
    Skipped,
}

/// Opens the destination's directory and applies `overwrite` to what is at its name.
async fn prepare(
    eng: &Engine,
    remote: &RemoteItem,
    rel: &str,
    target: &Arc<Target>,
    res: &mut FileResult,
) -> Result<(Arc<Parent>, String, Dest), Failure> {
    // A few `openat` calls (a `mkdir` the first time), like the check before the link:
    // done in place, since a hand-off to a blocking thread and back costs more.
    let parent = Arc::new(open_parents(target, rel)?);
    let base = rel.rsplit('/').next().unwrap_or(rel).to_string();
    let dest = parent.path.join(&base);
    let size = remote.size;
    match dirfd::stat_at(&parent.fd, &base) {
        Ok(st) if !dirfd::is_file(&st) => {
            return Err(format!("`{}` exists and is not a regular file", dest.display()).into())
        }
        Ok(_) => match eng.cfg.overwrite {
            Overwrite::False => return Err("already exists locally (overwrite: false)".into()),
            Overwrite::Skip => {
                skip(eng, res, size, "exists locally (overwrite: skip)");
                return Ok((parent, base, Dest::Skipped));
            }
            Overwrite::Changed => {
                let (p, b, md5) = (parent.clone(), base.clone(), remote.sha256.is_none());
                let local = tokio::task::spawn_blocking(move || hash_local(&p.fd, &b, md5))
                    .await?
                    .map_err(|e| format!("cannot read the local file: {e}"))?;
                if same_content(remote, &local) {
                    res.sha256 = Some(local.sha256);
                    skip(eng, res, size, "unchanged (overwrite: changed)");
                    return Ok((parent, base, Dest::Skipped));
                }
            }
            Overwrite::True => {}
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect `{}`: {e}", dest.display()).into()),
    }
    Ok((parent, base, Dest::Write))
}

async fn download_inner(
    eng: &Arc<Engine>,
    listed: &RemoteItem,
    rel: &str,
    target: &Arc<Target>,
    res: &mut FileResult,
) -> Result<(), Failure> {
    // A listing without checksums (Azure Files listings never carry metadata or MD5; so
    // may a blob written by another tool) is completed by the item's own properties.
    let fetched;
    let remote = if listed.sha256.is_none() && listed.content_md5.is_none() {
        fetched = eng
            .with_request(eng.store.properties(&listed.name))
            .await
            .map_err(Failure::Storage)?
            .ok_or("disappeared after it was listed")?;
        res.size = fetched.size;
        &fetched
    } else {
        listed
    };
    // Every read is pinned to this version: its checksum is the one verified below.
    res.etag = remote.etag_string();
    let size = remote.size;
    let (parent, base, dest) = prepare(eng, remote, rel, target, res).await?;
    if let Dest::Skipped = dest {
        return Ok(());
    }

    if remote.is_archived() {
        return Err("is in the Archive tier: rehydrate it to Hot or Cool before downloading".into());
    }
    let expect = if let Some(sha) = &remote.sha256 {
        Expect::Sha256(sha.clone())
    } else if let Some(md5) = &remote.content_md5 {
        Expect::Md5(md5.clone())
    } else if eng.cfg.verify == Verify::Size {
        tracing::warn!("{}: no checksum stored; only its length is checked (verify: size)", remote.name);
        Expect::SizeOnly
    } else {
        return Err("has no `sha256` metadata and no Content-MD5 to verify against; not downloaded (set `verify: size` to accept it after a length check)".into());
    };

    let tmp = TempFile::create(&parent.fd, &base)
        .map_err(|e| format!("cannot create a temporary file in `{}`: {e}", parent.path.display()))?;
    let with_md5 = matches!(expect, Expect::Md5(_));
    let (got, counted) = fetch_ranges(eng, remote, tmp.file.clone(), with_md5).await?;
    // From here a failure is an integrity failure that may be retried: take back the progress.
    let integrity = |m: String| {
        eng.progress.counters.bytes_done.fetch_sub(counted, std::sync::atomic::Ordering::Relaxed);
        Failure::Integrity(m)
    };
    if got.len != size {
        return Err(integrity(format!("received {} bytes, expected {size}", got.len)));
    }
    match &expect {
        Expect::Sha256(want) if !want.is_hex(&got.sha256) => {
            return Err(integrity(format!("SHA-256 mismatch: stored {want}, received {}", got.sha256)))
        }
        Expect::Md5(want) if got.md5.is_none() || want.bytes() != got.md5 => {
            return Err(integrity(format!(
                "Content-MD5 mismatch: stored {want}, received {}",
                got.md5_base64().unwrap_or_default()
            )))
        }
        _ => {}
    }
    if let Some(want) = eng.expected_sums.get().and_then(|m| m.get(rel)) {
        if *want != got.sha256 {
            return Err(Failure::Other(format!(
                "SHA-256 {} is not the {want} that `verify_checksums` lists; not written",
                got.sha256
            )));
        }
    }
    apply_mode(eng, remote, &tmp.file)?;
    // A few `openat` calls, as cheap as the link itself: done in place, like the link.
    still_in_place(target, &parent)?;
    tmp.persist(eng.cfg.overwrite != Overwrite::False).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            "already exists locally (overwrite: false; it appeared during the download)".to_string()
        }
        _ => format!("cannot move into place: {e}"),
    })?;
    res.sha256 = Some(got.sha256);
    res.status = Status::Transferred;
    Ok(())
}

/// `preserve_mode`: gives the verified temporary file the stored permission bits (metadata
/// `mode`, already stripped of setuid, setgid and sticky) less the process umask, before it
/// gets its name. An item stored without a `mode` keeps the default (0666 less the umask).
fn apply_mode(eng: &Engine, remote: &RemoteItem, file: &File) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let Some(mode) = remote.mode.filter(|_| eng.cfg.artifacts.preserve_mode) else {
        return Ok(());
    };
    let bits = u32::from(mode) & 0o777 & !super::cache::extract::umask();
    file.set_permissions(std::fs::Permissions::from_mode(bits))
        .map_err(|e| Failure::from(format!("cannot set its mode {bits:04o} (preserve_mode): {e}")))
}

/// Fetches every range of `remote` (pinned to its ETag) into `file`, at most `concurrency`
/// at once, while a hasher thread follows in file order. Returns the digests of the bytes
/// as they landed and the bytes counted as progress.
async fn fetch_ranges(
    eng: &Arc<Engine>,
    remote: &RemoteItem,
    file: Arc<File>,
    with_md5: bool,
) -> Result<(Digests, u64), Failure> {
    let size = remote.size;
    let range = eng.range_size();
    if size <= range {
        return fetch_single(eng, remote, &file, with_md5).await;
    }
    let n = size.div_ceil(range);
    let window = eng.cfg.concurrency.max(1);
    let name = remote.name.clone();
    let etag = remote.etag.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, u64)>();
    let hasher = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || hash_in_order(&file, size, with_md5, done_rx))
    };
    // The closure owns the hasher's sender: when the stream is dropped (done or failed),
    // the hasher sees the channel close.
    let mut ranges = futures_util::stream::iter(0..n)
        .map(move |i| {
            let (eng, name, etag, file, done) =
                (eng.clone(), name.clone(), etag.clone(), file.clone(), done_tx.clone());
            async move {
                let offset = i * range;
                let len = range.min(size - offset);
                // Each frame goes straight to its place in the file (a page-cache copy of at
                // most hyper's read buffer, done on the runtime thread); bytes beyond the
                // range asked for are not written, and counted as a mismatch below.
                let write = move |pos: u64, data: &[u8]| -> std::io::Result<()> {
                    let keep = len.saturating_sub(pos).min(data.len() as u64) as usize;
                    file.write_all_at(&data[..keep], offset + pos)
                };
                get_range(&eng, &name, etag.as_deref(), offset, len, &write).await?;
                let _ = done.send((offset, len));
                eng.progress.counters.add_bytes(len);
                Ok::<_, Failure>(len)
            }
        })
        .buffer_unordered(window);
    let mut counted = 0u64;
    while let Some(r) = ranges.next().await {
        match r {
            Ok(len) => counted += len,
            Err(e) => {
                // A retried attempt counts its bytes again.
                eng.progress.counters.bytes_done.fetch_sub(counted, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    drop(ranges);
    let got = hasher
        .await?
        .map_err(|e| format!("cannot read back the downloaded data: {e}"))?
        .ok_or("internal error: a range was never reported to the hasher")?;
    Ok((got, counted))
}

/// A file that fits in one range: one GET (pinned to its ETag), each frame written at its
/// place and hashed as it arrives, on the runtime thread. A hasher thread reading the bytes
/// back (as for larger files) would cost two hand-offs between threads per file, more than
/// hashing a range's worth of frames in place. A retried attempt starts again at 0, and the
/// hash with it; should the frames ever not follow each other, the file is read back instead.
async fn fetch_single(
    eng: &Arc<Engine>,
    remote: &RemoteItem,
    file: &File,
    with_md5: bool,
) -> Result<(Digests, u64), Failure> {
    let len = remote.size;
    if len == 0 {
        return Ok((FileHasher::new(with_md5).finish(), 0));
    }
    // (the hasher, whether the frames ever skipped or went back other than to 0)
    let state = Mutex::new((FileHasher::new(with_md5), false));
    let write = |pos: u64, data: &[u8]| -> std::io::Result<()> {
        let keep = &data[..len.saturating_sub(pos).min(data.len() as u64) as usize];
        file.write_all_at(keep, pos)?;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if pos == 0 && st.0.len > 0 {
            *st = (FileHasher::new(with_md5), st.1);
        }
        if pos == st.0.len {
            st.0.update(keep);
        } else {
            st.1 = true;
        }
        Ok(())
    };
    get_range(eng, &remote.name, remote.etag.as_deref(), 0, len, &write).await?;
    eng.progress.counters.add_bytes(len);
    let (h, skipped) = state.into_inner().unwrap_or_else(|p| p.into_inner());
    if !skipped && h.len == len {
        return Ok((h.finish(), len));
    }
    let mut h = FileHasher::new(with_md5);
    let mut buf = vec![0u8; HASH_PIECE.min(len as usize)];
    if let Err(e) = hash_back(file, &mut h, &mut buf, 0, len) {
        eng.progress.counters.bytes_done.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
        return Err(format!("cannot read back the downloaded data: {e}").into());
    }
    Ok((h.finish(), len))
}

fn skip(eng: &Engine, res: &mut FileResult, size: u64, why: &str) {
    res.status = Status::Skipped;
    res.reason = Some(why.into());
    eng.progress.counters.add_bytes(size);
    tracing::info!("skipped: {} ({why})", res.name);
}

/// Hashes a file being downloaded, in order, as its ranges are reported complete (in any
/// order), reading each one back from the page cache. This runs on its own thread beside
/// the transfer, so SHA-256 (one core) overlaps the network (the other) and no range is
/// ever held in memory. Returns `None` when the reports stopped before the whole file was
/// covered (a range failed: the download is abandoned anyway).
fn hash_in_order(
    file: &std::fs::File,
    size: u64,
    with_md5: bool,
    done: std::sync::mpsc::Receiver<(u64, u64)>,
) -> std::io::Result<Option<Digests>> {
    let mut h = FileHasher::new(with_md5);
    let mut next = 0u64;
    let mut ready: BTreeMap<u64, u64> = BTreeMap::new();
    let mut buf = vec![0u8; HASH_PIECE.min(size as usize)];
    while next < size {
        let Ok((offset, len)) = done.recv() else { return Ok(None) };
        ready.insert(offset, len);
        while let Some(len) = ready.remove(&next) {
            hash_back(file, &mut h, &mut buf, next, next + len)?;
            next += len;
        }
    }
    Ok(Some(h.finish()))
}

/// Hashes bytes `from..to` of `file` back from the page cache, `buf` at a time.
fn hash_back(file: &File, h: &mut FileHasher, buf: &mut [u8], from: u64, to: u64) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let k = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..k], at)?;
        h.update(&buf[..k]);
        at += k as u64;
    }
    Ok(())
}

/// One ranged GET of `name` (pinned to `etag`) through `write`: the bytes received must be
/// the `len` asked for (more or fewer is an integrity failure, retried once by the caller).
async fn get_range(
    eng: &Engine,
    name: &str,
    etag: Option<&str>,
    offset: u64,
    len: u64,
    write: crate::http::BodySink<'_>,
) -> Result<(), Failure> {
    let got = eng.with_request(eng.store.get_range(name, etag, offset, len, write)).await.map_err(|e| {
        if e.is_changed() {
            Failure::Changed(e.to_string())
        } else {
            Failure::Storage(e)
        }
    })?;
    if got != len {
        return Err(Failure::Integrity(format!(
            "range at {offset}: expected {len} bytes, received {got} (truncated or changed)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Held by the tests that make named temporary files: [`remove_temp_files`] removes
    /// every one in the process, another test's too.
    static NAMED_TEMP_FILES: Mutex<()> = Mutex::new(());

    /// The named fallback (filesystems without `O_TMPFILE`): created relative to the
    /// directory's descriptor, found and removed by [`remove_temp_files`] (the SIGTERM
    /// path) even after the directory's path was swapped for a link, renamed into place
    /// when persisted, removed when dropped.
    #[test]
    fn named_temporary_files_are_removed_on_interrupt_and_drop_and_renamed_when_persisted() {
        let _named = NAMED_TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner());
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        let target = Target::open_in(root.path(), root.path().to_path_buf()).unwrap();
        let parent = open_parents(&target, "d/app.bin").unwrap();
        let t = TempFile::named(&parent.fd, "app.bin").unwrap();
        t.file.write_all_at(b"data", 0).unwrap();
        let temp = names_in(&root.path().join("d"));
        assert!(temp.len() == 1 && temp[0].starts_with(".app.bin.azpart-"), "{temp:?}");
        // The directory is swapped for a link to elsewhere: nothing is removed there.
        std::fs::rename(root.path().join("d"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        std::fs::write(outside.path().join(&temp[0]), b"not ours").unwrap();
        assert!(remove_temp_files() >= 1);
        assert!(names_in(&root.path().join("moved")).is_empty());
        assert_eq!(names_in(outside.path()), temp, "removed a file outside the target");
        drop(t);
        // Persisted: renamed over the final name; dropped: gone.
        let t = TempFile::named(&parent.fd, "app.bin").unwrap();
        t.file.write_all_at(b"data", 0).unwrap();
        t.persist(true).unwrap();
        // Without replace (`overwrite: false`), a name taken meanwhile is kept.
        let t3 = TempFile::named(&parent.fd, "app.bin").unwrap();
        t3.file.write_all_at(b"other", 0).unwrap();
        assert_eq!(t3.persist(false).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        let t2 = TempFile::named(&parent.fd, "other.bin").unwrap();
        drop(t2);
        assert_eq!(names_in(&root.path().join("moved")), vec!["app.bin"]);
        assert_eq!(std::fs::read(root.path().join("moved/app.bin")).unwrap(), b"data");
        // And the path check notices the directory is no longer where it was.
        let e = still_in_place(&target, &parent).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link") && e.contains("was replaced"), "{e}");
    }

    /// What a system without `O_TMPFILE` (macOS) does: `create` takes the named fallback,
    /// which a verified download is renamed from (or linked from, without replace).
    #[test]
    fn without_unnamed_files_create_falls_back_to_a_named_file() {
        let root = tempfile::tempdir().unwrap();
        let target = Target::open_in(root.path(), root.path().to_path_buf()).unwrap();
        let parent = open_parents(&target, "f.bin").unwrap();
        let _named = NAMED_TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner());
        FORCE_NAMED.set(true);
        let made = (TempFile::create(&parent.fd, "f.bin"), TempFile::create(&parent.fd, "g.bin"));
        FORCE_NAMED.set(false);
        let (t, u) = (made.0.unwrap(), made.1.unwrap());
        assert!(t.named.is_some() && u.named.is_some());
        t.file.write_all_at(b"data", 0).unwrap();
        t.persist(true).unwrap();
        u.file.write_all_at(b"more", 0).unwrap();
        u.persist(false).unwrap();
        assert_eq!(names_in(root.path()), vec!["f.bin", "g.bin"]);
        assert_eq!(std::fs::read(root.path().join("f.bin")).unwrap(), b"data");
        assert_eq!(std::fs::read(root.path().join("g.bin")).unwrap(), b"more");
    }

    #[test]
    fn parents_are_created_and_a_link_or_a_file_on_the_way_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = Target::open_in(root.path(), root.path().to_path_buf()).unwrap();
        let p = open_parents(&target, "a/b/c/f.txt").unwrap();
        assert!(root.path().join("a/b/c").is_dir());
        still_in_place(&target, &p).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/link")).unwrap();
        let e = open_parents(&target, "a/link/x/f.txt").err().unwrap().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        std::fs::write(root.path().join("a/file"), b"").unwrap();
        let e = open_parents(&target, "a/file/f.txt").err().unwrap().to_string();
        assert!(e.contains("exists and is not a directory"), "{e}");
        assert!(names_in(outside.path()).is_empty());
    }
}
