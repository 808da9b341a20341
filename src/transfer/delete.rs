//! `action: delete`, and the one delete driver sync uses too.
//!
//! 1. List what `source` selects, by the download rules (whole path components; a name,
//!    a prefix ending in `/`, or a glob): [`super::list_selected`], so every listed name
//!    passes [`Engine::list_checked`]. A refused name deletes nothing (the listing is not
//!    trusted to delete by).
//!    `exclude` keeps what it matches (the name or one of its folders).
//! 2. `older_than`: keep items last modified at or after the cut-off ([`older_than`]). Azure
//!    Files listings carry no time: each selected file's properties are read first.
//! 3. Trust: an untrusted run (docs/trust.md) deletes only names with an `untrusted`
//!    directory component ([`untrusted_only`]); anything else refuses the run (exit 2).
//! 4. The guard: more than `max_delete` (default [`DEFAULT_MAX_DELETE`]) deletes nothing
//!    (exit 1); a `source` listing from the top of the container needs `max_delete` at
//!    validation.
//! 5. [`delete_all`]: each delete pinned to the listed ETag (an item rewritten since is kept
//!    and reported), in parallel under the request budget; then, on Files, the directories
//!    emptied, deepest first ([`emptied_dirs`]), never above what `source` named.
//!
//! A dry run makes the same decisions and lists `would delete` for each item.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

use super::report::{FileResult, Report, Status};
use super::{Engine, RunError};
use crate::auth::{AuthError, Credential};
use crate::config::DEFAULT_MAX_DELETE;
use crate::settings::Tier;
use crate::storage::RemoteItem;

/// The directory component an untrusted run may delete under.
pub const UNTRUSTED_COMPONENT: &str = "untrusted";

/// Runs `action: delete`, recording each item in `report`; when nothing was deleted
/// because of the guard or a refused listed name, returns why (exit 1).
pub async fn run_delete(
    engine: &Arc<Engine>,
    credential: &Credential,
    report: &mut Report,
) -> Result<Option<String>, RunError> {
    let cfg = &engine.cfg;
    if matches!(credential, Credential::None) {
        return Err(AuthError::Missing("no credentials".into()).into());
    }
    engine.stop.arm();
    let refused_before = report.tally().files(Status::Failed);
    let mut items = super::list_selected(engine, report).await?;
    let refused = report.tally().files(Status::Failed) - refused_before;
    // `exclude` keeps what it matches (the remote name, or one of its folders).
    items.retain(|i| !super::plan::excluded(&i.name, &cfg.excludes));
    let selected = items.len();
    let sources = cfg.sources.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
    if let Some(age) = cfg.older_than {
        if items.iter().any(|i| i.last_modified.is_none()) {
            items = with_times(engine, items).await?;
        }
        let (old, newer) = older_than(items, SystemTime::now(), age);
        tracing::info!("kept {} item(s) modified within `older_than` ({})", newer, show_age(age));
        items = old;
    }
    tracing::info!("{selected} item(s) selected by {sources}; {} to delete", items.len());
    if selected == 0 {
        tracing::warn!("{sources} selected nothing in {} `{}`: nothing to delete", cfg.container_word(), cfg.container);
    }
    if cfg.trust.tier == Tier::Untrusted {
        if let Some(bad) = items.iter().find(|i| !untrusted_only(&i.name)) {
            return Err(RunError::Settings(format!(
                "this run is untrusted ({}), and an untrusted run may delete only names under an `{UNTRUSTED_COMPONENT}/` directory (the untrusted tier of a cache target, docs/trust.md); `{}` is not, so nothing was deleted; narrow `source`, or run the delete from a trusted event",
                cfg.trust.why,
                bad.name.escape_debug()
            )));
        }
    }
    let n = items.len() as u64;
    let max = cfg.max_delete.unwrap_or(DEFAULT_MAX_DELETE);
    if n > max {
        let allowed = match cfg.max_delete {
            Some(m) => format!("`max_delete` (PLUGIN_MAX_DELETE) allows ({m})"),
            None => format!("a delete may without `max_delete` (PLUGIN_MAX_DELETE) ({DEFAULT_MAX_DELETE})"),
        };
        return Ok(Some(format!(
            "the delete would remove {n} item(s) selected by {sources}, more than {allowed}: nothing was deleted; check `source` and `older_than`, or set `max_delete`"
        )));
    }
    if refused > 0 && n > 0 {
        return Ok(Some(format!(
            "{refused} listed name(s) were refused, so the listing is not trusted to delete by: none of the {n} item(s) was deleted"
        )));
    }
    if cfg.dry_run {
        for it in &items {
            tracing::info!("would delete {}", it.name);
            report.push(deleted(engine, it, "dry run"));
        }
        return Ok(None);
    }
    let floors: Vec<String> = cfg.sources.iter().map(|s| dir_floor(s)).collect();
    delete_all(engine, items, &floors, report).await;
    Ok(None)
}

