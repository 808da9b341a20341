//! Outputs for later steps: when `DRONE_OUTPUT` (Drone, Harness) or `GITHUB_OUTPUT`
//! (GitHub and Forgejo Actions) names a file, `KEY=VALUE` lines are appended to it:
//! `transferred`, `skipped`, `failed` (file counts), `bytes` (bytes transferred), `url`
//! (the one file's URL when the run moved one file, else the target prefix's URL: the
//! remote prefix of an upload, the source prefix of a download) and `manifest` (when set).
//! A dry run transfers and deletes nothing: its done-counts are 0, and `would_transfer`
//! (and, for a sync or a delete, `would_delete`) say what the real run would do.
//! A URL never carries a SAS. The cache modes add `cache_hit`, `cache_key`,
//! `cache_matched_key` and `cache_error` (made in `transfer::cache`). Later capabilities
//! add their own keys here. An output file
//! must be a regular file: it is opened without blocking and anything else (a FIFO, a
//! device) is refused, naming its variable, so the step can never hang on it; each file is
//! written on its own, so one that fails does not keep the other from being written.

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
    if matches!(cfg.action, Action::Sync | Action::Delete) {
        out.push(("deleted", done(summary.files_deleted).to_string()));
    }
    if summary.dry_run {
        out.push(("would_transfer", summary.files_transferred.to_string()));
        if matches!(cfg.action, Action::Sync | Action::Delete) {
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
        Action::Download | Action::Delete => match cfg.sources.as_slice() {
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

/// Output files that could not be appended to (reported like an unwritable manifest),
/// each with the variable that named it; the others were written.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct OutputsError(Vec<OutputFailure>);

/// One output file that could not be appended to.
#[derive(Debug, thiserror::Error)]
#[error("cannot append the outputs to `{}` ({var}): {source}", crate::escape::shown(&path.to_string_lossy()))]
pub struct OutputFailure {
    var: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// Appends the pairs to every output file named in the environment. A value holding a line
/// break (possible only in a manifest path) is left out with a warning rather than written
/// as a broken line. A file that cannot be written does not keep the others from being
/// written; every failure is returned.
pub fn write(pairs: &[(&'static str, String)]) -> Result<(), OutputsError> {
    let mut files: Vec<(&'static str, PathBuf)> = Vec::new();
    for var in OUTPUT_VARS {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()).map(PathBuf::from) {
            if !files.iter().any(|(_, f)| *f == p) {
                files.push((var, p));
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
    let mut failed = Vec::new();
    for (var, f) in files {
        match append(&f, &text) {
            Ok(()) => tracing::debug!("outputs appended to {}", f.display()),
            Err(source) => failed.push(OutputFailure { var, path: f, source }),
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(OutputsError(failed)),
    }
}

/// Appends to a regular file (created when missing). Opened without blocking
/// (`O_NONBLOCK`: a FIFO without a reader fails at once instead of hanging the step) and
/// refused unless it is a regular file (a FIFO, a device or a socket could block the write
/// or swallow the lines).
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use rustix::{fs::OFlags, io::Errno};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::NXIO) => std::io::Error::other("it is a FIFO with no reader: outputs go to a regular file"),
            _ => e,
        })?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::other(format!("it is {what}: outputs go to a regular file")));
    }
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_appended_to_and_nothing_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.txt");
        append(&file, "a=1\n").unwrap();
        append(&file, "b=2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a=1\nb=2\n");
        // A FIFO with no reader: refused at once (a blocking open would wait forever).
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = append(&fifo, "a=1\n").unwrap_err().to_string();
        assert!(e.contains("a FIFO with no reader"), "{e}");
        // With a reader it opens, and is refused as a FIFO.
        use std::os::unix::fs::OpenOptionsExt;
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap();
        let e = append(&fifo, "a=1\n").unwrap_err().to_string();
        assert!(e.contains("it is a FIFO"), "{e}");
        let e = append(Path::new("/dev/null"), "a=1\n").unwrap_err().to_string();
        assert!(e.contains("it is a device"), "{e}");
    }
}
