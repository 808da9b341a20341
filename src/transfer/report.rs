//! Per-file results, the summary table and the JSON manifest.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::human_bytes;
use crate::transfer::dirfd;
use crate::transfer::progress::fmt_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Transferred,
    Skipped,
    Failed,
    /// Never started: the run stopped early on a refusal that would have failed it too.
    #[serde(rename = "not_attempted")]
    NotAttempted,
    /// Deleted by a sync (remote only: the selection lacked it); in a dry run, would be.
    Deleted,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    /// Remote name.
    pub name: String,
    /// Local path, relative to the workspace (upload) or the target (download).
    pub local: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub status: Status,
    /// Why it was skipped, or what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes an earlier interrupted run had already staged (not sent again).
    #[serde(skip_serializing_if = "is_zero")]
    pub resumed_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FileResult {
    pub fn new(name: &str, local: &str, size: u64, url: String) -> Self {
        FileResult {
            name: name.to_string(),
            local: local.to_string(),
            size,
            sha256: None,
            url,
            etag: None,
            status: Status::Failed,
            reason: None,
            resumed_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub action: &'static str,
    pub files_transferred: u64,
    pub files_skipped: u64,
    pub files_failed: u64,
    /// Files never started because the run stopped early (see `http::stop`).
    pub files_not_attempted: u64,
    /// Deleted by a sync (in a dry run: would be).
    pub files_deleted: u64,
    pub bytes_transferred: u64,
    pub bytes_skipped: u64,
    pub seconds: f64,
    pub bytes_per_second: f64,
    pub requests: u64,
    pub retries: u64,
    pub dry_run: bool,
}

impl Summary {
    pub fn from_results(
        action: &'static str,
        results: &[FileResult],
        elapsed: Duration,
        requests: u64,
        retries: u64,
        dry_run: bool,
    ) -> Self {
        let count = |s: Status| results.iter().filter(|r| r.status == s).count() as u64;
        let bytes = |s: Status| results.iter().filter(|r| r.status == s).map(|r| r.size).sum::<u64>();
        let bt = bytes(Status::Transferred);
        Summary {
            action,
            files_transferred: count(Status::Transferred),
            files_skipped: count(Status::Skipped),
            files_failed: count(Status::Failed),
            files_not_attempted: count(Status::NotAttempted),
            files_deleted: count(Status::Deleted),
            bytes_transferred: bt,
            bytes_skipped: bytes(Status::Skipped),
            seconds: elapsed.as_secs_f64(),
            bytes_per_second: bt as f64 / elapsed.as_secs_f64().max(1e-3),
            requests,
            retries,
            dry_run,
        }
    }

    /// The human summary table, failures listed last.
    pub fn table(&self, results: &[FileResult]) -> String {
        let mut out = String::new();
        let verb = if self.dry_run { "would transfer" } else { "transferred" };
        out.push_str(&format!("{:<16}{:>8}  {:>12}\n", "summary", "files", "bytes"));
        out.push_str(&format!(
            "{:<16}{:>8}  {:>12}\n",
            verb,
            self.files_transferred,
            human_bytes(self.bytes_transferred)
        ));
        out.push_str(&format!("{:<16}{:>8}  {:>12}\n", "skipped", self.files_skipped, human_bytes(self.bytes_skipped)));
        out.push_str(&format!("{:<16}{:>8}\n", "failed", self.files_failed));
        if self.files_deleted > 0 || self.action == "sync" {
            let verb = if self.dry_run { "would delete" } else { "deleted" };
            out.push_str(&format!("{:<16}{:>8}\n", verb, self.files_deleted));
        }
        if self.files_not_attempted > 0 {
            out.push_str(&format!("{:<16}{:>8}\n", "not attempted", self.files_not_attempted));
        }
        out.push_str(&format!(
            "{} in {} ({}/s), {} request{}, {} retr{}",
            self.action,
            fmt_duration(Duration::from_secs_f64(self.seconds)),
            human_bytes(self.bytes_per_second as u64),
            self.requests,
            if self.requests == 1 { "" } else { "s" },
            self.retries,
            if self.retries == 1 { "y" } else { "ies" }
        ));
        let failed: Vec<&FileResult> = results.iter().filter(|r| r.status == Status::Failed).collect();
        if !failed.is_empty() {
            out.push_str(&format!("\n{} failed:", failed.len()));
            for f in failed {
                let what = if f.local.is_empty() {
                    f.name.escape_debug().to_string()
                } else if f.name.is_empty() {
                    f.local.clone()
                } else {
                    format!("{} → {}", f.local, f.name.escape_debug())
                };
                out.push_str(&format!("\n  ✗ {what}: {}", f.reason.as_deref().unwrap_or("failed")));
            }
        }
        out
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    version: u32,
    tool: &'static str,
    action: &'static str,
    service: &'static str,
    account: &'a str,
    container: &'a str,
    summary: &'a Summary,
    files: &'a [FileResult],
}

/// Writes the manifest atomically (temp file + rename); a failed write leaves no temp file.
#[allow(clippy::too_many_arguments)]
pub fn write_manifest(
    path: &Path,
    action: &'static str,
    service: &'static str,
    account: &str,
    container: &str,
    summary: &Summary,
    files: &[FileResult],
) -> std::io::Result<()> {
    let m = Manifest {
        version: 1,
        tool: concat!("plugin-azure-storage/", env!("CARGO_PKG_VERSION")),
        action,
        service,
        account,
        container,
        summary,
        files,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(std::io::Error::other)?;
    // Its directory is opened without following a link inside the workspace (a committed
    // `dist -> /etc` cannot redirect `manifest: dist/m.json`), and the file is written
    // under a temporary name in it, then renamed: a reader never sees half a manifest.
    let workspace = std::env::current_dir()?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = dirfd::open_beneath(&workspace, parent, true).map_err(std::io::Error::other)?;
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let written = dirfd::create_new_at(&dir, &tmp)
        .and_then(|mut f| f.write_all(&json))
        .and_then(|_| dirfd::rename_at(&dir, &tmp, name));
    if written.is_err() {
        let _ = dirfd::unlink_at(&dir, &tmp);
    }
    written
}
