//! Names the services accept: the rules shared by Blob and Files ([`check_remote_name`]);
//! Azure Files adds its own (`files::check_file_name`). Stores apply them through
//! `Store::check_name`.
//!
//! A name that comes *from* the service (a listing) is outside data: before it is used in
//! any way (compared, deleted, downloaded, restored) it passes [`check_listed_name`], the
//! part of those rules that keeps a name from meaning another path: no `.`/`..` segment
//! (a URL library resolves them: `site/../victim.txt` would address `victim.txt`), no
//! control character, no backslash. The engine applies it to every listing in one place.

/// Why a name cannot be stored as is (the message says what the service refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

impl From<String> for NameError {
    fn from(s: String) -> Self {
        NameError(s)
    }
}

impl From<&str> for NameError {
    fn from(s: &str) -> Self {
        NameError(s.to_string())
    }
}

/// The longest blob name Azure accepts, in bytes ([naming rules](https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata#blob-names)).
pub const MAX_BLOB_NAME: usize = 1024;

/// Why a name from a listing cannot be used as the path it claims to be, if it cannot:
/// empty, a NUL or other control character, a backslash, or a `.`/`..` segment (which a
/// URL or a path would resolve into another name).
pub fn check_listed_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::from("the name is empty"));
    }
    if name.contains('\0') {
        return Err(NameError::from("the name contains a NUL byte"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::from("the name contains a control character"));
    }
    if name.contains('\\') {
        return Err(NameError::from("the name contains a backslash"));
    }
    if let Some(c) = name.split('/').find(|c| *c == "." || *c == "..") {
        return Err(NameError::from(format!("the name has a `{c}` component")));
    }
    Ok(())
}

/// Why Azure would refuse (or silently alter) a blob name, if it would.
pub fn check_remote_name(name: &str) -> Result<(), NameError> {
    check_listed_name(name)?;
    if name.len() > MAX_BLOB_NAME {
        return Err(NameError::from(format!("the name is {} bytes long; Azure allows {MAX_BLOB_NAME}", name.len())));
    }
    if name.ends_with('.') {
        return Err(NameError::from("the name ends with `.`, which Azure strips"));
    }
    if name.split('/').count() > 254 {
        return Err(NameError::from("the name has more than 254 path segments"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_that_would_mean_another_path_are_refused() {
        for ok in ["a.txt", "site/a b.txt", "a..b", ".hidden/x", "/lead", "a//b", "dir/"] {
            check_listed_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "is empty"),
            ("site/../victim.txt", "`..` component"),
            ("..", "`..` component"),
            ("a/./b", "`.` component"),
            ("nul\0x", "NUL byte"),
            ("bell\u{7}", "control character"),
            ("a\\..\\b", "backslash"),
        ] {
            let e = check_listed_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // The store's own rules include these.
        assert!(check_remote_name("site/../victim.txt").is_err());
    }
}
