//! The transfer engine: plan, then move every file under one shared budget.
//!
//! One [`Engine`] holds the two budgets every file draws from: request permits
//! (`concurrency`, shared by files and blocks alike) and memory (`max_memory`, taken
//! before a buffer is filled and given back when its request ends). `run` resolves
//! credentials, plans, prints the start line, runs the transfers with a progress
//! ticker, and returns per-file results and the summary; `main` turns that into an
//! exit code.
//!
//! A refusal that will recur for every file (bad credentials, a firewall, a missing
//! container, a redirect) trips the run's [`Stop`]: queued files are not started and are
//! reported as not attempted, and the run ends with one message saying what to check.
//! Files a blob could not hold in 50,000 blocks of the largest block this run may use
//! are refused at planning, before any request ([`Engine::check_block_counts`]).

pub mod cache;
pub mod checksum;
pub mod checksums;
pub mod compress;
pub mod delete;
pub mod dirfd;
pub mod download;
pub mod links;
pub mod listing;
pub mod localfs;
pub mod outputs;
pub mod plan;
pub mod progress;
pub mod report;
pub mod stream;
pub mod sync;
pub mod upload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthError, Credential};
use crate::config::{human_bytes, Action, Config, LogFormat};
use crate::http::{Http, Stop, StopReason};
use crate::storage::{RemoteItem, StorageError, Store};
use plan::{PlanError, RemoteSelector};
use progress::Progress;
use report::{FileResult, Report, Status, Summary};

/// Default block / range size: large enough for throughput, small enough that the
/// default memory budget keeps a dozen requests in flight.
pub const DEFAULT_BLOCK: u64 = 4 << 20;
/// Default download range. Ranges stream to disk, so their size costs no memory; fewer,
/// larger requests cost the service less: against Azurite 3.37, 1 GiB took ~3.6 s in 4 MiB
/// ranges and ~1.6 s in 8 MiB ones (docs/benchmarks.md); azcopy also reads 8 MiB at a time.
pub const DEFAULT_RANGE: u64 = 8 << 20;
/// Azure allows 50,000 blocks per blob.
pub use crate::storage::blob::MAX_BLOCKS;

