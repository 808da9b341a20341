//! Progress reporting behind a small trait.
//!
//! The engine counts files and bytes in atomics; a ticker renders a snapshot every
//! `progress_interval`: plain log lines for CI (files, bytes, rate, ETA), or one
//! redrawn line when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::human_bytes;

#[derive(Debug, Default)]
pub struct Counters {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
}

impl Counters {
    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A point-in-time view of the counters.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub elapsed: Duration,
}

impl Snapshot {
    pub fn rate(&self) -> f64 {
        self.bytes_done as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    pub fn line(&self) -> String {
        if self.bytes_total == 0 && self.files_total == 0 {
            // A stream of unknown length (a cache save): bytes so far, no total, no ETA.
            return format!("{} so far, {}/s", human_bytes(self.bytes_done), human_bytes(self.rate() as u64));
        }
        let pct = if self.bytes_total > 0 { self.bytes_done as f64 * 100.0 / self.bytes_total as f64 } else { 100.0 };
        let rate = self.rate();
        let eta = if rate > 0.0 && self.bytes_total > self.bytes_done {
            format!(
                ", ETA {}",
                fmt_duration(Duration::from_secs_f64((self.bytes_total - self.bytes_done) as f64 / rate))
            )
        } else {
            String::new()
        };
        format!(
            "{}/{} files, {} / {} ({pct:.0}%), {}/s{eta}",
            self.files_done,
            self.files_total,
            human_bytes(self.bytes_done),
            human_bytes(self.bytes_total),
            human_bytes(rate as u64)
        )
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

/// Where progress goes.
pub trait ProgressSink: Send + Sync {
    fn update(&self, s: &Snapshot);
    fn finish(&self) {}
}

/// One log line per tick, for CI logs.
pub struct LogLines;

impl ProgressSink for LogLines {
    fn update(&self, s: &Snapshot) {
        tracing::info!(
            files_done = s.files_done,
            files_total = s.files_total,
            bytes_done = s.bytes_done,
            bytes_total = s.bytes_total,
            "progress: {}",
            s.line()
        );
    }
}

/// A single redrawn line on a terminal.
pub struct TerminalBar;

impl ProgressSink for TerminalBar {
    fn update(&self, s: &Snapshot) {
        eprint!("\r\x1b[2K{}", s.line());
    }
    fn finish(&self) {
        eprint!("\r\x1b[2K");
    }
}

pub struct Progress {
    pub counters: Arc<Counters>,
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress { counters: Arc::default(), start: Instant::now() }
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        Snapshot {
            files_done: c.files_done.load(Ordering::Relaxed),
            files_total: c.files_total.load(Ordering::Relaxed),
            bytes_done: c.bytes_done.load(Ordering::Relaxed),
            bytes_total: c.bytes_total.load(Ordering::Relaxed),
            elapsed: self.start.elapsed(),
        }
    }

    /// The sink for this process: a bar on a terminal (text logs), log lines otherwise.
    pub fn default_sink(json_logs: bool) -> Box<dyn ProgressSink> {
        if !json_logs && std::io::stderr().is_terminal() {
            Box::new(TerminalBar)
        } else {
            Box::new(LogLines)
        }
    }

    /// Ticks until the returned [`Ticker`] is stopped or dropped.
    pub fn spawn_ticker(self: &Arc<Self>, every: Duration, sink: Box<dyn ProgressSink>) -> Ticker {
        let me = self.clone();
        let sink: Arc<dyn ProgressSink> = Arc::from(sink);
        let s2 = sink.clone();
        let handle = tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.tick().await;
            loop {
                iv.tick().await;
                sink.update(&me.snapshot());
            }
        });
        Ticker { handle, sink: s2 }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// The ticking task of a run: stopped (and its sink finished) by [`stop`](Self::stop) or
/// when dropped, so a run leaving early with `?` does not leave it ticking.
pub struct Ticker {
    handle: tokio::task::JoinHandle<()>,
    sink: Arc<dyn ProgressSink>,
}

impl Ticker {
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.handle.abort();
        self.sink.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Default)]
    struct Count {
        updates: AtomicU64,
        finished: AtomicU64,
    }

    impl ProgressSink for Arc<Count> {
        fn update(&self, _: &Snapshot) {
            self.updates.fetch_add(1, Ordering::SeqCst);
        }
        fn finish(&self) {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A run leaving early (an error returned with `?`) drops its ticker without `stop`:
    /// the ticking ends there, and the sink is finished (a terminal bar is cleared).
    #[tokio::test]
    async fn a_dropped_ticker_stops_ticking() {
        let count = Arc::new(Count::default());
        let ticker = Arc::new(Progress::new()).spawn_ticker(Duration::from_millis(1), Box::new(count.clone()));
        while count.updates.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(ticker);
        let after = count.updates.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(count.updates.load(Ordering::SeqCst), after, "ticks after the drop");
        assert_eq!(count.finished.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn progress_line_of_an_unknown_total_has_no_eta() {
        let s = Snapshot {
            files_done: 0,
            files_total: 0,
            bytes_done: 3 << 20,
            bytes_total: 0,
            elapsed: Duration::from_secs(3),
        };
        assert_eq!(s.line(), "3.0 MiB so far, 1.0 MiB/s");
    }

    #[test]
    fn progress_line_has_rate_and_eta() {
        let s = Snapshot {
            files_done: 1,
            files_total: 4,
            bytes_done: 50 << 20,
            bytes_total: 100 << 20,
            elapsed: Duration::from_secs(5),
        };
        assert_eq!(s.line(), "1/4 files, 50.0 MiB / 100.0 MiB (50%), 10.0 MiB/s, ETA 5.0s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05s");
    }
}
