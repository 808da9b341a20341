//! `action: sync`: make the remote tree under `target` equal the selection.
//!
//! 1. Plan the upload as `upload` does, and list everything under `target` — with
//!    metadata (List Blobs `include=metadata`), so an unchanged file (same size, same
//!    `sha256`, and with `preserve_mode` the same `mode`) is skipped with no request
//!    beyond the listing. Files listings carry no
//!    metadata: a listed file whose size matches gets one Get File Properties. Every
//!    listed name passes [`Engine::list_checked`]; a refused one is a failed item and no
//!    delete is made from that listing. A listing that fails ends the run (exit 3).
//! 2. [`merge`] the two, both sorted by name (Files: case-insensitively, as the service
//!    compares names): O(n log n), no per-name scans. `target` owns whole path components:
//!    `target: a` lists `a/`, never `ab/`; nothing outside it is ever deleted.
//! 3. `max_delete`: more deletes than that and the sync is refused before anything is
//!    uploaded (a wrong `target` or `strip_prefix` then uploads no second tree either).
//! 4. Upload what changed ([`super::upload::upload_known`], `overwrite: changed`).
//! 5. Only when every upload succeeded, the listing completed and the run was not
//!    stopped: delete what the selection lacks (Delete Blob / Delete File, in parallel
//!    under the request budget, each pinned to the listed ETag: an item rewritten since
//!    is kept and reported, see `Store::delete`), then, on Files, remove the directories
//!    that emptied (deepest first; "not empty" is fine): [`super::delete::delete_all`], the
//!    driver `action: delete` uses too. Any failure before: nothing is
//!    deleted, the run exits 1 and says why.
//!
//! A dry run makes the same decisions (the unchanged-file comparison, the refusals) and
//! stops before the first write.

use std::borrow::Cow;
use std::cmp::Ordering as Cmp;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;

use super::delete::{delete_all, deleted};
use super::plan::UploadItem;
use super::report::{FileResult, Report, Status};
use super::{not_attempted, upload, Engine, RunError};
use crate::auth::Credential;
use crate::config::human_bytes;
use crate::storage::{RemoteItem, StorageError};

/// The remote prefix a sync owns: `target` with one trailing `/` (whole path components),
/// or `""` (the whole container or share).
pub fn owned_prefix(target: &str) -> String {
    let t = target.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

/// What a sync does (`T`: a planned file).
#[derive(Debug)]
pub struct SyncPlan<T = UploadItem> {
    /// Every planned file, with what the listing holds under its name (`None`: nothing).
    pub uploads: Vec<(T, Option<RemoteItem>)>,
    /// Listed items under the owned prefix that the selection lacks, sorted by name.
    pub deletes: Vec<RemoteItem>,
}

/// Sorted merge of the planned files and the listing. Listed names outside `prefix` are
/// ignored (never deleted). Names compare by `key`: the store's
/// [`name_key`](crate::storage::Store::name_key) (Azure Files folds case).
pub fn merge<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    mut listed: Vec<RemoteItem>,
    prefix: &str,
    key: impl for<'a> Fn(&'a str) -> Cow<'a, str>,
) -> SyncPlan<T> {
    let key = |n: &str| key(n).into_owned();
    let mut items: Vec<(String, T)> = items.into_iter().map(|i| (key(name(&i)), i)).collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    listed.retain(|r| r.name.starts_with(prefix) && r.name.len() > prefix.len());
    let mut listed: Vec<(String, RemoteItem)> = listed.drain(..).map(|r| (key(&r.name), r)).collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    listed.dedup_by(|a, b| a.0 == b.0);

    let mut plan = SyncPlan { uploads: Vec::with_capacity(items.len()), deletes: Vec::new() };
    let mut remote = listed.into_iter().peekable();
    for (k, item) in items {
        let mut found = None;
        while let Some((rk, _)) = remote.peek() {
            match rk.cmp(&k) {
                Cmp::Less => plan.deletes.extend(remote.next().map(|(_, r)| r)),
                Cmp::Equal => {
                    found = remote.next().map(|(_, r)| r);
                    break;
                }
                Cmp::Greater => break,
            }
        }
        plan.uploads.push((item, found));
    }
    plan.deletes.extend(remote.map(|(_, r)| r));
    plan
}

