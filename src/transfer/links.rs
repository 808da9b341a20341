//! `link_expiry`: a read-only link per stored blob or file, for people without access.
//!
//! A link is the item's URL with a SAS granting `r` on that one blob (`sr=b`) or Azure Files
//! file (`sr=f`), `sp=r`, until `se` = now + `link_expiry`, built locally from one signer
//! per run ([`Linker`]):
//!
//! - the account key signs a **service SAS** (layouts in `storage::sas`);
//! - an Entra credential (federated, managed identity, `access_token`) signs a
//!   **user-delegation SAS** (version 2025-07-05 and later, Blob and Azure Files) with a
//!   user delegation key from the store's own service, fetched once per run before anything
//!   is written ([`prepare`]), so an identity without the permission fails before any
//!   upload (exit 3);
//! - a SAS token cannot sign another SAS: refused (exit 2).
//!
//! Links are attached where a stored file is recorded ([`Links::attach`], called by
//! `Report::record`): uploads, files skipped over a stored copy and sync uploads all get
//! one. They go only to the outputs, the manifest and the Actions step summary
//! ([`Links::step_summary`], at most [`SUMMARY_CAP`] bytes), never to the log.
//!
//! The `link` output is the one stored file's link; with several and `manifest`, the
//! manifest itself is uploaded next to them, to `<target>/<its file name>`, and its link is
//! the output ([`upload_manifest`]), unless a stored file of the run has that name.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::checksum::FileHasher;
use super::report::{FileResult, Status};
use super::{Engine, RunError};
use crate::auth::{Credential, SharedKey};
use crate::config::human_bytes;
use crate::http::API_VERSION;
use crate::storage::blob::UserDelegationKey;
use crate::storage::sas::{self, Resource};

/// How much shorter than 7 days the longest user-delegation link is (clock skew).
pub const DELEGATION_MARGIN: Duration = Duration::from_secs(300);

/// The most the step summary's links table may take: a 100,000-file upload must not write
/// tens of megabytes into the job summary (GitHub shows at most 1 MiB per step). Rows past
/// it are counted in a last line, "…and N more"; the manifest has every link.
pub const SUMMARY_CAP: usize = 512 << 10;

/// What signs the links of one run.
enum Signer {
    /// A service SAS, signed with the account key.
    Key(SharedKey),
    /// A user-delegation SAS, signed with a user delegation key.
    Delegation(UserDelegationKey),
}

/// Makes the links of one run, all expiring at the same instant.
pub struct Linker {
    signer: Signer,
    /// A blob (`sr=b`) or an Azure Files file (`sr=f`): what the store says it holds.
    resource: Resource,
    account: String,
    /// The container, or the share.
    container: String,
    /// `se`, RFC 3339 UTC to the second.
    expiry: String,
}

/// RFC 3339 UTC, to the second, of `now + after` (saturating).
fn at(now: SystemTime, after: Duration) -> String {
    let t = now.checked_add(after).unwrap_or(now).duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    crate::jwt::httpdate_utc(t.as_secs() as i64)
}

/// The linker of this run, when `link_expiry` is set and the run writes: with an Entra
/// credential the user delegation key is fetched here, once, before any write. Errors: a
/// credential that cannot sign (exit 2); a key refused or not obtained (exit 3).
pub async fn prepare(engine: &Engine, credential: &Credential) -> Result<Option<Links>, RunError> {
    let cfg = &engine.cfg;
    let Some(valid) = cfg.link_expiry.filter(|_| !cfg.dry_run) else { return Ok(None) };
    let now = SystemTime::now();
    let mut expiry = at(now, valid);
    let signer = match credential {
        Credential::SharedKey(k) => Signer::Key(k.clone()),
        Credential::Sas(_) => {
            return Err(RunError::Settings("`link_expiry` (PLUGIN_LINK_EXPIRY) cannot be used with a SAS token: a SAS cannot sign another SAS; use the account key (`account_key`, or a connection string with AccountKey) or an Entra credential (federated, managed identity, `access_token`), or leave `link_expiry` out".into()));
        }
        Credential::None => {
            return Err(RunError::Settings(
                "`link_expiry` (PLUGIN_LINK_EXPIRY) needs a credential to sign links with".into(),
            ))
        }
        Credential::Bearer(_) => {
            // The key must expire within 7 days of the service's clock: a runner clock a
            // little ahead must not make `7d` refused, so the key (and the links) stop
            // DELEGATION_MARGIN short of it.
            expiry = at(now, valid.min(crate::config::MAX_LINK_EXPIRY - DELEGATION_MARGIN));
            let key = match engine.store.user_delegation_key(&at(now, Duration::ZERO), &expiry).await {
                Ok(Some(k)) => k,
                Ok(None) => {
                    return Err(RunError::Settings(format!(
                        "`link_expiry` (PLUGIN_LINK_EXPIRY): links signed with an Entra credential are not built for {}; use the account key",
                        engine.store.info().label
                    )))
                }
                Err(e) if e.is_status(403) => {
                    let (permission, roles) = sas::delegation_permission(engine.store.info().sas);
                    return Err(RunError::Other(format!(
                        "`link_expiry` (PLUGIN_LINK_EXPIRY) needs a user delegation key to sign links, and Get User Delegation Key was refused: {e}. The identity ({}) needs the permission `{permission}` on account `{}`: {roles}. Nothing was uploaded",
                        credential.describe(),
                        cfg.account
                    )))
                }
                Err(e) => {
                    return Err(RunError::Other(format!(
                        "`link_expiry` (PLUGIN_LINK_EXPIRY): cannot get a user delegation key to sign links: {e}. Nothing was uploaded"
                    )))
                }
            };
            Signer::Delegation(key)
        }
    };
    let account = match &signer {
        Signer::Key(k) => k.account().to_string(),
        Signer::Delegation(_) => cfg.account.clone(),
    };
    let mut links = Links::new(Linker {
        signer,
        resource: engine.store.info().sas,
        account,
        container: cfg.container.clone(),
        expiry,
    });
    links.manifest_name = cfg
        .manifest
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .map(|n| super::plan::join_remote(&cfg.target, n));
    Ok(Some(links))
}

