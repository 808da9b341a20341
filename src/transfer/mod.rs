//! The transfer engine: plan, then move every file under one shared budget.
//!
//! One [`Engine`] holds the two budgets every file draws from: request permits
//! (`concurrency`, shared by files and blocks alike) and memory (`max_memory`, taken
//! before a buffer is filled and given back when its request ends). `run` resolves
//! credentials, plans, prints the start line, runs the transfers with a progress
//! ticker, and returns per-file results and the summary; `main` turns that into an
//! exit code.

pub mod checksum;
pub mod download;
pub mod outputs;
pub mod plan;
pub mod progress;
pub mod report;
pub mod upload;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{self, AuthError, Credential};
use crate::config::{human_bytes, Action, Config, LogFormat, Service};
use crate::http::{Http, RetryPolicy};
use crate::storage::blob::BlobStore;
use crate::storage::files::FilesStore;
use crate::storage::{StorageError, Store};
use plan::{PlanError, RemoteSelector};
use progress::Progress;
use report::{FileResult, Status, Summary};

/// Default block / range size: large enough for throughput, small enough that the
/// default memory budget keeps a dozen requests in flight.
pub const DEFAULT_BLOCK: u64 = 4 << 20;
/// Default download range. Ranges stream to disk, so their size costs no memory; fewer,
/// larger requests cost the service less: against Azurite 3.37, 1 GiB took ~3.6 s in 4 MiB
/// ranges and ~1.6 s in 8 MiB ones (docs/benchmarks.md); azcopy also reads 8 MiB at a time.
pub const DEFAULT_RANGE: u64 = 8 << 20;
/// Azure allows 50,000 blocks per blob.
pub const MAX_BLOCKS: u64 = 50_000;

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
    #[error("{0}")]
    Other(String),
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub cfg: Arc<Config>,
    requests: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    pub memory_total: u64,
    pub progress: Arc<Progress>,
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
        }
    }

    /// Block size for a file: the setting (or 4 MiB), raised so the file fits in 50,000
    /// blocks, capped by what one request may carry and by the memory budget.
    pub fn block_size_for(&self, size: u64) -> u64 {
        let base = self.cfg.block_size.unwrap_or(DEFAULT_BLOCK);
        base.max(size.div_ceil(MAX_BLOCKS)).min(self.store.max_chunk()).min(self.memory_total).max(1)
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

    /// Runs one storage call under a request permit.
    pub async fn with_request<T>(&self, f: impl Future<Output = T>) -> T {
        let _permit = self.requests.acquire().await.expect("request semaphore is never closed");
        f.await
    }
}

/// Everything a run produced.
pub struct Outcome {
    pub results: Vec<FileResult>,
    pub summary: Summary,
}

impl Outcome {
    pub fn failed(&self) -> u64 {
        self.summary.files_failed
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Upload => "upload",
        Action::Download => "download",
    }
}

fn start_line(cfg: &Config, cred: &Credential) {
    let what = match cfg.action {
        Action::Upload => {
            format!("{} → {}", cfg.sources.join(", "), if cfg.target.is_empty() { "/" } else { &cfg.target })
        }
        Action::Download => {
            format!("{} → {}", cfg.sources.join(", "), if cfg.target.is_empty() { "." } else { &cfg.target })
        }
    };
    tracing::info!(
        "plugin-azure-storage {}: {}{} {} account `{}` {} `{}` ({}), auth: {}",
        env!("CARGO_PKG_VERSION"),
        if cfg.dry_run { "dry run: " } else { "" },
        action_word(cfg.action),
        what,
        cfg.account,
        cfg.container_word(),
        cfg.container,
        cfg.endpoint,
        cred.describe()
    );
}

