//! Reading the workspace safely: every path is resolved from the workspace root one
//! component at a time, never through a symbolic link (with `follow_symlinks`, only
//! through links whose target stays inside the workspace), and every file read is
//! checked to be the one that was planned and not to change while it is read.
//!
//! The workspace is written by whoever opened the pull request, so a path that was a
//! directory when planned may be a link to `/etc` when it is read. [`Root`] never hands
//! a workspace path to the kernel in one piece: it uses `openat2` with `RESOLVE_BENEATH`
//! (and `RESOLVE_NO_SYMLINKS` unless links are followed) where the kernel has it (Linux
//! ≥ 5.6, not hidden by a seccomp profile), and otherwise, or to explain a refusal, walks
//! directory descriptors from the root with `openat(O_NOFOLLOW)`. A followed link is read
//! (`readlinkat`) and its target resolved the same way: `..` above the root, or an absolute
//! target outside it, is an escape (rsync's "safe links").
//!
//! [`FileId`] is what planning keeps (device, inode, size; the times are taken at open):
//! [`Root::open_planned`] refuses a file whose device, inode or size differ (it was
//! swapped), and [`PlannedFile::check_unchanged`] compares the open file before the first
//! read and after the last one (tar's "file changed as we read it").

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::dirfd::{cstr, owned};

/// Links followed in one resolution before it counts as a loop (Linux's limit).
const MAX_LINKS: usize = 40;

/// Why a workspace path cannot be resolved safely.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A component is a symbolic link and links are not followed.
    #[error("`{0}` is a symbolic link")]
    Symlink(String),
    /// A followed link leads out of the workspace.
    #[error("`{link}` is a symbolic link to `{target}`, outside the workspace; not followed")]
    Escapes { link: String, target: String },
    #[error("`{0}`: too many levels of symbolic links (a loop?)")]
    Loop(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Why a planned file cannot be read as planned (the upload of it fails, nothing is sent
/// or committed).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    #[error("cannot read: `{0}` is now a symbolic link (it was not when planned); not uploaded")]
    NowSymlink(String),
    #[error("cannot read: {0}; not uploaded")]
    Refused(#[source] ResolveError),
    #[error("is no longer a regular file (replaced since it was planned); not uploaded")]
    NotAFile,
    #[error("was replaced by another file since it was planned (device or inode differ); not uploaded")]
    Replaced,
    #[error("changed size since it was planned (planned {planned} bytes, now {now}); not uploaded")]
    Resized { planned: u64, now: u64 },
    /// Size, mtime or ctime differ after the last read from before the first.
    #[error("file changed as we read it ({0}); not committed")]
    ChangedWhileRead(String),
}

/// The workspace root, opened once; every read below it starts from this descriptor.
pub struct Root {
    fd: OwnedFd,
    /// Canonical path of the root (absolute link targets are compared with it).
    path: PathBuf,
    follow: bool,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root").field("path", &self.path).field("follow", &self.follow).finish()
    }
}

/// What planning keeps of a file: which file it is (device, inode) and its size. The file
/// opened later must be this one ([`Root::open_planned`]); its times are taken at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> Self {
        FileId { dev: m.dev(), ino: m.ino(), size: m.size() }
    }
}