/// Items without a Last-Modified time (Azure Files listings) with their properties read.
async fn with_times(engine: &Arc<Engine>, items: Vec<RemoteItem>) -> Result<Vec<RemoteItem>, RunError> {
    let read: Vec<_> = futures_util::stream::iter(items)
        .map(|it| async move {
            if it.last_modified.is_some() {
                return Ok(Some(it));
            }
            engine.with_request(engine.store.properties(&it.name)).await
        })
        .buffered(engine.cfg.concurrency)
        .collect()
        .await;
    let mut out = Vec::with_capacity(read.len());
    for r in read {
        // Gone since the listing: nothing to delete.
        if let Some(it) = r? {
            out.push(it);
        }
    }
    Ok(out)
}

/// Splits `items` into those last modified before `now - age` (to delete) and the count of
/// those kept: modified since, or with no known time (never deleted on a guess).
pub fn older_than(items: Vec<RemoteItem>, now: SystemTime, age: Duration) -> (Vec<RemoteItem>, usize) {
    let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let before = items.len();
    let old: Vec<RemoteItem> = items.into_iter().filter(|i| i.last_modified.is_some_and(|t| t < cutoff)).collect();
    let kept = before - old.len();
    (old, kept)
}

/// `older_than` as written back: `14d`, `12h`, else seconds.
pub(crate) fn show_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 86400 && s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ => format!("{s}s"),
    }
}

/// An untrusted run may delete `name`: one of its directory components is `untrusted`.
pub fn untrusted_only(name: &str) -> bool {
    let mut dirs = name.split('/').rev().skip(1);
    dirs.any(|c| c == UNTRUSTED_COMPONENT)
}

/// The directory a delete `source` names, ending in `/` (`""`: the top): emptied
/// directories strictly under it may be removed, it and those above never.
/// `previews/pr-42/` and `previews/pr-42` give `previews/` (so `previews/pr-42` itself goes);
/// `previews/pr-*` and `previews/**` give `previews/`.
pub fn dir_floor(source: &str) -> String {
    let s = source.trim_start_matches('/');
    let literal = match s.find(['*', '?', '[', '{']) {
        Some(cut) => &s[..cut],
        None => s.trim_end_matches('/'),
    };
    match literal.rfind('/') {
        Some(i) => literal[..=i].to_string(),
        None => String::new(),
    }
}

/// The result of a deleted item (`reason`: "dry run" for one that would be).
pub(crate) fn deleted(eng: &Engine, r: &RemoteItem, reason: &str) -> FileResult {
    let mut res = FileResult::new(&r.name, "", r.size, eng.store.url(&r.name));
    res.status = Status::Deleted;
    res.sha256 = r.sha256_string();
    res.etag = r.etag_string();
    if !reason.is_empty() {
        res.reason = Some(reason.to_string());
    }
    res
}

/// The directories (strictly under one of `floors`) that held `names`, deepest first.
pub fn emptied_dirs<'a>(names: impl IntoIterator<Item = &'a str>, floors: &[String]) -> Vec<String> {
    let mut dirs = BTreeSet::new();
    for n in names {
        let mut d = n;
        while let Some((parent, _)) = d.rsplit_once('/') {
            // Each floor is `""` or ends in `/`: a parent past it is strictly under it.
            if !floors.iter().any(|f| parent.len() > f.len() && parent.starts_with(f.as_str())) {
                break;
            }
            dirs.insert(parent.to_string());
            d = parent;
        }
    }
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by(|a, b| b.matches('/').count().cmp(&a.matches('/').count()).then_with(|| a.cmp(b)));
    dirs
}

/// Deletes every item, each pinned to its listed ETag (one rewritten since is kept and
/// reported as skipped); then, on Files, removes the directories that emptied under
/// `floors` (deepest first; one still holding anything stays). The results are recorded in
/// `report`, in the order of `deletes`.
pub(crate) async fn delete_all(engine: &Arc<Engine>, deletes: Vec<RemoteItem>, floors: &[String], report: &mut Report) {
    let first = report.reserve(deletes.len());
    // Only a store with directories (Azure Files) needs the names of what was deleted.
    let gone = Arc::new(Mutex::new(Vec::new()));
    let names = engine.store.has_directories().then(|| gone.clone());
    let items = deletes.into_iter().enumerate().map(move |(i, r)| (first + i, r));
    let describe = |r: &RemoteItem| (r.name.clone(), String::new(), r.size);
    engine
        .drive(items, report, describe, move |eng, r| {
            let names = names.clone();
            async move {
                let res = delete_one(&eng, &r).await;
                if let Some(names) = names.filter(|_| res.status == Status::Deleted) {
                    names.lock().unwrap_or_else(|p| p.into_inner()).push(r.name);
                }
                res
            }
        })
        .await;
    let gone = std::mem::take(&mut *gone.lock().unwrap_or_else(|p| p.into_inner()));
    for dir in emptied_dirs(gone.iter().map(String::as_str), floors) {
        match engine.with_request(engine.store.remove_dir_if_empty(&dir)).await {
            Ok(true) => tracing::info!("removed the emptied directory {dir}"),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not remove the directory {dir}: {e}"),
        }
    }
}