pub async fn run(cfg: Config) -> Result<Outcome, RunError> {
    let started = Instant::now();
    let cfg = Arc::new(cfg);
    let credential = auth::resolve(&cfg).await?;
    // The first token is fetched before anything else, so a refused exchange is reported
    // once, in full, and the start line can name the identity. An upload dry run needs no token.
    if !(cfg.dry_run && cfg.action == Action::Upload) {
        credential.prefetch().await?;
    }
    start_line(&cfg, &credential);
    let retry = RetryPolicy { max_retries: cfg.retries, ..RetryPolicy::default() };
    let http = Arc::new(
        Http::new(credential.clone(), retry, cfg.timeout, cfg.ci_label.as_deref(), cfg.concurrency)
            .map_err(RunError::Other)?,
    );
    let store: Arc<dyn Store> = match cfg.service {
        Service::Blob => Arc::new(BlobStore::new(http.clone(), &cfg.endpoint, &cfg.container)),
        Service::File => Arc::new(FilesStore::new(http.clone(), &cfg.endpoint, &cfg.container)),
    };
    let engine = Arc::new(Engine::new(store.clone(), cfg.clone()));

    let results = match cfg.action {
        Action::Upload => run_upload(&engine, &credential).await?,
        Action::Download => run_download(&engine, &credential).await?,
    };
    let mut results = results;
    results.sort_by(|a, b| a.name.cmp(&b.name));
    let summary = Summary::from_results(
        action_word(cfg.action),
        &results,
        started.elapsed(),
        http.stats.requests.load(Ordering::Relaxed),
        http.stats.retries.load(Ordering::Relaxed),
        cfg.dry_run,
    );
    if let Some(path) = &cfg.manifest {
        report::write_manifest(
            path,
            summary.action,
            cfg.service.as_str(),
            &cfg.account,
            &cfg.container,
            &summary,
            &results,
        )
        .map_err(|e| RunError::Other(format!("cannot write the manifest `{}`: {e}", path.display())))?;
        tracing::info!("manifest written to {}", path.display());
    }
    outputs::write(&outputs::pairs(&cfg, &summary, &results, &*store)).map_err(RunError::Other)?;
    Ok(Outcome { results, summary })
}

async fn run_upload(engine: &Arc<Engine>, credential: &Credential) -> Result<Vec<FileResult>, RunError> {
    let cfg = &engine.cfg;
    let root =
        std::env::current_dir().map_err(|e| RunError::Other(format!("cannot read the working directory: {e}")))?;
    let plan = tokio::task::block_in_place(|| plan::plan_upload(cfg, &root))?;
    for s in &plan.unmatched {
        tracing::warn!("source `{s}` matched no file");
    }
    for s in &plan.skipped {
        tracing::warn!("skipped {}: {}", s.rel, s.reason);
    }
    let total: u64 = plan.items.iter().map(|i| i.size).sum();
    tracing::info!("planned {} file(s), {}", plan.items.len(), human_bytes(total));
    let mut results: Vec<FileResult> = plan
        .skipped
        .iter()
        .map(|s| {
            let mut r = FileResult::new("", &s.rel, 0, String::new());
            r.status = Status::Skipped;
            r.reason = Some(s.reason.clone());
            r
        })
        .collect();
    if cfg.dry_run {
        for it in &plan.items {
            tracing::info!("would upload {} → {} ({})", it.rel, it.name, human_bytes(it.size));
            let mut r = FileResult::new(&it.name, &it.rel, it.size, engine.store.url(&it.name));
            r.status = Status::Transferred;
            r.reason = Some("dry run".into());
            results.push(r);
        }
        return Ok(results);
    }
    if matches!(credential, Credential::None) {
        return Err(AuthError::Missing("no credentials".into()).into());
    }
    engine.store.ensure_container(cfg.create_container).await?;
    let c = &engine.progress.counters;
    c.files_total.store(plan.items.len() as u64, Ordering::Relaxed);
    c.bytes_total.store(total, Ordering::Relaxed);
    let ticker =
        engine.progress.spawn_ticker(cfg.progress_interval, Progress::default_sink(cfg.log_format == LogFormat::Json));
    let done: Vec<FileResult> = futures::stream::iter(plan.items)
        .map(|item| tokio::spawn(upload::upload_one(engine.clone(), item)))
        .buffer_unordered(cfg.concurrency)
        .map(|r| r.expect("upload task panicked"))
        .collect()
        .await;
    ticker.stop();
    results.extend(done);
    Ok(results)
}

