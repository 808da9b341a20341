//! Reading the workspace safely: every path is resolved from the workspace root one
//! component at a time, never through a symbolic link (with `follow_symlinks`, only
//! through links whose target stays inside the workspace), and every file read is
//! checked to be the one that was planned and not to change while it is read.
//!
//! The workspace is written by whoever opened the pull request, so a path that was a
//! directory when planned may be a link to `/etc` when it is read. [`Root`] never hands
//! a workspace path to the kernel in one piece: it resolves every path from the root's
//! descriptor with [`dirfd::walk`] (`openat2` beneath the root, else a descriptor walk),
//! refusing every link, or with `follow_symlinks` following the links whose target stays
//! inside the workspace (`..` above the root, or an absolute target outside it, is an
//! escape: rsync's "safe links").
//!
//! [`FileId`] is what planning keeps (device, inode, size; the times are taken at open):
//! [`Root::open_planned`] refuses a file whose device, inode or size differ (it was
//! swapped), and [`PlannedFile::check_unchanged`] compares the open file before the first
//! read and after the last one (tar's "file changed as we read it").

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::dirfd::{self, How, Last, Links, Refusal};

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
    /// Whether the kernel's `openat2` is asked first (always, except in the tests that
    /// exercise the descriptor walk it falls back to).
    kernel_first: bool,
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
        let fd = dirfd::open_dir(&path)?;
        Ok(Root { fd, path, follow, kernel_first: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that `rel` (a `/`-separated path under the root) resolves without a link
    /// (or, when following, without leaving the workspace). The last component may be a
    /// file or a directory. For planning.
    pub fn probe(&self, rel: &str) -> Result<(), ResolveError> {
        self.resolve(rel, Last::Any).map(drop)
    }

    /// Opens the regular file `rel` for reading, resolved safely.
    pub fn open_file(&self, rel: &str) -> Result<File, ResolveError> {
        self.resolve(rel, Last::File).map(File::from)
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

    /// `rel` resolved from the root by [`dirfd::walk`], its last component opened as `last`.
    fn resolve(&self, rel: &str, last: Last) -> Result<OwnedFd, ResolveError> {
        let links = if self.follow { Links::FollowWithin(&self.path) } else { Links::Refuse };
        let how = How { create: false, last, links };
        let comps: Vec<&str> = rel.split('/').collect();
        let walked = if self.kernel_first {
            dirfd::walk(&self.fd, &comps, how)
        } else {
            dirfd::walk_by_descriptors(&self.fd, &comps, how)
        };
        walked.map_err(|r| match r {
            Refusal::Symlink { at, .. } => ResolveError::Symlink(at),
            Refusal::Escapes { link, target } => ResolveError::Escapes { link, target },
            Refusal::DotDot { at } => ResolveError::Escapes { link: at, target: "..".into() },
            Refusal::Loop { at } => ResolveError::Loop(at),
            Refusal::NotDir { err, .. } | Refusal::Create { err, .. } | Refusal::Io { err, .. } => {
                ResolveError::Io(err)
            }
        })
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

    /// Runs `check` on the root as opened, then on it walking by descriptors only (as on
    /// a kernel without `openat2`).
    fn both_paths(r: &Root, check: impl Fn(&Root)) {
        check(r);
        let walk_only =
            Root { fd: r.fd.try_clone().unwrap(), path: r.path.clone(), follow: r.follow, kernel_first: false };
        check(&walk_only);
    }

    #[test]
    fn without_following_no_component_may_be_a_link() {
        let (_t, ws, _) = setup();
        let r = Root::open(&ws, false).unwrap();
        both_paths(&r, |r| {
            assert_eq!(read(r, "real/sub/f.txt").unwrap(), "inside");
            assert!(matches!(read(r, "dist/secret"), Err(ResolveError::Symlink(at)) if at == "dist"));
            assert!(matches!(read(r, "inside/sub/f.txt"), Err(ResolveError::Symlink(at)) if at == "inside"));
            assert!(matches!(read(r, "abs-in"), Err(ResolveError::Symlink(at)) if at == "abs-in"));
            assert!(matches!(read(r, "real/nope"), Err(ResolveError::Io(e)) if e.kind() == io::ErrorKind::NotFound));
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
        both_paths(&r, |r| {
            assert_eq!(read(r, "inside/sub/f.txt").unwrap(), "inside");
            assert_eq!(read(r, "abs-in").unwrap(), "inside");
            for (rel, link) in [("dist/secret", "dist"), ("rel-out", "rel-out"), ("dotdot-out/secret", "dotdot-out")] {
                match read(r, rel) {
                    Err(ResolveError::Escapes { link: l, .. }) => assert_eq!(l, link, "{rel}"),
                    other => panic!("{rel}: {other:?}"),
                }
            }
            assert!(matches!(read(r, "loop"), Err(ResolveError::Loop(_))));
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
    }
}
