//! The settings table: the plugin's public API in one place.
//!
//! Every setting the plugin reads is listed here once, with its type, default,
//! whether it is required and whether it is a secret. This table drives:
//! `--help` (the settings reference), the unknown-setting warning ("did you mean"),
//! the redaction of secrets, and the drift check against `plugin.yaml` and
//! `docs/settings.md`. `config/` turns the raw values into a validated `Config`.

pub mod choices;

pub use choices::{
    AccessTier, Action, AuthMode, Checksum, LogFormat, LogLevel, Overwrite, Service, Tier, TrustMode, Verify,
};

/// The shape of a setting's value, as documented to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Bool,
    Enum(&'static [&'static str]),
    /// A list: comma-joined (`a,b`) or a JSON array (`["a","b"]`).
    List,
    /// A JSON object.
    Map,
    /// A string, a JSON map glob → value (the most specific glob wins, never the key order),
    /// or an ordered JSON list of one-entry maps (the first match wins).
    StringOrMap,
    /// A byte size: `8MiB`, `4M`, `1048576`.
    Size,
    /// A duration: `30s`, `2m`, `500ms`.
    Duration,
    Integer,
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Bool => "boolean",
            Kind::Enum(_) => "enum",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::StringOrMap => "string or map",
            Kind::Size => "size",
            Kind::Duration => "duration",
            Kind::Integer => "integer",
        }
    }
}

/// One documented setting. `name` is the YAML key; it arrives as `PLUGIN_<NAME>`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    /// Default as documented (`None`: unset / automatic, see `help`).
    pub default: Option<&'static str>,
    pub required: bool,
    pub secret: bool,
    /// Other environment variables read when the setting is absent.
    pub env_fallback: &'static [&'static str],
    pub help: &'static str,
}

const fn s(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> Setting {
    Setting { name, kind, default, required: false, secret: false, env_fallback: &[], help }
}

const fn with_env(
    name: &'static str,
    default: Option<&'static str>,
    env_fallback: &'static [&'static str],
    help: &'static str,
) -> Setting {
    Setting { name, kind: Kind::String, default, required: false, secret: false, env_fallback, help }
}

/// Marks a setting as always required (`plugin.yaml`'s `required: true`). Settings needed
/// only in some combinations (`account_name` or `endpoint`, `container` or `share`) stay
/// optional here and say so in their help.
const fn required(setting: Setting) -> Setting {
    Setting { required: true, ..setting }
}