fn unattempted<'a>(eng: &Engine, items: impl Iterator<Item = &'a UploadItem>, why: &str, report: &mut Report) {
    for it in items {
        let mut r = not_attempted(eng, &it.name, &it.rel, it.size);
        r.reason = Some(why.to_string());
        report.push(r);
    }
}

/// Runs a sync, recording the per-file results (uploads and deletes) in `report`; when
/// nothing was deleted because of a failure or the guard, returns why.
pub async fn run_sync(
    engine: &Arc<Engine>,
    credential: &Credential,
    report: &mut Report,
) -> Result<Option<String>, RunError> {
    let cfg = &engine.cfg;
    let (plan, total) = super::plan_for_upload(engine, report)?;
    let prefix = owned_prefix(&cfg.target);
    let shown = if prefix.is_empty() { format!("the whole {}", cfg.container_word()) } else { format!("`{prefix}`") };
    if matches!(credential, Credential::None) {
        if cfg.dry_run {
            for it in plan.files.iter() {
                tracing::info!("would upload {} → {} ({})", it.rel, it.name, human_bytes(it.size));
            }
            tracing::info!("dry run without credentials: cannot list {shown}, so the deletes are not known");
            return Ok(None);
        }
        return Err(crate::auth::AuthError::Missing("no credentials".into()).into());
    }
    if !cfg.dry_run {
        // Before any write: a link that cannot be signed fails the run with nothing uploaded.
        if let Some(links) = super::links::prepare(engine, credential).await? {
            report.attach_links(links);
        }
        engine.store.ensure_container(cfg.create_container).await?;
    }
    engine.stop.arm();
    // A listing that fails leaves nothing known to compare or delete: nothing is done (exit 3).
    let (listed, refused) = match engine.list_checked(&prefix).await {
        Ok(l) => l,
        // The real run would create it (`create_container: true`) and find it empty.
        Err(e) if e.is_container_not_found() && cfg.dry_run && cfg.create_container => {
            tracing::info!(
                "dry run: the {} `{}` does not exist; the real run would create it",
                cfg.container_word(),
                cfg.container
            );
            (Vec::new(), Vec::new())
        }
        Err(e) if e.is_container_not_found() => {
            return Err(
                StorageError::NoContainer { what: cfg.container_word(), name: cfg.container.clone(), hint: "" }.into()
            )
        }
        Err(e) => {
            return Err(RunError::Other(format!(
                "the listing of {shown} failed, so nothing was uploaded or deleted: {e}"
            )))
        }
    };
    // A listed name refused by the check (`site/../victim.txt`) is never requested; the
    // listing is not trusted to delete by, so nothing is deleted (the uploads go on).
    let refused_names = refused.len() as u64;
    for r in refused {
        report.push(r);
    }
    // A source that matched nothing (a build step that produced no output) would have its
    // remote copies deleted: the deletes are refused unless `allow_empty` says so.
    let unmatched = if cfg.allow_empty { vec![] } else { plan.unmatched };
    let mut sync =
        merge(plan.files.iter().collect(), |i| i.name.as_str(), listed, &prefix, |n| engine.store.name_key(n));
    // A hidden name is outside the selection's domain (docs/sync.md): never deleted.
    sync.deletes.retain(|r| cfg.include_hidden || !super::plan::has_hidden_component(&r.name[prefix.len()..]));
    let deletes = sync.deletes.len() as u64;
    tracing::info!(
        "planned {} file(s), {}; {} listed under {shown} the selection lacks",
        sync.uploads.len(),
        human_bytes(total),
        deletes
    );
    if let Some(max) = cfg.max_delete.filter(|m| deletes > *m) {
        let why = format!(
            "the sync would delete {deletes} file(s) under {shown}, more than `max_delete` (PLUGIN_MAX_DELETE) allows ({max}): nothing was uploaded or deleted; check `target`, `source` and `strip_prefix`, or raise `max_delete`"
        );
        let items = sync.uploads.iter().map(|(it, _)| it);
        unattempted(engine, items, "not attempted: `max_delete` refused the sync", report);
        return Ok(Some(why));
    }
    // Why the deletes will not be made whatever the uploads do (the same in a dry run).
    let no_deletes = if refused_names > 0 && deletes > 0 {
        Some(format!(
            "{refused_names} listed name(s) under {shown} were refused, so the listing is not trusted to delete by: none of the {deletes} file(s) the selection lacks was deleted"
        ))
    } else if !unmatched.is_empty() && deletes > 0 {
        Some(format!(
            "{} matched no file, so none of the {deletes} file(s) under {shown} the selection lacks was deleted; set `allow_empty: true` (PLUGIN_ALLOW_EMPTY) to delete them anyway",
            unmatched.iter().map(|s| format!("source `{s}`")).collect::<Vec<_>>().join(", ")
        ))
    } else {
        None
    };
    // Each planned file's slot, in the merge's (name) order, whichever way it goes next.
    let first = report.reserve(sync.uploads.len());
    let uploads: Pending = sync.uploads.into_iter().enumerate().map(|(i, (it, r))| (first + i, it, r)).collect();
    if cfg.dry_run {
        // The same comparisons as the real run (a Files listing carries no checksum: the
        // properties are read, as the upload would), so `would upload` means it.
        let uploads = with_checksums(engine, uploads).await;
        for (slot, it, _) in split_unchanged(engine, uploads, report).await {
            report.record(slot, super::would_upload(engine, &it));
        }
        // The refusal the real run would make is made here too (and exits as it would).
        if no_deletes.is_none() {
            for d in &sync.deletes {
                tracing::info!("would delete {}", d.name);
                report.push(deleted(engine, d, "dry run"));
            }
        }
        return Ok(no_deletes.map(|why| format!("dry run: {why}")));
    }
    let c = &engine.progress.counters;
    c.files_total.store(uploads.len() as u64, Ordering::Relaxed);
    c.bytes_total.store(total, Ordering::Relaxed);
    let uploads = split_unchanged(engine, uploads, report).await;
    upload_all(engine, uploads, report).await;
    if no_deletes.is_some() {
        return Ok(no_deletes);
    }
    // The refused listed names are failed results too, but not uploads that failed.
    let failed = (report.tally().files(Status::Failed) + report.tally().files(Status::NotAttempted))
        .saturating_sub(refused_names);
    if failed > 0 || engine.stop.is_stopped() {
        let why = format!(
            "{failed} file(s) failed or were not uploaded, so none of the {deletes} file(s) under {shown} the selection lacks was deleted"
        );
        return Ok(Some(why));
    }
    delete_all(engine, sync.deletes, &[prefix], report).await;
    Ok(None)
}