/// Memory permits are counted in KiB so that budgets above 4 GiB fit the semaphore.
const MEM_UNIT: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Target(#[from] download::TargetError),
    #[error(transparent)]
    Glob(#[from] plan::GlobError),
    /// A setting whose value is only known to be wrong once rendered (a cache key): exit 2.
    #[error("{0}")]
    Settings(String),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    /// The exit code of a run that ended with this error: 2 for a setting found invalid
    /// only at run time, 3 (nothing could be transferred) for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Settings(_) => 2,
            _ => 3,
        }
    }
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub cfg: Arc<Config>,
    requests: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    pub memory_total: u64,
    pub progress: Arc<Progress>,
    /// Shared with the HTTP layer: set once every remaining file would fail alike.
    pub stop: Arc<Stop>,
    /// Download with `verify_checksums`: the SHA-256 each listed local path must have.
    pub expected_sums: std::sync::OnceLock<std::collections::BTreeMap<String, String>>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, cfg: Arc<Config>) -> Self {
        let memory_total = cfg.max_memory;
        crate::buffers::set_limit(memory_total);
        Engine {
            store,
            requests: Arc::new(Semaphore::new(cfg.concurrency)),
            memory: Arc::new(Semaphore::new((memory_total / MEM_UNIT) as usize)),
            memory_total,
            cfg,
            progress: Arc::new(Progress::new()),
            stop: Arc::default(),
            expected_sums: std::sync::OnceLock::new(),
        }
    }

    /// The same engine, sharing the HTTP layer's stop signal.
    pub fn with_stop(mut self, stop: Arc<Stop>) -> Self {
        self.stop = stop;
        self
    }

    /// Block size for a file: the setting (or 4 MiB), raised so the file fits in 50,000
    /// blocks, capped by what one request may carry and by the memory budget.
    pub fn block_size_for(&self, size: u64) -> u64 {
        block_size(self.cfg.block_size.unwrap_or(DEFAULT_BLOCK), size, self.max_block())
    }

    /// The largest block this run may use: what one request may carry, within the
    /// memory budget (a block is held whole while it is sent).
    pub fn max_block(&self) -> u64 {
        self.store.max_chunk().min(self.memory_total).max(1)
    }

    /// Refuses, before any request, files that need more chunks than the store allows
    /// at [`max_block`](Self::max_block) (a blob: 50,000 blocks), naming each file, its
    /// size and the setting that would allow it.
    pub fn check_block_counts<'a>(&self, files: impl IntoIterator<Item = (&'a str, u64)>) -> Result<(), RunError> {
        let Some(limit) = self.store.max_chunks() else { return Ok(()) };
        let refused: Vec<String> = files
            .into_iter()
            .filter_map(|(rel, size)| too_many_blocks(rel, size, limit, self.max_block(), self.store.max_chunk()))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(RunError::Other(format!(
            "{} file(s) cannot be uploaded as one blob: {}",
            refused.len(),
            refused.join("; ")
        )))
    }

    /// Range size for downloading: `block_size` when set, else [`DEFAULT_RANGE`]. Not
    /// capped by the memory budget, since a range streams to disk and is never held in
    /// memory.
    pub fn range_size(&self) -> u64 {
        self.cfg.block_size.unwrap_or(DEFAULT_RANGE).max(1)
    }

    /// Takes `bytes` from the memory budget (waits while it is spent).
    pub async fn memory_for(&self, bytes: u64) -> OwnedSemaphorePermit {
        let units = bytes.div_ceil(MEM_UNIT).clamp(1, self.memory_total / MEM_UNIT) as u32;
        self.memory.clone().acquire_many_owned(units).await.expect("memory semaphore is never closed")
    }

    /// Lists `prefix` and applies the one check of listed names
    /// ([`check_listed_name`](crate::storage::names::check_listed_name)) to every item
    /// before anything uses it: the names that pass, and a failed result (named, never
    /// requested) for each refused one. Every listing the engine reads (sync, download,
    /// cache lookup) comes through here.
    pub async fn list_checked(&self, prefix: &str) -> Result<(Vec<RemoteItem>, Vec<FileResult>), StorageError> {
        let mut listed = Vec::new();
        let refused = self.list_checked_each(prefix, &mut |it| listed.push(it)).await?;
        Ok((listed, refused))
    }

    /// [`Self::list_checked`] a page at a time: each item that passes goes to `keep` as its
    /// page arrives (a download holds them in its own compact form, [`listing::Listing`]);
    /// the refused ones are returned.
    pub async fn list_checked_each(
        &self,
        prefix: &str,
        keep: &mut (dyn FnMut(RemoteItem) + Send),
    ) -> Result<Vec<FileResult>, StorageError> {
        let mut refused = Vec::new();
        let mut page = |items: Vec<RemoteItem>| {
            for it in items {
                match crate::storage::names::check_listed_name(&it.name) {
                    Ok(()) => keep(it),
                    Err(e) => {
                        let shown = it.name.escape_debug().to_string();
                        tracing::error!("refused: the listed name `{shown}`: {e}; nothing is requested for it");
                        let mut r = FileResult::new(&shown, "", it.size, String::new());
                        r.reason = Some(format!("refused: the listed name {e}; nothing was requested for it"));
                        refused.push(r);
                    }
                }
            }
        };
        self.store.list_pages(prefix, &mut page).await?;
        Ok(refused)
    }

    /// Runs one storage call under a request permit.
    pub async fn with_request<T>(&self, f: impl Future<Output = T>) -> T {
        let _permit = self.requests.acquire().await.expect("request semaphore is never closed");
        f.await
    }

    /// The run's progress ticker (a bar on a terminal, log lines otherwise): it ticks
    /// until stopped or dropped, so a run leaving early with `?` does not leave it ticking.
    pub fn ticker(&self) -> progress::Ticker {
        let json = self.cfg.log_format == LogFormat::Json;
        self.progress.spawn_ticker(self.cfg.progress_interval, Progress::default_sink(json))
    }

    /// The one driver of a run's items (uploads, downloads, a sync's uploads, deletes):
    /// `work` runs for each `(slot, item)`, at most `concurrency` at once, each in its own
    /// task, and each result is recorded in `report` at its slot as it finishes.
    ///
    /// - A task that panics is that item's failure ([`task_failed`], named by `describe`:
    ///   remote name, local path, size); the other items go on (docs/design.md, "Panics").
    /// - Once the run's [`Stop`] has tripped, nothing new starts: each remaining item is
    ///   recorded as not attempted.
    ///
    /// The items are started from a task on the runtime, not from the thread that waits for
    /// the run: each spawn then lands in a worker's own queue instead of waking one, and each
    /// item's end wakes no other thread either (two context switches per file, measured on
    /// downloads). The report goes with that task and comes back with it.
    pub(crate) async fn drive<T, I, D, W, F>(self: &Arc<Self>, items: I, report: &mut Report, describe: D, work: W)
    where
        T: Send + 'static,
        I: IntoIterator<Item = (usize, T)>,
        I::IntoIter: Send + 'static,
        D: Fn(&T) -> (String, String, u64) + Send + Sync + 'static,
        W: Fn(Arc<Engine>, T) -> F + Send + Sync + 'static,
        F: Future<Output = FileResult> + Send + 'static,
    {
        let (eng, concurrency) = (self.clone(), self.cfg.concurrency.max(1));
        let (describe, work) = (Arc::new(describe), Arc::new(work));
        let items = items.into_iter();
        let mut owned = std::mem::take(report);
        let driver = tokio::spawn(async move {
            futures_util::stream::iter(items)
                .map(|(slot, item)| {
                    let (eng, describe, work) = (eng.clone(), describe.clone(), work.clone());
                    async move {
                        let (name, local, size) = describe(&item);
                        if eng.stop.is_stopped() {
                            return (slot, not_attempted(&eng, &name, &local, size));
                        }
                        let task = tokio::spawn(async move { work(eng, item).await });
                        (slot, task.await.unwrap_or_else(|e| task_failed(&name, &local, size, e)))
                    }
                })
                .buffer_unordered(concurrency)
                .for_each(|(slot, r)| {
                    owned.record(slot, r);
                    std::future::ready(())
                })
                .await;
            owned
        });
        // The driver only records results (each item's panic is caught above).
        *report = driver.await.expect("the driver records results and does not panic");
    }
}

