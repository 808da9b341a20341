//! Cache mode: `action: cache_save` / `cache_restore` (docs/cache.md).
//!
//! Tiers: archives live under `<target>/<tier>/<key>.tar.zst`, the tier being the run's
//! trust (`Config::trust`). A run writes only its own tier; a trusted run reads only the
//! trusted tier, an untrusted one the trusted tier, then its own, then (for one release)
//! the plain `<target>/<key>.tar.zst` layout of earlier versions ([`Place`]). Each archive
//! records its identity (`cache_format`, `cache_sources`: another `source` set is a miss)
//! and its writer (`cache_event`, `cache_ref`, ...), printed on restore.
//!
//! Save: the `source` directories become one tar+zstd archive streamed into the run's
//! tier through the chunked upload path (no temporary file, memory within `max_memory`,
//! the archive's SHA-256 stored as metadata `sha256`); an existing key is not written
//! again unless `overwrite: true` is set explicitly (and the commit is conditional, so two
//! runs saving one key at once never replace each other's archive).
//!
//! Restore: the exact key, else the newest archive (Last-Modified) under the first
//! `restore_keys` prefix with any match, place by place; downloaded in parallel ranges fed
//! in order into zstd and tar, extracted safely and moved into place only once verified
//! ([`extract`]). A miss is not an error unless `fail_on_miss`. Before anything is
//! downloaded, a `source` under a link or a mount point is refused, staging directories of
//! killed restores are removed, and the archive's zstd window is read from its header and
//! taken from `max_memory` (a larger one is refused). `lookup_only` (and a `dry_run`
//! restore with credentials) only looks up.
//!
//! A service or network failure is a warning with `cache_error` in the outputs unless
//! `fail_on_cache_error`; refused and corrupt archives always fail the step.
//!
//! Outputs: `cache_hit` (`true` only when the exact key was restored, so a later
//! `cache_save` can be skipped), `cache_key` (the key restored, empty on a miss),
//! `cache_matched_key` (the key restored or found) and `cache_error`.

pub mod archive;
pub mod extract;
pub mod key;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::auth::{AuthError, Credential};
use crate::config::{human_bytes, Action, Tier};
use crate::storage::{RemoteItem, StorageError, UploadProps};
use crate::transfer::localfs::Root;
use crate::transfer::plan::join_remote;
use crate::transfer::report::{FileResult, Report, Status};
use crate::transfer::stream::{self, BlockSink, ChannelReader, StreamError};
use crate::transfer::upload::send_chunks;
use crate::transfer::{Engine, RunError};

/// Suffix of every cache archive.
pub const SUFFIX: &str = ".tar.zst";

type Outputs = Vec<(&'static str, String)>;

/// Runs `cache_save` or `cache_restore`: its result (the archive) is recorded in `report`;
/// returns the outputs. A service or network failure is a warning with `cache_error` in
/// the outputs unless `fail_on_cache_error` (see [`soft_error`]).
pub async fn run(eng: &Arc<Engine>, credential: &Credential, report: &mut Report) -> Result<Outputs, RunError> {
    let (results, outputs) = match run_cache(eng, credential).await {
        Err(RunError::Storage(e)) if service_failure(&e) && !eng.cfg.cache.fail_on_cache_error => {
            let name = join_remote(&eng.cfg.target, "");
            let res = FileResult::new(&name, &eng.cfg.sources.join(","), 0, eng.store.url(&name));
            soft_error(&eng.cfg, res, &e.to_string(), vec![])
        }
        r => r?,
    };
    for r in results {
        report.push(r);
    }
    Ok(outputs)
}

/// A failure of the service or the network (not a refused setting, a missing container or
/// an unsafe name): what `fail_on_cache_error: false` turns into a warning.
fn service_failure(e: &StorageError) -> bool {
    matches!(e, StorageError::Http(_) | StorageError::Protocol { .. } | StorageError::Changed { .. })
}

/// A service or network failure of a cache step: by default a warning and a skipped
/// result (exit 0) with `cache_error=<reason>` in the outputs; with
/// `fail_on_cache_error: true` the failed result it always was.
fn soft_error(
    cfg: &crate::config::Config,
    mut res: FileResult,
    why: &str,
    mut outputs: Outputs,
) -> (Vec<FileResult>, Outputs) {
    let why = why.replace(['\r', '\n'], " ");
    if cfg.action == Action::CacheRestore {
        outputs.retain(|(k, _)| !matches!(*k, "cache_hit" | "cache_key" | "cache_matched_key"));
        outputs.extend(miss_outputs());
    }
    if cfg.cache.fail_on_cache_error {
        tracing::error!("failed: cache error: {why}");
        res.reason = Some(why);
    } else {
        tracing::warn!("cache error, not failing the build ({} to fail it): {why}", "`fail_on_cache_error: true`");
        res.status = Status::Skipped;
        res.reason = Some(format!("cache error: {why}"));
        outputs.push(("cache_error", why));
    }
    (vec![res], outputs)
}

/// The outputs of a restore that restored nothing.
fn miss_outputs() -> Outputs {
    vec![("cache_hit", "false".into()), ("cache_key", String::new()), ("cache_matched_key", String::new())]
}

/// Where archives live under `target`: a tier's directory, or (read for one release, as
/// untrusted) the plain layout of earlier versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Tier(Tier),
    Legacy,
}

