//! Planning: which files move, under which names, decided before any transfer.
//!
//! Upload: expand `source` globs under the workspace (`*` stays within a directory,
//! `**` crosses them; a plain directory means its whole tree), drop `exclude` matches
//! (gitignore-like: a pattern without `/` matches any path component; an excluded
//! directory is pruned, never read), skip symlinks unless `follow_symlinks` (and then
//! skip those leading out of the workspace: every path is resolved through
//! [`super::localfs::Root`]), map names (`strip_prefix` by whole components, then
//! `target`), and refuse collisions and names Azure would refuse (for Azure Files also
//! names equal but for case, a path that is both a file and a directory, and the
//! characters and lengths Files refuses). A file whose name is not valid UTF-8 is refused
//! on its own (a failed file naming it, bytes escaped), never merged with another.
//! Hidden entries (names beginning with `.`) stay home unless a pattern names them
//! ([`Hidden`]: shell and upload-artifact v4 rules; `.git` only when named literally) or
//! `include_hidden` is set; a hidden directory left out is pruned, never read.
//! Each planned file carries what was seen of it ([`FileId`]) for the checks at read time,
//! stat'ed from its directory's descriptor on a second thread while the walk reads on
//! (`Stats`: results taken back in walk order, so the plan is the same).
//! The planned files are kept compactly ([`PlannedFiles`]: their paths in one buffer, 24
//! bytes besides), and each becomes an [`UploadItem`] only when it is sent, so a plan of
//! a million files costs about 45 MB, not a kilobyte per file.
//!
//! Download: filter the listing by `source`, map names to local paths under `target`,
//! and refuse any name that could escape it (`..`, absolute, backslash, NUL, control
//! characters, over-long components). Two remote names that map to one local path
//! (`p/x.txt` and `x.txt` with `strip_prefix: p`) are a planning error naming both, so
//! nothing is downloaded and neither is silently dropped (git refuses colliding paths the
//! same way); a name that is also the directory of another name is refused as a failed
//! file. Both checks are one pass over the sorted names (O(n log n)).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};

use super::localfs::{escape_name, FileId, ResolveError, Root};

use super::listing::Listing;
use crate::config::{Config, PathPattern};
use crate::storage::{RemoteItem, Store};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("`source` selects no file{0} (set `allow_empty: true` to accept an empty selection)")]
    Empty(String),
    #[error("{} file(s) would be uploaded under the same name:\n{}", .0.len(), .0.join("\n"))]
    Collisions(Vec<String>),
    #[error("{} name(s) cannot be stored:\n{}", .0.len(), .0.join("\n"))]
    BadNames(Vec<String>),
    #[error(
        "{} local path(s) would each receive more than one remote file; nothing was downloaded (check `strip_prefix` (PLUGIN_STRIP_PREFIX) and `source` (PLUGIN_SOURCE)):\n{}",
        .0.len(),
        .0.join("\n")
    )]
    DownloadCollisions(Vec<String>),
    #[error("cannot read the workspace: {0}")]
    Walk(String),
    /// A `{{ hashFiles }}` glob that selects no file to hash.
    #[error(
        "`{0}` selects no file to hash (links are not followed, hidden entries only where the glob names them, \
         nothing inside the cached `source` directories)"
    )]
    HashNoMatch(String),
    #[error("`target` `{0}` exists and is not a directory")]
    TargetNotDir(String),
}

#[derive(Debug, Clone)]
pub struct UploadItem {
    /// The workspace it is opened from (never by path: see [`Root`]).
    pub root: Arc<Root>,
    /// Workspace-relative path with `/` separators (what globs and rules match).
    pub rel: String,
    /// Remote name.
    pub name: String,
    pub size: u64,
    /// What planning saw: the file opened later must be this one (device, inode, size).
    pub state: FileId,
}

#[derive(Debug, Clone)]
pub struct Skipped {
    pub rel: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct UploadPlan {
    pub files: PlannedFiles,
    pub skipped: Vec<Skipped>,
    /// Files selected but refused (a name that is not UTF-8): each a failed file.
    pub refused: Vec<Skipped>,
    /// Sources that matched nothing (warned about).
    pub unmatched: Vec<String>,
    /// Hidden entries the sources' walks left out (one info line).
    pub hidden: HiddenCount,
}

/// The hidden entries left out (a directory counts once: it is not read), for the info
/// line; two sources walking one tree count each entry once.
#[derive(Debug, Default)]
pub struct HiddenCount(BTreeSet<String>);

impl HiddenCount {
    fn add(&mut self, rel: &str) {
        self.0.insert(rel.to_string());
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The info line (`None` when nothing was left out).
    pub fn line(&self) -> Option<String> {
        let n = self.count();
        (n > 0).then(|| {
            let first: Vec<String> = self.0.iter().take(3).map(|r| format!("`{r}`")).collect();
            format!(
                "left out {n} hidden entr{} (names beginning with `.`: {}{}); name them in `source` or set `include_hidden: true` to include them",
                if n == 1 { "y" } else { "ies" },
                first.join(", "),
                if n > 3 { ", ..." } else { "" }
            )
        })
    }
}

/// Which hidden entries (names beginning with `.`) a walk below a source's literal part
/// keeps: with `include_hidden` all; otherwise those the pattern segment at their place
/// names with a leading `.` (`*` and `**` never match a leading `.`, as in the shell and
/// upload-artifact v4), and `.git` only where that segment is `.git` itself (its `config`
/// holds tokens). Segments before a `**` have one place each; after it, any place.
pub struct Hidden {
    include: bool,
    /// The segments before the first `**`, by place (`None`: no leading `.`).
    placed: Vec<Option<Segment>>,
    /// The segments after a `**` that begin with `.`: they may match at any depth.
    anywhere: Vec<Segment>,
}

struct Segment {
    glob: GlobMatcher,
    /// The segment is `.git` itself.
    git: bool,
}

impl Segment {
    fn new(s: &str) -> Result<Self, GlobError> {
        Ok(Segment { glob: glob_matcher(s)?, git: s == ".git" })
    }

    fn names(&self, name: &str) -> bool {
        if name == ".git" {
            self.git
        } else {
            self.glob.is_match(name)
        }
    }
}

/// A name beginning with `.` (not `.` or `..`, which no walk yields).
pub fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.') && name != b"." && name != b".."
}

/// A `/`-separated path with a hidden component.
pub fn has_hidden_component(path: &str) -> bool {
    path.split('/').any(|c| is_hidden(c.as_bytes()))
}

impl Hidden {
    /// The rule for the glob part of a source (the segments after its literal part;
    /// empty for a literal source, whose tree keeps no hidden entry).
    pub fn new(pattern_segments: &[&str], include: bool) -> Result<Self, GlobError> {
        let split = pattern_segments.iter().position(|s| *s == "**").unwrap_or(pattern_segments.len());
        let dotted = |s: &&str| s.starts_with('.').then(|| Segment::new(s));
        Ok(Hidden {
            include,
            placed: pattern_segments[..split].iter().map(|s| dotted(s).transpose()).collect::<Result<_, _>>()?,
            anywhere: pattern_segments[split..].iter().filter_map(dotted).collect::<Result<_, _>>()?,
        })
    }

