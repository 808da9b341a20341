//! Download of one item: parallel ranged GETs into a temporary file beside the
//! destination, in-order hashing, verification, then an atomic rename.
//!
//! Ranges are requested in order, at most `concurrency` at once, and each response is
//! written at its offset frame by frame as it arrives (`pwrite`): no range is assembled
//! in memory, so memory stays at the HTTP read buffers whatever the range size. A hasher
//! thread follows behind, reading each completed stretch back from the page cache in
//! file order ([`hash_in_order`]), so SHA-256 runs on one core while the other serves
//! the network, and the file's hash is of the bytes as they landed.
//!
//! The file appears under its final name only after its SHA-256 (metadata `sha256`) or
//! Content-MD5 matched; until then it is an unnamed file ([`TempFile`]), which nothing,
//! not even `SIGKILL`, can leave behind (or, where unnamed files are not supported, a
//! named one removed on failure and on SIGTERM/SIGINT). Parent directories are created
//! one component at a time and a symbolic link met on the way is refused, so nothing is
//! written outside `target`.
//!
//! Each request is retried by the HTTP layer, but bytes that arrive damaged or short in
//! a well-formed response are only seen here (by the whole-file SHA-256 / MD5, or by a
//! range's length). Such a file is downloaded once more from scratch: a damaged
//! transfer, or a blob rewritten while it was read, then succeeds; a second mismatch
//! means the stored data and its checksum disagree, and the file fails. (Over HTTPS,
//! which real Azure requires, TLS already turns in-flight damage into a transport error;
//! this covers proxies that re-encrypt, and blobs changed mid-download.)

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::checksum::{hash_file, Digests, FileHasher};
use super::plan::DownloadItem;
use super::report::{FileResult, Status};
use super::upload::same_content;
use super::Engine;
use crate::config::{Overwrite, Verify};

static TEMP_FILES: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
/// Downloads written but not yet under their final name (named or unnamed).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Removes every named temporary download file still open (called on SIGTERM/SIGINT;
/// unnamed ones vanish with the process) and returns how many downloads were unfinished.
pub fn remove_temp_files() -> usize {
    let files = std::mem::take(&mut *TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()));
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    IN_FLIGHT.load(Ordering::SeqCst)
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
struct TempFile {
    file: Arc<std::fs::File>,
    /// `Some` for a named temporary file (removed on drop unless persisted).
    path: Option<PathBuf>,
    dir: PathBuf,
    base: String,
}

impl TempFile {
    fn create(dir: &Path, base: &str) -> std::io::Result<Self> {
        let t = Self::open(dir, base)?;
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Ok(t)
    }

    fn open(dir: &Path, base: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        if Path::new("/proc/self/fd").is_dir() {
            match std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).open(dir) {
                Ok(f) => return Ok(TempFile { file: Arc::new(f), path: None, dir: dir.into(), base: base.into() }),
                // Not supported by this filesystem or kernel: fall back to a named file.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {}
                Err(e) => return Err(e),
            }
        }
        let (path, f) = Self::named(dir, base)?;
        TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()).insert(path.clone());
        Ok(TempFile { file: Arc::new(f), path: Some(path), dir: dir.into(), base: base.into() })
    }

    /// A new file with a random temporary name beside the destination.
    fn named(dir: &Path, base: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        fresh_name(dir, base, |path| std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path))
    }

    /// Gives the verified file its final name `dest`, replacing what is there.
    fn persist(mut self, dest: &Path) -> std::io::Result<()> {
        let Some(path) = self.path.take() else {
            // Link the unnamed file: directly when nothing is at `dest`, else under a
            // temporary name first and renamed over `dest` (a link cannot replace).
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*self.file));
            match link(&proc_path, dest) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
            let (tmp, ()) = fresh_name(&self.dir, &self.base, |tmp| link(&proc_path, tmp))?;
            let r = std::fs::rename(&tmp, dest);
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            return r;
        };
        let r = std::fs::rename(&path, dest);
        if r.is_err() {
            self.path = Some(path);
            return r;
        }
        TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()).remove(&path);
        Ok(())
    }
}