impl Place {
    /// The directory of this place under `target` (no trailing `/`).
    fn dir(self, target: &str) -> String {
        match self {
            Place::Tier(t) => join_remote(target, t.as_str()),
            Place::Legacy => join_remote(target, ""),
        }
    }

    /// The blob name of `key` here: `<target>/<tier>/<key>.tar.zst`.
    fn name(self, target: &str, key: &str) -> String {
        join_remote(&self.dir(target), &format!("{key}{SUFFIX}"))
    }

    fn describe(self) -> &'static str {
        match self {
            Place::Tier(Tier::Trusted) => "the trusted tier",
            Place::Tier(Tier::Untrusted) => "the untrusted tier",
            Place::Legacy => "the plain layout of earlier versions (read as untrusted)",
        }
    }

    /// Where a run of `tier` reads, in order: a trusted run only the trusted tier; an
    /// untrusted run the trusted tier, then its own, then the legacy layout.
    fn read_order(tier: Tier) -> &'static [Place] {
        match tier {
            Tier::Trusted => &[Place::Tier(Tier::Trusted)],
            Tier::Untrusted => &[Place::Tier(Tier::Trusted), Place::Tier(Tier::Untrusted), Place::Legacy],
        }
    }
}

async fn run_cache(eng: &Arc<Engine>, credential: &Credential) -> Result<(Vec<FileResult>, Outputs), RunError> {
    let cfg = &eng.cfg;
    let workspace =
        std::env::current_dir().map_err(|e| RunError::Other(format!("cannot read the working directory: {e}")))?;
    let root = Root::open(&workspace, false).map_err(|e| RunError::Other(format!("cannot open the workspace: {e}")))?;
    let key =
        tokio::task::block_in_place(|| key::render(&cfg.cache.key, &root, cfg, "cache_key")).map_err(RunError::from)?;
    key::check(&key, "cache_key").map_err(RunError::Settings)?;
    // Written only into the run's own tier.
    let name = Place::Tier(cfg.trust.tier).name(&cfg.target, &key);
    eng.store.check_name(&name).map_err(|e| RunError::Other(format!("the cache blob name `{name}`: {e}")))?;
    let save = cfg.action == Action::CacheSave;
    let lookup = !save && cfg.cache.lookup_only;
    if cfg.dry_run {
        return dry_run(eng, credential, &workspace, &root, &key, &name).await;
    }
    if matches!(credential, Credential::None) {
        return Err(AuthError::Missing("no credentials".into()).into());
    }
    if lookup {
        return lookup_cache(eng, &root, &key, &name).await;
    }
    // Progress lines as for uploads and downloads: bytes sent (save: total unknown,
    // no ETA) or received (restore: the archive's size is the total).
    let ticker = eng.ticker();
    let r = if save {
        save_cache(eng, root, &key, &name).await
    } else {
        restore_cache(eng, &workspace, &root, &key, &name).await
    };
    ticker.stop();
    r
}