/// Uploads the manifest `doc` (written to `path`) to [`Links::manifest_upload`]'s name,
/// through the same store calls as a file's upload (its properties from the settings,
/// `application/json`, its SHA-256 in the metadata), and returns its link: the `link`
/// output. It is not one of the run's files (the summary does not count it). A stored file
/// of the run with that name is not overwritten: a warning, and no link (`Ok(None)`). The
/// error names `manifest` (the run exits 1; the files stay stored).
pub async fn upload_manifest(
    engine: &Arc<Engine>,
    links: &Links,
    path: &Path,
    doc: Vec<u8>,
) -> Result<Option<String>, String> {
    let Some(name) = links.manifest_upload() else { return Ok(None) };
    if links.manifest_name_taken {
        tracing::warn!(
            "the manifest is not uploaded: this run stored a file named `{name}` (the manifest's file name under `target`); the `link` output is empty. Give `manifest` (PLUGIN_MANIFEST) another file name to get its link"
        );
        return Ok(None);
    }
    let failed = |e: &dyn std::fmt::Display| {
        format!(
            "cannot upload the manifest `{}` (`manifest`, PLUGIN_MANIFEST) to `{name}`: {e}; the files above are stored, the `link` output is empty",
            path.display()
        )
    };
    engine.store.check_name(name).map_err(|e| failed(&e))?;
    let mut h = FileHasher::new(false);
    h.update(&doc);
    let mut props = super::upload::props_for(engine, &path.to_string_lossy());
    props.content_type = "application/json".into();
    props.metadata.push(("sha256".into(), h.finish().sha256));
    super::upload::put_bytes(engine, name, &bytes::Bytes::from(doc), &props).await.map_err(|e| failed(&e))?;
    tracing::info!("manifest uploaded to {name} (its link is the `link` output)");
    Ok(Some(links.linker.link(name, &engine.store.url(name))))
}

impl Linker {
    /// When every link of this run expires (RFC 3339 UTC).
    pub fn expiry(&self) -> &str {
        &self.expiry
    }

    /// The link to blob (or file) `name`, whose URL is `url`.
    pub fn link(&self, name: &str, url: &str) -> String {
        let (account, container, se) = (&self.account, &self.container, &self.expiry);
        let query = match &self.signer {
            Signer::Key(k) => {
                let sign = |m: &str| k.sign_message(m);
                sas::read_query(self.resource, account, container, name, se, sas::Signer::Key(&sign), API_VERSION)
            }
            Signer::Delegation(key) => {
                sas::read_query(self.resource, account, container, name, se, sas::Signer::Delegation(key), API_VERSION)
            }
        };
        format!("{url}?{query}")
    }
}

/// The links of one run: the signer, the step summary table so far (at most
/// [`SUMMARY_CAP`] bytes; rows past it only counted) and the first link (the `link` output
/// of a one-file run). Memory stays bounded whatever the number of files.
pub struct Links {
    linker: Linker,
    table: String,
    /// Links made, and rows left out of the table.
    made: u64,
    more: u64,
    first: Option<String>,
    /// `manifest`: where the manifest is uploaded (`<target>/<its file name>`), and
    /// whether a stored file of this run has that name.
    manifest_name: Option<String>,
    manifest_name_taken: bool,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("made", &self.made).field("more", &self.more).finish_non_exhaustive()
    }
}

