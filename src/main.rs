//! Entry point: logging, settings, the run, and the exit code.
//!
//! Exit codes: 0 every file done (or skipped as asked); 1 one or more files failed or were
//! not attempted, or the manifest or the outputs could not be written (the summary is printed first);
//! a sync refused by `max_delete` is 1 too: listing and plan succeeded, and the user's own guard
//! refused the plan, reported like a failure with the summary, manifest and outputs;
//! 2 invalid settings; 3 nothing could be transferred: an error before any file
//! (credentials, missing container, listing, planning), or a refusal that would recur for
//! every file (wrong key, expired SAS, missing role, firewall, a redirect) that stopped
//! the run before any file was done; 130/143 interrupted (SIGINT/SIGTERM).

use std::process::ExitCode;

use plugin_azure_storage::app;
use plugin_azure_storage::config::{self, Config, LogFormat, LogLevel, RawSettings};
use plugin_azure_storage::settings;

fn init_logging(level: &str, format: LogFormat) {
    // Our own crate at the chosen level; dependencies never below `warn`, so no HTTP
    // library can log a header (Authorization) even at `trace`.
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let ours = level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO);
    let filter = Targets::new().with_default(LevelFilter::WARN).with_target("plugin_azure_storage", ours);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(fmt.with_ansi(false)).init(),
    }
}

/// Keeps large transfer buffers out of glibc's heap arenas. glibc raises its mmap
/// threshold after large blocks are freed, after which 4 MiB buffers are carved from
/// per-thread arenas that fragment and never shrink: peak RSS then grows far past
/// `max_memory`. A fixed threshold makes every buffer ≥ 256 KiB its own mapping, returned
/// to the OS when freed, so RSS follows the memory budget.
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called first thing in `main`,
    // before any other thread exists, with options and values glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    bound_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h" || a == "help") {
        print!("{}", settings::help_text());
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("plugin-azure-storage {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Some(a) = args.first() {
        eprintln!("error: unknown argument `{a}`: settings come from PLUGIN_* environment variables (see --help)");
        return ExitCode::from(2);
    }

    let raw = RawSettings::from_env();
    // Logging first (leniently), so that warnings about the settings themselves show.
    let level: LogLevel = config::choice(&raw, "log_level");
    let format: LogFormat = config::choice(&raw, "log_format");
    init_logging(level.as_str(), format);
    for unknown in raw.unknown() {
        tracing::warn!("{unknown}");
    }
    let cfg = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing::debug!(?cfg, "configuration");
    let json = cfg.log_format == LogFormat::Json;

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = app::run(cfg) => Ok(r),
            sig = interrupted() => Err(sig),
        }
    });
    match result {
        Err(code) => {
            let removed = app::remove_temp_files();
            tracing::error!(
                "interrupted: stopped; {removed} partial download(s) discarded, nothing left under a final name"
            );
            ExitCode::from(code)
        }
        Ok(Ok(outcome)) => {
            if json {
                tracing::info!(summary = %serde_json::to_string(&outcome.summary).unwrap_or_default(), "summary");
            } else if !matches!(level.as_str(), "error" | "warn") {
                eprintln!("{}", outcome.summary.table(&outcome.failures));
            } else if outcome.failed() > 0 {
                // Quiet levels still list what failed.
                tracing::error!("{}", outcome.summary.table(&outcome.failures));
            }
            if let Some(stop) = &outcome.stopped {
                tracing::error!("{stop}");
            } else if outcome.failed() > 0 {
                tracing::error!("{} file(s) failed", outcome.failed());
            }
            for e in &outcome.report_errors {
                tracing::error!("{e}");
            }
            ExitCode::from(outcome.exit_code())
        }
        Ok(Err(e)) => {
            tracing::error!("{}", chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// `error: cause: cause` chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Resolves on SIGTERM (CI cancel) or SIGINT, with the conventional exit code.
async fn interrupted() -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => 143,
        _ = int.recv() => 130,
    }
}
