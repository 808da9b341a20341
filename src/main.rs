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
use std::time::Duration;

use plugin_azure_storage::app;
use plugin_azure_storage::config::{self, Config, LogFormat, LogLevel, RawSettings};
use plugin_azure_storage::{escape, settings};

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

/// How long an interrupted run may take to stop: its tasks are cancelled and blocking
/// readers given this long before the temporary files go and the process exits (the
/// promise is an exit within 5 s of SIGTERM/SIGINT).
const SHUTDOWN: Duration = Duration::from_secs(3);
/// A signal after the run is over (while the summary and outputs are written) exits the
/// process after this long at the latest, whatever blocks.
const LATE_SIGNAL_EXIT: Duration = Duration::from_millis(4500);

fn main() -> ExitCode {
    bound_allocator();
    // Arguments as bytes: a non-UTF-8 argument is named (escaped), never a panic.
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if args.iter().any(|a| a == "--help" || a == "-h" || a == "help") {
        print!("{}", settings::help_text());
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("plugin-azure-storage {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Some(a) = args.first() {
        eprintln!(
            "error: unknown argument `{}`: settings come from PLUGIN_* environment variables (see --help)",
            escape::shown(a)
        );
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
    for ignored in raw.ignored_not_utf8() {
        tracing::warn!("{ignored}");
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

    // At least two workers, so that the signal watcher runs even while the run blocks one
    // in a system call (a one-CPU runner would otherwise have a single worker).
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(2);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    // The handlers are installed before the run starts and watched until the process
    // exits: a signal is never swallowed, whatever the run is doing.
    let signals = match rt.block_on(async { Signals::new() }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM/SIGINT: {e}");
            return ExitCode::from(3);
        }
    };
    let (signalled_tx, mut signalled) = tokio::sync::oneshot::channel::<u8>();
    rt.spawn(signals.watch(signalled_tx));
    // The run is a task of its own, so that a run blocked in a system call cannot keep
    // this thread from answering a signal.
    let run = rt.spawn(app::run(cfg));
    let result = rt.block_on(async {
        tokio::select! {
            r = run => Ok(r),
            Ok(code) = &mut signalled => Err(code),
        }
    });
    let code = match result {
        Err(code) => {
            // Every request is already refused (the watcher interrupted before it told us):
            // nothing is committed after this line. Then the tasks go, then the temporary files.
            tracing::error!("interrupted ({}): stopping; nothing more is sent", signal_name(code));
            let unfinished = app::unfinished_downloads();
            rt.shutdown_timeout(SHUTDOWN);
            // Cancelled tasks removed their own files; this catches any a stuck thread holds.
            app::remove_temp_files();
            tracing::error!(
                "interrupted: stopped; {unfinished} partial download(s) discarded, nothing left under a final name"
            );
            return ExitCode::from(code);
        }
        Ok(Err(join)) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => {
                tracing::error!("the run was cancelled: {e}");
                3
            }
        },
        Ok(Ok(Ok(outcome))) => {
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
            outcome.exit_code()
        }
        Ok(Ok(Err(e))) => {
            tracing::error!("{}", chain(&e));
            e.exit_code()
        }
    };
    // Whatever is left (a blocking reader of a file that hangs) is not waited for.
    rt.shutdown_timeout(SHUTDOWN);
    // A signal that came while the summary was written still decides the exit code.
    ExitCode::from(signalled.try_recv().unwrap_or(code))
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

/// SIGTERM (CI cancel) and SIGINT, watched from before the run until the process exits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside the runtime).
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// On the first signal: every request is refused from now on ([`app::interrupt`]), then
    /// `main` is told the exit code (130/143). `main` then shuts the runtime down, which ends
    /// this task; should it be stuck instead (a write that blocks), the process exits with
    /// that code after [`LATE_SIGNAL_EXIT`] all the same.
    async fn watch(mut self, signalled: tokio::sync::oneshot::Sender<u8>) {
        let code = tokio::select! {
            _ = self.term.recv() => 143,
            _ = self.int.recv() => 130,
        };
        app::interrupt(signal_name(code));
        let _ = signalled.send(code);
        tokio::time::sleep(LATE_SIGNAL_EXIT).await;
        std::process::exit(code.into());
    }
}

fn signal_name(code: u8) -> &'static str {
    if code == 130 {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}