async fn run_download(engine: &Arc<Engine>, credential: &Credential) -> Result<Vec<FileResult>, RunError> {
    let cfg = &engine.cfg;
    let target = if cfg.target.is_empty() { PathBuf::from(".") } else { PathBuf::from(&cfg.target) };
    if let Ok(m) = std::fs::metadata(&target) {
        if !m.is_dir() {
            return Err(PlanError::TargetNotDir(cfg.target.clone()).into());
        }
    }
    if matches!(credential, Credential::None) {
        tracing::info!(
            "dry run without credentials: would list {} in {} `{}` and download into {}",
            cfg.sources.join(", "),
            cfg.container_word(),
            cfg.container,
            target.display()
        );
        return Ok(vec![]);
    }
    let selectors: Vec<RemoteSelector> =
        cfg.sources.iter().map(|s| RemoteSelector::new(s)).collect::<Result<_, _>>().map_err(RunError::Other)?;
    // One listing per distinct prefix; a prefix covered by a shorter one is not listed again.
    let mut prefixes: Vec<String> = selectors.iter().map(|s| s.prefix.clone()).collect();
    prefixes.sort();
    prefixes.dedup();
    let mut listed: BTreeMap<String, crate::storage::RemoteItem> = BTreeMap::new();
    let mut covered: Vec<String> = Vec::new();
    for p in prefixes {
        if covered.iter().any(|c| p.starts_with(c.as_str())) {
            continue;
        }
        let items = match engine.store.list(&p).await {
            Ok(items) => items,
            Err(e)
                if e.http().map(|h| h.is_code("ContainerNotFound") || h.is_code("ShareNotFound")).unwrap_or(false) =>
            {
                return Err(StorageError::NoContainer {
                    what: cfg.container_word(),
                    name: cfg.container.clone(),
                    hint: "",
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        for it in items {
            if selectors.iter().any(|s| s.matches(&it.name)) {
                listed.insert(it.name.clone(), it);
            }
        }
        covered.push(p);
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
    let plan = plan::plan_download(cfg, listed.into_values().collect());
    let total: u64 = plan.items.iter().map(|i| i.remote.size).sum();
    tracing::info!("planned {} file(s), {}", plan.items.len(), human_bytes(total));
    let mut results: Vec<FileResult> = plan
        .refused
        .iter()
        .map(|(name, why)| {
            tracing::error!("refused: {}: {why}", name.escape_debug());
            let mut r = FileResult::new(name, "", 0, engine.store.url(name));
            r.reason = Some(why.clone());
            r
        })
        .collect();
    if cfg.dry_run {
        for it in &plan.items {
            tracing::info!(
                "would download {} → {} ({})",
                it.remote.name,
                target.join(&it.rel).display(),
                human_bytes(it.remote.size)
            );
            let mut r = FileResult::new(
                &it.remote.name,
                &target.join(&it.rel).to_string_lossy(),
                it.remote.size,
                engine.store.url(&it.remote.name),
            );
            r.status = Status::Transferred;
            r.reason = Some("dry run".into());
            results.push(r);
        }
        return Ok(results);
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| RunError::Other(format!("cannot create `target` `{}`: {e}", target.display())))?;
    let c = &engine.progress.counters;
    c.files_total.store(plan.items.len() as u64, Ordering::Relaxed);
    c.bytes_total.store(total, Ordering::Relaxed);
    let ticker =
        engine.progress.spawn_ticker(cfg.progress_interval, Progress::default_sink(cfg.log_format == LogFormat::Json));
    let target = Arc::new(target);
    let done: Vec<FileResult> = futures::stream::iter(plan.items)
        .map(|item| tokio::spawn(download::download_one(engine.clone(), item, target.clone())))
        .buffer_unordered(cfg.concurrency)
        .map(|r| r.expect("download task panicked"))
        .collect()
        .await;
    ticker.stop();
    results.extend(done);
    Ok(results)
}
