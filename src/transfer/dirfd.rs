//! File operations relative to directory descriptors, never following a symbolic link
//! unless asked to, on rustix's safe system-call wrappers (no `unsafe` here; why rustix
//! rather than cap-std: docs/design.md).
//!
//! [`walk`] is the one way a path below a directory descriptor is resolved: the
//! workspace reads of `localfs`, the download destinations, the directories named by
//! `target` and `manifest` ([`open_beneath`]) and the cache extraction all use it. It asks
//! the kernel first (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, and
//! `RESOLVE_NO_SYMLINKS` unless links are followed: Linux ≥ 5.6 where no seccomp profile
//! hides it); when the kernel lacks it, or refused, or a directory must be created, it
//! walks one component at a time from the descriptor (`openat` with `O_NOFOLLOW`,
//! intermediate directories as `O_PATH`, `mkdirat`), which also names the component that
//! is the reason for a refusal ([`Refusal`]).
//!
//! Everything else is done relative to the descriptor a walk ended in (`openat` with
//! `O_TMPFILE`, `linkat`, `renameat`, `unlinkat`): once a directory is open, no rename or
//! symlink swap of a path above or at it can redirect where the bytes land, since the
//! kernel resolves nothing by path again. Names passed to these functions are single
//! components (no `/`), checked by their callers.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Links followed in one resolution before it counts as a loop (Linux's limit).
const MAX_LINKS: usize = 40;

/// What the last component of a [`walk`] is opened as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// A directory, open for reading (so usable for `fchmod`, `futimens`, `flock` and
    /// `O_TMPFILE`, and as the directory of every `*at` call); created when missing with
    /// [`How::create`].
    Dir,
    /// Whatever it is, for reading, without blocking (a FIFO does not hang the open).
    File,
    /// Whatever it is, only located (`O_PATH` on Linux: no read permission needed).
    Any,
}

/// What a [`walk`] does with a symbolic link on its way.
#[derive(Debug, Clone, Copy)]
pub enum Links<'a> {
    /// Every link is refused ([`Refusal::Symlink`]).
    Refuse,
    /// Links are followed while they lead below the base directory, whose canonical path
    /// this is (an absolute target is compared with it); `..` above the base, or an
    /// absolute target elsewhere, is [`Refusal::Escapes`] (rsync's "safe links").
    FollowWithin(&'a Path),
}

/// How a [`walk`] resolves its components.
#[derive(Debug, Clone, Copy)]
pub struct How<'a> {
    /// Create the missing directories on the way (and the last one, for [`Last::Dir`]),
    /// mode 0777 less the umask.
    pub create: bool,
    pub last: Last,
    pub links: Links<'a>,
}

impl How<'static> {
    /// A directory reached without following any link, created on the way with `create`.
    pub fn dir(create: bool) -> Self {
        How { create, last: Last::Dir, links: Links::Refuse }
    }
}

/// Why a [`walk`] stopped. `at` is the path walked up to the component that is the
/// reason, `/`-separated (with links followed, the path as resolved). The system's error
/// is kept where there is one; callers word the refusal their own way.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("`{at}` is a symbolic link")]
    Symlink { at: String, err: io::Error },
    #[error("`{at}` is not a directory")]
    NotDir { at: String, err: io::Error },
    /// A `..` among the components: a walk never goes up by name.
    #[error("`{at}` holds `..`")]
    DotDot { at: String },
    /// A followed link leads out of the base directory.
    #[error("`{link}` is a symbolic link to `{target}`, outside the directory; not followed")]
    Escapes { link: String, target: String },
    #[error("`{at}`: too many levels of symbolic links (a loop?)")]
    Loop { at: String },
    #[error("cannot create `{at}`: {err}")]
    Create { at: String, err: io::Error },
    #[error("`{at}`: {err}")]
    Io { at: String, err: io::Error },
}

impl Refusal {
    /// Where the walk stopped (for an escape, the link that leads out).
    pub fn at(&self) -> &str {
        match self {
            Refusal::Symlink { at, .. }
            | Refusal::NotDir { at, .. }
            | Refusal::DotDot { at }
            | Refusal::Loop { at }
            | Refusal::Create { at, .. }
            | Refusal::Io { at, .. } => at,
            Refusal::Escapes { link, .. } => link,
        }
    }