    /// Whether the entry named `name`, `depth` (≥ 1) components below the literal part, is kept.
    pub fn keeps(&self, depth: usize, name: &std::ffi::OsStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        if self.include || !is_hidden(name.as_bytes()) {
            return true;
        }
        let name = name.to_string_lossy();
        match self.placed.get(depth - 1) {
            Some(seg) => seg.as_ref().is_some_and(|s| s.names(&name)),
            None => self.anywhere.iter().any(|s| s.names(&name)),
        }
    }
}

/// Whether a cache archive of `source` leaves out `name`, found `depth` levels below it. A
/// cache restores a tool's tree as the tool left it, hidden state included
/// (`node_modules/.bin`, `target/debug/.fingerprint`, `.cargo/.crates.toml`), so a named
/// directory is archived whole but for `.git` (unless the source names it); the workspace
/// itself (`source: .`) names none of its hidden top-level entries, so those stay home too.
pub fn cache_leaves_out(source: &str, depth: usize, name: &std::ffi::OsStr, include_hidden: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let name = name.as_bytes();
    if include_hidden || depth == 0 || !is_hidden(name) {
        return false;
    }
    let workspace = matches!(source.trim_start_matches("./").trim_end_matches('/'), "" | ".");
    name == b".git" || (workspace && depth == 1)
}

/// The files an upload plans, kept compactly: every workspace-relative path in one
/// buffer, and per file its size, inode, device (an index into a small table) and where
/// its path is: 24 bytes besides the path. Names are derived when a file is sent
/// ([`PlannedFiles::iter`]), never stored: `target` + the path with `strip_prefix` cut.
pub struct PlannedFiles {
    root: Arc<Root>,
    text: String,
    entries: Vec<Entry>,
    devs: Vec<u64>,
    target: String,
    strip_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    ino: u64,
    start: u32,
    len: u16,
    dev: u16,
}

impl std::fmt::Debug for PlannedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFiles").field("files", &self.entries.len()).finish()
    }
}

impl PlannedFiles {
    fn new(root: Arc<Root>, cfg: &Config) -> Self {
        PlannedFiles {
            root,
            text: String::new(),
            entries: Vec::new(),
            devs: Vec::new(),
            target: cfg.target.clone(),
            strip_prefix: cfg.strip_prefix.clone(),
        }
    }

    /// Adds a file; an error (the one-line reason) when it cannot be held: a path over
    /// 65,535 bytes (no store takes a name that long), or over 4 GiB of paths in all.
    fn push(&mut self, rel: &str, id: FileId) -> Result<(), String> {
        let len = u16::try_from(rel.len()).map_err(|_| "the path is longer than 65,535 bytes".to_string())?;
        let start = u32::try_from(self.text.len())
            .ok()
            .filter(|s| s.checked_add(u32::from(len)).is_some())
            .ok_or("more than 4 GiB of path names selected")?;
        let dev = match self.devs.iter().position(|d| *d == id.dev) {
            Some(i) => i,
            None => {
                self.devs.push(id.dev);
                self.devs.len() - 1
            }
        };
        let dev = u16::try_from(dev).map_err(|_| "files on more than 65,536 devices selected".to_string())?;
        self.text.push_str(rel);
        self.entries.push(Entry { size: id.size, ino: id.ino, start, len, dev });
        Ok(())
    }

    fn rel_of(&self, e: &Entry) -> &str {
        &self.text[e.start as usize..e.start as usize + e.len as usize]
    }

    /// Sorts by path and drops the files two sources both selected.
    fn sort_dedup(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.rel_of(a).cmp(self.rel_of(b)));
        entries.dedup_by(|a, b| self.rel_of(a) == self.rel_of(b));
        entries.shrink_to_fit();
        self.entries = entries;
        self.text.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.size))
    }

    /// Each file's workspace-relative path and size, in plan order (sorted by path).
    pub fn sizes(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.entries.iter().map(|e| (self.rel_of(e), e.size))
    }

    /// The part of `rel` its remote name keeps (`strip_prefix` cut).
    fn stripped<'a>(&self, rel: &'a str) -> &'a str {
        strip_components(rel, self.strip_prefix.as_deref())
    }

    fn name_of(&self, rel: &str) -> String {
        join_remote(&self.target, self.stripped(rel))
    }

    fn item(&self, e: &Entry) -> UploadItem {
        let rel = self.rel_of(e);
        let state = FileId { dev: self.devs[e.dev as usize], ino: e.ino, size: e.size };
        UploadItem { root: self.root.clone(), rel: rel.to_string(), name: self.name_of(rel), size: e.size, state }
    }

    /// The planned files in plan order (sorted by path), each made whole when asked for.
    pub fn iter(&self) -> impl Iterator<Item = UploadItem> + '_ {
        self.entries.iter().map(|e| self.item(e))
    }

    /// Every planned file, in plan order, the plan moved into the iterator (what a
    /// driver task takes with it).
    pub fn into_items(self) -> impl Iterator<Item = UploadItem> {
        (0..self.entries.len()).map(move |i| self.item(&self.entries[i]))
    }
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// A `source` pattern that is not a glob.
#[derive(Debug, thiserror::Error)]
#[error("`{pattern}` is not a valid glob: {kind}")]
pub struct GlobError {
    pattern: String,
    kind: globset::ErrorKind,
}

fn glob_matcher(pattern: &str) -> Result<GlobMatcher, GlobError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| GlobError { pattern: pattern.to_string(), kind: e.kind().clone() })
}

/// Removes `prefix` from `path` when it matches whole leading components.
pub fn strip_components<'a>(path: &'a str, prefix: Option<&str>) -> &'a str {
    match prefix {
        Some(p) if !p.is_empty() => {
            if path == p {
                return path.rsplit('/').next().unwrap_or(path);
            }
            match path.strip_prefix(p) {
                Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
                _ => path,
            }
        }
        _ => path,
    }
}

/// Where the local path begins in `name` with `prefix` stripped: it is always the name's
/// tail, so a download keeps this offset rather than a copy of the path.
fn rel_offset(name: &str, prefix: Option<&str>) -> usize {
    name.len() - strip_components(name, prefix).len()
}

/// `target` + name, with `/` separators and no empty components.
pub fn join_remote(target: &str, name: &str) -> String {
    target.split('/').chain(name.split('/')).filter(|c| !c.is_empty()).collect::<Vec<_>>().join("/")
}

/// `rel` or one of its parent directories matches one of `excludes`.
pub(crate) fn excluded(rel: &str, excludes: &[PathPattern]) -> bool {
    if excludes.is_empty() {
        return false;
    }
    // The path itself, and each of its parent directories (so `node_modules` excludes the tree).
    let mut idx = 0;
    loop {
        let next = rel[idx..].find('/').map(|i| idx + i);
        let prefix = match next {
            Some(i) => &rel[..i],
            None => rel,
        };
        if excludes.iter().any(|p| p.is_match(prefix)) {
            return true;
        }
        match next {
            Some(i) => idx = i + 1,
            None => return false,
        }
    }
}