/// A file's state at open, compared after the last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FileState {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileState {
    pub fn of(m: &std::fs::Metadata) -> Self {
        FileState {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A planned file, open for reading, with its state before the first read.
#[derive(Debug)]
pub struct PlannedFile {
    pub file: File,
    before: FileState,
}

impl PlannedFile {
    /// After the last read: the file still has the size, mtime and ctime it had before
    /// the first one, else it changed while it was read and what was read may be a mix.
    pub fn check_unchanged(&self) -> Result<(), LocalError> {
        let now = FileState::of(&self.file.metadata().map_err(LocalError::Io)?);
        if now == self.before {
            return Ok(());
        }
        let what = if now.size != self.before.size {
            format!("its size went from {} to {} bytes", self.before.size, now.size)
        } else if now.mtime != self.before.mtime {
            "it was modified".to_string()
        } else {
            "its status changed (ctime)".to_string()
        };
        Err(LocalError::ChangedWhileRead(what))
    }
}

impl Root {
    /// Opens the workspace root (a trusted path: the step's working directory).
    pub fn open(path: &Path, follow: bool) -> io::Result<Root> {
        let path = path.canonicalize()?;
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a NUL-terminated path that outlives the call; a non-negative
        // result is a new descriptor nobody else owns.
        let fd = unsafe { libc::open(c.as_ptr(), dir_flags() | libc::O_CLOEXEC) };
        Ok(Root { fd: owned(fd)?, path, follow })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that `rel` (a `/`-separated path under the root) resolves without a link
    /// (or, when following, without leaving the workspace). The last component may be a
    /// file or a directory. For planning.
    pub fn probe(&self, rel: &str) -> Result<(), ResolveError> {
        self.walk(rel.as_bytes(), false).map(|_| ())
    }

    /// Opens the regular file `rel` for reading, resolved safely.
    pub fn open_file(&self, rel: &str) -> Result<File, ResolveError> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = self.openat2(rel) {
            return Ok(File::from(fd));
        }
        match self.walk(rel.as_bytes(), true)? {
            Some(fd) => Ok(File::from(fd)),
            None => Err(ResolveError::Io(io::ErrorKind::InvalidInput.into())),
        }
    }

    /// Opens a planned file: safely resolved, and still the same file (device, inode)
    /// with the planned size; the returned [`PlannedFile`] remembers its state.
    pub fn open_planned(&self, rel: &str, planned: &FileId) -> Result<PlannedFile, LocalError> {
        let file = self.open_file(rel).map_err(|e| match e {
            ResolveError::Io(e) => LocalError::Io(e),
            ResolveError::Symlink(at) => LocalError::NowSymlink(at),
            e => LocalError::Refused(e),
        })?;
        let m = file.metadata().map_err(LocalError::Io)?;
        if !m.is_file() {
            return Err(LocalError::NotAFile);
        }
        let now = FileState::of(&m);
        if (now.dev, now.ino) != (planned.dev, planned.ino) {
            return Err(LocalError::Replaced);
        }
        if now.size != planned.size {
            return Err(LocalError::Resized { planned: planned.size, now: now.size });
        }
        Ok(PlannedFile { file, before: now })
    }

    /// The fast path: one `openat2` call that refuses to leave the root (and, unless
    /// links are followed, any link). `None` when the kernel lacks it or it refused: the
    /// walk then decides, and names the component that is the reason.
    #[cfg(target_os = "linux")]
    fn openat2(&self, rel: &str) -> Option<OwnedFd> {
        use std::sync::atomic::{AtomicBool, Ordering};
        static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return None;
        }
        #[cfg(test)]
        if FORCE_WALK.load(Ordering::Relaxed) {
            return None;
        }
        /// `struct open_how` (linux/openat2.h).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
        const RESOLVE_NO_SYMLINKS: u64 = 0x04;
        const RESOLVE_BENEATH: u64 = 0x08;
        let c = cstr(rel.as_bytes()).ok()?;
        let mut flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let mut resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        if !self.follow {
            flags |= libc::O_NOFOLLOW;
            resolve |= RESOLVE_NO_SYMLINKS;
        }
        let how = OpenHow { flags: flags as u64, mode: 0, resolve };
        // SAFETY: the root descriptor is open, `c` is NUL-terminated and `how` is a
        // properly laid out `struct open_how` whose size is passed; both outlive the call.
        // A non-negative result is a new descriptor nobody else owns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            return owned(r as libc::c_int).ok();
        }
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if matches!(errno, libc::ENOSYS | libc::EPERM | libc::E2BIG | libc::EINVAL) {
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
        None
    }

    /// Resolves `rel` from the root through directory descriptors. With `open_last`,
    /// opens the last component for reading (and returns it); otherwise only checks it.
    fn walk(&self, rel: &[u8], open_last: bool) -> Result<Option<OwnedFd>, ResolveError> {
        // The directories walked through (descriptor, name), from the root down.
        let mut stack: Vec<(OwnedFd, String)> = Vec::new();
        let mut todo: VecDeque<Vec<u8>> = components(rel).collect();
        let mut links = 0usize;
        // The last link followed, to name it when its target leads out.
        let mut via: Option<(String, String)> = None;
        let escape = |via: &Option<(String, String)>, at: String| match via {
            Some((link, target)) => ResolveError::Escapes { link: link.clone(), target: target.clone() },
            None => ResolveError::Escapes { link: at, target: "..".into() },
        };
        while let Some(name) = todo.pop_front() {
            let shown = |stack: &[(OwnedFd, String)]| {
                let mut parts: Vec<&str> = stack.iter().map(|(_, n)| n.as_str()).collect();
                let last = String::from_utf8_lossy(&name).into_owned();
                parts.push(&last);
                parts.join("/")
            };
            if name == b".." {
                if stack.pop().is_none() {
                    return Err(escape(&via, "..".into()));
                }
                continue;
            }
            let dir = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(self.fd.as_fd());
            let last = todo.is_empty();
            let opened = if last && !open_last {
                // Only a check: is the last component a link?
                match lstat_is_link(dir, &name) {
                    Ok(false) => return Ok(None),
                    Ok(true) => Err(io::Error::from_raw_os_error(libc::ELOOP)),
                    Err(e) => return Err(e.into()),
                }
            } else if last {
                openat(dir, &name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW)
            } else {
                openat(dir, &name, dir_flags() | libc::O_NOFOLLOW)
            };
            let err = match opened {
                Ok(fd) if last => return Ok(Some(fd)),
                Ok(fd) => {
                    let shown_name = String::from_utf8_lossy(&name).into_owned();
                    stack.push((fd, shown_name));
                    continue;
                }
                Err(e) => e,
            };
            // ELOOP (Linux, macOS) or EMLINK (FreeBSD) for a final link under O_NOFOLLOW,
            // ENOTDIR for a link in the middle under O_DIRECTORY: is it a link?
            let maybe_link = matches!(err.raw_os_error(), Some(libc::ELOOP | libc::EMLINK | libc::ENOTDIR));
            if !maybe_link || !lstat_is_link(dir, &name).unwrap_or(false) {
                return Err(err.into());
            }
            let at = shown(&stack);
            if !self.follow {
                return Err(ResolveError::Symlink(at));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(ResolveError::Loop(at));
            }
            let target = readlinkat(dir, &name)?;
            let t = target.as_bytes();
            via = Some((at.clone(), String::from_utf8_lossy(t).into_owned()));
            let rest: &[u8] = if t.starts_with(b"/") {
                match strip_root(t, self.path.as_os_str().as_bytes()) {
                    Some(rest) => {
                        stack.clear();
                        rest
                    }
                    None => return Err(escape(&via, at)),
                }
            } else {
                t
            };
            for c in components(rest).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(c);
            }
            if todo.is_empty() {
                // A link to the root itself (`ws/self -> .`): the root is a directory.
                return if open_last { Err(io::Error::from_raw_os_error(libc::EISDIR).into()) } else { Ok(None) };
            }
        }
        // An empty path: the root itself.
        if open_last {
            Err(io::Error::from_raw_os_error(libc::EISDIR).into())
        } else {
            Ok(None)
        }
    }
}