    /// The system's error where there is one (as a plain `openat` walk would have
    /// returned it), else the refusal in words.
    pub fn into_io(self) -> io::Error {
        match self {
            Refusal::Symlink { err, .. }
            | Refusal::NotDir { err, .. }
            | Refusal::Create { err, .. }
            | Refusal::Io { err, .. } => err,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Opens `components` below `base` as `how` says: the kernel resolves them in one call
/// where it can (`openat2`, never leaving `base`), else, and to name the reason for a
/// refusal, [`walk_by_descriptors`] does. Empty and `.` components are skipped; a `..`,
/// or a component holding `/` or NUL, is refused before anything is opened.
pub fn walk<C: AsRef<[u8]>>(base: impl AsFd, components: &[C], how: How<'_>) -> Result<OwnedFd, Refusal> {
    let comps = checked(components)?;
    #[cfg(target_os = "linux")]
    if let Some(fd) = beneath(base.as_fd(), &comps, &how) {
        return Ok(fd);
    }
    descend(base.as_fd(), comps, how)
}

/// [`walk`] without the kernel's `openat2`: one component at a time, as on a kernel
/// without it. What `walk` falls back to; the tests compare the two.
pub fn walk_by_descriptors<C: AsRef<[u8]>>(
    base: impl AsFd,
    components: &[C],
    how: How<'_>,
) -> Result<OwnedFd, Refusal> {
    descend(base.as_fd(), checked(components)?, how)
}

/// The components to walk: empty and `.` ones dropped, `..` and `/` or NUL refused.
fn checked<C: AsRef<[u8]>>(components: &[C]) -> Result<Vec<&[u8]>, Refusal> {
    let mut out = Vec::with_capacity(components.len());
    for c in components {
        let c = c.as_ref();
        let at = || {
            let mut shown: Vec<String> = out.iter().map(|c: &&[u8]| lossy(c)).collect();
            shown.push(lossy(c));
            shown.join("/")
        };
        match c {
            b"" | b"." => {}
            b".." => return Err(Refusal::DotDot { at: at() }),
            c if c.contains(&b'/') || c.contains(&0) => {
                let err = io::Error::new(io::ErrorKind::InvalidInput, "a path component holds `/` or NUL");
                return Err(Refusal::Io { at: at(), err });
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Flags of the last component's open (without `O_NOFOLLOW`, added when links are refused).
fn last_flags(last: Last) -> OFlags {
    let f = match last {
        Last::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
        Last::File => OFlags::RDONLY | OFlags::NONBLOCK,
        #[cfg(target_os = "linux")]
        Last::Any => OFlags::PATH,
        #[cfg(not(target_os = "linux"))]
        Last::Any => OFlags::RDONLY | OFlags::NONBLOCK,
    };
    f | OFlags::CLOEXEC
}

/// Directories on the way are opened only to walk through them: `O_PATH` needs no read
/// permission.
fn through_flags() -> OFlags {
    #[cfg(target_os = "linux")]
    let f = OFlags::PATH | OFlags::DIRECTORY;
    #[cfg(not(target_os = "linux"))]
    let f = OFlags::RDONLY | OFlags::DIRECTORY;
    f | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The fast path: one `openat2` that refuses to leave `base` (and, unless links are
/// followed, any link). `None` when the kernel lacks it or refused: the walk then decides,
/// and names the component that is the reason (or creates what is missing).
#[cfg(target_os = "linux")]
fn beneath(base: BorrowedFd<'_>, comps: &[&[u8]], how: &How<'_>) -> Option<OwnedFd> {
    use rustix::fs::ResolveFlags;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set once `openat2` is known to be missing (or hidden by seccomp): not asked again.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let path = if comps.is_empty() { b".".to_vec() } else { comps.join(&b'/') };
    let mut flags = last_flags(how.last);
    let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let refuse = matches!(how.links, Links::Refuse);
    if refuse {
        flags |= OFlags::NOFOLLOW;
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    match rustix::fs::openat2(base, path.as_slice(), flags, Mode::empty(), resolve) {
        // `O_PATH | O_NOFOLLOW` opens a last component that is a link as the link itself.
        Ok(fd) if refuse && how.last == Last::Any && fstat_is(&fd, FileType::Symlink) => None,
        Ok(fd) => Some(fd),
        Err(Errno::NOSYS | Errno::PERM | Errno::TOOBIG | Errno::INVAL) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

fn fstat_is(fd: &OwnedFd, kind: FileType) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == kind)
}

/// The walk: the directories passed through are kept open (descriptor, name), from
/// `base` down; a followed link's target is put in front of the components still to
/// walk, and its `..` closes the last directory opened (never above `base`).
fn descend(base: BorrowedFd<'_>, comps: Vec<&[u8]>, how: How<'_>) -> Result<OwnedFd, Refusal> {
    let mut stack: Vec<(OwnedFd, String)> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = comps.into_iter().map(<[u8]>::to_vec).collect();
    let mut links = 0usize;
    // The last link followed, to name it when its target leads out.
    let mut via: Option<(String, String)> = None;
    let shown = |stack: &[(OwnedFd, String)], name: &[u8]| {
        let mut parts: Vec<String> = stack.iter().map(|(_, n)| n.clone()).collect();
        parts.push(lossy(name));
        parts.retain(|p| !p.is_empty());
        parts.join("/")
    };
    loop {
        let dir = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(base);
        let Some(name) = todo.pop_front() else {
            // Everything resolved to a directory already open (no component, or a link
            // to a directory on the way): that directory is the last component.
            let flags = last_flags(how.last);
            return rustix::fs::openat(dir, ".", flags, Mode::empty())
                .map_err(|e| Refusal::Io { at: shown(&stack, b""), err: e.into() });
        };
        if name == b".." {
            // Only from a followed link's target: the components given hold none.
            if stack.pop().is_none() {
                let (link, target) = via.clone().unwrap_or_else(|| ("..".into(), "..".into()));
                return Err(Refusal::Escapes { link, target });
            }
            continue;
        }
        let last = todo.is_empty();
        let dir_wanted = !last || how.last == Last::Dir;
        let flags = if last { last_flags(how.last) | OFlags::NOFOLLOW } else { through_flags() };
        let open = || rustix::fs::openat(dir, name.as_slice(), flags, Mode::empty());
        let mut opened = open();
        if how.create && dir_wanted && matches!(opened, Err(Errno::NOENT)) {
            match rustix::fs::mkdirat(dir, name.as_slice(), Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Refusal::Create { at: shown(&stack, &name), err: e.into() }),
            }
            opened = open();
        }
        let err: io::Error = match opened {
            // `O_PATH | O_NOFOLLOW` opens a last component that is a link as the link.
            Ok(fd) if last && how.last == Last::Any && fstat_is(&fd, FileType::Symlink) => Errno::LOOP.into(),
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => {
                stack.push((fd, lossy(&name)));
                continue;
            }
            Err(e) => e.into(),
        };
        let at = shown(&stack, &name);
        let kind = rustix::fs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileType::from_raw_mode(st.st_mode));
        match kind {
            Ok(FileType::Symlink) => {}
            Ok(FileType::Directory) => return Err(Refusal::Io { at, err }),
            Ok(_) if dir_wanted => return Err(Refusal::NotDir { at, err }),
            _ => return Err(Refusal::Io { at, err }),
        }
        let Links::FollowWithin(root) = how.links else {
            return Err(Refusal::Symlink { at, err });
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(Refusal::Loop { at });
        }
        let target = rustix::fs::readlinkat(dir, name.as_slice(), Vec::new())
            .map_err(|e| Refusal::Io { at: at.clone(), err: e.into() })?
            .into_bytes();
        via = Some((at.clone(), lossy(&target)));
        let rest: &[u8] = if target.starts_with(b"/") {
            match strip_root(&target, root.as_os_str().as_bytes()) {
                Some(rest) => {
                    stack.clear();
                    rest
                }
                None => return Err(Refusal::Escapes { link: at, target: lossy(&target) }),
            }
        } else {
            &target
        };
        let parts: Vec<Vec<u8>> =
            rest.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec).collect();
        for c in parts.into_iter().rev() {
            todo.push_front(c);
        }
    }
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

/// Device (as `std`'s `MetadataExt::dev` gives it), inode and size of `name` in `dir`,
/// without following a link: one `statx` resolving a single component, where a stat by
/// path walks every component of the path again.
pub fn id_at(dir: impl AsFd, name: &std::ffi::OsStr) -> io::Result<(u64, u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::StatxFlags;
        let st = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::INO | StatxFlags::SIZE)?;
        Ok((rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino, st.stx_size))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok((st.st_dev as u64, st.st_ino as u64, st.st_size as u64))
    }
}

/// Opens a directory by path (following links: this is how `target` itself is named).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Creates the directory `name` in `dir` (mode 0777 less the umask).
pub fn mkdir_at(dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777))?)
}

/// What is at `name` in `dir`, without following a link.
pub fn stat_at(dir: impl AsFd, name: &str) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Device and inode of an open descriptor: which directory it is.
pub fn identity(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    // `dev_t` and `ino_t` are u64 on 64-bit Linux, narrower elsewhere; only compared.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

pub fn is_symlink(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Symlink
}

pub fn is_file(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// An unnamed file (`O_TMPFILE`) in `dir`, readable and writable, mode 0666 less the umask.
/// Linux only: elsewhere this fails with `Unsupported` and the caller uses a named file.
#[cfg(target_os = "linux")]
pub fn tmpfile_in(dir: impl AsFd) -> io::Result<File> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o666))?.into())
}

#[cfg(not(target_os = "linux"))]
pub fn tmpfile_in(_dir: impl AsFd) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "unnamed temporary files (O_TMPFILE) are Linux only"))
}