/// A dry run makes the real run's decisions and writes nothing: a save probes its sources,
/// asks whether the key exists (with credentials) and walks what the archive would hold
/// through the same member checks (compressed into nothing); a restore checks its sources
/// and looks the key and `restore_keys` up (with credentials), a miss being what the real
/// run makes of it (`fail_on_miss`).
async fn dry_run(
    eng: &Arc<Engine>,
    credential: &Credential,
    workspace: &std::path::Path,
    root: &Root,
    key: &str,
    name: &str,
) -> Result<(Vec<FileResult>, Outputs), RunError> {
    let cfg = &eng.cfg;
    let remote = !matches!(credential, Credential::None);
    let mut res = FileResult::new(name, &cfg.sources.join(","), 0, eng.store.url(name));
    let would = |mut res: FileResult, what: String| {
        tracing::info!("would {what}");
        res.status = Status::Transferred;
        res.reason = Some("dry run".into());
        Ok((vec![res], vec![]))
    };
    if cfg.action == Action::CacheSave {
        let present: Vec<String> = cfg
            .sources
            .iter()
            .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string())
            .filter(|s| match root.probe(s) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("source `{s}` not cached: {e}");
                    false
                }
            })
            .collect();
        if present.is_empty() {
            tracing::warn!("nothing to cache: no `source` directory exists");
            res.status = Status::Skipped;
            res.reason = Some("nothing to cache".into());
            return Ok((vec![res], vec![]));
        }
        if remote {
            // The real run's container check: a missing one is exit 3 unless it would be created.
            match eng.with_request(eng.store.ensure_container(false)).await {
                Err(StorageError::NoContainer { .. }) if cfg.create_container => tracing::info!(
                    "dry run: the {} `{}` does not exist; the real run would create it",
                    cfg.container_word(),
                    cfg.container
                ),
                Err(e) => return Err(e.into()),
                Ok(()) => {}
            }
        }
        if remote && !cfg.cache.overwrite_explicit {
            if let Some(existing) = eng.with_request(eng.store.properties(name)).await? {
                tracing::info!("cache `{key}` exists: would not be saved again (set `overwrite: true` to replace it)");
                res.status = Status::Skipped;
                res.size = existing.size;
                res.reason = Some("exists".into());
                return Ok((vec![res], vec![]));
            }
        }
        let walked = tokio::task::block_in_place(|| {
            let plan = archive::ZstdPlan::for_budget(1, 1, eng.memory_total / 2);
            archive::write_archive(root, &present, cfg.include_hidden, 1, plan, std::io::sink())
        });
        return match walked {
            Ok((counts, _)) => would(
                res,
                format!(
                    "save {} into `{name}`: {} file(s), {} dir(s), {} link(s), {}",
                    present.join(", "),
                    counts.files,
                    counts.dirs,
                    counts.links,
                    human_bytes(counts.bytes)
                ),
            ),
            Err(e) => {
                tracing::error!("failed: cache `{key}` would not be saved: {e}");
                res.reason = Some(e);
                Ok((vec![res], vec![]))
            }
        };
    }
    if let Err(e) = tokio::task::block_in_place(|| extract::check_sources(workspace, &cfg.sources)) {
        tracing::error!("failed: {e}");
        res.reason = Some(e);
        return Ok((vec![res], vec![]));
    }
    if !remote {
        return would(
            res,
            format!("restore {} from `{name}` (dry run without credentials: not looked up)", cfg.sources.join(", ")),
        );
    }
    // The real run's search, without a download: `lookup_only`.
    lookup_cache(eng, root, key, name).await
}

