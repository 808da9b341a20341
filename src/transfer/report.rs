//! Per-file results, the summary table and the JSON manifest.
//!
//! A finished file's [`FileResult`] is handed to the run's [`Report`] at once and not kept:
//! the report counts files and bytes per status ([`Tally`]), keeps the failures (the
//! summary table lists them) and what the `url` output needs, gives a stored file its link
//! (`link_expiry`, [`super::links`]) and, when `manifest` is set,
//! spools the file's manifest entry to an unnamed temporary file. A run of any number of
//! files holds 8 bytes per file (the entry's place in the spool), not the results.
//!
//! The manifest lists its files in *slot* order: a slot is reserved for each result before
//! its file starts (in plan order), so the order does not depend on which file finished
//! first. At the end the whole manifest is serialised by serde in one pass, its `files`
//! streamed from the spool an entry at a time ([`SpooledFiles`]), into a temporary file
//! renamed into place ([`write_manifest`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};

use crate::config::human_bytes;
use crate::transfer::dirfd;
use crate::transfer::progress::fmt_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A file's outcome; also its manifest entry (spooled as JSON and read back, hence `Deserialize`).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// A read-only link to the stored file (`link_expiry`): outputs and manifest only, never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Bytes an earlier interrupted run had already staged (not sent again).
    #[serde(default, skip_serializing_if = "is_zero")]
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
            link: None,
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
    pub fn from_tally(
        action: &'static str,
        tally: &Tally,
        elapsed: Duration,
        requests: u64,
        retries: u64,
        dry_run: bool,
    ) -> Self {
        let bt = tally.bytes(Status::Transferred);
        Summary {
            action,
            files_transferred: tally.files(Status::Transferred),
            files_skipped: tally.files(Status::Skipped),
            files_failed: tally.files(Status::Failed),
            files_not_attempted: tally.files(Status::NotAttempted),
            files_deleted: tally.files(Status::Deleted),
            bytes_transferred: bt,
            bytes_skipped: tally.bytes(Status::Skipped),
            seconds: elapsed.as_secs_f64(),
            bytes_per_second: bt as f64 / elapsed.as_secs_f64().max(1e-3),
            requests,
            retries,
            dry_run,
        }
    }

    /// The human summary table, failures (of `results`) listed last.
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
        if self.files_deleted > 0 || self.action == "sync" || self.action == "delete" {
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

/// Files and bytes per status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    files: [u64; 5],
    bytes: [u64; 5],
}

impl Tally {
    fn add(&mut self, status: Status, size: u64) {
        self.files[status as usize] += 1;
        // Sizes come from listings (outside data): a sum saturates, never wraps or panics.
        self.bytes[status as usize] = self.bytes[status as usize].saturating_add(size);
    }

    pub fn files(&self, status: Status) -> u64 {
        self.files[status as usize]
    }

    pub fn bytes(&self, status: Status) -> u64 {
        self.bytes[status as usize]
    }
}

/// What a run keeps of its finished files (see the module documentation).
#[derive(Debug, Default)]
pub struct Report {
    tally: Tally,
    /// The failed results with their slots: few, and the summary table lists them.
    failures: Vec<(usize, FileResult)>,
    /// Results with a remote name, and the first one's URL (the `url` output of a
    /// one-file run).
    named: u64,
    first_url: Option<String>,
    /// `link_expiry`: the run's links, attached as stored files are recorded.
    links: Option<super::links::Links>,
    /// Slots reserved so far.
    slots: usize,
    /// `None`: no manifest asked for. `Some(Err)`: the spool could not be created or
    /// written; the manifest write then fails with that error.
    spool: Option<io::Result<Spool>>,
    /// `checksums_file`: what each stored file's SHA-256 is.
    sums: Option<super::checksums::Sums>,
}

impl Report {
    /// A report; `manifest`: spool the manifest entries (in `TMPDIR`, else the working
    /// directory: see [`open_spool`]).
    pub fn new(manifest: bool) -> Self {
        let spool = manifest.then(|| open_spool().map(Spool::new));
        Report { spool, ..Report::default() }
    }

    /// A report spooling to `file` (tests: a file that fails).
    #[cfg(test)]
    fn with_spool(file: io::Result<File>) -> Self {
        Report { spool: Some(file.map(Spool::new)), ..Report::default() }
    }