/// Deletes one listed item, pinned to its listed ETag: deleted, kept (rewritten since the
/// listing: skipped) or failed.
async fn delete_one(eng: &Engine, r: &RemoteItem) -> FileResult {
    match eng.with_request(eng.store.delete(r)).await {
        Ok(()) => {
            tracing::info!("deleted {}", r.name);
            deleted(eng, r, "")
        }
        // Another writer replaced it after the listing: its version is kept.
        Err(e) if e.is_changed() => {
            let why = "not deleted: rewritten after it was listed (another writer got there first); kept";
            tracing::warn!("{}: {why}", r.name);
            let mut res = FileResult::new(&r.name, "", r.size, eng.store.url(&r.name));
            res.status = Status::Skipped;
            res.reason = Some(why.into());
            res
        }
        Err(e) => {
            tracing::error!("failed: delete {}: {e}", r.name);
            let mut res = FileResult::new(&r.name, "", r.size, eng.store.url(&r.name));
            res.reason = Some(format!("delete failed: {e}"));
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, t: Option<SystemTime>) -> RemoteItem {
        RemoteItem { name: name.into(), size: 1, last_modified: t, ..RemoteItem::default() }
    }

    #[test]
    fn older_than_deletes_only_what_was_modified_before_the_cut_off() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86400);
        let day = Duration::from_secs(86400);
        let items = vec![
            at("old", Some(now - 20 * day)),
            at("edge", Some(now - 14 * day)),
            at("new", Some(now - day)),
            at("unknown", None),
        ];
        let (old, kept) = older_than(items, now, 14 * day);
        let names: Vec<&str> = old.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["old"], "exactly 14 days old is not older than 14 days; no time is never deleted");
        assert_eq!(kept, 3);
        // `0s`: everything with a time before now.
        let (old, _) = older_than(vec![at("a", Some(now - Duration::from_secs(1)))], now, Duration::ZERO);
        assert_eq!(old.len(), 1);
        // An age beyond the epoch keeps everything rather than wrapping.
        let (old, kept) = older_than(vec![at("a", Some(now - day))], now, Duration::from_secs(u64::MAX / 2));
        assert_eq!((old.len(), kept), (0, 1));
    }

    #[test]
    fn an_untrusted_run_may_delete_only_under_an_untrusted_directory() {
        assert!(untrusted_only("cache/untrusted/cargo.tar.zst"));
        assert!(untrusted_only("untrusted/x"));
        assert!(!untrusted_only("cache/trusted/cargo.tar.zst"));
        assert!(!untrusted_only("cache/untrusted"), "a file named `untrusted` is not under it");
        assert!(!untrusted_only("cache/untrusted-x/a"));
    }

    #[test]
    fn the_directory_floor_is_the_folder_source_names() {
        assert_eq!(dir_floor("previews/pr-42/"), "previews/");
        assert_eq!(dir_floor("previews/pr-42"), "previews/");
        assert_eq!(dir_floor("/previews/pr-*"), "previews/");
        assert_eq!(dir_floor("previews/**"), "previews/");
        assert_eq!(dir_floor("**"), "");
        assert_eq!(dir_floor("pr-42/"), "");
    }

    #[test]
    fn emptied_dirs_are_deepest_first_and_stay_under_the_floor() {
        let t = ["t/".to_string()];
        let d = emptied_dirs(["t/a/b/c.txt", "t/a/d.txt", "t/e/f.txt", "t/top.txt"], &t);
        assert_eq!(d, ["t/a/b", "t/a", "t/e"]);
        assert_eq!(emptied_dirs(["a/b.txt", "c.txt"], &[String::new()]), ["a"]);
        let p = ["previews/".to_string()];
        assert_eq!(emptied_dirs(["previews/pr-42/a/b.txt"], &p), ["previews/pr-42/a", "previews/pr-42"]);
        assert!(emptied_dirs(["other/x/y.txt"], &p).is_empty(), "nothing outside the floor");
    }
}