/// Planned uploads with their report slots and listed copies.
type Pending = Vec<(usize, UploadItem, Option<RemoteItem>)>;

/// Takes out the files whose listed copy holds the same bytes (same size and `sha256`),
/// hashed in a few batches on blocking threads rather than one task per file: for an
/// unchanged tree of 10,000 small files the thread hand-offs cost more than the hashing.
/// Files in `compress` (compared by their gzip bytes), files listed without a `sha256`
/// (Files) and any file that cannot be read here go to [`upload::upload_known`], which
/// decides and reports them. The unchanged files are recorded in `report`; the rest is returned.
async fn split_unchanged(engine: &Arc<Engine>, uploads: Pending, report: &mut Report) -> Pending {
    let cfg = &engine.cfg;
    let (candidates, mut rest): (Pending, Pending) = uploads.into_iter().partition(|(_, it, r)| {
        r.as_ref().is_some_and(|r| r.size == it.size && r.sha256.is_some())
            && !cfg.compress.iter().any(|p| p.is_match(&it.rel))
    });
    let lanes = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8);
    let per = candidates.len().div_ceil(lanes).max(1);
    let preserve = cfg.artifacts.preserve_mode;
    let mut batches = Vec::new();
    let mut candidates = candidates.into_iter().peekable();
    while candidates.peek().is_some() {
        let batch: Pending = candidates.by_ref().take(per).collect();
        batches.push(tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|(slot, it, r)| {
                    // A mode change (`preserve_mode`) is a change, whatever the bytes.
                    let same = it
                        .root
                        .open_planned(&it.rel, &it.state)
                        .ok()
                        .filter(|f| {
                            let mode = upload::local_mode(f).ok();
                            r.as_ref().zip(mode).is_some_and(|(r, m)| upload::same_mode(preserve, r, m))
                        })
                        .and_then(|f| super::checksum::hash_read(&f.file, false).ok())
                        .filter(|d| r.as_ref().is_some_and(|r| upload::same_content(r, d)));
                    (slot, it, r, same.map(|d| d.sha256))
                })
                .collect::<Vec<_>>()
        }));
    }
    for b in batches {
        let done = match b.await {
            Ok(done) => done,
            // Its files are then neither skipped nor uploaded: a failure, so nothing is deleted.
            Err(e) => {
                report.push(super::task_failed("", "", 0, e));
                continue;
            }
        };
        for (slot, it, r, sha) in done {
            match sha {
                Some(sha) => {
                    tracing::info!("skipped: {} (unchanged (overwrite: changed))", it.name);
                    let mut res = FileResult::new(&it.name, &it.rel, it.size, engine.store.url(&it.name));
                    res.status = Status::Skipped;
                    res.reason = Some("unchanged (overwrite: changed)".into());
                    res.sha256 = Some(sha);
                    engine.progress.counters.add_bytes(it.size);
                    engine.progress.counters.file_done();
                    report.record(slot, res);
                }
                None => rest.push((slot, it, r)),
            }
        }
    }
    rest
}

