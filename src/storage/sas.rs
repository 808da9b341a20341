//! Shared access signatures for links: the read-only SAS on one blob or one Azure Files
//! file that `link_expiry` hands out ([`read_query`]). The string-to-sign layouts are the
//! services' REST formats, so they live with the stores: each store says which resource it
//! is ([`Resource`]) through `Store::read_sas`, and the engine never names the service.
//!
//! - [Create a service SAS](https://learn.microsoft.com/rest/api/storageservices/create-service-sas):
//!   signed with the account key (Blob: 16 fields, version 2020-12-06 and later; File: 13).
//! - [Create a user delegation SAS](https://learn.microsoft.com/rest/api/storageservices/create-user-delegation-sas):
//!   signed with a user delegation key (version 2025-07-05 and later; Blob: 26 fields,
//!   File: 20). Each service hands out its own key (Get User Delegation Key on its own
//!   endpoint, `sks=b` or `sks=f`); [`delegation_permission`] names what that call needs.
//!
//! The signer is passed in ([`Signer`]): the account key's HMAC belongs to `auth`, which
//! this layer does not use.

use super::blob::UserDelegationKey;

/// What a SAS grants read access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A blob (`sr=b`).
    Blob,
    /// An Azure Files file (`sr=f`).
    File,
}

/// The permission Get User Delegation Key needs on the service holding `resource`, as Azure
/// names it, and what grants it (for the refusal's hint).
pub fn delegation_permission(resource: Resource) -> (&'static str, &'static str) {
    match resource {
        Resource::Blob => (
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
            "the `Storage Blob Delegator` role, or any `Storage Blob Data` role (Reader, Contributor, Owner), grants it",
        ),
        Resource::File => (
            "Microsoft.Storage/storageAccounts/fileServices/generateUserDelegationKey/action",
            "a role that includes it (with `Microsoft.Storage/storageAccounts/fileServices/fileshares/files/read` for the links to open; docs/auth.md)",
        ),
    }
}

