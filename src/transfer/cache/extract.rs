//! Safe, all-or-nothing extraction of a cache archive.
//!
//! The archive (zstd over tar) is read from a stream and unpacked into a fresh staging
//! directory inside the workspace, through directory descriptors only (`openat` with
//! `O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat`): no member is ever written through a
//! link. A member is refused — and the whole restore fails — when its name is absolute,
//! holds `..`, is not UTF-8 or lies outside the cached `source` directories; when it is a
//! device, a FIFO or another special type; when it is a symbolic link whose target leaves
//! the workspace or a hard link to something outside the cached directories; or when it
//! appears twice. Only after the whole stream was read, zstd's frame checksum held and the
//! SHA-256 of the compressed bytes equals the stored one are the cached directories moved
//! into place (an existing one is replaced). On any failure the staging directory is
//! removed and the workspace is as it was.

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

/// A member's name as components, checked: relative, no `..`, UTF-8, under a source.
/// `None` for the archive's root (`./`).
fn member_path(raw: &[u8], sources: &[Vec<String>]) -> Result<Option<Vec<String>>, String> {
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

/// Whether a symbolic link at `comps` (workspace-relative) with `target` stays inside the workspace.
fn link_stays_inside(comps: &[String], target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth = comps.len() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Opens the directory `comps` under `base` one component at a time, never through a link,
/// creating what is missing when `create`.
fn walk(base: &OwnedFd, comps: &[String], create: bool) -> io::Result<OwnedFd> {
    let mut dir = dirfd::open_dir_at(base, ".")?;
    for name in comps {
        dir = match dirfd::open_dir_at(&dir, name) {
            Ok(d) => d,
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                dirfd::mkdir_at(&dir, name)?;
                dirfd::open_dir_at(&dir, name)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

fn split(comps: &[String]) -> (&[String], &str) {
    match comps.split_last() {
        Some((last, parent)) => (parent, last.as_str()),
        None => (&[], "."),
    }
}

/// Unpacks the archive read from `reader` into the directory `stage`; returns the counts,
/// the directories to give their mode and mtime, and the reader (read to the end of the
/// zstd stream, so the frame checksum was checked).
fn unpack<R: Read>(reader: R, stage: &OwnedFd, sources: &[Vec<String>]) -> Result<(Restored, Vec<DirMeta>, R), String> {
    let dec = zstd::stream::read::Decoder::new(reader).map_err(|e| format!("cannot start zstd: {e}"))?;
    let mut ar = tar::Archive::new(dec);
    let mut done = Restored::default();
    let mut dirs = Vec::new();
    {
        let entries = ar.entries().map_err(|e| format!("corrupt archive: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("corrupt or truncated archive: {e}"))?;
            let path = entry.path_bytes().into_owned();
            let Some(comps) = member_path(&path, sources)? else { continue };
            let shown = comps.join("/");
            let at = |e: io::Error| format!("cannot restore `{shown}`: {e}");
            let h = entry.header();
            let kind = h.entry_type();
            let mode = h.mode().unwrap_or(0o644) & 0o1777;
            let mtime = h.mtime().unwrap_or(0);
            let (parent, name) = split(&comps);
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let dir = walk(stage, parent, true).map_err(at)?;
                    let mut f = dirfd::create_new_at(&dir, name).map_err(at)?;
                    done.bytes += io::copy(&mut entry, &mut f)
                        .map_err(|e| format!("corrupt or truncated archive at `{shown}`: {e}"))?;
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
                    if !link_stays_inside(&comps, target) {
                        return Err(format!(
                            "the link `{shown}` points outside the workspace (`{}`)",
                            target.escape_debug()
                        ));
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
    let mut dec = ar.into_inner();
    io::copy(&mut dec, &mut io::sink()).map_err(|e| format!("corrupt or truncated archive: {e}"))?;
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

/// Moves each cached directory from the staging directory into place, replacing what is there.
fn move_into_place(ws: &Path, ws_fd: &OwnedFd, stage: &OwnedFd, sources: &[Vec<String>]) -> Result<(), String> {
    for (i, s) in sources.iter().enumerate() {
        let shown = s.join("/");
        let at = |e: io::Error| format!("cannot move `{shown}` into place: {e}");
        let (parent, name) = split(s);
        let Ok(from) = walk(stage, parent, false) else { continue };
        if dirfd::stat_at(&from, name).is_err() {
            continue;
        }
        let rel_parent: std::path::PathBuf = parent.iter().collect();
        let to = if parent.is_empty() {
            dirfd::open_dir_at(ws_fd, ".").map_err(at)?
        } else {
            dirfd::open_beneath(ws, &rel_parent, true).map_err(|e| format!("cannot move `{shown}` into place: {e}"))?
        };
        let old = format!(".old-{i}");
        let had = dirfd::stat_at(&to, name).is_ok();
        if had {
            dirfd::rename_between(&to, name, stage, &old).map_err(at)?;
        }
        if let Err(e) = dirfd::rename_between(&from, name, &to, name) {
            if had {
                let _ = dirfd::rename_between(stage, &old, &to, name);
            }
            return Err(at(e));
        }
    }
    Ok(())
}

/// Restores the archive read from `reader` (whose SHA-256 must be `want_sha256`) into the
/// workspace `ws`; `sources` are the cached directories (workspace-relative).
pub fn restore(
    ws: &Path,
    sources: &[String],
    reader: crate::transfer::stream::ChannelReader,
    want_sha256: &str,
) -> Result<Restored, String> {
    let sources: Vec<Vec<String>> = sources
        .iter()
        .map(|s| s.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect())
        .collect();
    let ws_fd = dirfd::open_dir(ws).map_err(|e| format!("cannot open the workspace: {e}"))?;
    let stage_name = format!(".plugin-azure-storage-cache-{:032x}", fastrand::u128(..));
    dirfd::mkdir_at(&ws_fd, &stage_name).map_err(|e| format!("cannot create the staging directory: {e}"))?;
    let result = (|| {
        let stage =
            dirfd::open_dir_at(&ws_fd, &stage_name).map_err(|e| format!("cannot open the staging directory: {e}"))?;
        let (done, dirs, reader) = unpack(reader, &stage, &sources)?;
        let (sha, len) = reader.finish().map_err(|e| format!("cannot read the archive: {e}"))?;
        if !sha.eq_ignore_ascii_case(want_sha256) {
            return Err(format!(
                "the archive's SHA-256 ({sha}, {len} bytes) is not the stored one ({want_sha256}): corrupt or truncated; nothing restored"
            ));
        }
        finish_dirs(&stage, dirs)?;
        move_into_place(ws, &ws_fd, &stage, &sources)?;
        Ok(done)
    })();
    if let Err(e) = std::fs::remove_dir_all(ws.join(&stage_name)) {
        tracing::warn!("cannot remove the staging directory `{stage_name}`: {e}");
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
    fn links_may_not_leave_the_workspace() {
        let at = |p: &str| p.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(link_stays_inside(&at("target/a/l"), "../b"));
        assert!(link_stays_inside(&at("target/l"), "../src/x"));
        assert!(!link_stays_inside(&at("target/l"), "../../x"));
        assert!(!link_stays_inside(&at("target/l"), "/etc/passwd"));
        assert!(!link_stays_inside(&at("l"), ".."));
        assert!(link_stays_inside(&at("target/a/l"), "./../.."));
        assert!(!link_stays_inside(&at("target/a/l"), "x/../../../.."));
    }
}
