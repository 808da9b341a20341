//! File operations relative to directory descriptors, never following a symbolic link.
//!
//! A download resolves its destination one component at a time from the target's
//! descriptor (`openat` with `O_NOFOLLOW | O_DIRECTORY`, `mkdirat`), then creates, links
//! and renames only relative to the descriptor of the directory it ended in (`openat`
//! with `O_TMPFILE`, `linkat`, `renameat`, `unlinkat`). Once a directory is open, no
//! rename or symlink swap of a path above or at it can redirect where the bytes land:
//! the kernel resolves nothing by path again. Names passed here are single components
//! (no `/`), checked by the planner.
//!
//! The directories the plugin writes into by name — the download `target` and the
//! directory of the `manifest` — are opened with [`open_beneath`]: the part of the path
//! inside the workspace is walked the same way, so a pull request that commits
//! `dist -> /etc` (or a link in any parent of `target`) cannot redirect a write.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One path component (or a path, for [`open_dir`]) as a C string; a NUL is refused.
/// The syscall wrappers of the transfer modules (here, `localfs`, `cache::extract`) share
/// this, [`check`] and [`owned`].
pub(crate) fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name contains a NUL byte"))
}

/// A syscall's result: `Err(errno)` when it is negative.
pub(crate) fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes ownership of a descriptor a successful call returned.
pub(crate) fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by path (following links: this is how `target` itself is named).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `p` is a valid NUL-terminated string that outlives the call.
    owned(unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })
}

/// Opens the directory `name` in `dir`; a symbolic link there fails (`ELOOP`/`ENOTDIR`).
pub fn open_dir_at(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let n = cstr(name.as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `n` a valid C string, both outliving the call.
    owned(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags) })
}

/// Creates the directory `name` in `dir` (mode 0777 less the umask).
pub fn mkdir_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: as in `open_dir_at`.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), 0o777) }).map(drop)
}

/// What is at `name` in `dir`, without following a link.
pub fn stat_at(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `n` a valid C string, `st` a valid place to write to.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// Device and inode of an open descriptor: which directory it is.
pub fn identity(fd: &impl AsRawFd) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid place to write to.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    // `dev_t` is u64 on Linux and i32 on macOS; only compared for equality.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

pub fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// An unnamed file (`O_TMPFILE`) in `dir`, readable and writable, mode 0666 less the umask.
/// Linux only: elsewhere this fails with `Unsupported` and the caller uses a named file.
#[cfg(target_os = "linux")]
pub fn tmpfile_in(dir: &OwnedFd) -> io::Result<File> {
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: `dir` is open and the path a static C string.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, 0o666 as libc::c_uint) }).map(File::from)
}

#[cfg(not(target_os = "linux"))]
pub fn tmpfile_in(_dir: &OwnedFd) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "unnamed temporary files (O_TMPFILE) are Linux only"))
}

/// Creates `name` in `dir`, failing if anything (a link included) is there.
pub fn create_new_at(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let n = cstr(name.as_bytes())?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as in `open_dir_at`.
    owned(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags, 0o666 as libc::c_uint) }).map(File::from)
}

/// Opens the file `name` in `dir` for reading; a symbolic link there fails.
pub fn open_file_at(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let n = cstr(name.as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as in `open_dir_at`.
    owned(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags) }).map(File::from)
}

/// Gives the open (possibly unnamed) `file` the name `name` in `dir` (`EEXIST` if taken),
/// through its `/proc/self/fd` link, which names the open file itself and resolves no path.
/// Linux only (elsewhere `Unsupported`): only an unnamed [`tmpfile_in`] file needs it.
#[cfg(target_os = "linux")]
pub fn link_at(file: &File, dir: &OwnedFd, name: &str) -> io::Result<()> {
    let from = cstr(format!("/proc/self/fd/{}", file.as_raw_fd()).as_bytes())?;
    let to = cstr(name.as_bytes())?;
    // SAFETY: both strings are valid and outlive the call; `dir` is open.
    check(unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), dir.as_raw_fd(), to.as_ptr(), libc::AT_SYMLINK_FOLLOW) })
        .map(drop)
}

#[cfg(not(target_os = "linux"))]
pub fn link_at(_file: &File, _dir: &OwnedFd, _name: &str) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "linking an open file by descriptor needs Linux's /proc/self/fd"))
}

