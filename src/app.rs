//! Wiring, in one place: credential → HTTP → store, then the engine.
//!
//! The only module that picks the store for `service`: the engine ([`transfer::run`])
//! receives an `Arc<dyn Store>` and never asks which service it talks to.

use std::sync::Arc;
use std::time::Instant;

use crate::auth;
use crate::config::{Action, Config, Service};
use crate::http::{Http, RetryPolicy};
use crate::storage::blob::BlobStore;
use crate::storage::files::FilesStore;
use crate::storage::Store;
use crate::transfer::{self, Wiring};

/// What `main` needs of the engine: the outcome and its exit code, the run's error, the
/// interrupt that stops every request on SIGTERM/SIGINT, and the cleanup of partial downloads.
pub use crate::http::stop::interrupt;
pub use crate::transfer::download::{remove_temp_files, unfinished_downloads};
pub use crate::transfer::{Outcome, RunError};

/// Resolves the credential, builds the HTTP client and the store, and runs the transfer.
pub async fn run(cfg: Config) -> Result<Outcome, RunError> {
    let started = Instant::now();
    let cfg = Arc::new(cfg);
    let credential = auth::resolve(&cfg).await?;
    // The first token is fetched before anything else, so a refused exchange is reported
    // once, in full, and the start line can name the identity. An upload dry run needs no token.
    if !(cfg.dry_run && cfg.action == Action::Upload) {
        credential.prefetch().await?;
    }
    transfer::start_line(&cfg, &credential);
    let retry = RetryPolicy { max_retries: cfg.retries, deadline: cfg.retry_timeout, ..RetryPolicy::default() };
    let http = Arc::new(
        Http::new(credential.clone(), retry, cfg.timeout, cfg.ci_label.as_deref(), cfg.concurrency)
            .map_err(RunError::Other)?,
    );
    let store: Arc<dyn Store> = match cfg.service {
        Service::Blob => Arc::new(BlobStore::new(http.clone(), &cfg.endpoint, &cfg.container)),
        Service::File => Arc::new(FilesStore::new(http.clone(), &cfg.endpoint, &cfg.container)),
    };
    transfer::run(cfg, Wiring { credential, http, store }, started).await
}