/// Creates `name` in `dir`, failing if anything (a link included) is there.
pub fn create_new_at(dir: impl AsFd, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o666))?.into())
}

/// Opens the file `name` in `dir` for reading; a symbolic link there fails.
pub fn open_file_at(dir: impl AsFd, name: &str) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?.into())
}

/// Gives the open (possibly unnamed) `file` the name `name` in `dir` (`EEXIST` if taken),
/// through its `/proc/self/fd` link, which names the open file itself and resolves no path.
/// Linux only (elsewhere `Unsupported`): only an unnamed [`tmpfile_in`] file needs it.
#[cfg(target_os = "linux")]
pub fn link_at(file: &File, dir: impl AsFd, name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(rustix::fs::linkat(rustix::fs::CWD, from.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)?)
}

#[cfg(not(target_os = "linux"))]
pub fn link_at(_file: &File, _dir: impl AsFd, _name: &str) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "linking an open file by descriptor needs Linux's /proc/self/fd"))
}

/// Links the file named `from` in `dir` under `to` as well (`EEXIST` if taken).
pub fn link_name_at(dir: impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let dir = dir.as_fd();
    link_between(dir, from, dir, to)
}

/// Links `from` in `from_dir` as `to` in `to_dir` (`EEXIST` if taken); a link is linked
/// itself, never followed.
pub fn link_between(from_dir: impl AsFd, from: &str, to_dir: impl AsFd, to: &str) -> io::Result<()> {
    Ok(rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty())?)
}