async fn save_cache(
    eng: &Arc<Engine>,
    root: Root,
    key: &str,
    name: &str,
) -> Result<(Vec<FileResult>, Outputs), RunError> {
    let cfg = &eng.cfg;
    let local = cfg.sources.join(",");
    let mut res = FileResult::new(name, &local, 0, eng.store.url(name));
    let mut present = Vec::new();
    for s in &cfg.sources {
        let s = s.trim_start_matches("./").trim_end_matches('/').to_string();
        match root.probe(&s) {
            Ok(()) => present.push(s),
            Err(e) => tracing::warn!("source `{s}` not cached: {e}"),
        }
    }
    let outputs = vec![("cache_key", key.to_string())];
    if present.is_empty() {
        tracing::warn!("nothing to cache: no `source` directory exists");
        res.status = Status::Skipped;
        res.reason = Some("nothing to cache".into());
        return Ok((vec![res], outputs));
    }
    eng.store.ensure_container(cfg.create_container).await?;
    if !cfg.cache.overwrite_explicit {
        if let Some(existing) = eng.with_request(eng.store.properties(name)).await? {
            tracing::info!("cache `{key}` exists: not saved again (set `overwrite: true` to replace it)");
            res.status = Status::Skipped;
            res.size = existing.size;
            res.sha256 = existing.sha256_string();
            res.reason = Some("exists".into());
            return Ok((vec![res], outputs));
        }
    }
    // What the archive holds and who wrote it (docs/cache.md): a restore with another
    // `source` set or format is a miss, and a restore prints the writer.
    let mut metadata: Vec<(String, String)> = vec![
        ("cache_format".into(), crate::config::cache::FORMAT.into()),
        ("cache_sources".into(), crate::config::cache::sources_identity(&cfg.sources)),
    ];
    metadata.extend(cfg.cache.writer.iter().cloned());
    metadata.extend(
        cfg.metadata.iter().filter(|(k, _)| !metadata.iter().any(|(m, _)| m == k)).cloned().collect::<Vec<_>>(),
    );
    let mut props = UploadProps {
        content_type: "application/zstd".into(),
        metadata,
        access_tier: cfg.access_tier.clone(),
        if_none_match: !cfg.cache.overwrite_explicit,
        ..UploadProps::default()
    };
    eng.stop.arm();
    match save_stream(eng, root, present, name, &mut props).await {
        Ok((sha, size, counts)) => {
            tracing::info!(
                "cache `{key}` saved: {} file(s), {} dir(s), {} link(s), {} → {} compressed",
                counts.files,
                counts.dirs,
                counts.links,
                human_bytes(counts.bytes),
                human_bytes(size)
            );
            res.status = Status::Transferred;
            res.size = size;
            res.sha256 = Some(sha);
        }
        Err(SaveError::Exists) => {
            tracing::info!("cache `{key}` was saved meanwhile by another run: not saved again");
            res.status = Status::Skipped;
            res.reason = Some("exists".into());
        }
        Err(SaveError::Failed(e)) => {
            tracing::error!("failed: cache `{key}` not saved: {e}");
            res.reason = Some(e);
        }
        Err(SaveError::Service(e)) => {
            return Ok(soft_error(cfg, res, &format!("cache `{key}` not saved: {e}"), outputs))
        }
    }
    Ok((vec![res], outputs))
}

enum SaveError {
    Exists,
    /// The archive could not be made (a workspace error): the step fails.
    Failed(String),
    /// The service or the network failed (a cache error, see [`soft_error`]).
    Service(String),
}

/// Streams the archive of `sources` into `name`: a producer thread (tar + zstd into a
/// [`BlockSink`]) feeding the chunked Put Block path, then one commit.
async fn save_stream(
    eng: &Arc<Engine>,
    root: Root,
    sources: Vec<String>,
    name: &str,
    props: &mut UploadProps,
) -> Result<(String, u64, archive::Counts), SaveError> {
    let store = eng.store.clone();
    let present =
        eng.with_request(store.begin_chunked(name, 0, props)).await.map_err(|e| SaveError::Service(e.to_string()))?;
    let (tx, rx) = mpsc::channel(2);
    let (eng2, handle, level) = (eng.clone(), tokio::runtime::Handle::current(), eng.cfg.cache.compression_level);
    let include_hidden = eng.cfg.include_hidden;
    // The compressor gets at most half of `max_memory`, taken from the budget the blocks
    // share (at least one block is left to them).
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let plan = archive::ZstdPlan::for_budget(level, cores, eng.memory_total / 2);
    let block = eng.cfg.block_size.unwrap_or(crate::transfer::DEFAULT_BLOCK).min(eng.max_block());
    let reserve = plan.memory().min(eng.memory_total.saturating_sub(block));
    tracing::debug!("zstd level {level}: {plan:?}, about {} of max_memory", human_bytes(plan.memory()));
    let compressor = if reserve > 0 { Some(eng.memory_for(reserve).await) } else { None };
    let producer = tokio::task::spawn_blocking(move || {
        let _compressor = compressor;
        let sink = BlockSink::new(eng2, tx, handle);
        let (counts, sink) = archive::write_archive(&root, &sources, include_hidden, level, plan, sink)?;
        let (sha, len) = sink.finish().map_err(|e| format!("cannot write the archive: {e}"))?;
        Ok::<_, String>((sha, len, counts))
    });
    let sent = send_chunks(eng, name, &present, rx, 16).await.map_err(|e| e.to_string());
    let made = producer.await.map_err(|e| e.to_string()).and_then(|r| r);
    let (chunks, (sha, len, counts)) = match (sent, made) {
        (Ok((chunks, _)), Ok(made)) => (chunks, made),
        // The producer's error explains a cancelled upload; else the upload's.
        (_, Err(e)) => {
            eng.with_request(store.abandon(name)).await;
            return Err(SaveError::Failed(e));
        }
        (Err(e), Ok(_)) => {
            eng.with_request(store.abandon(name)).await;
            return Err(SaveError::Service(e));
        }
    };
    props.metadata.push(("sha256".into(), sha.clone()));
    match eng.with_request(store.commit(name, len, &chunks, props)).await {
        Ok(_) => Ok((sha, len, counts)),
        Err(e) if e.is_status(409) || e.is_status(412) => {
            // A retried conditional commit may have been ours.
            match eng.with_request(store.properties(name)).await {
                Ok(Some(r)) if r.has_sha256(&sha) => Ok((sha, len, counts)),
                _ => Err(SaveError::Exists),
            }
        }
        Err(e) => Err(SaveError::Service(e.to_string())),
    }
}

