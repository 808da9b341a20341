//! Rendering a cache key: the template parsed by `config::cache`, with each
//! `{{ checksum "FILE" }}` replaced by the SHA-256 (hex) of that workspace file and each
//! `{{ hashFiles "GLOB" ... }}` by the SHA-256 (hex) over the files the globs select (the
//! upload's selection, see [`crate::transfer::plan::select_for_hash`]), every file read
//! without following links; the result is checked against the blob-name rules.

use sha2::{Digest, Sha256};

use crate::config::cache::KeyPart;
use crate::config::Config;
use crate::transfer::checksum::{hash_read, hex};
use crate::transfer::localfs::Root;
use crate::transfer::plan::{select_for_hash, PlanError};
use crate::transfer::RunError;

/// Why a key cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The template asks for something the workspace does not have (a glob that selects
    /// nothing): a setting found wrong at run time, exit 2.
    #[error("{0}")]
    Settings(String),
    /// A file the key depends on cannot be read.
    #[error("{0}")]
    Read(String),
}

impl From<KeyError> for RunError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Settings(m) => RunError::Settings(m),
            KeyError::Read(m) => RunError::Other(m),
        }
    }
}

/// The key of `parts`, or why it cannot be made (naming `setting`). `cfg` gives the
/// selection rules of `hashFiles` and the cached `source` directories it leaves out.
pub fn render(parts: &[KeyPart], root: &Root, cfg: &Config, setting: &str) -> Result<String, KeyError> {
    let env = crate::settings::env_name(setting);
    let mut key = String::new();
    for p in parts {
        match p {
            KeyPart::Text(t) => key.push_str(t),
            KeyPart::Checksum(file) => {
                let read = |e: &dyn std::fmt::Display| {
                    KeyError::Read(format!(
                        "`{setting}` ({env}): `{{{{ checksum \"{file}\" }}}}`: cannot read `{file}`: {e}"
                    ))
                };
                let f = open_regular(root, file).map_err(|e| read(&e))?;
                key.push_str(&hash_read(&f, false).map_err(|e| read(&e))?.sha256);
            }
            KeyPart::HashFiles(globs) => {
                let call = globs.iter().map(|g| format!("\"{g}\"")).collect::<Vec<_>>().join(" ");
                let at = format!("`{setting}` ({env}): `{{{{ hashFiles {call} }}}}`");
                let files = select_for_hash(cfg, root.path(), globs, &cfg.sources).map_err(|e| match e {
                    PlanError::HashNoMatch(_) => KeyError::Settings(format!("{at}: {e}")),
                    e => KeyError::Read(format!("{at}: {e}")),
                })?;
                let mut hashed = Vec::with_capacity(files.len());
                for rel in files {
                    let read = |e: &dyn std::fmt::Display| KeyError::Read(format!("{at}: cannot read `{rel}`: {e}"));
                    let f = open_regular(root, &rel).map_err(|e| read(&e))?;
                    let d = hash_read(&f, false).map_err(|e| read(&e))?;
                    hashed.push((rel, d.sha256));
                }
                key.push_str(&hash_files(hashed));
            }
        }
    }
    Ok(key)
}