    /// Reserves `n` consecutive slots and returns the first: the files of one plan, in
    /// plan order, recorded with [`record`](Self::record) as they finish in any order.
    pub fn reserve(&mut self, n: usize) -> usize {
        let first = self.slots;
        self.slots += n;
        if let Some(Ok(s)) = &mut self.spool {
            s.at.resize(self.slots, NO_ENTRY);
        }
        first
    }

    /// Collects the SHA-256 of every stored file for `checksums_file`, by its name
    /// relative to `target`.
    pub fn collect_sums(&mut self, target: &str) {
        self.sums = Some(super::checksums::Sums::new(target));
    }

    /// The SHA-256 sums collected ([`Self::collect_sums`]).
    pub fn take_sums(&mut self) -> Option<super::checksums::Sums> {
        self.sums.take()
    }

    /// Gives every stored file recorded from now on its link ([`super::links::Links::attach`]).
    pub fn attach_links(&mut self, links: super::links::Links) {
        self.links = Some(links);
    }

    /// The run's links (`link_expiry`), taken once the files are all recorded.
    pub fn take_links(&mut self) -> Option<super::links::Links> {
        self.links.take()
    }

    /// Records a result in the next slot.
    pub fn push(&mut self, r: FileResult) {
        let slot = self.reserve(1);
        self.record(slot, r);
    }

    /// Records the result of slot `slot` (one never reserved, or already recorded, gets
    /// a new slot at the end: nothing recorded is lost).
    pub fn record(&mut self, slot: usize, mut r: FileResult) {
        let slot = match &self.spool {
            Some(Ok(s)) if s.at.get(slot) != Some(&NO_ENTRY) => self.reserve(1),
            _ if slot >= self.slots => self.reserve(1),
            _ => slot,
        };
        if let Some(links) = &mut self.links {
            links.attach(&mut r);
        }
        self.tally.add(r.status, r.size);
        if let Some(sums) = &mut self.sums {
            sums.add(&r);
        }
        if !r.name.is_empty() {
            self.named += 1;
            if self.first_url.is_none() {
                self.first_url = Some(r.url.clone());
            }
        }
        if let Some(Ok(s)) = &mut self.spool {
            if let Err(e) = s.write(slot, &r) {
                self.spool = Some(Err(e));
            }
        }
        if r.status == Status::Failed {
            self.failures.push((slot, r));
        }
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The URL of the one file with a remote name, when there is exactly one.
    pub fn single_url(&self) -> Option<&str> {
        self.first_url.as_deref().filter(|_| self.named == 1)
    }

    /// The failed results in slot order.
    pub fn into_failures(self) -> Vec<FileResult> {
        let mut f = self.failures;
        f.sort_by_key(|(slot, _)| *slot);
        f.into_iter().map(|(_, r)| r).collect()
    }

    /// The `files` of the manifest: the spooled entries in slot order, or the reason
    /// there are none to give.
    fn files(&mut self) -> io::Result<SpooledFiles<'_>> {
        let spool = match self.spool.as_mut() {
            None => None,
            Some(Err(e)) => return Err(spool_error(e)),
            Some(Ok(s)) => {
                s.out.flush().map_err(|e| spool_error(&e))?;
                Some(&*s)
            }
        };
        Ok(SpooledFiles { spool, failed: std::cell::RefCell::new(None) })
    }
}

fn spool_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot spool its entries: {e}"))
}

/// A slot with no entry (reserved, never recorded).
const NO_ENTRY: u64 = u64::MAX;

/// The manifest entries of a run, each as compact JSON behind its length (4 bytes,
/// little-endian), in the order they came.
#[derive(Debug)]
struct Spool {
    out: BufWriter<File>,
    /// Bytes written so far.
    len: u64,
    /// Per slot: where its entry starts, or [`NO_ENTRY`].
    at: Vec<u64>,
}

impl Spool {
    fn new(file: File) -> Self {
        Spool { out: BufWriter::with_capacity(64 << 10, file), len: 0, at: Vec::new() }
    }

    fn write(&mut self, slot: usize, r: &FileResult) -> io::Result<()> {
        let json = serde_json::to_vec(r).map_err(io::Error::other)?;
        let n = u32::try_from(json.len()).map_err(|_| io::Error::other("a manifest entry over 4 GiB"))?;
        self.out.write_all(&n.to_le_bytes())?;
        self.out.write_all(&json)?;
        if self.at.len() <= slot {
            self.at.resize(slot + 1, NO_ENTRY);
        }
        self.at[slot] = self.len;
        self.len += 4 + u64::from(n);
        Ok(())
    }