/// The block size for a file of `size` bytes: `base`, raised so the file fits in
/// [`MAX_BLOCKS`], capped by `max_block`. When the cap binds, the file needs more than
/// [`MAX_BLOCKS`] blocks: [`too_many_blocks`] refuses it at planning.
pub fn block_size(base: u64, size: u64, max_block: u64) -> u64 {
    base.max(size.div_ceil(MAX_BLOCKS)).min(max_block).max(1)
}

/// Why a file of `size` bytes cannot be stored in `limit` chunks of at most `max_block`
/// bytes (`max_chunk`: what the service accepts in one request), or `None` when it can.
pub fn too_many_blocks(rel: &str, size: u64, limit: u64, max_block: u64, max_chunk: u64) -> Option<String> {
    let needed = size.div_ceil(limit.max(1));
    if needed <= max_block {
        return None;
    }
    let what = format!("`{rel}` ({}, {size} bytes)", human_bytes(size));
    if needed > max_chunk {
        return Some(format!(
            "{what} is larger than Azure allows for a block blob ({} blocks of at most {})",
            thousands(limit),
            human_bytes(max_chunk)
        ));
    }
    let mib = needed.div_ceil(1 << 20);
    Some(format!(
        "{what} needs more than {} blocks of {}, the largest this run may use (`max_memory`, PLUGIN_MAX_MEMORY, is {}); set `max_memory` to at least {mib}MiB (Azure accepts blocks up to {})",
        thousands(limit),
        human_bytes(max_block),
        human_bytes(max_block),
        human_bytes(max_chunk)
    ))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Everything a run produced.
pub struct Outcome {
    /// The files that failed (the summary table lists them); the other results were
    /// counted into `summary` and, with `manifest`, written to it.
    pub failures: Vec<FileResult>,
    pub summary: Summary,
    /// The run stopped early: what was refused, what to check, how many files were left.
    pub stopped: Option<String>,
    /// The manifest or the outputs file (`DRONE_OUTPUT` / `GITHUB_OUTPUT`) could not be
    /// written (the transfers themselves are as reported), or a sync deleted nothing
    /// because something failed or `max_delete` refused (see [`sync`]).
    pub report_errors: Vec<String>,
}

impl Outcome {
    pub fn failed(&self) -> u64 {
        self.summary.files_failed
    }

    /// The exit code: 0 all done; 1 some file failed or was not attempted, or the manifest
    /// or the outputs could not be written; 3 the run stopped early with nothing transferred.
    pub fn exit_code(&self) -> u8 {
        if self.stopped.is_some() && self.summary.files_transferred == 0 {
            3
        } else if self.failed() > 0 || self.summary.files_not_attempted > 0 || !self.report_errors.is_empty() {
            1
        } else {
            0
        }
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Upload => "upload",
        Action::Download => "download",
        Action::Sync => "sync",
        Action::Delete => "delete",
        Action::CacheSave => "cache save",
        Action::CacheRestore => "cache restore",
    }
}

pub(crate) fn start_line(cfg: &Config, cred: &Credential) {
    let what = match cfg.action {
        Action::Upload | Action::Sync => {
            format!("{} → {}", cfg.sources.join(", "), if cfg.target.is_empty() { "/" } else { &cfg.target })
        }
        Action::Download => {
            format!("{} → {}", cfg.sources.join(", "), if cfg.target.is_empty() { "." } else { &cfg.target })
        }
        Action::Delete => match cfg.older_than {
            Some(age) => format!("{} (older than {})", cfg.sources.join(", "), delete::show_age(age)),
            None => cfg.sources.join(", "),
        },
        Action::CacheSave | Action::CacheRestore => {
            format!("{} ↔ {}", cfg.sources.join(", "), if cfg.target.is_empty() { "/" } else { &cfg.target })
        }
    };
    tracing::info!(
        "plugin-azure-storage {}: {}{} {} account `{}` {} `{}` ({}), auth: {}{}, trust: {} ({})",
        env!("CARGO_PKG_VERSION"),
        if cfg.dry_run { "dry run: " } else { "" },
        action_word(cfg.action),
        what,
        cfg.account,
        cfg.container_word(),
        cfg.container,
        cfg.endpoint,
        cred.describe(),
        cfg.auth.precedence.as_ref().map(|p| format!(" ({p})")).unwrap_or_default(),
        cfg.trust.tier.as_str(),
        cfg.trust.why
    );
    if let Some(event) = &cfg.trust.forced_over {
        tracing::warn!(
            "`trust: trusted` is forced on a pull-request event ({event}): this run counts as trusted although it runs the pull request's code (docs/trust.md)"
        );
    }
}

/// What the engine is handed: built in one place (`crate::app`), so the engine never
/// matches on the service or builds a client.
pub struct Wiring {
    pub credential: Credential,
    pub http: Arc<Http>,
    pub store: Arc<dyn Store>,
}

/// Runs the transfer the settings ask for, against the store in `wiring`; `started` is
/// when the run began (the summary's elapsed time).
pub async fn run(cfg: Arc<Config>, wiring: Wiring, started: Instant) -> Result<Outcome, RunError> {
    let Wiring { credential, http, store } = wiring;
    let engine = Arc::new(Engine::new(store.clone(), cfg.clone()).with_stop(http.stop.clone()));

    // A sync or delete whose deletes were refused (a failed upload or listing, `max_delete`): why.
    let mut refused = None;
    let mut cache_outputs = Vec::new();
    let mut report = Report::new(cfg.manifest.is_some());
    if cfg.artifacts.checksums_file.is_some() && !cfg.dry_run {
        report.collect_sums(&cfg.target);
    }
    match cfg.action {
        Action::Upload => run_upload(&engine, &credential, &mut report).await?,
        Action::Download => run_download(&engine, &credential, &mut report).await?,
        Action::Sync => refused = sync::run_sync(&engine, &credential, &mut report).await?,
        Action::Delete => refused = delete::run_delete(&engine, &credential, &mut report).await?,
        Action::CacheSave | Action::CacheRestore => {
            cache_outputs = crate::transfer::cache::run(&engine, &credential, &mut report).await?;
        }
    }
    let stopped = http.stop.reason().map(|r| {
        let left = report.tally().files(Status::NotAttempted) as usize;
        stop_message(&cfg, &credential, store.info().roles, r, left)
    });
    let summary = Summary::from_tally(
        action_word(cfg.action),
        report.tally(),
        started.elapsed(),
        http.stats.requests.load(Ordering::Relaxed),
        http.stats.retries.load(Ordering::Relaxed),
        cfg.dry_run,
    );
    let mut report_errors = Vec::new();
    let links = report.take_links().filter(|l| l.made() > 0);
    // With several links, the manifest is also uploaded: its link is the `link` output.
    let mut manifest_doc = None;
    if let Some(path) = &cfg.manifest {
        let keep = links.as_ref().is_some_and(|l| l.manifest_upload().is_some());
        match report::write_manifest(
            path,
            summary.action,
            cfg.service.as_str(),
            &cfg.account,
            &cfg.container,
            &summary,
            &mut report,
            keep,
        ) {
            Ok(doc) => {
                tracing::info!("manifest written to {}", path.display());
                manifest_doc = doc;
            }
            Err(e) => report_errors.push(format!(
                "cannot write the manifest `{}` (`manifest`, PLUGIN_MANIFEST): {e}; the transfers above are as listed",
                path.display()
            )),
        }
    }
    if let (Some(path), Some(sums)) = (&cfg.artifacts.checksums_file, report.take_sums()) {
        report_errors.extend(write_checksums(path, sums));
    }
    let mut pairs = outputs::pairs(&cfg, &summary, report.single_url(), &*store);
    pairs.extend(cache_outputs);
    if let Some(links) = links {
        let link = match (&cfg.manifest, manifest_doc) {
            (Some(path), Some(doc)) => links::upload_manifest(&engine, &links, path, doc).await.unwrap_or_else(|e| {
                report_errors.push(e);
                None
            }),
            _ => links.single().map(str::to_string),
        };
        pairs.push(("link", link.unwrap_or_default()));
        if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
            if let Err(e) = append(&path, &links.step_summary()) {
                report_errors.push(format!("cannot append the links table to GITHUB_STEP_SUMMARY: {e}"));
            }
        }
    }
    if let Err(e) = outputs::write(&pairs) {
        report_errors.push(e.to_string());
    }
    report_errors.extend(refused);
    Ok(Outcome { failures: report.into_failures(), summary, stopped, report_errors })
}

