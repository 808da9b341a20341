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

/// Checks a rendered key as a part of a blob name (the rules are the settings' own:
/// [`crate::config::cache::check_key`]).
pub use crate::config::cache::check_key as check;

#[cfg(test)]
mod tests {
    use super::*;

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