    /// The entry spooled at `at` (read back with positioned reads: the spool is flushed).
    fn read(&self, at: u64, buf: &mut Vec<u8>) -> io::Result<FileResult> {
        let file = self.out.get_ref();
        let mut n = [0u8; 4];
        file.read_exact_at(&mut n, at)?;
        buf.resize(u32::from_le_bytes(n) as usize, 0);
        file.read_exact_at(buf, at + 4)?;
        serde_json::from_slice(buf).map_err(io::Error::other)
    }
}

/// The manifest's `files`: serialised as a sequence read from the spool one entry at a time
/// (memory does not grow with the number of files). A read error stops the serialisation
/// and is kept in `failed`, to be returned with its kind.
struct SpooledFiles<'a> {
    /// `None`: no manifest spool, an empty array.
    spool: Option<&'a Spool>,
    failed: std::cell::RefCell<Option<io::Error>>,
}

impl Serialize for SpooledFiles<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(spool) = self.spool else {
            return serializer.collect_seq(std::iter::empty::<FileResult>());
        };
        let mut buf = Vec::new();
        let entries = spool.at.iter().filter(|&&at| at != NO_ENTRY).map(|&at| match spool.read(at, &mut buf) {
            Ok(r) => Entry::Read(r),
            Err(e) => Entry::Failed(&self.failed, e),
        });
        serializer.collect_seq(entries)
    }
}

/// One item of [`SpooledFiles`]: an entry, or the error reading it (serialising it fails).
enum Entry<'a> {
    Read(FileResult),
    Failed(&'a std::cell::RefCell<Option<io::Error>>, io::Error),
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Entry::Read(r) => r.serialize(serializer),
            Entry::Failed(slot, e) => {
                let msg = e.to_string();
                slot.borrow_mut().get_or_insert_with(|| io::Error::new(e.kind(), msg.clone()));
                Err(S::Error::custom(msg))
            }
        }
    }
}

/// An unnamed file for the spool: in `TMPDIR` (or `/tmp`), else in the working directory
/// (where the manifest goes, so writable whenever the manifest can be written). Unnamed
/// (`O_TMPFILE`) where the filesystem allows, else created under a unique name and
/// unlinked at once; either way nothing is left behind, even when the run is killed.
pub(crate) fn open_spool() -> io::Result<File> {
    let mut last = None;
    for dir in [std::env::temp_dir(), PathBuf::from(".")] {
        match spool_in(&dir) {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no directory for a temporary file")))
}

fn spool_in(dir: &Path) -> io::Result<File> {
    let d = dirfd::open_dir(dir)?;
    if let Ok(f) = dirfd::tmpfile_in(&d) {
        return Ok(f);
    }
    let name = format!(".plugin-azure-storage-{}-{:016x}.spool", std::process::id(), fastrand::u64(..));
    let f = dirfd::create_new_at(&d, &name)?;
    dirfd::unlink_at(&d, &name)?;
    Ok(f)
}

#[derive(Serialize)]
struct Manifest<'a, F: Serialize> {
    version: u32,
    tool: &'static str,
    action: &'static str,
    service: &'static str,
    account: &'a str,
    container: &'a str,
    summary: &'a Summary,
    /// Last by convention only: the document is serialised whole.
    files: F,
}

/// Writes the manifest atomically (temp file + rename); a failed write leaves no temp file.
/// The files are copied from the report's spool one entry at a time; with `keep`, the
/// document is built in memory and also returned (the bytes to upload: `link_expiry`).
#[allow(clippy::too_many_arguments)]
pub fn write_manifest(
    path: &Path,
    action: &'static str,
    service: &'static str,
    account: &str,
    container: &str,
    summary: &Summary,
    report: &mut Report,
    keep: bool,
) -> io::Result<Option<Vec<u8>>> {
    let m = Manifest {
        version: 1,
        tool: concat!("plugin-azure-storage/", env!("CARGO_PKG_VERSION")),
        action,
        service,
        account,
        container,
        summary,
        files: (),
    };
    if !keep {
        return write_atomically(path, |out| write_document(&m, report, out)).map(|()| None);
    }
    let mut doc = Vec::new();
    write_document(&m, report, &mut doc)?;
    write_atomically(path, |out| out.write_all(&doc))?;
    Ok(Some(doc))
}

/// Writes the workspace file `path` through `write`, atomically: its directory is opened
/// without following a link inside the workspace (a committed `dist -> /etc` cannot
/// redirect `manifest: dist/m.json`), and the file is written under a temporary name in
/// it, then renamed: a reader never sees half a file, and a failed write leaves no
/// temporary file. The manifest and the checksums file are written this way.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let workspace = std::env::current_dir()?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = dirfd::open_beneath(&workspace, parent, true).map_err(io::Error::other)?;
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let written = dirfd::create_new_at(&dir, &tmp)
        .and_then(|f| {
            let mut out = BufWriter::with_capacity(64 << 10, f);
            write(&mut out)?;
            out.into_inner().map(drop).map_err(|e| e.into_error())
        })
        .and_then(|_| dirfd::rename_at(&dir, &tmp, name));
    if written.is_err() {
        let _ = dirfd::unlink_at(&dir, &tmp);
    }
    written
}