/// `p` relative to `root` with `/` separators, and (when a component is not valid
/// UTF-8) the same path with those bytes escaped, for the refusal.
fn rel_of(root: &Path, p: &Path) -> Option<(String, Option<String>)> {
    use std::os::unix::ffi::OsStrExt;
    // The common case, without parsing components: `root` a byte prefix of `p`, the rest
    // valid UTF-8 and in normal form (no empty or `.` component), so it is its own
    // `/`-joined components.
    let (pb, rb) = (p.as_os_str().as_bytes(), root.as_os_str().as_bytes());
    let rest =
        pb.strip_prefix(rb)
            .and_then(|r| if r.is_empty() || rb.ends_with(b"/") { Some(r) } else { r.strip_prefix(b"/") });
    if let Some(s) = rest.and_then(|r| std::str::from_utf8(r).ok()) {
        if s.is_empty() || s.split('/').all(|c| !c.is_empty() && c != ".") {
            return Some((s.to_string(), None));
        }
    }
    let rel = p.strip_prefix(root).ok()?;
    let parts: Vec<&std::ffi::OsStr> = rel.components().map(|c| c.as_os_str()).collect();
    let lossy = parts.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/");
    let bad = parts.iter().any(|c| c.to_str().is_none());
    let escaped = bad.then(|| parts.iter().map(|c| escape_name(c)).collect::<Vec<_>>().join("/"));
    Some((lossy, escaped))
}

const LINK_SKIPPED: &str = "symbolic link (set `follow_symlinks: true` to follow links)";

/// What the sources selected so far.
struct Selection {
    found: PlannedFiles,
    skipped: BTreeMap<String, String>,
    /// Files that cannot be uploaded under their name (per-file failures).
    refused: BTreeMap<String, String>,
    hidden: HiddenCount,
}

impl Selection {
    fn len(&self) -> usize {
        self.found.len() + self.skipped.len() + self.refused.len()
    }

    /// Records a link that is not followed (or not safely resolvable) at `rel`.
    fn link(&mut self, rel: &str, e: ResolveError) -> Result<(), PlanError> {
        match e {
            ResolveError::Symlink(at) => self.skipped.insert(at, LINK_SKIPPED.into()),
            ResolveError::Escapes { link, target } => {
                self.skipped.insert(link, format!("symbolic link to `{target}`, outside the workspace; not followed"))
            }
            ResolveError::Loop(at) => self.skipped.insert(at, "symlink loop".into()),
            ResolveError::Io(e) => return Err(PlanError::Walk(format!("{rel}: {e}"))),
        };
        Ok(())
    }
}

/// Adds what one source selects under the workspace; false when it selects nothing.
///
/// The literal part of the source is resolved first, component by component, from the
/// workspace root: a link on the way is skipped (when followed, it must stay inside the
/// workspace). Below it, excluded directories are pruned before they are read, and with
/// `follow_symlinks` every link met is resolved the same way before it is descended.
///
/// Directories in `leave_out` (workspace-relative, normalised) are pruned unread, and
/// nothing inside them is selected.
fn select(
    cfg: &Config,
    ws: &Arc<Root>,
    source: &str,
    sel: &mut Selection,
    leave_out: &[String],
) -> Result<bool, PlanError> {
    let segments: Vec<&str> = source.split('/').collect();
    let literal = segments.iter().take_while(|c| !has_glob_meta(c)).count();
    let hidden = Hidden::new(&segments[literal..], cfg.include_hidden).map_err(|e| PlanError::Walk(e.to_string()))?;
    let (base_rel, matcher) = if literal < segments.len() {
        (segments[..literal].join("/"), Some(glob_matcher(source).map_err(|e| PlanError::Walk(e.to_string()))?))
    } else {
        (source.to_string(), None)
    };
    let before = sel.len();
    let left_out = |rel: &str| {
        leave_out.iter().any(|d| rel.strip_prefix(d.as_str()).is_some_and(|r| r.is_empty() || r.starts_with('/')))
    };
    if left_out(&base_rel) {
        return Ok(false);
    }
    match ws.probe(&base_rel) {
        Ok(()) => {}
        Err(ResolveError::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
        {
            return Ok(false)
        }
        Err(e) => {
            sel.link(&base_rel, e)?;
            return Ok(sel.len() > before);
        }
    }
    let follow = cfg.follow_symlinks;
    let mut stats = Stats::new();
    let mut walker = walkdir::WalkDir::new(ws.path().join(&base_rel))
        .follow_links(follow)
        .follow_root_links(follow)
        // Siblings share their parent's path: comparing the paths' bytes orders them by
        // name (as `sort_by_file_name` would), without parsing each path's last component.
        .sort_by(|a, b| a.path().as_os_str().cmp(b.path().as_os_str()))
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let rel = e.path().and_then(|p| rel_of(ws.path(), p)).map(|r| r.0).unwrap_or_default();
                if e.loop_ancestor().is_some() {
                    sel.skipped.insert(rel, "symlink loop".into());
                    continue;
                }
                let link = e.path().and_then(|p| p.symlink_metadata().ok()).is_some_and(|m| m.is_symlink());
                if link {
                    // A followed link whose target cannot be read (missing, or outside).
                    match ws.probe(&rel) {
                        Err(r @ (ResolveError::Escapes { .. } | ResolveError::Loop(_))) => sel.link(&rel, r)?,
                        _ => {
                            sel.skipped.insert(rel, format!("symbolic link whose target cannot be read: {e}"));
                        }
                    }
                    continue;
                }
                return Err(PlanError::Walk(format!("{rel}: {e}")));
            }
        };
        let Some((rel, bad_name)) = rel_of(ws.path(), entry.path()) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let ft = entry.file_type();
        if entry.depth() > 0 && !hidden.keeps(entry.depth(), entry.file_name()) {
            if ft.is_dir() {
                walker.skip_current_dir();
            }
            sel.hidden.add(&rel);
            continue;
        }
        if ft.is_dir() {
            if excluded(&rel, &cfg.excludes) || left_out(&rel) {
                walker.skip_current_dir();
            } else if entry.path_is_symlink() {
                if let Err(e) = ws.probe(&rel) {
                    walker.skip_current_dir();
                    sel.link(&rel, e)?;
                }
            }
            continue;
        }
        if matcher.as_ref().is_some_and(|m| !m.is_match(&rel)) || excluded(&rel, &cfg.excludes) || left_out(&rel) {
            continue;
        }
        if ft.is_symlink() {
            sel.skipped.insert(rel, LINK_SKIPPED.into());
            continue;
        }
        if entry.path_is_symlink() {
            if let Err(e) = ws.probe(&rel) {
                sel.link(&rel, e)?;
                continue;
            }
        }
        if !ft.is_file() {
            sel.skipped.insert(rel, "not a regular file".into());
            continue;
        }
        if let Some(escaped) = bad_name {
            sel.refused.insert(
                escaped,
                "refused: the name is not valid UTF-8 (blob names are Unicode); rename the file".into(),
            );
            continue;
        }
        stats.queue(rel, &entry, sel)?;
    }
    stats.finish(sel)?;
    Ok(sel.len() > before)
}