/// A dry run's stand-in for the lookup [`upload::upload_known`] makes: a listed copy
/// without a checksum (Azure Files listings carry no metadata) whose size matches gets
/// its properties read, so the comparison is the one the real run makes.
async fn with_checksums(engine: &Arc<Engine>, uploads: Pending) -> Pending {
    if engine.store.listing_has_checksums() {
        return uploads;
    }
    futures_util::stream::iter(uploads)
        .map(|(slot, it, r)| async move {
            let r = match r {
                Some(r) if r.sha256.is_none() && r.content_md5.is_none() && r.size == it.size => {
                    match engine.with_request(engine.store.properties(&r.name)).await {
                        Ok(Some(p)) => Some(p),
                        _ => Some(r),
                    }
                }
                r => r,
            };
            (slot, it, r)
        })
        .buffer_unordered(engine.cfg.concurrency)
        .collect()
        .await
}

async fn upload_all(engine: &Arc<Engine>, uploads: Pending, report: &mut Report) {
    let ticker = engine.ticker();
    let items = uploads.into_iter().map(|(slot, item, remote)| (slot, (item, remote)));
    let describe = |(it, _): &(UploadItem, Option<RemoteItem>)| (it.name.clone(), it.rel.clone(), it.size);
    engine.drive(items, report, describe, |eng, (item, remote)| upload::upload_known(eng, item, Some(remote))).await;
    ticker.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blob's name key: the name itself.
    fn same(n: &str) -> Cow<'_, str> {
        Cow::Borrowed(n)
    }

    fn remote(name: &str) -> RemoteItem {
        RemoteItem { name: name.into(), size: 1, ..RemoteItem::default() }
    }

    #[test]
    fn the_target_owns_whole_path_components() {
        assert_eq!(owned_prefix("a"), "a/");
        assert_eq!(owned_prefix("/a/b/"), "a/b/");
        assert_eq!(owned_prefix(""), "");
        assert_eq!(owned_prefix("/"), "");
        let none: Vec<&str> = vec![];
        let plan = merge(none, |n| n, vec![remote("a/x"), remote("ab/y"), remote("a"), remote("a/")], "a/", same);
        let names: Vec<&str> = plan.deletes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a/x"], "`ab/y`, `a` and the folder marker `a/` are not the sync's");
    }

    #[test]
    fn merge_pairs_listed_copies_and_deletes_what_the_selection_lacks() {
        let local = vec!["t/b", "t/d é", "t/a b", "t/z"];
        let listed = ["t/c", "t/a b", "t/zz", "t/b", "t/0", "t/d é"].map(remote).to_vec();
        let plan = merge(local, |n| n, listed, "t/", same);
        let ups: Vec<(&str, bool)> = plan.uploads.iter().map(|(n, r)| (*n, r.is_some())).collect();
        assert_eq!(ups, [("t/a b", true), ("t/b", true), ("t/d é", true), ("t/z", false)]);
        let dels: Vec<&str> = plan.deletes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(dels, ["t/0", "t/c", "t/zz"]);
        // Azure Files compares names without case: `T/B.txt` is the stored `t/b.TXT`, kept.
        let plan = merge(vec!["t/B.txt"], |n| n, vec![remote("t/b.TXT")], "t/", |n| Cow::Owned(n.to_lowercase()));
        assert!(plan.deletes.is_empty() && plan.uploads[0].1.is_some());
        let plan = merge(vec!["t/B.txt"], |n| n, vec![remote("t/b.TXT")], "t/", same);
        assert_eq!(plan.deletes.len(), 1);
    }
}