/// An archive found for a restore: the item, whether it is the exact key, where it lives.
struct Found {
    item: RemoteItem,
    exact: bool,
    place: Place,
}

impl Found {
    /// Says where the archive was found and who wrote it (`then` ends the line); returns
    /// its key and the outputs of a hit.
    fn announce(&self, target: &str, then: &str) -> (String, Outputs) {
        let key = key_of(&self.place.dir(target), &self.item.name);
        tracing::info!(
            "cache `{key}` found in {}{}, written by {}{then}",
            self.place.describe(),
            if self.exact { "" } else { " (a restore_keys match)" },
            writer_of(&self.item)
        );
        let outputs =
            vec![("cache_hit", self.exact.to_string()), ("cache_key", key.clone()), ("cache_matched_key", key.clone())];
        (key, outputs)
    }
}

/// Why an archive does not hold what this run caches (another `source` set, another
/// format), if it does not: such an archive is a miss. An archive without the metadata
/// (saved by an earlier version) is taken as it is.
fn identity_problem(cfg: &crate::config::Config, item: &RemoteItem) -> Option<String> {
    use crate::config::cache::{sources_identity, FORMAT};
    let shown = |v: &str| crate::escape::shown(v).into_owned();
    if let Some(f) = item.meta("cache_format").filter(|f| *f != FORMAT) {
        return Some(format!("it is in the format `{}`, this version reads `{FORMAT}`", shown(f)));
    }
    let mine = sources_identity(&cfg.sources);
    match item.meta("cache_sources") {
        Some(theirs) if theirs != mine => {
            Some(format!("it holds the `source` set `{}`, this run caches `{}`", shown(theirs), shown(&mine)))
        }
        _ => None,
    }
}