const fn secret(name: &'static str, env_fallback: &'static [&'static str], help: &'static str) -> Setting {
    Setting { name, kind: Kind::String, default: None, required: false, secret: true, env_fallback, help }
}

/// All settings, in the order the reference documents them.
pub const SETTINGS: &[Setting] = &[
    s("action", Kind::Enum(Action::NAMES), Some("upload"), "Direction of the transfer: `upload` (workspace to storage), `download` (storage to workspace), `sync` (upload what changed, then delete what the selection lacks under `target`, guarded by `max_delete`; docs/sync.md); `cache_save` / `cache_restore` save the `source` directories as one tar+zstd archive `<target>/<tier>/<cache_key>.tar.zst` (the tier: `trusted` or `untrusted`, docs/trust.md) and restore it (docs/cache.md); `delete` removes what `source` names in the container (prefixes or globs, the download rules; `older_than` keeps newer items; guarded by `max_delete`; docs/delete.md)."),
    s("service", Kind::Enum(Service::NAMES), Some("blob"), "Storage service: `blob` (Blob container) or `file` (Azure Files share: same settings and checks; names are case-insensitive there, see docs/files.md)."),
    s("account_name", Kind::String, None, "Storage account name. The endpoint becomes `https://<account_name>.<service>.<endpoint_suffix>`. Required unless `endpoint` or `connection_string` gives the account."),
    s("endpoint", Kind::String, None, "Full service URL instead of `account_name` (Azurite, private endpoints, sovereign clouds), e.g. `http://127.0.0.1:10000/devstoreaccount1`: `http` or `https`, a host, no query (a SAS goes in `sas_token`), user info or fragment. The account is the one it names (its first path segment, else the `<account>` of an `<account>.blob.…` host); an `account_name` naming another is refused."),
    s("endpoint_suffix", Kind::String, Some("core.windows.net"), "DNS suffix of the storage endpoints (`core.chinacloudapi.cn`, `core.usgovcloudapi.net`, ...): dot-separated labels of letters, digits and hyphens."),
    s("container", Kind::String, None, "Blob container (with `service: blob`)."),
    s("share", Kind::String, None, "Azure Files share (with `service: file`). Files are written in ranges of at most 4 MiB under a temporary name and renamed into place; OAuth needs the Storage File Data Privileged Contributor role (docs/files.md)."),
    s("create_container", Kind::Bool, Some("false"), "Upload: create the container (or share) if it does not exist (otherwise a missing one is an error)."),
    required(s("source", Kind::List, None, "Upload: local glob(s) relative to the workspace, `**` allowed; a directory means everything under it. Download: remote name(s), prefix(es) or glob(s). A YAML list arrives comma-joined; a comma inside `{...}` (`dist/*.{js,css}`) never splits; a block (`source: |`) gives one per line. Made only of `/` or with an empty component (`/x`, `a//b`, an unset variable's trace) it is refused; everything is `**`. Required.")),
    s("target", Kind::String, Some(""), "Upload: remote path prefix the names are put under (a `/` alone or an empty component, `a//b`, is refused: leave it out for the top). Download: local directory (default: the working directory)."),
    s("strip_prefix", Kind::String, None, "Leading path removed from each name before `target` is prepended: a local path on upload, a remote prefix on download. Matches whole path components (`dist` strips `dist/a`, not `distx/a`)."),
    s("exclude", Kind::List, None, "Glob(s) removed from the selection (matched against the same path as `source`); `{a,b}` alternations are kept whole, like in `source`."),
    s("cache_key", Kind::String, None, "Cache modes: the archive's key, a template: `{{ checksum \"FILE\" }}` (SHA-256 hex of a workspace file; several allowed), `{{ hashFiles \"GLOB\" ... }}` (SHA-256 hex over the files one or more globs select, paths and contents, as an upload selects them: no links followed, hidden files only where the glob names them, nothing inside the cached `source` directories; a glob that selects no file is exit 2), `{{ env \"VAR\" }}`, `{{ arch }}`, `{{ os }}`, `{{ branch }}` (from the CI's variables), e.g. `cargo-{{ os }}-{{ checksum \"Cargo.lock\" }}`. Stored as `<target>/<tier>/<key>.tar.zst` (the tier: `trusted` or `untrusted`, docs/trust.md). Required with `action: cache_save` / `cache_restore`."),
    s("restore_keys", Kind::List, None, "`cache_restore`: key prefixes (templates like `cache_key`, `hashFiles` included) tried in order when `cache_key` itself is not stored; the newest archive (Last-Modified) under the first prefix with any match is restored."),
    s("compression_level", Kind::Integer, Some("3"), "`cache_save`: zstd level (1-19), compressed on all cores."),
    s("fail_on_miss", Kind::Bool, Some("false"), "`cache_restore`: exit 1 when no archive matches (by default a miss is reported and the step succeeds)."),
    s("max_restore_size", Kind::Size, Some("10GiB"), "`cache_restore`: the most an archive may expand to in the workspace (file contents plus 512 bytes per entry); an archive that expands past it is refused before it fills the disk, and nothing is restored. 10GiB is more than a hosted runner's free disk (14 GB on GitHub, 10 GB on Azure Pipelines), so only a hostile or broken archive meets it there; raise it for bigger caches on self-hosted runners. At least 1MiB."),
    s("lookup_only", Kind::Bool, Some("false"), "`cache_restore`: look up `cache_key` and `restore_keys` and set the outputs (`cache_hit`, `cache_key`, `cache_matched_key`) without downloading anything, e.g. to skip a job whose cache already exists."),
    s("fail_on_cache_error", Kind::Bool, Some("false"), "Cache modes: a service or network failure fails the step (exit 1, or 3 when nothing could be reached). By default it is a warning, exit 0, with `cache_error` in the outputs, so a cache outage never fails a build. A refused or corrupt archive always fails the step."),
    s("allow_empty", Kind::Bool, Some("false"), "Succeed when `source` selects no file (by default an empty selection is an error)."),
    s("overwrite", Kind::Enum(Overwrite::NAMES), Some("true"), "When the destination exists: `true` replace it (`cache_save`: only when set explicitly; by default an existing cache key is not written again); `false` fail that file (conditional request, no race); `skip` leave it; `changed` transfer only when the SHA-256 differs."),
    s("content_type", Kind::StringOrMap, None, "Content type: one string for all, a map glob → type (the most specific glob wins) or a list of one-entry maps (the first match wins). Otherwise guessed from the extension, else `application/octet-stream`."),
    s("cache_control", Kind::StringOrMap, None, "`Cache-Control` stored with each blob/file: a string, a map glob → value (the most specific glob wins) or a list of one-entry maps (the first match wins)."),
    s("content_encoding", Kind::StringOrMap, None, "`Content-Encoding` stored with each blob/file: a string, a map glob → value (the most specific glob wins) or a list of one-entry maps (the first match wins)."),
    s("content_disposition", Kind::StringOrMap, None, "`Content-Disposition` stored with each blob/file: a string, a map glob → value (the most specific glob wins) or a list of one-entry maps (the first match wins). A non-ASCII file name (`attachment; filename=\"é.txt\"`) is sent as RFC 6266/8187 `filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt`; other non-ASCII text is refused."),
    s("metadata", Kind::Map, None, "JSON map of extra metadata stored on every uploaded blob/file. Keys must be C# identifiers (ASCII letters, digits and `_`, not starting with a digit), distinct regardless of case; `sha256` is reserved. Value characters that are not visible ASCII (and `%`) are stored percent-encoded (`é` as `%C3%A9`)."),
    s("access_tier", Kind::Enum(AccessTier::NAMES), None, "Blob access tier set on upload (Blob only). Default: the account's default tier."),
    s("checksum", Kind::Enum(Checksum::NAMES), Some("crc64"), "Upload, Blob: the per-request checksum the service verifies. `crc64` (`x-ms-content-crc64`) costs the client least; `md5` (`Content-MD5`) costs the client an MD5 pass but Azurite far less (its uploads run several times faster). Azure Files always uses `Content-MD5`."),
    s("content_md5", Kind::Bool, Some("false"), "Upload: also compute and store the whole-file Content-MD5 of files sent in blocks (files sent in one request get it from the service anyway). Costs an MD5 pass; SHA-256 is always stored as metadata `sha256`."),
    s("verify", Kind::Enum(Verify::NAMES), Some("required"), "Download: `required` fails a file that has neither a `sha256` metadata nor a Content-MD5 to check against; `size` accepts such files after checking their length (with a warning)."),
    s("follow_symlinks", Kind::Bool, Some("false"), "Upload: follow symbolic links whose target stays inside the workspace (a link leading out of it is skipped with a warning that names it). By default every link is reported and skipped. Either way nothing outside the workspace is ever read."),
    s("include_hidden", Kind::Bool, Some("false"), "Upload, sync, cache_save: also select hidden entries (names beginning with `.`). By default a wildcard or a directory `source` leaves them out (the shell's and upload-artifact v4's rule; `.git/config` holds the job token) unless a pattern segment beginning with `.` names them (`.github/**`, `**/.env`; `.git` only literally), and sync never deletes a remote name with a hidden component. `cache_save` archives a named directory whole (`node_modules/.bin`) except `.git`, and `source: .` without its hidden top-level entries. One info line counts what was left out (docs/trust.md)."),
    s("block_size", Kind::Size, None, "Upload block / download range size. Default: 4MiB blocks (raised to size/50000 for huge files; files up to this size go in a single request) and 8MiB ranges (streamed to disk, not held in memory)."),
    s("concurrency", Kind::Integer, Some("16"), "Requests in flight at once, shared by all files and blocks (1-256)."),
    s("max_memory", Kind::Size, Some("32MiB"), "Upper bound of upload buffers in memory, whatever the file sizes (at least one block). Downloads stream to disk and use a few hundred KiB per request."),
    s("retries", Kind::Integer, Some("5"), "Retries of each request on 408/429/500/502/503/504, resets and timeouts (0-50)."),
    s("timeout", Kind::Duration, Some("60s"), "Per-request timeout (a body of N MiB gets N seconds more)."),
    s("retry_timeout", Kind::Duration, Some("3m"), "The most one request may take, its attempts and the waits between them together (a body of N MiB gets N seconds more), 1s to 1h: a request still failing then fails naming this setting. Bounds a server asking for long waits (`Retry-After`) and a request that hangs; token requests too."),
    s("max_delete", Kind::Integer, None, "Sync and delete: the most blobs/files one run may delete. A run that would delete more deletes nothing and fails (exit 1). Required for a sync whose `target` is empty and for a delete whose `source` lists from the top of the container or share (`**`, `*.log`). Default: no limit for sync; 1000 for delete (a larger delete must be allowed by writing `max_delete`)."),
    s("older_than", Kind::Duration, None, "Delete: delete only items last modified longer ago than this (`14d`, `12h`, `90m`; days `d` allowed); newer ones are kept. Items listed without a Last-Modified time are kept. Default: every selected item, whatever its age."),
    s("link_expiry", Kind::Duration, None, "Upload and sync: make a read-only link (a SAS with `sp=r` on that one blob, or Azure Files file) for each stored file, valid this long (`1h`, `7d`; at most 7 days, the limit Azure sets on user-delegation links). With `account_key` (or a connection string with a key) it is a service SAS (Blob and Azure Files); with an Entra credential (federated, managed identity, `access_token`) a user-delegation SAS, which on Blob needs `Storage Blob Delegator` or any `Storage Blob Data` role, on Azure Files the `fileServices/generateUserDelegationKey` permission (exit 3 without it, before anything is uploaded); refused (exit 2) with a SAS token. Outputs `link`: the one stored file's link, or with several and `manifest` the link of the manifest, then uploaded to `<target>/<its file name>` (a stored file of that name is kept, and `link` left empty). Each manifest entry gets `link`, and on GitHub/Forgejo Actions a table (name, size, SHA-256, link, expiry) is appended to `GITHUB_STEP_SUMMARY`. The log never shows a link. Default: off (docs/retention.md)."),
    s("compress", Kind::List, None, "Upload and sync: glob(s) of files gzipped while uploading (e.g. `[\"**/*.html\",\"**/*.css\",\"**/*.js\",\"**/*.svg\"]`), stored with `Content-Encoding: gzip`; the stored `sha256` and size are those of the compressed bytes, and the compression is deterministic, so `overwrite: changed` and sync skip unchanged files. A compressed file is held in memory (at most `max_memory`)."),
    s("manifest", Kind::String, None, "Path of a JSON manifest to write: one entry per file (name, size, sha256, url, etag, status: `transferred`, `skipped`, `failed`, `deleted` (sync, delete), or `not_attempted` when the run stopped early). Files are listed in plan order, whichever finished first: those skipped or refused at planning, then the planned files by local path (upload: path in the workspace; download: path under `target`; sync: by remote name, then the deletes by name; delete: by name). Entries are spooled to an unnamed temporary file (in `TMPDIR`, else the working directory) as files finish, so memory does not grow with the file count; the manifest is written under a temporary name and renamed into place. With `link_expiry` and several files stored, it is also uploaded next to them, to `<target>/<its file name>`, and its link is the `link` output."),
    s("preserve_mode", Kind::Bool, Some("true"), "Upload and sync: store each file's permission bits (`0755`, `0644`; never setuid, setgid or sticky) as metadata `mode`; download: apply them (exec bits included) less the process umask. A stored `mode` that is not 3-4 octal digits is ignored with a warning; items without one download as before. Sync (and `overwrite: changed`) re-uploads a file whose stored mode differs, even when its bytes did not; one stored without a `mode` is compared by content alone. `false` turns both off. Azure Files keeps it as metadata too (docs/retention.md)."),
    s("checksums_file", Kind::String, None, "Upload and sync: path (in the workspace) of a `sha256sum` file to write: one line per stored file (`<sha256>  <name>`, the name relative to `target`, sorted by name), of the bytes stored (the gzip bytes where `compress` applied), skipped-as-unchanged files included. `sha256sum -c` passes on a download of the same tree (`strip_prefix` = `target`); actions/attest-build-provenance takes it as `subject-checksums`. Written under a temporary name and renamed into place, like `manifest`; not in a dry run."),
    s("verify_checksums", Kind::String, None, "Download: path of a `sha256sum` file (e.g. one `checksums_file` wrote) to check the download against: every name in it (relative to `strip_prefix`, i.e. the local path under `target`) must be in the selection, downloaded and have that SHA-256. A mismatch, a missing file or a name the selection lacks fails the run (exit 1), named; an unreadable or malformed file is exit 2."),
    s("retention", Kind::String, None, "Upload and sync, Blob only: whole days (`30d` or `30`, 1-36500) after which the files may be deleted: each blob is stored with the index tags `expires-on=YYYY-MM-DD` (UTC, today + N days) and `retention-days=N`, which a lifecycle-management rule deletes on (docs/retention.md ships the policy: its tag filter compares with `==` only, so the rule matches `retention-days`). Setting tags needs Storage Blob Data Owner or the `.../blobs/tags/write` permission. Refused with `service: file` (Azure Files has no index tags)."),
    s("dry_run", Kind::Bool, Some("false"), "Plan and print, transfer nothing. An upload dry run sends no request and needs no credentials, so it applies the workspace rules but not `overwrite` (`false`, `skip`, `changed`) nor the container check: it lists every file it would consider. Sync, delete and the cache actions list (with credentials) and make the real run's decisions (the same comparisons, refusals and exit codes); a download dry run lists and plans, and refuses a target the real run would refuse. Outputs: `would_transfer` / `would_delete`, the done-counts 0."),
    s("provenance", Kind::Bool, Some("true"), "Store metadata naming the CI run that wrote each file (`ci_repo`, `ci_commit`, `ci_build`, `ci_link`) and its trust (`ci_trust`: `trusted` or `untrusted`, docs/trust.md)."),
    s("trust", Kind::Enum(TrustMode::NAMES), Some("auto"), "The trust of the run (docs/trust.md). `auto`: `untrusted` on a pull-request event (Woodpecker `CI_PIPELINE_EVENT` `pull_request*`, Drone and Harness `DRONE_BUILD_EVENT=pull_request`, GitHub/Forgejo `GITHUB_EVENT_NAME` `pull_request*` or `merge_group`, GitLab `CI_PIPELINE_SOURCE` `merge_request_event` / `external_pull_request_event`, Buildkite `BUILDKITE_PULL_REQUEST` other than `false`), else `trusted`. `trusted` / `untrusted` force it (forcing `trusted` on a pull-request event warns, naming the event). The start line names the tier and why; uploads record it as metadata `ci_trust` (with `provenance`)."),
    s("log_level", Kind::Enum(LogLevel::NAMES), Some("info"), "Log verbosity. No level ever prints a token, key or SAS."),
    s("log_format", Kind::Enum(LogFormat::NAMES), Some("text"), "`text` for people, `json` for log pipelines (one JSON object per line)."),
    s("progress_interval", Kind::Duration, Some("5s"), "How often a progress line is printed."),
    s("auth", Kind::Enum(AuthMode::NAMES), Some("auto"), "Authentication mode. `auto` picks the first available: a pre-minted `access_token`, federated (a CI token plus `tenant_id` and `client_id`), SAS, account key, connection string, then managed identity (App Service's IDENTITY_ENDPOINT, or IMDS when it answers). Configured secrets win over a managed identity discovered on the machine; `auth: managed_identity` forces it. An explicit credential (PLUGIN_* or INPUT_*) always wins over an ambient one (AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_KEY, AZURE_STORAGE_CONNECTION_STRING, AZURE_ACCESS_TOKEN, a workload identity's token file), which is set aside and named on the start line."),
    with_env("tenant_id", None, &["AZURE_TENANT_ID"], "Entra ID tenant of the app registration used for federated auth: the Directory (tenant) ID, or a verified domain."),
    with_env("client_id", None, &["AZURE_CLIENT_ID"], "Application (client) ID of the app registration (federated auth), or of a user-assigned managed identity."),
    secret("federated_token", &[], "The CI's OIDC token (a JWT) as minted for this job, e.g. GitLab `id_tokens` or Buildkite's `oidc request-token`; exchanged with Entra ID for a storage token. Checked (a JWT, not expired) before it is sent. Not a stored secret: Woodpecker and Drone mint no OIDC token (use Kubernetes workload identity or a managed identity there)."),
    with_env("federated_token_file", None, &["AZURE_FEDERATED_TOKEN_FILE"], "File holding the CI's OIDC token (Azure Workload Identity on Kubernetes sets AZURE_FEDERATED_TOKEN_FILE); re-read at every exchange, since Kubernetes rotates it."),
    secret("oidc_token_id", &[], "An OIDC token passed as PLUGIN_OIDC_TOKEN_ID. Harness sets that variable only for its own `plugins/azure-oidc` image: with this image, run that step for the storage scope and pass its AZURE_ACCESS_TOKEN output as `access_token` (docs/auth.md)."),
    s("audience", Kind::String, Some("api://AzureADTokenExchange"), "Audience asked of the GitHub/Forgejo Actions ID-token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL); must equal the federated credential's audience."),
    with_env("authority_host", Some("https://login.microsoftonline.com"), &["AZURE_AUTHORITY_HOST"], "Entra ID host for the token exchange: https://login.microsoftonline.us (Azure US Government), https://login.chinacloudapi.cn (Azure China)."),
    secret("access_token", &["AZURE_ACCESS_TOKEN"], "A pre-minted Entra ID access token for Azure Storage (a JWT with audience https://storage.azure.com), used as the bearer as it is: e.g. the token Harness's `plugins/azure-oidc` step exports, or `az account get-access-token --resource https://storage.azure.com` in an earlier step. Checked before use (a JWT for storage, not expired); it cannot be refreshed, so it must outlive the transfer. The start line names its `oid` / `appid`."),
    secret("account_key", &["AZURE_STORAGE_KEY"], "Storage account key (Shared Key signing). For Azurite and teams not yet on federation."),
    secret("sas_token", &["AZURE_STORAGE_SAS_TOKEN"], "Shared access signature (query string, with or without the leading `?`)."),
    secret("connection_string", &["AZURE_STORAGE_CONNECTION_STRING"], "Storage connection string (account, key or SAS, endpoints); `UseDevelopmentStorage=true` for Azurite's defaults. Keys are case-insensitive and spaces around `=` and `;` are ignored, as in the Azure SDKs; `AccountName` is checked as `account_name`, `BlobEndpoint`/`FileEndpoint` as `endpoint`, `EndpointSuffix` as `endpoint_suffix`."),
];

/// Looks a setting up by its YAML name.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Environment variable carrying `name`.
pub fn env_name(name: &str) -> String {
    format!("PLUGIN_{}", name.to_ascii_uppercase())
}

/// The variable a GitHub/Forgejo Action input arrives in: `INPUT_<NAME>` (accepted when
/// `PLUGIN_<NAME>` is absent).
pub fn input_env_name(name: &str) -> String {
    format!("INPUT_{}", name.to_ascii_uppercase())
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known setting closest to an unknown name, when it is close enough to be a typo.
pub fn closest(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
    SETTINGS
        .iter()
        .map(|s| (distance(&unknown, s.name), s.name))
        .filter(|(d, name)| *d <= 3.max(name.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Settings reference printed by `--help`.
pub fn help_text() -> String {
    let mut out = String::new();
    out.push_str(concat!(
        "plugin-azure-storage ",
        env!("CARGO_PKG_VERSION"),
        "\nMoves build artifacts between the workspace and Azure Blob Storage / Azure Files.\n\n",
        "Settings arrive as environment variables PLUGIN_<NAME> (Drone/Woodpecker `settings:`),\n",
        "or INPUT_<NAME> (GitHub/Forgejo Actions inputs, action.yml) when PLUGIN_<NAME> is absent.\n",
        "Lists: comma-joined (a YAML list arrives so; commas inside {...} never split) or a JSON array. Maps: JSON. Sizes: 8MiB, 4M, 1048576. Durations: 30s, 2m, 500ms.\n\n",
        "Exit codes: 0 every file done; 1 one or more files failed, or the manifest or the outputs could not be written; 2 invalid settings; 3 nothing could be transferred (authentication or service error before any transfer, or a refusal that recurs for every file, which stops the run early); 130/143 interrupted.\n\n"
    ));
    for st in SETTINGS {
        let mut line = format!("  {:<20} {}", st.name, st.kind.type_name());
        if let Kind::Enum(values) = st.kind {
            line.push_str(&format!(" ({})", values.join("|")));
        }
        if let Some(d) = st.default {
            line.push_str(&format!(", default `{d}`"));
        }
        if st.required {
            line.push_str(", required");
        }
        if st.secret {
            line.push_str(", secret");
        }
        if !st.env_fallback.is_empty() {
            line.push_str(&format!(", or {}", st.env_fallback.join(" / ")));
        }
        out.push_str(&line);
        out.push_str("\n      ");
        out.push_str(st.help);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_setting() {
        assert_eq!(closest("strip_prefx"), Some("strip_prefix"));
        assert_eq!(closest("CONTAINR"), Some("container"));
        assert_eq!(closest("targets"), Some("target"));
        assert_eq!(closest("completely_unrelated_thing"), None);
    }

    #[test]
    fn names_are_unique_and_lowercase() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        assert!(SETTINGS.iter().all(|s| s.name == s.name.to_ascii_lowercase()));
    }

    #[test]
    fn help_lists_every_setting() {
        let h = help_text();
        for st in SETTINGS {
            assert!(h.contains(st.name), "{} missing from --help", st.name);
        }
    }
}
