//! Outputs for later steps: when `DRONE_OUTPUT` (Drone, Harness) or `GITHUB_OUTPUT`
//! (GitHub and Forgejo Actions) names a file, `KEY=VALUE` lines are appended to it:
//! `transferred`, `skipped`, `failed` (file counts), `bytes` (bytes transferred), `url`
//! (the one file's URL when the run moved one file, else the target prefix's URL: the
//! remote prefix of an upload, the source prefix of a download) and `manifest` (when set).
//! A dry run transfers and deletes nothing: its done-counts are 0, and `would_transfer`
//! (and, for a sync, `would_delete`) say what the real run would do.
//! A URL never carries a SAS. Later capabilities add their own keys here.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Action, Config};
use crate::storage::Store;
use crate::transfer::report::Summary;

/// The variables naming an output file, in the order they are written.
pub const OUTPUT_VARS: &[&str] = &["DRONE_OUTPUT", "GITHUB_OUTPUT"];

/// The `KEY=VALUE` pairs of a finished run; `single_url`: the URL of the one file with a
/// remote name, when the run had exactly one ([`Report::single_url`](super::report::Report::single_url)).
pub fn pairs(
    cfg: &Config,
    summary: &Summary,
    single_url: Option<&str>,
    store: &dyn Store,
) -> Vec<(&'static str, String)> {
    // A dry run moved nothing: the done-counts stay 0 and `would_*` say what would move.
    let done = |n: u64| if summary.dry_run { 0 } else { n };
    let mut out = vec![
        ("transferred", done(summary.files_transferred).to_string()),
        ("skipped", summary.files_skipped.to_string()),
        ("failed", summary.files_failed.to_string()),
        ("bytes", done(summary.bytes_transferred).to_string()),
        ("url", url(cfg, single_url, store)),
    ];
    if cfg.action == Action::Sync {
        out.push(("deleted", done(summary.files_deleted).to_string()));
    }
    if summary.dry_run {
        out.push(("would_transfer", summary.files_transferred.to_string()));
        if cfg.action == Action::Sync {
            out.push(("would_delete", summary.files_deleted.to_string()));
        }
    }
    if let Some(m) = &cfg.manifest {
        out.push(("manifest", m.display().to_string()));
    }
    out
}

fn url(cfg: &Config, single_url: Option<&str>, store: &dyn Store) -> String {
    if let Some(one) = single_url {
        return one.to_string();
    }
    let prefix = match cfg.action {
        Action::Upload | Action::Sync | Action::CacheSave | Action::CacheRestore => cfg.target.clone(),
        // One source: its literal part (up to the first wildcard); several: the container.
        Action::Download => match cfg.sources.as_slice() {
            [one] => one.chars().take_while(|c| !"*?[{".contains(*c)).collect(),
            _ => String::new(),
        },
    };
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = parts.join("/");
    if !path.is_empty() {
        path.push('/');
    }
    store.url(&path)
}

/// An output file that could not be appended to (reported like an unwritable manifest).
#[derive(Debug, thiserror::Error)]
#[error("cannot append the outputs to `{}`: {source}", path.display())]
pub struct OutputsError {
    path: PathBuf,
    source: std::io::Error,
}

/// Appends the pairs to every output file named in the environment. A value holding a line
/// break (possible only in a manifest path) is left out with a warning rather than written
/// as a broken line.
pub fn write(pairs: &[(&'static str, String)]) -> Result<(), OutputsError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for var in OUTPUT_VARS {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()).map(PathBuf::from) {
            if !files.contains(&p) {
                files.push(p);
            }
        }
    }
    let mut text = String::new();
    for (k, v) in pairs {
        if v.contains(['\n', '\r']) {
            tracing::warn!("output `{k}` left out: its value holds a line break");
            continue;
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    for f in &files {
        append(f, &text).map_err(|source| OutputsError { path: f.clone(), source })?;
        tracing::debug!("outputs appended to {}", f.display());
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(text.as_bytes())
}