/// The archive to restore: the exact key, in each place the run reads ([`Place::read_order`]),
/// else the newest match of the first `restore_keys` prefix with any, again place by
/// place: a fallback never crosses into a lower tier than the run's own. An archive that
/// holds another `source` set or format is passed over with a line saying why.
///
/// Each restore key is rendered and checked by the rules of `cache_key`, and matched only
/// below `target/<tier>/` (whole path components: `target: caches/app` never finds
/// `caches/apple.tar.zst`). Every listed name passes the listing check
/// ([`Engine::list_checked`]); a listing that names anything the check refuses is not
/// restored from at all. A miss because the container itself is missing is said so (and
/// with `fail_on_miss` it is that error).
async fn find(eng: &Arc<Engine>, root: &Root, key: &str) -> Result<Option<Found>, RunError> {
    let cfg = &eng.cfg;
    let places = Place::read_order(cfg.trust.tier);
    for &place in places {
        let name = place.name(&cfg.target, key);
        eng.store.check_name(&name).map_err(|e| RunError::Other(format!("the cache blob name `{name}`: {e}")))?;
        if let Some(item) = eng.with_request(eng.store.properties(&name)).await? {
            match identity_problem(cfg, &item) {
                None => return Ok(Some(Found { item, exact: true, place })),
                Some(why) => tracing::info!("cache `{key}` in {} passed over: {why}", place.describe()),
            }
        }
    }
    'keys: for parts in &cfg.cache.restore_keys {
        let prefix =
            tokio::task::block_in_place(|| key::render(parts, root, cfg, "restore_keys")).map_err(RunError::from)?;
        key::check(&prefix, "restore_keys").map_err(RunError::Settings)?;
        for &place in places {
            let dir = place.dir(&cfg.target);
            let full = join_remote(&dir, &prefix);
            let (listed, refused) = match eng.with_request(eng.list_checked(&full)).await {
                Ok(l) => l,
                Err(e) if e.is_container_not_found() => break 'keys,
                Err(e) => return Err(e.into()),
            };
            if let Some(bad) = refused.first() {
                return Err(RunError::Other(format!(
                    "the listing for restore key `{prefix}` named `{}` ({}): refusing to restore from it",
                    bad.name,
                    bad.reason.as_deref().unwrap_or_default()
                )));
            }
            // The legacy layout shares its directory with the tiers: their archives are not its.
            let in_tier = |n: &str| {
                let rel = if dir.is_empty() { n } else { n.strip_prefix(&format!("{dir}/")).unwrap_or(n) };
                [Tier::Trusted, Tier::Untrusted].iter().any(|t| rel.starts_with(&format!("{}/", t.as_str())))
            };
            let mut matches: Vec<RemoteItem> = listed
                .into_iter()
                .filter(|i| i.name.starts_with(&full) && i.name.ends_with(SUFFIX))
                .filter(|i| place != Place::Legacy || !in_tier(&i.name))
                .collect();
            for m in matches.iter_mut().filter(|m| m.last_modified.is_none()) {
                if let Some(p) = eng.with_request(eng.store.properties(&m.name)).await? {
                    *m = p;
                }
            }
            matches.sort_by(|a, b| (a.last_modified, &a.name).cmp(&(b.last_modified, &b.name)));
            while let Some(mut newest) = matches.pop() {
                // A listing without the metadata (Azure Files lists none): ask once.
                if newest.extra.is_none() || newest.sha256.is_none() {
                    newest = eng.with_request(eng.store.properties(&newest.name)).await?.unwrap_or(newest);
                }
                if let Some(why) = identity_problem(cfg, &newest) {
                    tracing::info!("cache `{}` in {} passed over: {why}", key_of(&dir, &newest.name), place.describe());
                    continue;
                }
                return Ok(Some(Found { item: newest, exact: false, place }));
            }
        }
        tracing::info!("restore key `{prefix}`: no match");
    }
    // A miss: say so when it is because the container itself is missing.
    match eng.with_request(eng.store.ensure_container(false)).await {
        Err(e @ StorageError::NoContainer { .. }) if cfg.cache.fail_on_miss => return Err(e.into()),
        Err(StorageError::NoContainer { .. }) => tracing::warn!(
            "the {} `{}` does not exist: nothing to restore (a cache miss; check `container`, or save a cache first)",
            cfg.container_word(),
            cfg.container
        ),
        Err(e) => tracing::debug!("could not check the {}: {e}", cfg.container_word()),
        Ok(()) => {}
    }
    Ok(None)
}

/// Who wrote an archive, as its metadata says (`cache_event`, `cache_ref`, ...), for the
/// restore's line; values shown escaped.
fn writer_of(item: &RemoteItem) -> String {
    let parts: Vec<String> = ["cache_event", "cache_ref", "cache_commit", "cache_build", "cache_link"]
        .iter()
        .filter_map(|k| item.meta(k).map(|v| format!("{}={}", &k["cache_".len()..], crate::escape::shown(v))))
        .collect();
    if parts.is_empty() {
        "an unknown run (no writer metadata)".into()
    } else {
        parts.join(", ")
    }
}

/// The zstd window the archive's first frame declares (`None`: not a zstd frame, which
/// the restore then refuses on its own).
async fn peek_window(eng: &Arc<Engine>, item: &RemoteItem) -> Result<Option<u64>, String> {
    let len = item.size.min(18);
    if len == 0 {
        return Ok(None);
    }
    let head = std::sync::Mutex::new(Vec::new());
    let sink = |pos: u64, data: &[u8]| -> std::io::Result<()> {
        let mut h = head.lock().map_err(|_| std::io::Error::other("header buffer poisoned"))?;
        h.truncate(pos as usize);
        h.extend_from_slice(data);
        Ok(())
    };
    eng.with_request(eng.store.get_range(&item.name, item.etag.as_deref(), 0, len, &sink))
        .await
        .map_err(|e| format!("cannot read the archive's header: {e}"))?;
    let head = head.into_inner().map_err(|_| "header buffer poisoned".to_string())?;
    Ok(extract::frame_window(&head))
}