/// Runs `make` on random temporary names `.base.azpart-XXXXXXXX` in `dir` until one does
/// not exist yet; returns the name it succeeded with.
fn fresh_name<T>(
    dir: &Path,
    base: &str,
    mut make: impl FnMut(&Path) -> std::io::Result<T>,
) -> std::io::Result<(PathBuf, T)> {
    for _ in 0..16 {
        let path = dir.join(format!(".{base}.azpart-{:08x}", fastrand::u32(..)));
        match make(&path) {
            Ok(t) => return Ok((path, t)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot pick a temporary file name"))
}

/// `linkat(2)` following the `/proc/self/fd` link to the open file.
fn link(from: &str, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from).map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let r =
        unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
            TEMP_FILES.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
        }
    }
}

/// Creates the parent directories of `rel` under `root`, refusing symlinks and files on the way.
pub fn ensure_parents(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("`{}` is a symbolic link: refusing to write through it", dir.display()))
            }
            Ok(_) => return Err(format!("`{}` exists and is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() && !dir.is_symlink() => {}
                Err(e) => return Err(format!("cannot create `{}`: {e}", dir.display())),
            },
            Err(e) => return Err(format!("cannot inspect `{}`: {e}", dir.display())),
        }
    }
    Ok(dir)
}

pub async fn download_one(eng: Arc<Engine>, item: DownloadItem, target: Arc<PathBuf>) -> FileResult {
    let local = target.join(&item.rel);
    let mut res = FileResult::new(
        &item.remote.name,
        &local.to_string_lossy(),
        item.remote.size,
        eng.store.url(&item.remote.name),
    );
    res.etag = item.remote.etag.clone();
    let mut outcome = download_inner(&eng, &item, &target, &mut res).await;
    if let Err(Failure::Integrity(why)) = &outcome {
        tracing::warn!("{}: {why}; downloading it again", item.remote.name);
        outcome = download_inner(&eng, &item, &target, &mut res).await;
    }
    if let Err(e) = outcome {
        res.status = Status::Failed;
        res.reason = Some(e.into_message());
        tracing::error!("failed: {} → {}: {}", item.remote.name, item.rel, res.reason.as_deref().unwrap_or(""));
    }
    eng.progress.counters.file_done();
    res
}

/// Why a download attempt failed: integrity failures get one more attempt.
enum Failure {
    /// The bytes received disagree with the stored checksum or the range asked for.
    Integrity(String),
    Other(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Integrity(m) => format!("{m} (twice; not written)"),
            Failure::Other(m) => m,
        }
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
    Sha256(String),
    Md5(String),
    SizeOnly,
}

