//! The values of every enum setting, each written once: the [`choices!`] table of an
//! enum gives its names to the settings table (help, docs, plugin.yaml, action.yml) and
//! parses them, so a value cannot be documented but unparsed, nor parsed but undocumented.

/// Defines an enum and its table of setting values (`Variant = "text"`): `NAMES` for the
/// settings table, `parse` (case-insensitive, trimmed) and `as_str` for config and messages.
macro_rules! choices {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// The accepted values, in documented order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The value as documented.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Reads a value (case-insensitive, surrounding space ignored).
            pub fn parse(v: &str) -> Option<Self> {
                let v = v.trim();
                [$($name::$variant),+].into_iter().find(|c| c.as_str().eq_ignore_ascii_case(v))
            }
        }

        impl Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn parse(v: &str) -> Option<Self> {
                $name::parse(v)
            }
        }
    };
}

/// An enum of setting values, for code generic over them (config's reader).
pub trait Choice: Copy + 'static {
    /// Every value, in documented order (never empty).
    const ALL: &'static [Self];
    fn parse(v: &str) -> Option<Self>;
}

choices! {
    /// Direction of the transfer (`action`).
    pub enum Action {
        Upload = "upload",
        Download = "download",
        /// The `source` directories as one tar+zstd archive (src/transfer/cache).
        CacheSave = "cache_save",
        /// The archive of `cache_key` (or `restore_keys`) back into the workspace.
        CacheRestore = "cache_restore",
        /// Upload what changed, then delete what the selection lacks under `target`.
        Sync = "sync",
        /// Delete what `source` names in the container (cleanup, preview teardown, prune).
        Delete = "delete",
    }
}

impl Action {
    /// Uploads from the workspace (`upload`, `sync`).
    pub fn uploads(self) -> bool {
        matches!(self, Action::Upload | Action::Sync)
    }

    /// One of the cache modes.
    pub fn is_cache(&self) -> bool {
        matches!(self, Action::CacheSave | Action::CacheRestore)
    }
}

choices! {
    /// The storage service (`service`).
    pub enum Service { Blob = "blob", File = "file" }
}

choices! {
    /// What happens when the destination exists (`overwrite`).
    #[derive(serde::Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Overwrite { True = "true", False = "false", Skip = "skip", Changed = "changed" }
}

choices! {
    /// The Blob access tier set on upload (`access_tier`).
    pub enum AccessTier { Hot = "Hot", Cool = "Cool", Cold = "Cold", Archive = "Archive" }
}

choices! {
    /// The transactional checksum every Blob request body carries (`checksum`).
    #[derive(Default)]
    pub enum Checksum {
        /// `x-ms-content-crc64` (CRC-64/NVME): cheap on the client (SIMD).
        #[default]
        Crc64 = "crc64",
        /// `Content-MD5`: slower on the client, but Azurite verifies it ~4× cheaper than a CRC-64.
        Md5 = "md5",
    }
}

choices! {
    /// What a download demands to check a file against (`verify`).
    pub enum Verify { Required = "required", Size = "size" }
}

choices! {
    /// Log verbosity (`log_level`).
    pub enum LogLevel { Error = "error", Warn = "warn", Info = "info", Debug = "debug", Trace = "trace" }
}

choices! {
    /// Log output (`log_format`).
    pub enum LogFormat { Text = "text", Json = "json" }
}

choices! {
    /// The authentication mode (`auth`).
    pub enum AuthMode {
        Auto = "auto",
        AccessToken = "access_token",
        Federated = "federated",
        ManagedIdentity = "managed_identity",
        Sas = "sas",
        SharedKey = "shared_key",
        ConnectionString = "connection_string",
    }
}

choices! {
    /// How the run's trust is decided (`trust`): from the CI's event variables, or forced.
    pub enum TrustMode { Auto = "auto", Trusted = "trusted", Untrusted = "untrusted" }
}

choices! {
    /// The trust of a run (docs/trust.md): `untrusted` on a pull-request event (code anyone
    /// may have written), `trusted` otherwise.
    pub enum Tier { Trusted = "trusted", Untrusted = "untrusted" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_the_value_that_prints_it() {
        for n in AuthMode::NAMES {
            assert_eq!(AuthMode::parse(n).map(AuthMode::as_str), Some(*n));
        }
        assert_eq!(AccessTier::parse(" cool "), Some(AccessTier::Cool));
        assert_eq!(Overwrite::parse("maybe"), None);
    }
}