/// Writes `checksums_file` (atomically, like the manifest); the errors to report: the
/// file could not be written, or stored files whose SHA-256 is unknown are not in it.
fn write_checksums(path: &std::path::Path, sums: checksums::Sums) -> Vec<String> {
    let (text, unknown) = sums.render();
    let mut errors = Vec::new();
    match report::write_atomically(path, |out| std::io::Write::write_all(out, text.as_bytes())) {
        Ok(()) => tracing::info!("checksums written to {}", path.display()),
        Err(e) => errors.push(format!(
            "cannot write the checksums file `{}` (`checksums_file`, PLUGIN_CHECKSUMS_FILE): {e}; the transfers above are as listed",
            path.display()
        )),
    }
    for name in unknown {
        errors.push(format!(
            "`{}` is not in the checksums file `{}`: it was skipped over a stored copy without a `sha256` to list",
            crate::escape::shown(&name),
            path.display()
        ));
    }
    errors
}

/// The one message of a run that stopped early: what was refused, by which auth mode,
/// what to check, and how many files were left.
fn stop_message(cfg: &Config, cred: &Credential, role: &str, r: &StopReason, not_attempted: usize) -> String {
    let env = crate::settings::env_name;
    let network = "the account refuses this runner: its firewall or private endpoint does not allow the runner's IP, or a SAS is limited to other IPs or protocols (`sip`, `spr`)";
    let check = match (r.status, r.code.as_deref()) {
        (300..=399, _) => format!(
            "Azure Storage never redirects: something between this runner and Azure answered (a proxy, a captive portal); check `endpoint` ({}, now {}) and the runner's network and proxy settings (HTTPS_PROXY)",
            env("endpoint"),
            cfg.endpoint
        ),
        (200..=299, _) => format!(
            "the endpoint answered like no Azure Storage service does (no x-ms-request-id): a captive portal, a proxy or another server is in the way; check `endpoint` ({}, now {}) and the runner's network and proxy settings (HTTPS_PROXY)",
            env("endpoint"),
            cfg.endpoint
        ),
        (404, _) => format!(
            "the {} `{}` does not exist (any more): check `{}` ({}), or set `create_container: true`",
            cfg.container_word(),
            cfg.container,
            cfg.container_word(),
            env(cfg.container_word())
        ),
        (_, Some(crate::http::stop::TOKEN_REFRESH_FAILED)) => format!(
            "the access token could not be renewed mid-run, so no further request could be authorized: the error names the token source and its answer; check that it still issues tokens (Entra ID's federated credential and `client_id` ({}), the token file's rotation, the Actions token's lifetime, the managed identity), or, with `access_token`, pass one that outlives the transfer",
            env("client_id")
        ),
        (403, Some("AuthorizationSourceIPMismatch" | "AuthorizationProtocolMismatch")) => network.to_string(),
        (403, Some("KeyBasedAuthenticationNotPermitted")) => {
            "the account does not allow Shared Key or SAS: use a federated token or a managed identity (`auth`, docs/auth.md)".to_string()
        }
        _ => match cred {
            Credential::SharedKey(_) => format!(
                "check that `account_key` ({}) — or the AccountKey in `connection_string` ({}) — is a current key of account `{}` (keys can be rotated: Access keys in the portal)",
                env("account_key"),
                env("connection_string"),
                cfg.account
            ),
            Credential::Sas(_) => format!(
                "check that `sas_token` ({}) is for account `{}`, has not expired (`se`), is already valid (`st`), and grants what this run needs (upload: `c`,`w`; download: `r`,`l`; sync: `c`,`w`,`l`,`d`)",
                env("sas_token"),
                cfg.account
            ),
            Credential::Bearer(_) => format!(
                "a fresh token was refused too: check that the identity has a data role on account `{}` — {role} — and that `tenant_id` / `client_id` name the identity you meant",
                cfg.account
            ),
            Credential::None => "no credential was given".to_string(),
        },
    };
    // Azure says AuthorizationFailure for a firewall; Azurite for a wrong signature too.
    let check =
        if r.code.as_deref() == Some("AuthorizationFailure") { format!("{check}; or {network}") } else { check };
    let check = match check.chars().next() {
        Some(c) => format!("{}{}", c.to_uppercase(), &check[c.len_utf8()..]),
        None => check,
    };
    format!(
        "stopped early on a refusal that would recur for every file (auth: {}): {}. {check}. {not_attempted} file(s) not attempted.",
        cred.describe(),
        r.error
    )
}

