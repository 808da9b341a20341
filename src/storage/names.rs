//! Names the services accept: the rules shared by Blob and Files ([`check_remote_name`]);
//! Azure Files adds its own (`files::check_file_name`). Stores apply them through
//! `Store::check_name`.

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

/// Why Azure would refuse (or silently alter) a blob name, if it would.
pub fn check_remote_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::from("the name is empty"));
    }
    if name.len() > MAX_BLOB_NAME {
        return Err(NameError::from(format!("the name is {} bytes long; Azure allows {MAX_BLOB_NAME}", name.len())));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::from("the name contains a control character"));
    }
    if name.contains('\\') {
        return Err(NameError::from("the name contains a backslash"));
    }
    if name.split('/').any(|c| c == "." || c == "..") {
        return Err(NameError::from("the name has a `.` or `..` component"));
    }
    if name.ends_with('.') {
        return Err(NameError::from("the name ends with `.`, which Azure strips"));
    }
    if name.split('/').count() > 254 {
        return Err(NameError::from("the name has more than 254 path segments"));
    }
    Ok(())
}