/// Stats the regular files the walk meets on a second thread, while the walk reads on: the
/// files are queued in walk order (in batches) and their results come back in that order,
/// so the plan is the same as a stat in the walk's loop would make it. Results are taken
/// as they come (a few batches in flight at most: the plan's memory stays what it was).
/// A file reached
/// without a link on its path is stat'ed from its directory's descriptor (opened once per
/// directory): one component to resolve, not the whole path. A link the walk followed, or a
/// file whose directory cannot be opened, is stat'ed by its path as `walkdir` does.
struct Stats {
    tx: Option<std::sync::mpsc::SyncSender<Vec<StatJob>>>,
    rx: std::sync::mpsc::Receiver<Vec<Result<FileId, String>>>,
    batch: Vec<StatJob>,
    /// Each queued file's workspace-relative path, in walk order, until its result is in.
    rels: std::collections::VecDeque<String>,
    /// The directory of the last file queued, open (with its path, for an error's words).
    dir: Option<Arc<(std::path::PathBuf, std::os::fd::OwnedFd)>>,
}

enum StatJob {
    At(Arc<(std::path::PathBuf, std::os::fd::OwnedFd)>, std::ffi::OsString),
    /// By path, following the last component when the walk followed it (a link).
    Path(std::path::PathBuf, bool),
}

impl StatJob {
    fn run(self) -> Result<FileId, String> {
        // Worded as `walkdir`'s error for the same failure.
        let worded = |path: &Path, e: std::io::Error| format!("IO error for operation on {}: {e}", path.display());
        match self {
            StatJob::At(dir, name) => super::dirfd::id_at(&dir.1, &name)
                .map(|(dev, ino, size)| FileId { dev, ino, size })
                .map_err(|e| worded(&dir.0.join(&name), e)),
            StatJob::Path(path, follow) => {
                let m = if follow { std::fs::metadata(&path) } else { std::fs::symlink_metadata(&path) };
                m.map(|m| FileId::of(&m)).map_err(|e| worded(&path, e))
            }
        }
    }
}

/// Files queued before their batch is handed to the stat thread.
const STAT_BATCH: usize = 1024;

impl Stats {
    fn new() -> Self {
        let (tx, jobs) = std::sync::mpsc::sync_channel::<Vec<StatJob>>(4);
        let (done, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for batch in jobs {
                if done.send(batch.into_iter().map(StatJob::run).collect()).is_err() {
                    return;
                }
            }
        });
        Stats { tx: Some(tx), rx, batch: Vec::with_capacity(STAT_BATCH), rels: Default::default(), dir: None }
    }

    /// Queues a file, and plans the files whose results are in.
    fn queue(&mut self, rel: String, entry: &walkdir::DirEntry, sel: &mut Selection) -> Result<(), PlanError> {
        let path = entry.path();
        let job = match (path.parent(), entry.path_is_symlink()) {
            (Some(parent), false) => {
                if self.dir.as_ref().is_none_or(|d| d.0 != parent) {
                    self.dir = super::dirfd::open_dir(parent).ok().map(|fd| Arc::new((parent.to_path_buf(), fd)));
                }
                match (&self.dir, path.file_name()) {
                    (Some(dir), Some(name)) => StatJob::At(dir.clone(), name.to_os_string()),
                    _ => StatJob::Path(path.to_path_buf(), false),
                }
            }
            (_, link) => StatJob::Path(path.to_path_buf(), link),
        };
        self.batch.push(job);
        self.rels.push_back(rel);
        if self.batch.len() >= STAT_BATCH {
            self.send();
        }
        while let Ok(results) = self.rx.try_recv() {
            self.plan(results, sel)?;
        }
        Ok(())
    }

    /// The next files in walk order, with what was seen of them: into the plan, or the
    /// first failure as the walk's error.
    fn plan(&mut self, results: Vec<Result<FileId, String>>, sel: &mut Selection) -> Result<(), PlanError> {
        for r in results {
            let rel = self.rels.pop_front().unwrap_or_default();
            let id = r.map_err(|e| PlanError::Walk(format!("{rel}: {e}")))?;
            if let Err(why) = sel.found.push(&rel, id) {
                sel.refused.insert(rel, format!("refused: {why}"));
            }
        }
        Ok(())
    }

    fn send(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(STAT_BATCH));
        if let Some(tx) = &self.tx {
            // The thread only stops when this side hangs up: a failed send means it died.
            if tx.send(batch).is_err() {
                self.tx = None;
            }
        }
    }

    /// Plans every file still queued (waiting for the stat thread to finish them).
    fn finish(mut self, sel: &mut Selection) -> Result<(), PlanError> {
        if !self.batch.is_empty() {
            self.send();
        }
        self.tx = None;
        while let Ok(results) = self.rx.recv() {
            self.plan(results, sel)?;
        }
        match self.rels.front() {
            Some(rel) => Err(PlanError::Walk(format!("{rel}: the stat thread stopped"))),
            None => Ok(()),
        }
    }
}

/// Expands the sources under `root` (the workspace); `store` says which names it refuses
/// and which ones collide.
pub fn plan_upload(cfg: &Config, store: &dyn Store, root: &Path) -> Result<UploadPlan, PlanError> {
    let ws = Arc::new(
        Root::open(root, cfg.follow_symlinks).map_err(|e| PlanError::Walk(format!("{}: {e}", root.display())))?,
    );
    let mut unmatched = Vec::new();
    let mut sel = Selection {
        found: PlannedFiles::new(ws.clone(), cfg),
        skipped: BTreeMap::new(),
        refused: BTreeMap::new(),
        hidden: HiddenCount::default(),
    };
    for source in &cfg.sources {
        let source = source.trim_start_matches("./").trim_end_matches('/');
        if !select(cfg, &ws, source, &mut sel, &[])? {
            unmatched.push(source.to_string());
        }
    }
    let Selection { found: mut files, skipped, refused, hidden } = sel;
    files.sort_dedup();
    let plan = UploadPlan {
        refused: refused.into_iter().map(|(rel, reason)| Skipped { rel, reason }).collect(),
        skipped: skipped.into_iter().map(|(rel, reason)| Skipped { rel, reason }).collect(),
        unmatched,
        files,
        hidden,
    };
    check_names(&plan.files, store)?;
    if plan.files.is_empty() && plan.refused.is_empty() && !cfg.allow_empty {
        let detail = if plan.skipped.is_empty() {
            let hidden = match plan.hidden.count() {
                0 => String::new(),
                n => format!(
                    "; {n} hidden entr{} left out: name them or set `include_hidden: true`",
                    if n == 1 { "y" } else { "ies" }
                ),
            };
            format!(
                " (looked for {}{hidden})",
                cfg.sources.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            )
        } else {
            // Named here: the run stops before the warnings for skipped files are printed.
            let mut named: Vec<String> =
                plan.skipped.iter().take(5).map(|s| format!("{} ({})", s.rel, s.reason)).collect();
            if plan.skipped.len() > 5 {
                named.push(format!("and {} more", plan.skipped.len() - 5));
            }
            format!(" ({} matched but were skipped: {})", plan.skipped.len(), named.join(", "))
        };
        return Err(PlanError::Empty(detail));
    }
    Ok(plan)
}