/// The result of a file whose task panicked: that file failed (an internal error, named),
/// the others go on, and the summary, manifest and outputs are still written (exit 1).
pub(crate) fn task_failed(name: &str, local: &str, size: u64, e: tokio::task::JoinError) -> FileResult {
    let mut r = FileResult::new(name, local, size, String::new());
    r.reason = Some(format!("internal error (please report it): {e}"));
    r
}

/// The result of a queued file never started because the run had stopped.
pub(crate) fn not_attempted(eng: &Engine, name: &str, local: &str, size: u64) -> FileResult {
    let mut r = FileResult::new(name, local, size, eng.store.url(name));
    r.status = Status::NotAttempted;
    r
}

/// Plans an upload (or a sync's uploads): the plan and the planned bytes; the files
/// skipped or refused at planning are recorded in `report`.
fn plan_for_upload(engine: &Engine, report: &mut Report) -> Result<(plan::UploadPlan, u64), RunError> {
    let cfg = &engine.cfg;
    let root =
        std::env::current_dir().map_err(|e| RunError::Other(format!("cannot read the working directory: {e}")))?;
    let plan = tokio::task::block_in_place(|| plan::plan_upload(cfg, &*engine.store, &root))?;
    for s in &plan.unmatched {
        tracing::warn!("source `{s}` matched no file");
    }
    for s in &plan.skipped {
        tracing::warn!("skipped {}: {}", s.rel, s.reason);
    }
    if let Some(line) = plan.hidden.line() {
        tracing::info!("{line}");
    }
    let total = plan.files.total_bytes();
    tracing::info!("planned {} file(s), {}", plan.files.len(), human_bytes(total));
    engine.check_block_counts(plan.files.sizes())?;
    for s in &plan.skipped {
        let mut r = FileResult::new("", &s.rel, 0, String::new());
        r.status = Status::Skipped;
        r.reason = Some(s.reason.clone());
        report.push(r);
    }
    // Refused at planning (a name that cannot be stored as is): failed files.
    for s in &plan.refused {
        tracing::error!("failed: {}: {}", s.rel, s.reason);
        let mut r = FileResult::new("", &s.rel, 0, String::new());
        r.reason = Some(s.reason.clone());
        report.push(r);
    }
    Ok((plan, total))
}

/// The result of a planned upload in a dry run.
pub(crate) fn would_upload(eng: &Engine, it: &plan::UploadItem) -> FileResult {
    tracing::info!("would upload {} → {} ({})", it.rel, it.name, human_bytes(it.size));
    let mut r = FileResult::new(&it.name, &it.rel, it.size, eng.store.url(&it.name));
    r.status = Status::Transferred;
    r.reason = Some("dry run".into());
    r
}

/// Appends `text` to the file at `path` (the Actions step summary).
fn append(path: &std::ffi::OsStr, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).create(true).open(path)?.write_all(text.as_bytes())
}