/// The non-empty, non-`.` components of a `/`-separated path.
fn components(p: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    p.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec)
}

/// `t` below `root` (whole components): the rest, or `None` if `t` is not under it.
fn strip_root<'a>(t: &'a [u8], root: &[u8]) -> Option<&'a [u8]> {
    let root = if root.len() > 1 { root.strip_suffix(b"/").unwrap_or(root) } else { b"" };
    let rest = t.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with(b"/") {
        Some(rest)
    } else {
        None
    }
}

/// Directories are opened only to walk through them: `O_PATH` needs no read permission.
fn dir_flags() -> libc::c_int {
    #[cfg(target_os = "linux")]
    let f = libc::O_PATH | libc::O_DIRECTORY;
    #[cfg(not(target_os = "linux"))]
    let f = libc::O_RDONLY | libc::O_DIRECTORY;
    f
}

fn openat(dir: BorrowedFd<'_>, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `dir` is an open descriptor and `c` a NUL-terminated name, both valid for the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(fd)
}

fn lstat_is_link(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let c = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is open, `c` NUL-terminated, `st` points to writable memory for one `stat`.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

fn readlinkat(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OsString> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `dir` is open, `c` NUL-terminated, and `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::readlinkat(dir.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(OsString::from_vec(buf));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// A path's bytes for a message: valid UTF-8 as is, any other byte as `\xNN`.
pub fn escape_name(name: &OsStr) -> String {
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Tests only: skip `openat2`, so the descriptor walk is exercised on kernels that have it.
#[cfg(all(test, target_os = "linux"))]
static FORCE_WALK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A workspace `ws` beside an `outside` directory holding a secret.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let ws = base.join("ws");
        let out = base.join("outside");
        std::fs::create_dir_all(ws.join("real/sub")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("secret"), b"secret").unwrap();
        std::fs::write(ws.join("real/sub/f.txt"), b"inside").unwrap();
        symlink(&out, ws.join("dist")).unwrap(); // absolute, out
        symlink("real", ws.join("inside")).unwrap(); // relative, in
        symlink(ws.join("real/sub/f.txt"), ws.join("abs-in")).unwrap(); // absolute, in
        symlink("../outside/secret", ws.join("rel-out")).unwrap(); // relative, out
        symlink("real/../../outside", ws.join("dotdot-out")).unwrap();
        symlink("loop", ws.join("loop")).unwrap();
        (t, ws, out)
    }

    fn read(r: &Root, rel: &str) -> Result<String, ResolveError> {
        use std::io::Read;
        let mut s = String::new();
        r.open_file(rel)?.read_to_string(&mut s)?;
        Ok(s)
    }

    fn both_paths(check: impl Fn()) {
        check();
        #[cfg(target_os = "linux")]
        {
            FORCE_WALK.store(true, std::sync::atomic::Ordering::SeqCst);
            check();
            FORCE_WALK.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn without_following_no_component_may_be_a_link() {
        let (_t, ws, _) = setup();
        let r = Root::open(&ws, false).unwrap();
        both_paths(|| {
            assert_eq!(read(&r, "real/sub/f.txt").unwrap(), "inside");
            assert!(matches!(read(&r, "dist/secret"), Err(ResolveError::Symlink(at)) if at == "dist"));
            assert!(matches!(read(&r, "inside/sub/f.txt"), Err(ResolveError::Symlink(at)) if at == "inside"));
            assert!(matches!(read(&r, "abs-in"), Err(ResolveError::Symlink(at)) if at == "abs-in"));
            assert!(matches!(read(&r, "real/nope"), Err(ResolveError::Io(e)) if e.kind() == io::ErrorKind::NotFound));
        });
        assert!(matches!(r.probe("dist"), Err(ResolveError::Symlink(_))));
        assert!(matches!(r.probe("dist/."), Err(ResolveError::Symlink(_))));
        assert!(r.probe("real/sub").is_ok());
        assert!(r.probe("").is_ok());
    }

    #[test]
    fn following_stays_inside_the_workspace() {
        let (_t, ws, out) = setup();
        let r = Root::open(&ws, true).unwrap();
        both_paths(|| {
            assert_eq!(read(&r, "inside/sub/f.txt").unwrap(), "inside");
            assert_eq!(read(&r, "abs-in").unwrap(), "inside");
            for (rel, link) in [("dist/secret", "dist"), ("rel-out", "rel-out"), ("dotdot-out/secret", "dotdot-out")] {
                match read(&r, rel) {
                    Err(ResolveError::Escapes { link: l, .. }) => assert_eq!(l, link, "{rel}"),
                    other => panic!("{rel}: {other:?}"),
                }
            }
            assert!(matches!(read(&r, "loop"), Err(ResolveError::Loop(_))));
        });
        match r.probe("dist") {
            Err(ResolveError::Escapes { target, .. }) => assert_eq!(target, out.to_string_lossy()),
            other => panic!("{other:?}"),
        }
        assert!(r.probe("inside").is_ok());
    }

    #[test]
    fn a_planned_file_swapped_or_changed_is_refused() {
        let (_t, ws, out) = setup();
        let r = Root::open(&ws, false).unwrap();
        let p = ws.join("real/sub/f.txt");
        // An old mtime, so that the rewrite below changes it whatever the clock's granularity.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        let planned = FileId::of(&std::fs::symlink_metadata(&p).unwrap());
        let f = r.open_planned("real/sub/f.txt", &planned).unwrap();
        assert!(f.check_unchanged().is_ok());
        // Rewritten in place with the same size, after the open.
        use std::io::Write;
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all(b"INSIDE").unwrap();
        assert!(matches!(f.check_unchanged(), Err(LocalError::ChangedWhileRead(_))));
        // Another file with the same size renamed over it.
        let planned = FileId::of(&std::fs::symlink_metadata(&p).unwrap());
        std::fs::write(ws.join("other"), b"123456").unwrap();
        std::fs::rename(ws.join("other"), &p).unwrap();
        assert!(matches!(r.open_planned("real/sub/f.txt", &planned), Err(LocalError::Replaced)));
        // A link to a file of the same size outside.
        std::fs::remove_file(&p).unwrap();
        symlink(out.join("secret"), &p).unwrap();
        assert!(r.open_planned("real/sub/f.txt", &planned).unwrap_err().to_string().contains("is now a symbolic link"));
    }

    #[test]
    fn names_are_escaped_byte_by_byte() {
        assert_eq!(escape_name(OsStr::from_bytes(b"x\xff.txt")), "x\\xff.txt");
        assert_eq!(escape_name(OsStr::from_bytes("é/\u{1F600}".as_bytes())), "é/\u{1F600}");
        assert_eq!(strip_root(b"/ws/a", b"/ws"), Some(&b"/a"[..]));
        assert_eq!(strip_root(b"/ws", b"/ws"), Some(&b""[..]));
        assert_eq!(strip_root(b"/wsx/a", b"/ws"), None);
        assert_eq!(strip_root(b"/a", b"/"), Some(&b"/a"[..]));
    }
}