/// The workspace files `globs` select for a cache key's `{{ hashFiles }}`, sorted by path
/// and each once: the upload's selection (hidden entries and `.git` only where a glob
/// segment names them, `exclude` pruned unread), links never followed, and nothing inside
/// the directories `leave_out` (a cache's `source`s: a restore there must not change the
/// key), which are never read. A glob that selects no file is [`PlanError::HashNoMatch`].
pub fn select_for_hash(
    cfg: &Config,
    workspace: &Path,
    globs: &[String],
    leave_out: &[String],
) -> Result<Vec<String>, PlanError> {
    let cfg = Config { follow_symlinks: false, ..cfg.clone() };
    let ws =
        Arc::new(Root::open(workspace, false).map_err(|e| PlanError::Walk(format!("{}: {e}", workspace.display())))?);
    let mut sel = Selection {
        found: PlannedFiles::new(ws.clone(), &cfg),
        skipped: BTreeMap::new(),
        refused: BTreeMap::new(),
        hidden: HiddenCount::default(),
    };
    for glob in globs {
        let before = sel.found.len();
        select(&cfg, &ws, glob, &mut sel, leave_out)?;
        if sel.found.len() == before {
            return Err(PlanError::HashNoMatch(glob.clone()));
        }
    }
    if !sel.refused.is_empty() {
        return Err(PlanError::BadNames(sel.refused.into_iter().map(|(rel, why)| format!("  {rel}: {why}")).collect()));
    }
    let mut files = sel.found;
    files.sort_dedup();
    Ok(files.entries.iter().map(|e| files.rel_of(e).to_string()).collect())
}

/// Refuses names the store would refuse, and names it folds together (Azure Files
/// ignores case) or, where a path cannot be both a file and a directory (Azure Files),
/// a file with a directory. One sort of the files' indices by name key, no copies: every
/// name is `target` + its stripped path, so comparing the keys of the stripped paths
/// orders the names (the store's key folds each character on its own). A store whose key
/// is the name itself (Blob) is compared in place; one whose key is a new string (Azure
/// Files' lower case) has every key made once, not twice per comparison of the sort.
fn check_names(files: &PlannedFiles, store: &dyn Store) -> Result<(), PlanError> {
    let stripped = |i: u32| files.stripped(files.rel_of(&files.entries[i as usize]));
    let folded: Option<Vec<String>> = matches!(store.name_key(""), Cow::Owned(_))
        .then(|| (0..files.len() as u32).map(|i| store.name_key(stripped(i)).into_owned()).collect());
    let key = |i: u32| match &folded {
        Some(keys) => Cow::Borrowed(keys[i as usize].as_str()),
        None => store.name_key(stripped(i)),
    };
    let mut bad = Vec::new();
    for (rel, _) in files.sizes() {
        let name = files.name_of(rel);
        if let Err(e) = store.check_name(&name) {
            bad.push(format!("  {rel} → `{name}`: {e}"));
        }
    }
    let mut order: Vec<u32> = (0..files.len() as u32).collect();
    order.sort_by(|a, b| key(*a).cmp(&key(*b))); // stable: each group stays in path order
    let rel = |i: u32| files.rel_of(&files.entries[i as usize]);
    let name = |i: u32| files.name_of(rel(i));
    let mut collisions: Vec<String> = order
        .chunk_by(|a, b| key(*a) == key(*b))
        .filter(|g| g.len() > 1)
        .map(|g| {
            let names: BTreeSet<String> = g.iter().map(|i| name(*i)).collect();
            let rels: Vec<&str> = g.iter().map(|i| rel(*i)).collect();
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            let why =
                if names.len() > 1 { format!(" ({} names ignore case)", store.info().label) } else { String::new() };
            format!("  {}{why} ← {}", names.join(" = "), rels.join(", "))
        })
        .collect();
    if store.has_directories() {
        for g in order.chunk_by(|a, b| key(*a) == key(*b)) {
            let under = format!("{}/", key(g[0]));
            // The first name whose key is at or after `k/` tells whether any is under it.
            let at = order.partition_point(|o| *key(*o) < *under);
            if let Some(o) = order.get(at).filter(|o| key(**o).starts_with(&under)) {
                collisions.push(format!(
                    "  `{}` is a file but also the directory of `{}` ({} cannot hold both)",
                    name(g[0]),
                    name(*o),
                    store.info().label
                ));
            }
        }
    }
    if !collisions.is_empty() {
        return Err(PlanError::Collisions(collisions));
    }
    if !bad.is_empty() {
        return Err(PlanError::BadNames(bad));
    }
    Ok(())
}

/// Why a remote name cannot become a local path under the target, if it cannot.
/// (The rules of every listed name first: [`crate::storage::names::check_listed_name`].)
pub fn check_local_name(name: &str) -> Result<(), String> {
    crate::storage::names::check_listed_name(name).map_err(|e| e.to_string())?;
    if name.starts_with('/') {
        return Err("the name is an absolute path".into());
    }
    for c in name.split('/') {
        match c {
            "" => return Err("the name has an empty path component (`//` or a trailing `/`)".into()),
            c if c.len() > 255 => return Err("a path component is longer than 255 bytes".into()),
            _ => {}
        }
    }
    if name.len() > 4000 {
        return Err("the name is longer than 4000 bytes".into());
    }
    Ok(())
}

/// One planned download: the item and where below the target it goes.
#[derive(Debug, Clone)]
pub struct DownloadItem {
    pub remote: RemoteItem,
    /// Where the local path begins in the name: it is always the name's tail (see
    /// [`strip_components`]), so it is not held as a string of its own.
    rel_at: usize,
}

impl DownloadItem {
    /// Path relative to the target directory (`/` separators, checked safe).
    pub fn rel(&self) -> &str {
        &self.remote.name[self.rel_at..]
    }
}

#[derive(Debug, Default)]
pub struct DownloadPlan {
    /// What was listed, as listed ([`Listing`]): 1,000,000 items are held at once.
    listing: Listing,
    /// The items to download (indexes into `listing`), in the order of their local paths
    /// (see [`Self::rels`]).
    order: Vec<u32>,
    /// Names refused, with the reason: reported as failures.
    pub refused: Vec<(String, String)>,
    strip_prefix: Option<String>,
}

impl DownloadPlan {
    /// How many items are planned.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The planned items' sizes summed; listed sizes are outside data, so the sum saturates
    /// rather than overflowing.
    pub fn total_size(&self) -> u64 {
        self.order.iter().fold(0u64, |sum, &i| sum.saturating_add(self.listing.size(i as usize)))
    }

    /// Each planned item's remote name, its path relative to the target directory (`/`
    /// separators, checked safe), and its size, in plan order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.order.iter().map(|&i| {
            let name = self.listing.name(i as usize);
            (name, strip_components(name, self.strip_prefix.as_deref()), self.listing.size(i as usize))
        })
    }

    /// Where each planned item goes, relative to the target directory, in plan order.
    pub fn rels(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|(_, rel, _)| rel)
    }

    /// The planned items, each with its local path, made one at a time from the listing.
    pub fn into_items(self) -> impl Iterator<Item = DownloadItem> {
        let DownloadPlan { listing, order, strip_prefix, .. } = self;
        order.into_iter().map(move |i| {
            let remote = listing.item(i as usize);
            DownloadItem { rel_at: rel_offset(&remote.name, strip_prefix.as_deref()), remote }
        })
    }
}

/// A download source: the listing prefix to ask for and how to filter its results.
#[derive(Debug)]
pub struct RemoteSelector {
    pub prefix: String,
    kind: SelectorKind,
}

#[derive(Debug)]
enum SelectorKind {
    Glob(GlobMatcher),
    /// A name: the item itself and everything under `name/`.
    Exact(String),
    /// A prefix ending in `/`: everything under it.
    Dir,
}