impl Links {
    fn new(linker: Linker) -> Self {
        Links {
            linker,
            table: String::new(),
            made: 0,
            more: 0,
            first: None,
            manifest_name: None,
            manifest_name_taken: false,
        }
    }

    /// Gives `r` its link when it is a stored file (uploaded now, or skipped over the stored
    /// copy), and its row in the step summary.
    pub fn attach(&mut self, r: &mut FileResult) {
        if r.name.is_empty() || !matches!(r.status, Status::Transferred | Status::Skipped) {
            return;
        }
        self.manifest_name_taken |= self.manifest_name.as_deref() == Some(r.name.as_str());
        let link = self.linker.link(&r.name, &r.url);
        let row = row(&r.name, r.size, r.sha256.as_deref(), &link, self.linker.expiry());
        if self.more == 0 && self.table.len() + row.len() <= SUMMARY_CAP {
            self.table.push_str(&row);
        } else {
            self.more += 1;
        }
        self.made += 1;
        if self.first.is_none() {
            self.first = Some(link.clone());
        }
        r.link = Some(link);
    }

    /// How many links were made.
    pub fn made(&self) -> u64 {
        self.made
    }

    /// The link of the one stored file, when exactly one file was stored.
    pub fn single(&self) -> Option<&str> {
        self.first.as_deref().filter(|_| self.made == 1)
    }

    /// Where the manifest is uploaded, when it is: `manifest` set and several files stored.
    pub fn manifest_upload(&self) -> Option<&str> {
        self.manifest_name.as_deref().filter(|_| self.made > 1)
    }

    /// The Markdown table appended to `GITHUB_STEP_SUMMARY`: name, size, SHA-256, link,
    /// expiry; past [`SUMMARY_CAP`], a last line says how many rows were left out.
    pub fn step_summary(&self) -> String {
        let mut out =
            String::from("\n### Uploaded files\n\n| name | size | SHA-256 | link | expires |\n|---|---|---|---|---|\n");
        out.push_str(&self.table);
        if self.more > 0 {
            out.push_str(&format!(
                "\n…and {} more (the table stops at {}; the manifest lists every link)\n",
                self.more,
                human_bytes(SUMMARY_CAP as u64)
            ));
        }
        out
    }
}

