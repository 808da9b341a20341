//! Rendering a cache key: the template parsed by `config::cache`, with each
//! `{{ checksum "FILE" }}` replaced by the SHA-256 (hex) of that workspace file, read
//! without following links; the result is checked against the blob-name rules.

use crate::config::cache::KeyPart;
use crate::transfer::checksum::hash_read;
use crate::transfer::localfs::Root;

/// The key of `parts`, or why it cannot be made (naming `setting`).
pub fn render(parts: &[KeyPart], root: &Root, setting: &str) -> Result<String, String> {
    let env = crate::settings::env_name(setting);
    let mut key = String::new();
    for p in parts {
        match p {
            KeyPart::Text(t) => key.push_str(t),
            KeyPart::Checksum(file) => {
                let f = root.open_file(file).map_err(|e| {
                    format!("`{setting}` ({env}): `{{{{ checksum \"{file}\" }}}}`: cannot read `{file}`: {e}")
                })?;
                let d = hash_read(&f, false).map_err(|e| {
                    format!("`{setting}` ({env}): `{{{{ checksum \"{file}\" }}}}`: cannot read `{file}`: {e}")
                })?;
                key.push_str(&d.sha256);
            }
        }
    }
    Ok(key)
}

/// Checks a rendered key as a part of a blob name: not empty, no leading or trailing `/`,
/// no `.`/`..` segment, no control character.
pub fn check(key: &str, setting: &str) -> Result<(), String> {
    let env = crate::settings::env_name(setting);
    let why = if key.trim().is_empty() {
        Some("is empty".to_string())
    } else if key.starts_with('/') || key.ends_with('/') {
        Some("begins or ends with `/`".to_string())
    } else if key.split('/').any(|c| c == "." || c == ".." || c.is_empty()) {
        Some("has an empty, `.` or `..` path segment".to_string())
    } else if key.chars().any(|c| c.is_control() || c == '\\') {
        Some("holds a control character or a backslash".to_string())
    } else {
        None
    };
    match why {
        Some(w) => Err(format!(
            "`{setting}` ({env}) renders to `{}`, which {w}: use letters, digits, `-`, `_`, `.` and `/`",
            key.escape_debug()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_blob_name_parts() {
        for ok in ["cargo-linux-abc", "a/b.c_d", "é"] {
            check(ok, "cache_key").unwrap();
        }
        for bad in ["", " ", "/a", "a/", "a//b", "a/../b", "a\nb", "a\\b"] {
            let e = check(bad, "cache_key").unwrap_err();
            assert!(e.contains("PLUGIN_CACHE_KEY"), "{e}");
        }
    }

    #[test]
    fn checksums_are_the_sha256_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Cargo.lock"), b"abc").unwrap();
        let root = Root::open(d.path(), false).unwrap();
        let parts = [KeyPart::Text("k-".into()), KeyPart::Checksum("Cargo.lock".into())];
        assert_eq!(
            render(&parts, &root, "cache_key").unwrap(),
            "k-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let e = render(&[KeyPart::Checksum("missing".into())], &root, "cache_key").unwrap_err();
        assert!(e.contains("cannot read `missing`"), "{e}");
    }
}