impl RemoteSelector {
    pub fn new(source: &str) -> Result<Self, GlobError> {
        let s = source.trim_start_matches('/');
        if has_glob_meta(s) {
            let cut = s.find(['*', '?', '[', '{']).unwrap_or(s.len());
            Ok(RemoteSelector { prefix: s[..cut].to_string(), kind: SelectorKind::Glob(glob_matcher(s)?) })
        } else if s.ends_with('/') || s.is_empty() {
            Ok(RemoteSelector { prefix: s.to_string(), kind: SelectorKind::Dir })
        } else {
            Ok(RemoteSelector { prefix: s.to_string(), kind: SelectorKind::Exact(s.to_string()) })
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match &self.kind {
            SelectorKind::Glob(g) => g.is_match(name),
            SelectorKind::Exact(e) => name == e || (name.starts_with(e.as_str()) && name[e.len()..].starts_with('/')),
            SelectorKind::Dir => name.starts_with(&self.prefix),
        }
    }
}

/// Maps listed items to local paths, refusing unsafe names and file/directory clashes.
///
/// Two names mapping to one local path are an error (naming them all) rather than a
/// per-file failure: whichever is written, the other would be lost, and which one is
/// meant only the pipeline's author can say.
pub fn plan_download(cfg: &Config, listing: Listing) -> Result<DownloadPlan, PlanError> {
    let strip = cfg.strip_prefix.clone();
    let name = |i: u32| listing.name(i as usize);
    let rel = |i: u32| strip_components(listing.name(i as usize), strip.as_deref());
    let n = u32::try_from(listing.len()).unwrap_or(u32::MAX);
    // A directory marker (hierarchical namespace / tools that create them) is not a file.
    let mut order: Vec<u32> = (0..n).filter(|&i| !(name(i).ends_with('/') && listing.size(i as usize) == 0)).collect();
    // In place, by local path (then name, then listing order): the plan is an order of the
    // listing. A name listed twice is one item, the last listed.
    order.sort_unstable_by(|&a, &b| rel(a).cmp(rel(b)).then_with(|| name(a).cmp(name(b))).then(a.cmp(&b)));
    order.dedup_by(|later, earlier| {
        let same = name(*later) == name(*earlier);
        if same {
            *earlier = *later;
        }
        same
    });
    let mut refused = Vec::new();
    order.retain(|&i| match check_local_name(rel(i)) {
        Ok(()) => true,
        Err(e) => {
            refused.push((name(i).to_string(), format!("refused: {e}; nothing is written outside `target`")));
            false
        }
    });
    let collisions: Vec<String> = order
        .chunk_by(|&a, &b| rel(a) == rel(b))
        .filter(|items| items.len() > 1)
        .map(|items| {
            let names: Vec<String> = items.iter().map(|&i| format!("`{}`", name(i))).collect();
            format!("  {} ← {}", rel(items[0]), names.join(", "))
        })
        .collect();
    if !collisions.is_empty() {
        return Err(PlanError::DownloadCollisions(collisions));
    }
    // A name that is also a directory of another name cannot be both on disk. In sorted
    // order the names under `rel/` follow `rel/` directly, so the first path at or after
    // it tells (a binary search, not a scan of every name).
    let mut clash: Vec<usize> = Vec::new();
    let mut under = String::new();
    for (at, &i) in order.iter().enumerate() {
        under.clear();
        under.push_str(rel(i));
        under.push('/');
        let next = order.partition_point(|&x| rel(x) < under.as_str());
        if order.get(next).is_some_and(|&x| rel(x).starts_with(&under)) {
            clash.push(at);
            let why = format!("`{}` is both a file and a directory of other names", rel(i));
            refused.push((name(i).to_string(), why));
        }
    }
    // `clash` is in ascending order: each kept position is checked against the next clash.
    let (mut at, mut next) = (0, clash.iter().peekable());
    order.retain(|_| {
        at += 1;
        let refused = next.next_if_eq(&&(at - 1)).is_some();
        !refused
    });
    order.shrink_to_fit();
    Ok(DownloadPlan { listing, order, refused, strip_prefix: strip })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::names::check_remote_name;

    #[test]
    fn strip_prefix_matches_whole_components() {
        assert_eq!(strip_components("dist/a/b.txt", Some("dist")), "a/b.txt");
        assert_eq!(strip_components("distx/a.txt", Some("dist")), "distx/a.txt");
        assert_eq!(strip_components("dist/a/b.txt", Some("dist/a")), "b.txt");
        assert_eq!(strip_components("a.txt", None), "a.txt");
        assert_eq!(strip_components("dist", Some("dist")), "dist");
    }

    #[test]
    fn join_normalises_separators() {
        assert_eq!(join_remote("/org/repo//abc/", "a/b.txt"), "org/repo/abc/a/b.txt");
        assert_eq!(join_remote("", "a.txt"), "a.txt");
    }

    #[test]
    fn hostile_remote_names_are_refused() {
        for bad in ["../etc/passwd", "a/../../b", "/abs", "a\\b", "a\0b", "a//b", "a/", ".", "x/./y", "a\nb"] {
            assert!(check_local_name(bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(256);
        assert!(check_local_name(&long).is_err());
        for good in ["a", "a/b.txt", "dir/..hidden", "...", "a b/c"] {
            assert!(check_local_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn remote_selectors() {
        let s = RemoteSelector::new("builds/1/app.tar").unwrap();
        assert!(s.matches("builds/1/app.tar"));
        assert!(s.matches("builds/1/app.tar/inner"));
        assert!(!s.matches("builds/1/app.tar.bak"));
        let s = RemoteSelector::new("builds/*/app-*.tar").unwrap();
        assert_eq!(s.prefix, "builds/");
        assert!(s.matches("builds/2/app-x.tar"));
        assert!(!s.matches("builds/2/deep/app-x.tar"));
        let s = RemoteSelector::new("builds/").unwrap();
        assert!(s.matches("builds/x/y"));
    }

    #[test]
    fn exclusion_covers_parent_directories() {
        let ex = vec![PathPattern::new("node_modules").unwrap(), PathPattern::new("*.map").unwrap()];
        assert!(excluded("a/node_modules/x/y.js", &ex));
        assert!(excluded("js/app.js.map", &ex));
        assert!(!excluded("js/app.js", &ex));
    }

    #[test]
    fn remote_names_azure_refuses() {
        assert!(check_remote_name("a/b.txt").is_ok());
        assert!(check_remote_name("a/./b").is_err());
        assert!(check_remote_name("trailing.").is_err());
        assert!(check_remote_name(&"x".repeat(1025)).is_err());
    }
}

/// Property tests: no name a download accepts can lead outside the target.
#[cfg(test)]
mod props {
    use super::*;
    use crate::storage::names::check_remote_name;
    use proptest::prelude::*;
    use std::path::Component;

    /// Path components a hostile listing might use, and ordinary ones.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("a\\..\\b".to_string()),
            Just("\0".to_string()),
            Just("x".repeat(256)),
            "[a-z]{1,6}",
            "[.]{1,4}[a-z]{0,2}",
            "\\PC{1,6}",
            any::<String>(),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            (any::<bool>(), proptest::collection::vec(component(), 1..8)).prop_map(|(abs, parts)| format!(
                "{}{}",
                if abs { "/" } else { "" },
                parts.join("/")
            )),
            any::<String>(),
        ]
    }

    /// `rel` joined to `root`, resolved lexically: still under `root`, and only by plain names?
    fn stays_under(root: &Path, rel: &str) -> bool {
        let joined = root.join(rel);
        let mut depth = 0usize;
        for c in joined.strip_prefix(root).map(|p| p.components().collect::<Vec<_>>()).unwrap_or_default() {
            match c {
                Component::Normal(_) => depth += 1,
                _ => return false,
            }
        }
        depth >= 1 && joined.starts_with(root)
    }

    fn config(strip_prefix: &str) -> Config {
        let raw = crate::config::RawSettings::from_map(
            [
                ("PLUGIN_ACTION", "download"),
                ("PLUGIN_ACCOUNT_NAME", "acct"),
                ("PLUGIN_CONTAINER", "artifacts"),
                ("PLUGIN_SOURCE", "**"),
                ("PLUGIN_STRIP_PREFIX", strip_prefix),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        Config::from_raw(&raw).expect("a valid config")
    }

    fn items(names: &[&str]) -> Vec<RemoteItem> {
        names.iter().map(|n| RemoteItem { name: n.to_string(), size: 1, ..RemoteItem::default() }).collect()
    }

    #[test]
    fn two_names_on_one_local_path_are_a_planning_error_naming_both() {
        let err = plan_download(&config("p"), Listing::of(items(&["p/x.txt", "x.txt", "p/y.txt"]))).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PlanError::DownloadCollisions(ref c) if c.len() == 1), "{msg}");
        assert!(msg.contains("x.txt ← `p/x.txt`, `x.txt`"), "{msg}");
        assert!(msg.contains("PLUGIN_STRIP_PREFIX") && !msg.contains("y.txt"), "{msg}");
        // Without the strip, the same names are three paths.
        assert_eq!(plan_download(&config(""), Listing::of(items(&["p/x.txt", "x.txt", "p/y.txt"]))).unwrap().len(), 3);
    }

    #[test]
    fn a_file_that_is_also_a_directory_is_refused_and_the_rest_planned() {
        let plan = plan_download(&config(""), Listing::of(items(&["a", "a/b", "a/b/c", "a.txt", "ab/c"]))).unwrap();
        let refused: Vec<&str> = plan.refused.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(refused, vec!["a", "a/b"]);
        let planned: Vec<&str> = plan.rels().collect();
        assert_eq!(planned, vec!["a.txt", "a/b/c", "ab/c"]);
    }

    /// 200,000 names: the plan is a sort and a binary search per name (a quadratic check
    /// would take seconds). Not a timed assertion.
    #[test]
    fn planning_two_hundred_thousand_names_is_fast() {
        let listed: Vec<RemoteItem> = (0..200_000)
            .map(|i| RemoteItem {
                name: format!("builds/{:03}/dir{:02}/file-{i:06}.bin", i % 997, i % 13),
                size: 1,
                ..RemoteItem::default()
            })
            .collect();
        let t = std::time::Instant::now();
        let plan = plan_download(&config("builds"), Listing::of(listed)).unwrap();
        eprintln!("plan_download of 200,000 names: {:?}", t.elapsed());
        assert_eq!(plan.len(), 200_000);
        assert!(plan.refused.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn accepted_local_names_never_escape_the_target(name in name()) {
            if check_local_name(&name).is_ok() {
                prop_assert!(stays_under(Path::new("/target"), &name), "{:?} escapes", name);
                prop_assert!(!name.contains(['\0', '\\']));
            }
        }

        #[test]
        fn planned_downloads_stay_under_the_target(
            names in proptest::collection::vec(name(), 0..12),
            strip in prop_oneof![Just(String::new()), Just("a".to_string()), Just("..".to_string()), "[a-z]{1,3}"],
        ) {
            let cfg = config(&strip);
            let listed: Vec<RemoteItem> =
                names.iter().map(|n| RemoteItem { name: n.clone(), size: 1, ..RemoteItem::default() }).collect();
            let plan = match plan_download(&cfg, Listing::of(listed)) {
                Ok(p) => p,
                // Two names on one path: refused whole, every colliding path named.
                Err(PlanError::DownloadCollisions(c)) => {
                    prop_assert!(!c.is_empty());
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            };
            prop_assert!(plan.len() + plan.refused.len() <= names.len());
            let mut rels = std::collections::HashSet::new();
            let items: Vec<DownloadItem> = plan.into_items().collect();
            for it in &items {
                prop_assert!(stays_under(Path::new("/target"), it.rel()), "{:?} → {:?} escapes", it.remote.name, it.rel());
                prop_assert!(rels.insert(it.rel().to_string()), "two items on {:?}", it.rel());
            }
            // No planned file is also a directory of another planned file.
            for it in &items {
                let under = format!("{}/", it.rel());
                prop_assert!(!items.iter().any(|o| o.rel().starts_with(&under)));
            }
        }

        #[test]
        fn upload_names_azure_accepts_are_well_formed(target in "[a-z/]{0,8}", rel in name(), strip in "[a-z]{0,2}") {
            let stripped = strip_components(&rel, Some(strip.as_str()));
            let remote = join_remote(&target, stripped);
            if check_remote_name(&remote).is_ok() {
                prop_assert!(!remote.starts_with('/') && !remote.contains("//") && !remote.ends_with('/'));
                prop_assert!(!remote.split('/').any(|c| c == ".." || c == "."));
                prop_assert!(remote.len() <= 1024);
            }
        }
    }

    fn upload_config(pairs: &[(&str, &str)]) -> Config {
        let files = pairs.contains(&("PLUGIN_SERVICE", "file"));
        let mut all = vec![
            ("PLUGIN_ACCOUNT_NAME", "acct"),
            (if files { "PLUGIN_SHARE" } else { "PLUGIN_CONTAINER" }, "artifacts"),
        ];
        all.extend_from_slice(pairs);
        let raw =
            crate::config::RawSettings::from_map(all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Config::from_raw(&raw).expect("a valid config")
    }

    fn store(files: bool) -> Box<dyn Store> {
        let retry = crate::http::retry::RetryPolicy::default();
        let http = Arc::new(
            crate::http::Http::new(crate::auth::Credential::None, retry, std::time::Duration::from_secs(1), None, 1)
                .unwrap(),
        );
        if files {
            Box::new(crate::storage::files::FilesStore::new(http, "http://127.0.0.1:9/acct", "share"))
        } else {
            Box::new(crate::storage::blob::BlobStore::new(http, "http://127.0.0.1:9/acct", "artifacts"))
        }
    }

    fn workspace(files: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for f in files {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f.as_bytes()).unwrap();
        }
        t
    }

    #[test]
    fn a_planned_file_costs_24_bytes_besides_its_path() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        let t = workspace(&["dist/b.txt", "dist/a b.txt", "dist/sub/c.txt", "other.txt"]);
        let root = Root::open(t.path(), false).unwrap();
        let cfg = upload_config(&[("PLUGIN_SOURCE", "dist,dist/sub/c.txt,other.txt"), ("PLUGIN_TARGET", "t")]);
        let mut files = PlannedFiles::new(Arc::new(root), &cfg);
        let m = std::fs::metadata(t.path().join("other.txt")).unwrap();
        files.push("other.txt", FileId::of(&m)).unwrap();
        // The path buffer holds the paths and nothing else.
        assert_eq!(files.text, "other.txt");
        let long = "x".repeat(70_000);
        assert!(files.push(&long, FileId::of(&m)).unwrap_err().contains("65,535 bytes"));
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn an_upload_plan_is_sorted_deduplicated_and_names_are_derived() {
        let t = workspace(&["dist/b.txt", "dist/a b.txt", "dist/sub/c.txt", "other.txt"]);
        let cfg = upload_config(&[
            ("PLUGIN_SOURCE", "dist,dist/sub/c.txt,other.txt"),
            ("PLUGIN_TARGET", "t/x/"),
            ("PLUGIN_STRIP_PREFIX", "dist"),
        ]);
        let plan = plan_upload(&cfg, &*store(false), t.path()).unwrap();
        let got: Vec<(String, String, u64)> = plan.files.iter().map(|i| (i.rel, i.name, i.size)).collect();
        assert_eq!(
            got,
            [
                ("dist/a b.txt".into(), "t/x/a b.txt".into(), 12),
                ("dist/b.txt".into(), "t/x/b.txt".into(), 10),
                ("dist/sub/c.txt".into(), "t/x/sub/c.txt".into(), 14),
                ("other.txt".into(), "t/x/other.txt".into(), 9),
            ]
        );
        assert_eq!(plan.files.total_bytes(), 45);
        let item = plan.files.iter().next().unwrap();
        let m = std::fs::metadata(t.path().join("dist/a b.txt")).unwrap();
        assert_eq!(item.state, FileId::of(&m));
    }

    /// More files than fit in a few stat batches, in directories met in turn: every
    /// planned file carries its own size and inode (the stats come back in walk order).
    #[test]
    fn each_file_of_a_large_walk_is_planned_with_its_own_stat() {
        let t = tempfile::tempdir().unwrap();
        let n = 3 * STAT_BATCH + 7;
        for i in 0..n {
            let dir = t.path().join(format!("d{}", i % 5));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i:05}")), vec![b'x'; i % 97]).unwrap();
        }
        let cfg = upload_config(&[("PLUGIN_SOURCE", "**")]);
        let plan = plan_upload(&cfg, &*store(false), t.path()).unwrap();
        assert_eq!(plan.files.len(), n);
        for item in plan.files.iter() {
            let m = std::fs::symlink_metadata(t.path().join(&item.rel)).unwrap();
            assert_eq!(item.state, FileId::of(&m), "{}", item.rel);
        }
    }

    #[test]
    fn names_that_collide_once_stripped_or_folded_are_refused_naming_them() {
        let t = workspace(&["p/x.txt", "x.txt", "A.txt", "a.txt", "d", "D/e.txt"]);
        let cfg = upload_config(&[("PLUGIN_SOURCE", "p,x.txt"), ("PLUGIN_STRIP_PREFIX", "p")]);
        match plan_upload(&cfg, &*store(false), t.path()) {
            Err(PlanError::Collisions(c)) => assert_eq!(c, ["  `x.txt` ← p/x.txt, x.txt"]),
            other => panic!("{other:?}"),
        }
        // Blob names are case-sensitive: A.txt and a.txt are two blobs.
        let cfg = upload_config(&[("PLUGIN_SOURCE", "A.txt,a.txt,d,D")]);
        assert_eq!(plan_upload(&cfg, &*store(false), t.path()).unwrap().files.len(), 4);
        // Azure Files folds case, and cannot hold `d` as a file and as the directory of `D/e.txt`.
        let cfg = upload_config(&[("PLUGIN_SOURCE", "A.txt,a.txt,d,D"), ("PLUGIN_SERVICE", "file")]);
        match plan_upload(&cfg, &*store(true), t.path()) {
            Err(PlanError::Collisions(c)) => {
                assert_eq!(c[0], "  `A.txt` = `a.txt` (Azure Files names ignore case) ← A.txt, a.txt");
                assert!(c[1].starts_with("  `d` is a file but also the directory of `D/e.txt`"), "{c:?}");
                assert_eq!(c.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    fn planned(sources: &str, include_hidden: bool, files: &[&str]) -> (Vec<String>, u64) {
        let t = workspace(files);
        let hidden = if include_hidden { "true" } else { "false" };
        let cfg = upload_config(&[("PLUGIN_SOURCE", sources), ("PLUGIN_INCLUDE_HIDDEN", hidden)]);
        let plan = plan_upload(&cfg, &*store(false), t.path()).unwrap();
        (plan.files.sizes().map(|(r, _)| r.to_string()).collect(), plan.hidden.count() as u64)
    }

    #[test]
    fn wildcards_and_directories_leave_hidden_entries_and_git_home() {
        let ws = [".git/config", ".env", "a/.npmrc", "a/b.txt", ".github/w.yml", "c.txt", "a/.cache/x"];
        for source in [".", "**", "*,a"] {
            let (files, hidden) = planned(source, false, &ws);
            assert_eq!(files, ["a/b.txt", "c.txt"], "{source}");
            // `.git`, `.env`, `.github`, `a/.cache`, `a/.npmrc`: each directory counts once.
            assert_eq!(hidden, 5, "{source}");
        }
        let (files, hidden) = planned(".", true, &ws);
        assert_eq!(files.len(), ws.len());
        assert_eq!(hidden, 0);
    }

    #[test]
    fn a_pattern_segment_beginning_with_a_dot_selects_what_it_names() {
        let ws = [".git/config", ".env", ".github/w.yml", "a/.env", "a/b.txt", ".github/.x"];
        assert_eq!(planned(".github/w.yml", false, &ws).0, [".github/w.yml"]);
        assert_eq!(planned(".github", false, &ws).0, [".github/w.yml"]);
        assert_eq!(planned("**/.env", false, &ws).0, [".env", "a/.env"]);
        // `.*` names hidden entries, but `.git` only when named literally.
        assert_eq!(planned(".*/*", false, &ws).0, [".github/w.yml"]);
        assert_eq!(planned(".git/*", false, &ws).0, [".git/config"]);
        assert_eq!(planned(".git", false, &ws).0, [".git/config"]);
        assert_eq!(planned("*/.env", false, &ws).0, ["a/.env"]);
        assert_eq!(planned(".github/.*", false, &ws).0, [".github/.x"]);
    }

    #[test]
    fn a_cache_keeps_a_named_trees_hidden_state_but_not_git() {
        let c =
            |source: &str, depth: usize, name: &str| cache_leaves_out(source, depth, std::ffi::OsStr::new(name), false);
        assert!(!c("node_modules", 1, ".bin"));
        assert!(!c("target", 2, ".fingerprint"));
        assert!(!c(".cargo", 0, ".cargo") && !c(".cargo", 1, ".crates.toml"));
        assert!(c("vendor", 3, ".git"));
        assert!(!c(".git", 0, ".git"));
        assert!(c(".", 1, ".env") && c("./", 1, ".npmrc") && !c(".", 2, ".bin"));
        assert!(!cache_leaves_out(".", 1, std::ffi::OsStr::new(".git"), true));
    }

    #[test]
    fn hidden_components_of_remote_names() {
        assert!(has_hidden_component(".git/config") && has_hidden_component("a/.env"));
        assert!(!has_hidden_component("a/b.txt") && !has_hidden_component("a..b/c"));
    }
}