/// `rel` opened beneath the workspace, when it is a regular file: a FIFO or a device (which a
/// pull request can commit in place of `Cargo.lock`) would hash as empty or block.
fn open_regular(root: &Root, rel: &str) -> Result<std::fs::File, String> {
    let f = root.open_file(rel).map_err(|e| e.to_string())?;
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(f),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The `hashFiles` digest of `files` (workspace-relative path, SHA-256 hex of the content):
/// SHA-256 over the files in path order, each framed as the path's length (8 bytes, big
/// endian), the path, and the content's digest (64 hex digits), so no two different sets
/// of files frame to the same bytes, and the order they were found in does not matter.
fn hash_files(mut files: Vec<(String, String)>) -> String {
    files.sort_unstable();
    let mut sha = Sha256::new();
    for (rel, content) in &files {
        sha.update((rel.len() as u64).to_be_bytes());
        sha.update(rel.as_bytes());
        sha.update(content.as_bytes());
    }
    hex(&sha.finalize())
}

/// Checks a rendered key as a part of a blob name (the rules are the settings' own:
/// [`crate::config::cache::check_key`]).
pub use crate::config::cache::check_key as check;

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex(&Sha256::digest(b))
    }

    #[test]
    fn checksums_are_the_sha256_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Cargo.lock"), b"abc").unwrap();
        let root = Root::open(d.path(), false).unwrap();
        let cfg = test_config();
        let parts = [KeyPart::Text("k-".into()), KeyPart::Checksum("Cargo.lock".into())];
        assert_eq!(
            render(&parts, &root, &cfg, "cache_key").unwrap(),
            "k-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let e = render(&[KeyPart::Checksum("missing".into())], &root, &cfg, "cache_key").unwrap_err();
        assert!(e.to_string().contains("cannot read `missing`"), "{e}");
        // A FIFO committed in place of the lock file is refused, not hashed as empty.
        let made = std::process::Command::new("mkfifo").arg(d.path().join("fifo.lock")).status();
        if made.is_ok_and(|s| s.success()) {
            let e = render(&[KeyPart::Checksum("fifo.lock".into())], &root, &cfg, "cache_key").unwrap_err();
            assert!(e.to_string().contains("cannot read `fifo.lock`: not a regular file"), "{e}");
        }
    }

    #[test]
    fn hash_files_frames_each_file_so_moving_bytes_or_renaming_changes_the_hash() {
        let h = |files: &[(&str, &[u8])]| hash_files(files.iter().map(|(p, c)| (p.to_string(), sha(c))).collect());
        let base = h(&[("a", b"xy"), ("b", b"z")]);
        assert_ne!(base, h(&[("a", b"x"), ("b", b"yz")]), "a byte moved from one file to the next");
        assert_ne!(base, h(&[("a", b"xyz")]), "two files are not their concatenation");
        assert_ne!(base, h(&[("a", b"xy"), ("c", b"z")]), "a renamed file");
        assert_ne!(h(&[("ab", b"c")]), h(&[("a", b"bc")]), "a path's end is not its content's start");
        assert_eq!(base, h(&[("b", b"z"), ("a", b"xy")]), "the order the files were found in does not count");
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    fn test_config() -> Config {
        let raw = crate::config::RawSettings::from_map(
            [
                ("PLUGIN_ACCOUNT_NAME", "acct"),
                ("PLUGIN_ACCOUNT_KEY", "a2V5"),
                ("PLUGIN_CONTAINER", "caches"),
                ("PLUGIN_ACTION", "cache_save"),
                ("PLUGIN_SOURCE", "target"),
                ("PLUGIN_CACHE_KEY", "k"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        Config::from_raw(&raw).unwrap()
    }

    #[test]
    fn hash_files_selects_like_an_upload_and_leaves_the_cached_directories_out() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, c: &[u8]| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        w("a/Cargo.lock", b"1");
        w("b/Cargo.lock", b"2");
        w("target/Cargo.lock", b"in the cached directory");
        w(".hidden/Cargo.lock", b"hidden");
        w("Cargo.lock", b"a cached file");
        let root = Root::open(d.path(), false).unwrap();
        let mut cfg = test_config();
        cfg.sources = vec!["target".into(), "Cargo.lock".into()];
        let parts = [KeyPart::HashFiles(vec!["**/Cargo.lock".into()])];
        let key = render(&parts, &root, &cfg, "cache_key").unwrap();
        assert_eq!(key, hash_files(vec![("a/Cargo.lock".into(), sha(b"1")), ("b/Cargo.lock".into(), sha(b"2"))]));
        let e = render(&[KeyPart::HashFiles(vec!["target/*".into()])], &root, &cfg, "cache_key").unwrap_err();
        assert!(matches!(e, KeyError::Settings(_)), "{e}");
        assert!(e.to_string().contains("`target/*` selects no file"), "{e}");
    }
}