/// One row of the step summary; a name cannot break the table.
fn row(name: &str, size: u64, sha256: Option<&str>, link: &str, expiry: &str) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    format!(
        "| `{}` | {} | `{}` | [download]({}) | {} |\n",
        cell(name).replace('`', "'"),
        human_bytes(size),
        sha256.unwrap_or(""),
        cell(link).replace('(', "%28").replace(')', "%29"),
        expiry
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link's query: its (name, value) pairs in order.
    struct Query(Vec<(String, String)>);

    impl Query {
        fn of(link: &str) -> Query {
            let q = link.split_once('?').unwrap().1;
            Query(url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        }
        fn names(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
        fn get(&self, k: &str) -> &str {
            self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("")
        }
    }

    #[test]
    fn a_file_link_is_a_key_signed_sas_on_that_file() {
        let key = SharedKey::new("devstoreaccount1", &crate::config::Secret::new(crate::config::DEVSTORE_KEY)).unwrap();
        let linker = Linker {
            signer: Signer::Key(key),
            resource: Resource::File,
            account: "devstoreaccount1".into(),
            container: "share".into(),
            expiry: "2026-12-09T10:00:00Z".into(),
        };
        let link = linker.link("a b/é.txt", "https://h/devstoreaccount1/share/a%20b/%C3%A9.txt");
        assert_eq!(link.split_once('?').unwrap().0, "https://h/devstoreaccount1/share/a%20b/%C3%A9.txt");
        let q = Query::of(&link);
        assert_eq!(q.names(), ["sv", "sr", "sp", "se", "sig"]);
        let get = |k| q.get(k);
        assert_eq!((get("sv"), get("sr"), get("sp"), get("se")), (API_VERSION, "f", "r", "2026-12-09T10:00:00Z"));
        if API_VERSION == "2025-11-05" {
            assert_eq!(get("sig"), "DOohXsJVdlhVbNuNwuwfYurtkPxYGQczw8LWph9gALQ=");
        }
    }

    #[test]
    fn a_file_delegation_link_is_sr_f_with_the_keys_fields() {
        let linker = Linker {
            signer: Signer::Delegation(sas::tests::file_key()),
            resource: Resource::File,
            account: "devstoreaccount1".into(),
            container: "share".into(),
            expiry: "2026-12-09T10:00:00Z".into(),
        };
        let link = linker.link("a b/é.txt", "https://h/devstoreaccount1/share/a%20b/%C3%A9.txt");
        let q = Query::of(&link);
        assert_eq!(q.names(), ["sv", "sr", "sp", "se", "skoid", "sktid", "skt", "ske", "sks", "skv", "sig"]);
        let get = |k| q.get(k);
        assert_eq!((get("sr"), get("sp"), get("sks")), ("f", "r", "f"));
        if API_VERSION == "2025-11-05" {
            assert_eq!(get("sig"), "Yqgm6dn3wZE9DbLzV9WHoNckIu0dgV1w2nQBTHuDyKk=");
        }
    }

    #[test]
    fn a_delegation_link_carries_the_keys_fields_and_its_signature() {
        let linker = Linker {
            signer: Signer::Delegation(sas::tests::azurite_key()),
            resource: Resource::Blob,
            account: "devstoreaccount1".into(),
            container: "c".into(),
            expiry: "2026-12-09T10:00:00Z".into(),
        };
        let link = linker.link("a b/é.txt", "https://h/devstoreaccount1/c/a%20b/%C3%A9.txt");
        let q = Query::of(&link);
        let get = |k| q.get(k);
        assert_eq!(get("sv"), API_VERSION);
        assert_eq!((get("sr"), get("sp"), get("se")), ("b", "r", "2026-12-09T10:00:00Z"));
        assert_eq!((get("skoid"), get("sks"), get("skv")), ("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "b", "2026-06-06"));
        assert_eq!((get("skt"), get("ske")), ("2026-12-03T06:00:00Z", "2026-12-09T10:00:00Z"));
        if API_VERSION == "2025-11-05" {
            assert_eq!(get("sig"), "t7UNXdGggQixwCR7FrqzEhhV9XBJ5qALUzA3YF0ZiWs=");
        }
    }

    fn links() -> Links {
        Links::new(Linker {
            signer: Signer::Delegation(sas::tests::azurite_key()),
            resource: Resource::Blob,
            account: "a".into(),
            container: "c".into(),
            expiry: "2026-12-09T10:00:00Z".into(),
        })
    }

    fn stored(name: &str, status: Status) -> FileResult {
        let mut r = FileResult::new(name, name, 3, format!("https://x/c/{name}"));
        r.status = status;
        r
    }

    #[test]
    fn a_name_cannot_break_the_summary_table() {
        let mut l = links();
        l.attach(&mut stored("a|b`c\n.txt", Status::Transferred));
        let t = l.step_summary();
        let line = t.lines().last().unwrap();
        assert_eq!(line.matches(" | ").count(), 4, "{line}");
        assert!(!line.contains('(') || line.contains("[download](https://x/c/"), "{line}");
        assert_eq!(row("n", 1, None, "https://x/y?sig=a(b)", "e").matches("%28").count(), 1);
    }

    #[test]
    fn only_stored_files_get_links_and_the_output_needs_exactly_one() {
        let mut l = links();
        for (name, status) in [
            ("", Status::Skipped),
            ("failed", Status::Failed),
            ("left", Status::NotAttempted),
            ("gone", Status::Deleted),
        ] {
            let mut r = stored(name, status);
            l.attach(&mut r);
            assert_eq!(r.link, None, "{name}");
        }
        let mut one = stored("one", Status::Transferred);
        l.attach(&mut one);
        assert!(one.link.as_deref().unwrap().starts_with("https://x/c/one?sv="));
        assert_eq!(l.single(), one.link.as_deref());
        let mut kept = stored("kept", Status::Skipped);
        l.attach(&mut kept);
        assert!(kept.link.is_some(), "a file skipped over its stored copy is stored: it gets a link");
        assert_eq!((l.made(), l.single()), (2, None));
    }

    #[test]
    fn the_summary_stops_at_its_cap_and_says_how_many_more() {
        let mut l = links();
        let n = 100_000;
        for i in 0..n {
            l.attach(&mut stored(&format!("dir/file-{i:06}.bin"), Status::Transferred));
        }
        let t = l.step_summary();
        assert!(t.len() <= SUMMARY_CAP + 1024, "{} bytes", t.len());
        let rows = t.lines().filter(|l| l.starts_with("| `dir/")).count();
        assert!(rows > 1000, "{rows} rows");
        assert!(
            t.ends_with(&format!(
                "…and {} more (the table stops at 512.0 KiB; the manifest lists every link)\n",
                n - rows
            )),
            "{}",
            &t[t.len() - 200..]
        );
        assert_eq!(l.made(), n as u64);
    }
}