/// What signs a SAS.
pub enum Signer<'a> {
    /// The account key: the base64 HMAC-SHA256 of a string-to-sign (a service SAS).
    Key(&'a (dyn Fn(&str) -> String + Sync)),
    /// A user delegation key (a user-delegation SAS).
    Delegation(&'a UserDelegationKey),
}

/// The query string (without `?`) of a read-only SAS on `name` in `container` (or share)
/// of `account`, valid until `expiry` (RFC 3339 UTC), for REST `version`.
pub fn read_query(
    resource: Resource,
    account: &str,
    container: &str,
    name: &str,
    expiry: &str,
    signer: Signer<'_>,
    version: &str,
) -> String {
    let sr = match resource {
        Resource::Blob => "b",
        Resource::File => "f",
    };
    let mut q = format!("sv={version}&sr={sr}&sp=r&se={}", query_encode(expiry));
    let sig = match signer {
        Signer::Key(sign) => sign(&match resource {
            Resource::Blob => service_sas_string_to_sign(account, container, name, expiry, version),
            Resource::File => file_sas_string_to_sign(account, container, name, expiry, version),
        }),
        Signer::Delegation(key) => {
            for (k, v) in [
                ("skoid", &key.oid),
                ("sktid", &key.tid),
                ("skt", &key.start),
                ("ske", &key.expiry),
                ("sks", &key.service),
                ("skv", &key.version),
            ] {
                q.push_str(&format!("&{k}={}", query_encode(v)));
            }
            key.sign(&match resource {
                Resource::Blob => user_delegation_sas_string_to_sign(account, container, name, expiry, key, version),
                Resource::File => {
                    file_user_delegation_sas_string_to_sign(account, container, name, expiry, key, version)
                }
            })
        }
    };
    q.push_str(&format!("&sig={}", query_encode(&sig)));
    q
}

/// The string-to-sign of a read-only service SAS on one blob (version 2020-12-06 and
/// later): permissions, start, expiry, canonical resource, identifier, IP, protocol,
/// version, resource, snapshot time, encryption scope, and the five response headers.
fn service_sas_string_to_sign(account: &str, container: &str, blob: &str, expiry: &str, version: &str) -> String {
    [
        "r",
        "",
        expiry,
        &format!("/blob/{account}/{container}/{blob}"),
        "",
        "",
        "",
        version,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n")
}

/// The string-to-sign of a read-only service SAS on one Azure Files file, signed with the
/// account key ([Create a service SAS](https://learn.microsoft.com/rest/api/storageservices/create-service-sas),
/// the File service form, version 2015-04-05 and later): permissions, start, expiry,
/// canonical resource (`/file/{account}/{share}/{path}`), identifier, IP, protocol,
/// version, and the five response headers (rscc..rsct). Unlike Blob's, it has no
/// signedResource, snapshot time nor encryption scope lines.
fn file_sas_string_to_sign(account: &str, share: &str, path: &str, expiry: &str, version: &str) -> String {
    ["r", "", expiry, &format!("/file/{account}/{share}/{path}"), "", "", "", version, "", "", "", "", ""].join("\n")
}

/// The string-to-sign of a read-only user-delegation SAS on one blob (version 2025-07-05
/// and later, [Create a user delegation SAS](https://learn.microsoft.com/rest/api/storageservices/create-user-delegation-sas)):
/// permissions, start, expiry, canonical resource, the key's six fields (signedObjectId,
/// signedTenantId, signedKeyStart, signedKeyExpiry, signedKeyService, signedKeyVersion),
/// signedAuthorizedUserObjectId, signedUnauthorizedUserObjectId, signedCorrelationId,
/// signedKeyDelegatedUserTenantId, signedDelegatedUserObjectId, IP, protocol, version,
/// resource, snapshot time, encryption scope, and the five response headers (rscc..rsct).
/// Unused fields are empty lines.
fn user_delegation_sas_string_to_sign(
    account: &str,
    container: &str,
    blob: &str,
    expiry: &str,
    key: &UserDelegationKey,
    version: &str,
) -> String {
    [
        "r",
        "",
        expiry,
        &format!("/blob/{account}/{container}/{blob}"),
        &key.oid,
        &key.tid,
        &key.start,
        &key.expiry,
        &key.service,
        &key.version,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        version,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n")
}

/// The string-to-sign of a read-only user-delegation SAS on one Azure Files file (version
/// 2025-07-05 and later, signed with a key from the File service's own Get User Delegation
/// Key): permissions, start, expiry, canonical resource (`/file/{account}/{share}/{path}`),
/// the key's six fields (signedObjectId, signedTenantId, signedKeyStart, signedKeyExpiry,
/// signedKeyService, signedKeyVersion), signedKeyDelegatedUserTenantId,
/// signedDelegatedUserObjectId, IP, protocol, version, and the five response headers
/// (rscc..rsct). Unlike Blob's, it has no authorized/unauthorized object id, correlation
/// id, signedResource, snapshot time nor encryption scope lines. Unused fields are empty.
fn file_user_delegation_sas_string_to_sign(
    account: &str,
    share: &str,
    path: &str,
    expiry: &str,
    key: &UserDelegationKey,
    version: &str,
) -> String {
    [
        "r",
        "",
        expiry,
        &format!("/file/{account}/{share}/{path}"),
        &key.oid,
        &key.tid,
        &key.start,
        &key.expiry,
        &key.service,
        &key.version,
        "",
        "",
        "",
        "",
        version,
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n")
}

/// Percent-encodes a query value: everything but the unreserved characters.
fn query_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

    /// The HMAC-SHA256 under the published Azurite account key, written here from the docs.
    fn devstore_sign(message: &str) -> String {
        use hmac::{Hmac, Mac};
        let key = B64.decode(crate::config::DEVSTORE_KEY).unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(message.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn the_string_to_sign_has_sixteen_fields_in_the_documented_order() {
        let s = service_sas_string_to_sign("acct", "c", "a b/é.txt", "2026-12-09T10:00:00Z", "2025-11-05");
        assert_eq!(s, "r\n\n2026-12-09T10:00:00Z\n/blob/acct/c/a b/é.txt\n\n\n\n2025-11-05\nb\n\n\n\n\n\n\n");
        assert_eq!(s.split('\n').count(), 16);
    }

    /// The vector is the Python SDK's: azure-storage-file-share 12.27.1 `generate_file_sas`
    /// (its `sts_hook` shows the string-to-sign), with `X_MS_VERSION` set to 2025-11-05, for
    /// account `devstoreaccount1` with its published Azurite key, share `share`, file
    /// `a b/é.txt`, `permission="r"`, `expiry="2026-12-09T10:00:00Z"`.
    #[test]
    fn the_file_string_to_sign_is_the_python_sdks() {
        let s = file_sas_string_to_sign("devstoreaccount1", "share", "a b/é.txt", "2026-12-09T10:00:00Z", "2025-11-05");
        assert_eq!(s, "r\n\n2026-12-09T10:00:00Z\n/file/devstoreaccount1/share/a b/é.txt\n\n\n\n2025-11-05\n\n\n\n\n");
        assert_eq!(s.split('\n').count(), 13);
        assert_eq!(devstore_sign(&s), "DOohXsJVdlhVbNuNwuwfYurtkPxYGQczw8LWph9gALQ=");
    }

    /// A key with the test fields, as service `sks` (`b`, `f`) hands it out.
    fn key_of(sks: &str) -> UserDelegationKey {
        UserDelegationKey::for_test(
            [
                "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "2026-12-03T06:00:00Z",
                "2026-12-09T10:00:00Z",
                sks,
                "2026-06-06",
            ],
            "puQvWQLJ2SDbUfz1MofOesC/i5Tv9sLTE0CP8CZ/Z9M=",
        )
    }

    /// A key as Azurite 3.37 derives it (`getUserDelegationKeyValue`: an HMAC of the key's
    /// fields under its fixed seed), for the token the tests mint.
    pub(crate) fn azurite_key() -> UserDelegationKey {
        key_of("b")
    }

    /// The vector is Azurite's own: its verifier (`generateBlobSASSignatureWithUDK` in
    /// `dist/src/blob/authentication/IBlobSASSignatureValues.js`, the 2025-07-05 form),
    /// run under node with these values, gave this string-to-sign and signature.
    #[test]
    fn the_user_delegation_string_to_sign_is_azurites() {
        let key = azurite_key();
        let s = user_delegation_sas_string_to_sign(
            "devstoreaccount1",
            "c",
            "a b/é.txt",
            "2026-12-09T10:00:00Z",
            &key,
            "2025-11-05",
        );
        assert_eq!(
            s,
            "r\n\n2026-12-09T10:00:00Z\n/blob/devstoreaccount1/c/a b/é.txt\naaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n72f988bf-86f1-41af-91ab-2d7cd011db47\n2026-12-03T06:00:00Z\n2026-12-09T10:00:00Z\nb\n2026-06-06\n\n\n\n\n\n\n\n2025-11-05\nb\n\n\n\n\n\n\n"
        );
        assert_eq!(s.split('\n').count(), 26);
        assert_eq!(key.sign(&s), "t7UNXdGggQixwCR7FrqzEhhV9XBJ5qALUzA3YF0ZiWs=");
    }

    /// A key as a File service hands it out (`sks=f`), with [`azurite_key`]'s other fields.
    pub(crate) fn file_key() -> UserDelegationKey {
        key_of("f")
    }

    /// The vector is the Python SDK's: azure-storage-file-share 12.27.1 `generate_file_sas`
    /// with `user_delegation_key=` (its `sts_hook` shows the string-to-sign), `X_MS_VERSION`
    /// set to 2025-11-05, for account `devstoreaccount1`, share `share`, file `a b/é.txt`,
    /// `permission="r"`, `expiry="2026-12-09T10:00:00Z"` and the key of [`file_key`].
    #[test]
    fn the_file_user_delegation_string_to_sign_is_the_python_sdks() {
        let key = file_key();
        let s = file_user_delegation_sas_string_to_sign(
            "devstoreaccount1",
            "share",
            "a b/é.txt",
            "2026-12-09T10:00:00Z",
            &key,
            "2025-11-05",
        );
        assert_eq!(
            s,
            "r\n\n2026-12-09T10:00:00Z\n/file/devstoreaccount1/share/a b/é.txt\naaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n72f988bf-86f1-41af-91ab-2d7cd011db47\n2026-12-03T06:00:00Z\n2026-12-09T10:00:00Z\nf\n2026-06-06\n\n\n\n\n2025-11-05\n\n\n\n\n"
        );
        assert_eq!(s.split('\n').count(), 20);
        assert_eq!(key.sign(&s), "Yqgm6dn3wZE9DbLzV9WHoNckIu0dgV1w2nQBTHuDyKk=");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_encode("2026-12-09T10:00:00Z"), "2026-12-09T10%3A00%3A00Z");
        assert_eq!(query_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