/// Renames `from` to `to`, both in `dir`, replacing what `to` names (a link itself, not its target).
pub fn rename_at(dir: impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let dir = dir.as_fd();
    rename_between(dir, from, dir, to)
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, replacing what `to` names.
pub fn rename_between(from_dir: impl AsFd, from: &str, to_dir: impl AsFd, to: &str) -> io::Result<()> {
    Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
}

/// Creates in `dir` a symbolic link `name` whose text is `target` (never resolved here).
pub fn symlink_at(target: &str, dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// Removes the file `name` from `dir`.
pub fn unlink_at(dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Why [`open_beneath`] refused a path.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error(
        "`{0}` is a symbolic link inside the workspace: refusing to write through it (name the real directory instead)"
    )]
    Symlink(String),
    #[error("`{0}` is not a directory")]
    NotDir(String),
    #[error("`{at}`: {err}")]
    Io { at: String, err: io::Error },
}

/// Opens the directory `path`, creating what is missing (with `create`), for writing into.
///
/// The part of `path` that lies inside `workspace` (a relative path is taken from it) is
/// [`walk`]ed from the workspace's descriptor: a symbolic link there is refused, never
/// followed. A path outside the workspace was named by the pipeline's author, not by the
/// workspace's content, and is opened as it is. `..` is resolved lexically first.
pub fn open_beneath(workspace: &Path, path: &Path, create: bool) -> Result<OwnedFd, BeneathError> {
    use std::path::Component;
    let io_at = |at: &Path| {
        let at = at.display().to_string();
        move |err: io::Error| BeneathError::Io { at: at.clone(), err }
    };
    let mut abs = std::path::PathBuf::new();
    for c in workspace.join(path).components() {
        match c {
            Component::ParentDir => {
                abs.pop();
            }
            Component::CurDir => {}
            c => abs.push(c),
        }
    }
    let Ok(rel) = abs.strip_prefix(workspace) else {
        if create {
            std::fs::create_dir_all(&abs).map_err(io_at(&abs))?;
        }
        return open_dir(&abs).map_err(io_at(&abs));
    };
    let comps = rel.iter().map(|c| c.to_str()).collect::<Option<Vec<&str>>>().ok_or_else(|| BeneathError::Io {
        at: rel.display().to_string(),
        err: io::Error::new(io::ErrorKind::InvalidInput, "the path is not valid UTF-8"),
    })?;
    let ws = open_dir(workspace).map_err(io_at(workspace))?;
    walk(&ws, &comps, How::dir(create)).map_err(|r| match r {
        Refusal::Symlink { at, .. } => BeneathError::Symlink(at),
        Refusal::NotDir { at, .. } => BeneathError::NotDir(at),
        r => {
            let at = r.at().to_string();
            BeneathError::Io { at, err: r.into_io() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    #[test]
    fn directories_are_opened_beneath_the_workspace_without_following_links() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws_path = ws.path().canonicalize().unwrap();
        symlink(outside.path(), ws_path.join("dist")).unwrap();
        std::fs::create_dir(ws_path.join("real")).unwrap();
        symlink(outside.path(), ws_path.join("real/link")).unwrap();
        std::fs::write(ws_path.join("file"), b"x").unwrap();
        for (path, want) in [
            ("dist", "`dist` is a symbolic link"),
            ("dist/sub", "`dist` is a symbolic link"),
            ("real/link/x", "`real/link` is a symbolic link"),
            ("a/../dist", "`dist` is a symbolic link"),
            ("file/x", "`file` is not a directory"),
        ] {
            let err = open_beneath(&ws_path, Path::new(path), true).unwrap_err().to_string();
            assert!(err.contains(want), "{path}: {err}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing created outside");
        // Missing directories are created, inside the workspace, relative or absolute.
        let d = open_beneath(&ws_path, Path::new("new/deep"), true).unwrap();
        assert_eq!(identity(&d).unwrap(), identity(open_dir(&ws_path.join("new/deep")).unwrap()).unwrap());
        open_beneath(&ws_path, &ws_path.join("real"), false).unwrap();
        assert!(open_beneath(&ws_path, Path::new("absent"), false).is_err());
        // Outside the workspace: the pipeline named it; opened (and created) as it is.
        let out = outside.path().join("made");
        open_beneath(&ws_path, &out, true).unwrap();
        assert!(out.is_dir());
    }

    #[test]
    fn a_symlinked_directory_is_not_opened_and_writes_stay_in_the_open_directory() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        symlink(outside.path(), root.path().join("link")).unwrap();
        let top = open_dir(root.path()).unwrap();
        assert!(walk(&top, &["link"], How::dir(false)).is_err());
        assert!(is_symlink(&stat_at(&top, "link").unwrap()));
        // Open `d`, then swap it for a link to `outside`: the file still lands in the
        // directory that was opened, never outside.
        let d = walk(&top, &["d"], How::dir(false)).unwrap();
        std::fs::rename(root.path().join("d"), root.path().join("moved")).unwrap();
        symlink(outside.path(), root.path().join("d")).unwrap();
        let f = create_new_at(&d, "x").unwrap();
        drop(f);
        rename_at(&d, "x", "y").unwrap();
        assert!(root.path().join("moved/y").is_file());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        unlink_at(&d, "y").unwrap();
        mkdir_at(&d, "sub").unwrap();
        assert!(is_dir(&stat_at(&d, "sub").unwrap()));
        assert_ne!(identity(&d).unwrap(), identity(open_dir(root.path()).unwrap()).unwrap());
    }

    /// A base directory `base` (canonical) beside an `outside` one:
    /// `base/real/sub/f.txt`, `base/file`, and links `dist -> outside` (absolute, out),
    /// `inside -> real` (relative, in), `abs-in -> base/real/sub/f.txt`, `rel-out ->
    /// ../outside/secret`, `dotdot-out -> real/../../outside`, `up -> real/..`, `loop -> loop`.
    fn tree() -> (tempfile::TempDir, PathBuf, OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().canonicalize().unwrap();
        let base = top.join("base");
        let out = top.join("outside");
        std::fs::create_dir_all(base.join("real/sub")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("secret"), b"secret").unwrap();
        std::fs::write(base.join("real/sub/f.txt"), b"inside").unwrap();
        std::fs::write(base.join("file"), b"x").unwrap();
        symlink(&out, base.join("dist")).unwrap();
        symlink("real", base.join("inside")).unwrap();
        symlink(base.join("real/sub/f.txt"), base.join("abs-in")).unwrap();
        symlink("../outside/secret", base.join("rel-out")).unwrap();
        symlink("real/../../outside", base.join("dotdot-out")).unwrap();
        symlink("real/..", base.join("up")).unwrap();
        symlink("loop", base.join("loop")).unwrap();
        let fd = open_dir(&base).unwrap();
        (t, base, fd)
    }

    /// A walk's answer in words: which file it opened, or the refusal.
    fn answer(base: &Path, r: Result<OwnedFd, Refusal>) -> String {
        match r {
            Ok(fd) => {
                let id = identity(&fd).unwrap();
                let found = ["", "real", "real/sub", "real/sub/f.txt", "file", "new", "new/deep", "dist", "loop"]
                    .into_iter()
                    .find(|p| {
                        std::fs::symlink_metadata(base.join(p))
                            .is_ok_and(|m| (std::os::unix::fs::MetadataExt::dev(&m), m.ino()) == id)
                    });
                format!("opened {found:?}")
            }
            Err(e) => format!("{e:?}"),
        }
    }
    use std::os::unix::fs::MetadataExt;

    fn split(p: &str) -> Vec<&str> {
        p.split('/').collect()
    }

    /// Walks `path` both ways (kernel first, and descriptors only): they must agree.
    fn both(base: &Path, fd: &OwnedFd, path: &str, how: How<'_>) -> String {
        let fast = answer(base, walk(fd, &split(path), how));
        let slow = answer(base, walk_by_descriptors(fd, &split(path), how));
        assert_eq!(fast, slow, "{path} {how:?}: openat2 and the descriptor walk disagree");
        fast
    }

    #[test]
    fn a_symlinked_component_is_refused_naming_it() {
        let (_t, base, fd) = tree();
        for last in [Last::Dir, Last::File, Last::Any] {
            let how = How { create: false, last, links: Links::Refuse };
            for (path, at) in
                [("dist", "dist"), ("dist/secret", "dist"), ("inside/sub", "inside"), ("abs-in", "abs-in")]
            {
                let got = both(&base, &fd, path, how);
                assert!(got.starts_with(&format!("Symlink {{ at: \"{at}\"")), "{path} {last:?}: {got}");
            }
        }
        let how = How { create: true, last: Last::Dir, links: Links::Refuse };
        assert!(both(&base, &fd, "inside/new", how).starts_with("Symlink { at: \"inside\""));
        assert!(!base.join("real/new").exists(), "nothing created through the link");
        assert!(both(&base, &fd, "file/x", how).starts_with("NotDir { at: \"file\""));
        assert!(both(&base, &fd, "real/sub/f.txt", how).starts_with("NotDir { at: \"real/sub/f.txt\""));
        let any = How { create: false, last: Last::Any, links: Links::Refuse };
        assert_eq!(both(&base, &fd, "real/sub/f.txt", any), "opened Some(\"real/sub/f.txt\")");
        assert_eq!(both(&base, &fd, "real/./sub/", any), "opened Some(\"real/sub\")");
        assert_eq!(both(&base, &fd, "", any), "opened Some(\"\")");
        assert!(both(&base, &fd, "real/nope", any).starts_with("Io { at: \"real/nope\""));
    }

    #[test]
    fn a_dotdot_component_is_refused_before_anything_is_opened() {
        let (_t, base, fd) = tree();
        for path in ["..", "real/..", "real/../real", "../outside/secret"] {
            for links in [Links::Refuse, Links::FollowWithin(&base)] {
                let how = How { create: true, last: Last::Dir, links };
                let got = both(&base, &fd, path, how);
                assert!(got.starts_with("DotDot"), "{path}: {got}");
            }
        }
        let e = walk(&fd, &["real", "a/b"], How::dir(false)).unwrap_err();
        assert!(matches!(&e, Refusal::Io { at, err } if at == "real/a/b" && err.kind() == io::ErrorKind::InvalidInput));
    }

    #[test]
    fn create_makes_the_missing_directories() {
        let (_t, base, fd) = tree();
        assert_eq!(both(&base, &fd, "new/deep", How::dir(true)), "opened Some(\"new/deep\")");
        assert!(base.join("new/deep").is_dir());
        // Without create, a missing directory is an error naming it; a file is never created.
        assert!(both(&base, &fd, "new/deeper/x", How::dir(false)).starts_with("Io { at: \"new/deeper\""));
        let file = How { create: true, last: Last::File, links: Links::Refuse };
        assert!(both(&base, &fd, "new/more/f", file).starts_with("Io { at: \"new/more/f\""));
        assert!(base.join("new/more").is_dir() && !base.join("new/more/f").exists());
        // The directory created is readable: usable for an unnamed file.
        let d = walk(&fd, &["real", "made"], How::dir(true)).unwrap();
        drop(tmpfile_in(&d).unwrap());
    }

    #[test]
    fn following_stays_within_the_base() {
        let (_t, base, fd) = tree();
        let follow = |last| How { create: false, last, links: Links::FollowWithin(&base) };
        assert_eq!(both(&base, &fd, "inside/sub/f.txt", follow(Last::File)), "opened Some(\"real/sub/f.txt\")");
        assert_eq!(both(&base, &fd, "abs-in", follow(Last::File)), "opened Some(\"real/sub/f.txt\")");
        assert_eq!(both(&base, &fd, "inside", follow(Last::Any)), "opened Some(\"real\")");
        assert_eq!(both(&base, &fd, "inside/sub", follow(Last::Dir)), "opened Some(\"real/sub\")");
        assert_eq!(both(&base, &fd, "up", follow(Last::Dir)), "opened Some(\"\")");
        let out = base.parent().unwrap().join("outside");
        for (path, link, target) in [
            ("dist/secret", "dist", out.to_str().unwrap()),
            ("dist", "dist", out.to_str().unwrap()),
            ("rel-out", "rel-out", "../outside/secret"),
            ("dotdot-out/secret", "dotdot-out", "real/../../outside"),
            ("inside/../dist", "", ""),
        ] {
            for last in [Last::Dir, Last::File, Last::Any] {
                let got = both(&base, &fd, path, follow(last));
                if link.is_empty() {
                    assert!(got.starts_with("DotDot"), "{path}: {got}");
                } else {
                    let want = format!("Escapes {{ link: \"{link}\", target: \"{target}\" }}");
                    assert_eq!(got, want, "{path} {last:?}");
                }
            }
        }
        assert!(both(&base, &fd, "loop", follow(Last::File)).starts_with("Loop { at: \"loop\""));
        assert!(both(&base, &fd, "file/x", follow(Last::File)).starts_with("NotDir { at: \"file\""));
    }

    #[test]
    fn link_targets_are_compared_with_the_base_by_whole_components() {
        assert_eq!(strip_root(b"/ws/a", b"/ws"), Some(&b"/a"[..]));
        assert_eq!(strip_root(b"/ws", b"/ws"), Some(&b""[..]));
        assert_eq!(strip_root(b"/wsx/a", b"/ws"), None);
        assert_eq!(strip_root(b"/a", b"/"), Some(&b"/a"[..]));
    }
}