async fn download_inner(
    eng: &Arc<Engine>,
    item: &DownloadItem,
    target: &Path,
    res: &mut FileResult,
) -> Result<(), Failure> {
    // A listing without checksums (Azure Files listings never carry metadata or MD5; so
    // may a blob written by another tool) is completed by the item's own properties.
    let fetched;
    let remote = if item.remote.sha256.is_none() && item.remote.content_md5.is_none() {
        fetched = eng
            .with_request(eng.store.properties(&item.remote.name))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("disappeared after it was listed")?;
        res.etag = fetched.etag.clone();
        &fetched
    } else {
        &item.remote
    };
    let size = remote.size;
    let parent = {
        let (t, r) = (target.to_path_buf(), item.rel.clone());
        tokio::task::spawn_blocking(move || ensure_parents(&t, &r)).await.map_err(|e| e.to_string())??
    };
    let base = item.rel.rsplit('/').next().unwrap_or(&item.rel).to_string();
    let dest = parent.join(&base);

    match std::fs::symlink_metadata(&dest) {
        Ok(m) if !m.is_file() => return Err(format!("`{}` exists and is not a regular file", dest.display()).into()),
        Ok(_) => match eng.cfg.overwrite {
            Overwrite::False => return Err("already exists locally (overwrite: false)".into()),
            Overwrite::Skip => return skip(eng, res, size, "exists locally (overwrite: skip)"),
            Overwrite::Changed => {
                let d = dest.clone();
                let local = tokio::task::spawn_blocking(move || hash_file(&d, true))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot read the local file: {e}"))?;
                if same_content(remote, &local) {
                    res.sha256 = Some(local.sha256);
                    return skip(eng, res, size, "unchanged (overwrite: changed)");
                }
            }
            Overwrite::True => {}
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect `{}`: {e}", dest.display()).into()),
    }

    if remote.access_tier.as_deref() == Some("Archive") {
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

    let tmp = TempFile::create(&parent, &base)
        .map_err(|e| format!("cannot create a temporary file in `{}`: {e}", parent.display()))?;
    let file = tmp.file.clone();
    let range = eng.range_size();
    let n = size.div_ceil(range);
    let window = eng.cfg.concurrency.max(1);
    let with_md5 = matches!(expect, Expect::Md5(_));
    let name = remote.name.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, u64)>();
    let hasher = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || hash_in_order(&file, size, with_md5, done_rx))
    };
    // The closure owns the hasher's sender: when the stream is dropped (done or failed),
    // the hasher sees the channel close.
    let mut ranges = futures::stream::iter(0..n)
        .map(move |i| {
            let (eng, name, file, done) = (eng.clone(), name.clone(), file.clone(), done_tx.clone());
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
                let got = eng
                    .with_request(eng.store.get_range(&name, offset, len, &write))
                    .await
                    .map_err(|e| Failure::Other(e.to_string()))?;
                if got != len {
                    return Err(Failure::Integrity(format!(
                        "range at {offset}: expected {len} bytes, received {got} (truncated or changed)"
                    )));
                }
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
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read back the downloaded data: {e}"))?
        .ok_or("internal error: a range was never reported to the hasher")?;
    // From here a failure is an integrity failure that may be retried: take back the progress.
    let integrity = |m: String| {
        eng.progress.counters.bytes_done.fetch_sub(counted, std::sync::atomic::Ordering::Relaxed);
        Failure::Integrity(m)
    };
    if got.len != size {
        return Err(integrity(format!("received {} bytes, expected {size}", got.len)));
    }
    match &expect {
        Expect::Sha256(want) if !want.eq_ignore_ascii_case(&got.sha256) => {
            return Err(integrity(format!("SHA-256 mismatch: stored {want}, received {}", got.sha256)))
        }
        Expect::Md5(want) if got.md5_base64().as_deref() != Some(want.as_str()) => {
            return Err(integrity(format!(
                "Content-MD5 mismatch: stored {want}, received {}",
                got.md5_base64().unwrap_or_default()
            )))
        }
        _ => {}
    }
    tmp.persist(&dest).map_err(|e| format!("cannot move into place: {e}"))?;
    res.sha256 = Some(got.sha256);
    res.status = Status::Transferred;
    Ok(())
}

fn skip(eng: &Engine, res: &mut FileResult, size: u64, why: &str) -> Result<(), Failure> {
    res.status = Status::Skipped;
    res.reason = Some(why.into());
    eng.progress.counters.add_bytes(size);
    tracing::info!("skipped: {} ({why})", res.name);
    Ok(())
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
    let mut buf = vec![0u8; HASH_READ.min(size as usize)];
    while next < size {
        let Ok((offset, len)) = done.recv() else { return Ok(None) };
        ready.insert(offset, len);
        while let Some(len) = ready.remove(&next) {
            let end = next + len;
            while next < end {
                let k = buf.len().min((end - next) as usize);
                file.read_exact_at(&mut buf[..k], next)?;
                h.update(&buf[..k]);
                next += k as u64;
            }
        }
    }
    Ok(Some(h.finish()))
}

/// Read-back piece for hashing: small enough to stay in the L2 cache between the copy and the hash.
const HASH_READ: usize = 256 << 10;