impl<'a> Manifest<'a, ()> {
    fn with_files<F: Serialize>(&self, files: F) -> Manifest<'a, F> {
        let Manifest { version, tool, action, service, account, container, summary, files: () } = *self;
        Manifest { version, tool, action, service, account, container, summary, files }
    }
}

/// The manifest `m` with the report's spooled entries as `files`, pretty-printed.
fn write_document(m: &Manifest<()>, report: &mut Report, out: &mut impl Write) -> io::Result<()> {
    let files = report.files()?;
    serde_json::to_writer_pretty(&mut *out, &m.with_files(&files)).map_err(|e| {
        let failed = files.failed.borrow_mut().take();
        failed.map_or_else(|| io::Error::from(e), |e| spool_error(&e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, status: Status, size: u64) -> FileResult {
        let mut r = FileResult::new(name, &format!("dist/{name}"), size, format!("https://a.example/c/{name}"));
        r.status = status;
        if status != Status::Transferred {
            r.reason = Some(format!("why {name}"));
        }
        r.sha256 = Some("ab".repeat(32));
        r.etag = (status == Status::Transferred).then(|| "\"0x8D\"".to_string());
        r
    }

    /// Names with what JSON escapes (a quote, a line break, a backslash) and non-ASCII.
    fn entries() -> Vec<FileResult> {
        let statuses = [Status::Transferred, Status::Skipped, Status::Failed, Status::NotAttempted, Status::Deleted];
        let mut v: Vec<FileResult> = (0..40)
            .map(|i| result(&format!("f{i:02} \"q\"\n\\ é"), statuses[i % statuses.len()], i as u64 * 10))
            .collect();
        v[3].resumed_bytes = 7;
        v
    }

    fn summary(tally: &Tally) -> Summary {
        Summary::from_tally("upload", tally, Duration::from_secs(2), 9, 1, false)
    }

    fn manifest<F: Serialize>(summary: &Summary, files: F) -> Manifest<'_, F> {
        Manifest {
            version: 1,
            tool: "plugin-azure-storage/test",
            action: "upload",
            service: "blob",
            account: "acct",
            container: "c",
            summary,
            files,
        }
    }

    fn spooled() -> Report {
        Report::with_spool(open_spool())
    }

    /// The manifest the report writes.
    fn document(report: &mut Report) -> io::Result<Vec<u8>> {
        let s = summary(report.tally());
        let mut out = Vec::new();
        write_document(&manifest(&s, ()), report, &mut out)?;
        Ok(out)
    }

    /// Records `all` in reserved slots, in the completion order `order` (indices into `all`).
    fn record_in(report: &mut Report, all: &[FileResult], order: impl Iterator<Item = usize>) {
        let first = report.reserve(all.len());
        for i in order {
            report.record(first + i, all[i].clone());
        }
    }

    #[test]
    fn the_report_counts_files_and_bytes_per_status_and_keeps_only_failures() {
        let all = entries();
        let mut report = Report::new(false);
        record_in(&mut report, &all, (0..all.len()).rev());
        let t = report.tally();
        assert_eq!(t.files(Status::Transferred), 8);
        assert_eq!(t.bytes(Status::Transferred), (0..40).step_by(5).map(|i| i * 10).sum::<u64>());
        assert_eq!(t.files(Status::Skipped), 8);
        assert_eq!(t.bytes(Status::Skipped), (1..40).step_by(5).map(|i| i * 10).sum::<u64>());
        assert_eq!((t.files(Status::Failed), t.files(Status::NotAttempted), t.files(Status::Deleted)), (8, 8, 8));
        let s = summary(t);
        assert_eq!((s.files_transferred, s.files_failed, s.files_deleted), (8, 8, 8));
        assert_eq!(report.single_url(), None, "40 named files: no single URL");
        // The failures, in slot (plan) order although they finished last to first.
        let failures = report.into_failures();
        let names: Vec<&str> = failures.iter().map(|f| f.name.as_str()).collect();
        let want: Vec<&str> = all.iter().filter(|r| r.status == Status::Failed).map(|r| r.name.as_str()).collect();
        assert_eq!(names, want);
        assert!(s.table(&failures).contains(&format!("8 failed:\n  ✗ dist/{} → ", all[2].name)));
    }

    #[test]
    fn the_url_output_is_the_one_named_files() {
        let mut report = Report::new(false);
        report.push(FileResult::new("", "skipped-at-planning", 0, String::new()));
        report.push(result("one", Status::Transferred, 1));
        assert_eq!(report.single_url(), Some("https://a.example/c/one"));
        report.push(result("two", Status::Skipped, 1));
        assert_eq!(report.single_url(), None);
    }

    #[test]
    fn the_spooled_manifest_is_what_the_whole_document_serialised_gives() {
        for n in [0, 1, 2, 40] {
            let all = &entries()[..n];
            let mut report = spooled();
            // Finished in another order than planned: odd slots first, then even ones.
            record_in(&mut report, all, (1..n).step_by(2).chain((0..n).step_by(2)));
            let got = document(&mut report).unwrap();
            let s = summary(report.tally());
            let want = serde_json::to_vec_pretty(&manifest(&s, all)).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap(), "{n} entries");
        }
    }

    #[test]
    fn the_order_is_the_slots_whatever_order_files_finish_in() {
        let all = entries();
        let mut a = spooled();
        a.push(result("planning", Status::Skipped, 0));
        record_in(&mut a, &all, 0..all.len());
        let mut b = spooled();
        b.push(result("planning", Status::Skipped, 0));
        let mut order: Vec<usize> = (0..all.len()).collect();
        fastrand::Rng::with_seed(7).shuffle(&mut order);
        record_in(&mut b, &all, order.into_iter());
        let (a, b) = (document(&mut a).unwrap(), document(&mut b).unwrap());
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        let names: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names[0], "planning");
        assert_eq!(names[1..], all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn a_slot_recorded_twice_or_never_reserved_loses_nothing() {
        let mut report = spooled();
        let first = report.reserve(2);
        report.record(first + 1, result("b", Status::Transferred, 1));
        report.record(first + 1, result("again", Status::Transferred, 1));
        report.record(99, result("stray", Status::Failed, 1));
        report.record(first, result("a", Status::Transferred, 1));
        let v: serde_json::Value = serde_json::from_slice(&document(&mut report).unwrap()).unwrap();
        let names: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "again", "stray"]);
        assert_eq!(v["summary"]["files_transferred"], 3);
    }

    #[test]
    fn a_spool_that_cannot_be_made_or_written_fails_the_manifest_not_the_counts() {
        let mut report = Report::with_spool(Err(io::Error::new(io::ErrorKind::PermissionDenied, "/tmp: denied")));
        report.push(result("a", Status::Transferred, 5));
        let e = document(&mut report).unwrap_err();
        assert_eq!(e.to_string(), "cannot spool its entries: /tmp: denied");
        assert_eq!(report.tally().bytes(Status::Transferred), 5);
        // A file refusing writes (read-only): the error comes out at the latest when the
        // buffered entries are flushed for the copy.
        let mut report = Report::with_spool(File::open("/dev/null"));
        for r in entries() {
            report.push(r);
        }
        assert!(document(&mut report).is_err());
        assert_eq!(report.tally().files(Status::Failed), 8);
        assert_eq!(report.into_failures().len(), 8);
    }

    #[test]
    fn the_spool_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let f = spool_in(dir.path()).unwrap();
        let mut report = Report::with_spool(Ok(f));
        report.push(result("a", Status::Transferred, 1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool has no name");
        assert!(document(&mut report).is_ok());
    }

    #[test]
    fn listed_sizes_sum_without_overflow() {
        let mut t = Tally::default();
        t.add(Status::Transferred, u64::MAX);
        t.add(Status::Transferred, u64::MAX);
        assert_eq!(t.bytes(Status::Transferred), u64::MAX);
        assert_eq!(t.files(Status::Transferred), 2);
    }
}