/// The key of a cache blob name (`<target>/<key>.tar.zst`).
fn key_of(target: &str, name: &str) -> String {
    let prefix = join_remote(target, "");
    let rest = if prefix.is_empty() { name } else { name.strip_prefix(&format!("{prefix}/")).unwrap_or(name) };
    rest.strip_suffix(SUFFIX).unwrap_or(rest).to_string()
}

async fn restore_cache(
    eng: &Arc<Engine>,
    workspace: &std::path::Path,
    root: &Root,
    key: &str,
    name: &str,
) -> Result<(Vec<FileResult>, Outputs), RunError> {
    let cfg = &eng.cfg;
    // Before anything is downloaded: a cached directory that cannot be replaced as a
    // whole is refused; staging directories of killed restores are removed.
    if let Err(e) = tokio::task::block_in_place(|| extract::check_sources(workspace, &cfg.sources)) {
        tracing::error!("failed: {e}");
        let mut res = FileResult::new(name, &cfg.sources.join(","), 0, eng.store.url(name));
        res.reason = Some(e);
        return Ok((vec![res], miss_outputs()));
    }
    tokio::task::block_in_place(|| extract::remove_stale_stages(workspace));
    let Some(found) = find(eng, root, key).await? else {
        return Ok(miss(eng, root, key, name));
    };
    let (restored_key, outputs) = found.announce(&cfg.target, "");
    let Found { item, exact, .. } = found;
    let mut res = FileResult::new(&item.name, &cfg.sources.join(","), item.size, eng.store.url(&item.name));
    let Some(want) = item.sha256_string() else {
        let why = "has no `sha256` metadata to verify it against: not restored (save it again with this plugin)";
        tracing::error!("failed: cache `{restored_key}` {why}");
        res.reason = Some(why.into());
        return Ok((vec![res], miss_outputs()));
    };
    eng.stop.arm();
    let c = &eng.progress.counters;
    c.files_total.store(1, std::sync::atomic::Ordering::Relaxed);
    c.bytes_total.store(item.size, std::sync::atomic::Ordering::Relaxed);
    // The decoder's window comes out of `max_memory`: read from the frame header first (a
    // window larger than `max_memory` is refused before the archive is downloaded).
    let window = match peek_window(eng, &item).await {
        Ok(w) => w,
        Err(e) => return Ok(soft_error(cfg, res, &format!("cache `{restored_key}` not restored: {e}"), outputs)),
    };
    if let Some(w) = window.filter(|w| *w > cfg.max_memory) {
        let e = extract::window_too_large(Some(w), cfg.max_memory);
        tracing::error!("failed: cache `{restored_key}` not restored: {e}");
        res.reason = Some(e);
        return Ok((vec![res], miss_outputs()));
    }
    // Two ranges of at least 64 KiB stay for the download.
    let reserved = window.unwrap_or(0).min(eng.memory_total.saturating_sub(128 << 10));
    let _window = if reserved > 0 { Some(eng.memory_for(reserved).await) } else { None };
    let (tx, rx) = mpsc::channel(1);
    let (ws, sources) = (workspace.to_path_buf(), cfg.sources.clone());
    let want2 = want.clone();
    let limits = extract::Limits { max_size: cfg.cache.max_restore_size, max_memory: cfg.max_memory };
    let extract =
        tokio::task::spawn_blocking(move || extract::restore(&ws, &sources, ChannelReader::new(rx), &want2, &limits));
    let download = stream::download_ordered(eng, &item, tx, reserved).await;
    let extracted = extract.await.map_err(|e| e.to_string()).and_then(|r| r);
    let outcome = match (download, extracted) {
        (Ok(()), Ok(done)) | (Err(StreamError::ReaderGone), Ok(done)) => Ok(done),
        (Err(StreamError::Failed(e)), _) => {
            let why = format!("cache `{restored_key}` not restored: download failed: {e}; nothing restored");
            return Ok(soft_error(cfg, res, &why, outputs));
        }
        (_, Err(e)) => Err(e),
    };
    match outcome {
        Ok(done) => {
            tracing::info!(
                "cache `{restored_key}` restored{}: {} entries, {} from {} compressed",
                if exact { "" } else { " (a restore_keys match)" },
                done.entries,
                human_bytes(done.bytes),
                human_bytes(item.size)
            );
            res.status = Status::Transferred;
            res.sha256 = Some(want);
            Ok((vec![res], outputs))
        }
        Err(e) => {
            tracing::error!("failed: cache `{restored_key}` not restored: {e}");
            res.reason = Some(e);
            Ok((vec![res], miss_outputs()))
        }
    }
}