/// Runs an upload.
async fn run_upload(engine: &Arc<Engine>, credential: &Credential, report: &mut Report) -> Result<(), RunError> {
    let cfg = &engine.cfg;
    let (plan, total) = plan_for_upload(engine, report)?;
    if cfg.dry_run {
        for it in plan.files.iter() {
            report.push(would_upload(engine, &it));
        }
        return Ok(());
    }
    if matches!(credential, Credential::None) {
        return Err(AuthError::Missing("no credentials".into()).into());
    }
    // Before any write: a link that cannot be signed fails the run with nothing uploaded.
    if let Some(links) = links::prepare(engine, credential).await? {
        report.attach_links(links);
    }
    engine.store.ensure_container(cfg.create_container).await?;
    engine.stop.arm();
    let c = &engine.progress.counters;
    c.files_total.store(plan.files.len() as u64, Ordering::Relaxed);
    c.bytes_total.store(total, Ordering::Relaxed);
    let ticker = engine.ticker();
    let first = report.reserve(plan.files.len());
    let items = plan.files.into_items().enumerate().map(move |(i, item)| (first + i, item));
    let describe = |it: &plan::UploadItem| (it.name.clone(), it.rel.clone(), it.size);
    // A stored file's link is attached where it is recorded (Report::record).
    engine.drive(items, report, describe, upload::upload_one).await;
    ticker.stop();
    Ok(())
}