/// Links the file named `from` in `dir` under `to` as well (`EEXIST` if taken).
pub fn link_name_at(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    link_between(dir, from, dir, to)
}

/// Links `from` in `from_dir` as `to` in `to_dir` (`EEXIST` if taken); a link is linked
/// itself, never followed (flags 0).
pub fn link_between(from_dir: &OwnedFd, from: &str, to_dir: &OwnedFd, to: &str) -> io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    // SAFETY: both strings are valid and outlive the call; both descriptors are open.
    check(unsafe { libc::linkat(from_dir.as_raw_fd(), f.as_ptr(), to_dir.as_raw_fd(), t.as_ptr(), 0) }).map(drop)
}

/// Renames `from` to `to`, both in `dir`, replacing what `to` names (a link itself, not its target).
pub fn rename_at(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    rename_between(dir, from, dir, to)
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, replacing what `to` names.
pub fn rename_between(from_dir: &OwnedFd, from: &str, to_dir: &OwnedFd, to: &str) -> io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    // SAFETY: both strings are valid and outlive the call; both descriptors are open.
    check(unsafe { libc::renameat(from_dir.as_raw_fd(), f.as_ptr(), to_dir.as_raw_fd(), t.as_ptr()) }).map(drop)
}

/// Creates in `dir` a symbolic link `name` whose text is `target` (never resolved here).
pub fn symlink_at(target: &str, dir: &OwnedFd, name: &str) -> io::Result<()> {
    let (t, n) = (cstr(target.as_bytes())?, cstr(name.as_bytes())?);
    // SAFETY: both strings are valid and outlive the call; `dir` is open.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) }).map(drop)
}

/// Removes the file `name` from `dir`.
pub fn unlink_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: as in `open_dir_at`.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) }).map(drop)
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
/// walked from the workspace's descriptor one component at a time (`openat` with
/// `O_NOFOLLOW`, `mkdirat`): a symbolic link there is refused, never followed. A path
/// outside the workspace was named by the pipeline's author, not by the workspace's
/// content, and is opened as it is. `..` is resolved lexically first.
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
    let mut dir = open_dir(workspace).map_err(io_at(workspace))?;
    let mut shown = std::path::PathBuf::new();
    for c in rel.components() {
        let name = c.as_os_str().to_str().ok_or_else(|| BeneathError::Io {
            at: rel.display().to_string(),
            err: io::Error::new(io::ErrorKind::InvalidInput, "the path is not valid UTF-8"),
        })?;
        shown.push(name);
        let mut opened = open_dir_at(&dir, name);
        if create && matches!(&opened, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            match mkdir_at(&dir, name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_at(&shown)(e)),
            }
            opened = open_dir_at(&dir, name);
        }
        dir = match opened {
            Ok(fd) => fd,
            Err(e) => {
                return Err(match stat_at(&dir, name) {
                    Ok(st) if is_symlink(&st) => BeneathError::Symlink(shown.display().to_string()),
                    Ok(st) if !is_dir(&st) => BeneathError::NotDir(shown.display().to_string()),
                    _ => io_at(&shown)(e),
                })
            }
        };
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_opened_beneath_the_workspace_without_following_links() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws_path = ws.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws_path.join("dist")).unwrap();
        std::fs::create_dir(ws_path.join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws_path.join("real/link")).unwrap();
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
        assert_eq!(identity(&d).unwrap(), identity(&open_dir(&ws_path.join("new/deep")).unwrap()).unwrap());
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
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let top = open_dir(root.path()).unwrap();
        assert!(open_dir_at(&top, "link").is_err());
        assert!(is_symlink(&stat_at(&top, "link").unwrap()));
        // Open `d`, then swap it for a link to `outside`: the file still lands in the
        // directory that was opened, never outside.
        let d = open_dir_at(&top, "d").unwrap();
        std::fs::rename(root.path().join("d"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        let f = create_new_at(&d, "x").unwrap();
        drop(f);
        rename_at(&d, "x", "y").unwrap();
        assert!(root.path().join("moved/y").is_file());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        unlink_at(&d, "y").unwrap();
        mkdir_at(&d, "sub").unwrap();
        assert!(is_dir(&stat_at(&d, "sub").unwrap()));
        assert_ne!(identity(&d).unwrap(), identity(&open_dir(root.path()).unwrap()).unwrap());
    }
}