/// A restore (or a lookup) that found nothing: a skipped result, or with `fail_on_miss`
/// a failed one.
fn miss(eng: &Arc<Engine>, root: &Root, key: &str, name: &str) -> (Vec<FileResult>, Outputs) {
    let cfg = &eng.cfg;
    let tried: Vec<String> = std::iter::once(key.to_string())
        .chain(
            cfg.cache
                .restore_keys
                .iter()
                .filter_map(|p| key::render(p, root, cfg, "restore_keys").ok().map(|k| format!("{k}*"))),
        )
        .collect();
    let mut res = FileResult::new(name, &cfg.sources.join(","), 0, eng.store.url(name));
    if cfg.cache.fail_on_miss {
        tracing::error!("cache miss: no archive for `{}` (fail_on_miss: true)", tried.join("`, `"));
        res.reason = Some("cache miss (fail_on_miss: true)".into());
    } else {
        tracing::info!("cache miss: no archive for `{}`; nothing restored", tried.join("`, `"));
        res.status = Status::Skipped;
        res.reason = Some("cache miss".into());
    }
    (vec![res], miss_outputs())
}

/// `lookup_only` (and a `dry_run` restore with credentials): finds the archive a restore
/// would take and sets the outputs; downloads nothing and leaves the workspace alone.
async fn lookup_cache(
    eng: &Arc<Engine>,
    root: &Root,
    key: &str,
    name: &str,
) -> Result<(Vec<FileResult>, Outputs), RunError> {
    let cfg = &eng.cfg;
    let why = if cfg.dry_run { "dry run" } else { "lookup only" };
    let Some(found) = find(eng, root, key).await? else {
        let (mut results, outputs) = miss(eng, root, key, name);
        // A dry run's miss is what the real run makes of it: a failure under `fail_on_miss`.
        if let Some(r) = results.first_mut().filter(|_| cfg.dry_run && !cfg.cache.fail_on_miss) {
            r.status = Status::Skipped;
            r.reason = Some("dry run: cache miss".into());
        }
        return Ok((results, outputs));
    };
    let (_, outputs) = found.announce(&cfg.target, &format!(": not downloaded ({why})"));
    let item = found.item;
    let mut res = FileResult::new(&item.name, &cfg.sources.join(","), item.size, eng.store.url(&item.name));
    res.status = Status::Skipped;
    res.reason = Some(why.into());
    res.sha256 = item.sha256_string();
    Ok((vec![res], outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_from_blob_names() {
        assert_eq!(key_of("", "cargo-abc.tar.zst"), "cargo-abc");
        assert_eq!(key_of("caches/", "caches/cargo-abc.tar.zst"), "cargo-abc");
        assert_eq!(key_of("/a/b", "a/b/k/x.tar.zst"), "k/x");
        let t = Place::Tier(Tier::Untrusted);
        assert_eq!(key_of(&t.dir("caches"), &t.name("caches", "cargo-abc")), "cargo-abc");
    }

    #[test]
    fn tiers_are_directories_and_read_order_never_goes_below_the_run() {
        assert_eq!(Place::Tier(Tier::Trusted).name("c/", "k"), "c/trusted/k.tar.zst");
        assert_eq!(Place::Tier(Tier::Untrusted).name("", "a/k"), "untrusted/a/k.tar.zst");
        assert_eq!(Place::Legacy.name("c", "k"), "c/k.tar.zst");
        assert_eq!(Place::read_order(Tier::Trusted), &[Place::Tier(Tier::Trusted)]);
        assert_eq!(
            Place::read_order(Tier::Untrusted),
            &[Place::Tier(Tier::Trusted), Place::Tier(Tier::Untrusted), Place::Legacy]
        );
    }
}