/// Lists what the `source` selectors name: one listing per distinct prefix (a prefix
/// covered by a shorter one is not listed again), filtered by the selectors; sorted by
/// name, each name once (the last listed), held once (no map keyed by a copy of it).
/// Lists what `source` selects; names the listing check refuses are recorded in `report`.
pub(crate) async fn list_selected(engine: &Arc<Engine>, report: &mut Report) -> Result<Vec<RemoteItem>, RunError> {
    let mut listed: Vec<RemoteItem> = Vec::new();
    list_selected_each(engine, report, &mut |it| listed.push(it)).await?;
    // Stable: of two equal names the later listed follows, and is the one kept.
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    listed.dedup_by(|later, earlier| {
        let same = later.name == earlier.name;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    listed.shrink_to_fit();
    Ok(listed)
}

/// What `source` selects, each item handed to `keep` as its listing page arrives (in
/// listing order, not deduplicated: see [`list_selected`] and [`listing::Listing`]); names
/// the listing check refuses are recorded in `report`.
pub(crate) async fn list_selected_each(
    engine: &Arc<Engine>,
    report: &mut Report,
    keep: &mut (dyn FnMut(RemoteItem) + Send),
) -> Result<(), RunError> {
    let cfg = &engine.cfg;
    let selectors: Vec<RemoteSelector> =
        cfg.sources.iter().map(|s| RemoteSelector::new(s)).collect::<Result<_, _>>()?;
    let mut prefixes: Vec<String> = selectors.iter().map(|s| s.prefix.clone()).collect();
    prefixes.sort();
    prefixes.dedup();
    let mut covered: Vec<String> = Vec::new();
    for p in prefixes {
        if covered.iter().any(|c| p.starts_with(c.as_str())) {
            continue;
        }
        let mut selected = |it: RemoteItem| {
            if selectors.iter().any(|s| s.matches(&it.name)) {
                keep(it)
            }
        };
        match engine.list_checked_each(&p, &mut selected).await {
            Ok(refused) => {
                for r in refused.into_iter().filter(|r| selectors.iter().any(|s| s.matches(&r.name))) {
                    report.push(r);
                }
            }
            Err(e) if e.is_container_not_found() => {
                return Err(StorageError::NoContainer {
                    what: cfg.container_word(),
                    name: cfg.container.clone(),
                    hint: "",
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        covered.push(p);
    }
    Ok(())
}

async fn run_download(engine: &Arc<Engine>, credential: &Credential, report: &mut Report) -> Result<(), RunError> {
    let cfg = &engine.cfg;
    let target = if cfg.target.is_empty() { PathBuf::from(".") } else { PathBuf::from(&cfg.target) };
    if let Ok(m) = std::fs::metadata(&target) {
        if !m.is_dir() {
            return Err(PlanError::TargetNotDir(cfg.target.clone()).into());
        }
    }
    if let Some(path) = &cfg.artifacts.verify_checksums {
        let sums = checksums::load(path).map_err(|e| RunError::Settings(e.to_string()))?;
        tracing::info!("verifying against {} ({} name(s))", path.display(), sums.len());
        let _ = engine.expected_sums.set(sums);
    }
    if matches!(credential, Credential::None) {
        tracing::info!(
            "dry run without credentials: would list {} in {} `{}` and download into {}",
            cfg.sources.join(", "),
            cfg.container_word(),
            cfg.container,
            target.display()
        );
        return Ok(());
    }
    let mut listed = listing::Listing::new();
    let mut failed = None;
    list_selected_each(engine, report, &mut |it| {
        if failed.is_none() {
            failed = listed.push(it).err();
        }
    })
    .await?;
    if let Some(e) = failed.or_else(|| listed.finish().err()) {
        return Err(RunError::Other(e));
    }
    if listed.is_empty() && !cfg.allow_empty {
        return Err(PlanError::Empty(format!(
            " in {} `{}` (looked for {})",
            cfg.container_word(),
            cfg.container,
            cfg.sources.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    let plan = plan::plan_download(cfg, listed)?;
    // Listed sizes are outside data: their sum saturates rather than overflowing.
    let total = plan.total_size();
    tracing::info!("planned {} file(s), {}", plan.len(), human_bytes(total));
    for (name, why) in &plan.refused {
        tracing::error!("refused: {}: {why}", name.escape_debug());
        let mut r = FileResult::new(name, "", 0, engine.store.url(name));
        r.reason = Some(why.clone());
        report.push(r);
    }
    let workspace =
        std::env::current_dir().map_err(|e| RunError::Other(format!("cannot read the working directory: {e}")))?;
    if let Some(expected) = engine.expected_sums.get() {
        // Every name the checksums file lists must be downloaded: one the selection lacks fails.
        let planned: std::collections::HashSet<&str> = plan.rels().collect();
        for name in expected.keys().filter(|n| !planned.contains(n.as_str())) {
            let why = "listed in `verify_checksums` but not in the selection (not stored, or not selected by `source` / `exclude`)";
            tracing::error!("failed: {}: {why}", crate::escape::shown(name));
            let mut r = FileResult::new("", &target.join(name).to_string_lossy(), 0, String::new());
            r.reason = Some(why.into());
            report.push(r);
        }
    }
    if cfg.dry_run {
        // The real run's refusal of the target (a link inside the workspace), nothing created.
        download::Target::check_in(&workspace, &target)?;
        for (name, rel, size) in plan.entries() {
            let local = target.join(rel);
            tracing::info!("would download {} → {} ({})", name, local.display(), human_bytes(size));
            let mut r = FileResult::new(name, &local.to_string_lossy(), size, engine.store.url(name));
            r.status = Status::Transferred;
            r.reason = Some("dry run".into());
            report.push(r);
        }
        return Ok(());
    }
    let target = Arc::new(download::Target::open_in(&workspace, target)?);
    let c = &engine.progress.counters;
    c.files_total.store(plan.len() as u64, Ordering::Relaxed);
    c.bytes_total.store(total, Ordering::Relaxed);
    let ticker = engine.ticker();
    engine.stop.arm();
    let first = report.reserve(plan.len());
    let items = plan.into_items().enumerate().map(move |(i, item)| (first + i, item));
    let at = target.clone();
    let describe = move |it: &plan::DownloadItem| {
        let local = at.path.join(it.rel()).to_string_lossy().into_owned();
        (it.remote.name.clone(), local, it.remote.size)
    };
    engine.drive(items, report, describe, move |eng, item| download::download_one(eng, item, target.clone())).await;
    ticker.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const BLOB_MAX_CHUNK: u64 = 4000 * MIB;

    /// Blocks a file is cut into at `block` bytes.
    fn count(size: u64, block: u64) -> u64 {
        size.div_ceil(block)
    }

    #[test]
    fn a_setting_found_invalid_at_run_time_exits_2_and_every_other_run_error_3() {
        assert_eq!(RunError::Settings("`cache_key` renders to `a//b`".into()).exit_code(), 2);
        assert_eq!(RunError::Other("the listing of `t/` failed".into()).exit_code(), 3);
        let listing = StorageError::Protocol { op: "List Blobs", detail: "x".into() };
        assert_eq!(RunError::from(listing).exit_code(), 3);
    }

    #[test]
    fn a_file_that_fits_in_50000_blocks_gets_a_block_size_that_does() {
        let max_block = 32 * MIB; // the default `max_memory`
        for size in [0, 1, 4 * MIB, 195 * (1 << 30), 50_000 * 4 * MIB + 1, 50_000 * max_block - 1, 50_000 * max_block] {
            assert_eq!(too_many_blocks("f", size, MAX_BLOCKS, max_block, BLOB_MAX_CHUNK), None, "{size}");
            let b = block_size(DEFAULT_BLOCK, size, max_block);
            assert!(b <= max_block && b >= DEFAULT_BLOCK.min(max_block), "{size}: {b}");
            assert!(count(size, b) <= MAX_BLOCKS, "{size}: {} blocks of {b}", count(size, b));
        }
        // Raised only as far as needed: 50,000 × 4 MiB + 1 byte takes 4 MiB + 1 byte blocks.
        assert_eq!(block_size(DEFAULT_BLOCK, 50_000 * 4 * MIB + 1, max_block), 4 * MIB + 1);
    }

    #[test]
    fn one_byte_past_50000_blocks_of_the_largest_block_is_refused_before_sending() {
        let max_block = 32 * MIB;
        let size = 50_000 * max_block + 1;
        // Without the check the capped block size would need 50,001 blocks.
        assert_eq!(count(size, block_size(DEFAULT_BLOCK, size, max_block)), 50_001);
        let why = too_many_blocks("big.img", size, MAX_BLOCKS, max_block, BLOB_MAX_CHUNK).unwrap();
        assert!(
            why.starts_with(&format!("`big.img` (1.5 TiB, {size} bytes) needs more than 50,000 blocks of 32.0 MiB")),
            "{why}"
        );
        assert!(why.contains("`max_memory`, PLUGIN_MAX_MEMORY, is 32.0 MiB"), "{why}");
        assert!(why.contains("set `max_memory` to at least 33MiB"), "{why}");
        // With that much memory it fits.
        assert_eq!(too_many_blocks("big.img", size, MAX_BLOCKS, 33 * MIB, BLOB_MAX_CHUNK), None);
        assert!(count(size, block_size(DEFAULT_BLOCK, size, 33 * MIB)) <= MAX_BLOCKS);
    }

    #[test]
    fn a_file_larger_than_any_blob_is_refused_without_suggesting_memory() {
        let size = 50_000 * BLOB_MAX_CHUNK + 1;
        let why = too_many_blocks("huge", size, MAX_BLOCKS, BLOB_MAX_CHUNK, BLOB_MAX_CHUNK).unwrap();
        assert!(why.contains("larger than Azure allows for a block blob (50,000 blocks of at most 3.9 GiB)"), "{why}");
        assert!(!why.contains("max_memory"), "{why}");
    }

    /// A store the driver test never sends a request to: only its URLs are used.
    struct NoRequests;

    #[async_trait::async_trait]
    impl Store for NoRequests {
        fn url(&self, name: &str) -> String {
            format!("https://acct.blob.core.windows.net/c/{name}")
        }
        fn max_chunk(&self) -> u64 {
            DEFAULT_BLOCK
        }
        fn info(&self) -> crate::storage::StoreInfo {
            crate::storage::StoreInfo { label: "test", roles: "none", sas: crate::storage::sas::Resource::Blob }
        }
        async fn ensure_container(&self, _: bool) -> crate::storage::Result<()> {
            unreachable!()
        }
        async fn properties(&self, _: &str) -> crate::storage::Result<Option<RemoteItem>> {
            unreachable!()
        }
        async fn list_pages(&self, _: &str, _: &mut (dyn FnMut(Vec<RemoteItem>) + Send)) -> crate::storage::Result<()> {
            unreachable!()
        }
        async fn get_range(
            &self,
            _: &str,
            _: Option<&str>,
            _: u64,
            _: u64,
            _: crate::http::BodySink<'_>,
        ) -> crate::storage::Result<u64> {
            unreachable!()
        }
        async fn put_whole(
            &self,
            _: &str,
            _: bytes::Bytes,
            _: crate::storage::BodySum,
            _: &crate::storage::UploadProps,
        ) -> crate::storage::Result<crate::storage::Committed> {
            unreachable!()
        }
        async fn begin_chunked(
            &self,
            _: &str,
            _: u64,
            _: &crate::storage::UploadProps,
        ) -> crate::storage::Result<std::collections::HashSet<String>> {
            unreachable!()
        }
        fn chunk_key(&self, _: &crate::storage::Chunk) -> String {
            unreachable!()
        }
        async fn put_chunk(&self, _: &str, _: crate::storage::Chunk, _: bytes::Bytes) -> crate::storage::Result<()> {
            unreachable!()
        }
        async fn commit(
            &self,
            _: &str,
            _: u64,
            _: &[crate::storage::Chunk],
            _: &crate::storage::UploadProps,
        ) -> crate::storage::Result<crate::storage::Committed> {
            unreachable!()
        }
        async fn delete(&self, _: &RemoteItem) -> crate::storage::Result<()> {
            unreachable!()
        }
    }

    fn engine(concurrency: &str) -> Arc<Engine> {
        let raw = crate::config::RawSettings::from_map(
            [
                ("PLUGIN_ACCOUNT_NAME", "acct"),
                ("PLUGIN_ACCOUNT_KEY", "a2V5"),
                ("PLUGIN_CONTAINER", "dist"),
                ("PLUGIN_SOURCE", "dist"),
                ("PLUGIN_CONCURRENCY", concurrency),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let cfg = Arc::new(Config::from_raw(&raw).unwrap());
        Arc::new(Engine::new(Arc::new(NoRequests), cfg))
    }

    /// One item panics, the next one trips the stop: the panic is that file's failure
    /// (named, the run goes on), and nothing queued after the stop is started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_driver_records_a_panic_as_that_files_failure_and_starts_nothing_after_a_stop() {
        let eng = engine("1");
        eng.stop.arm();
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut report = Report::new(false);
        let first = report.reserve(5);
        let items = ["ok", "panics", "stops", "queued-1", "queued-2"].map(String::from).into_iter().enumerate();
        let items: Vec<(usize, String)> = items.map(|(i, n)| (first + i, n)).collect();
        let seen = started.clone();
        eng.drive(
            items,
            &mut report,
            |n: &String| (n.clone(), format!("dist/{n}"), 7),
            move |eng, n| {
                seen.lock().unwrap().push(n.clone());
                async move {
                    match n.as_str() {
                        "panics" => panic!("a bug in the transfer of {n}"),
                        "stops" => {
                            eng.stop.trip(crate::http::StopReason { status: 403, code: None, error: "refused".into() });
                            let mut r = FileResult::new(&n, "", 7, String::new());
                            r.reason = Some("refused".into());
                            r
                        }
                        _ => {
                            let mut r = FileResult::new(&n, "", 7, String::new());
                            r.status = Status::Transferred;
                            r
                        }
                    }
                }
            },
        )
        .await;
        assert_eq!(*started.lock().unwrap(), ["ok", "panics", "stops"], "nothing starts after the stop");
        let t = report.tally();
        assert_eq!((t.files(Status::Transferred), t.files(Status::Failed), t.files(Status::NotAttempted)), (1, 2, 2));
        let failures = report.into_failures();
        let panicked = failures.iter().find(|r| r.name == "panics").expect("the panicked file is a failure");
        assert_eq!(panicked.local, "dist/panics");
        assert_eq!(panicked.size, 7);
        let why = panicked.reason.as_deref().unwrap_or_default();
        assert!(why.starts_with("internal error (please report it):"), "{why}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(50_000), "50,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
