//! Cache mode: `cache_save` / `cache_restore` through the real binary against
//! Azurite: the round trip of a tree (long names, modes, mtimes, links, empty directories),
//! keys and `restore_keys`, misses, and hostile or corrupt archives, which must leave the
//! workspace as it was.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::support::*;

const LONG: &str = "a-directory-name-long-enough/to-need-pax-records-because-ustar-stops-at-one-hundred-bytes/and-then-some-more-text/file.txt";

fn cache(ws: &Path, az: &Azurite, c: &str, action: &str) -> Plugin {
    plugin(ws)
        .azurite(az, c)
        .set("action", action)
        .set("source", ".cargo/registry,target")
        .set("target", "caches")
        .set("cache_key", r#"cargo-{{ checksum "Cargo.lock" }}"#)
}

fn outputs(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A workspace with a cache worth the name.
fn seed(ws: &Path) {
    write(ws, "Cargo.lock", b"lock v1");
    write(ws, ".cargo/registry/index/config.json", b"{}");
    write(ws, ".cargo/registry/big.crate", &bytes(700_000, 7));
    write(ws, &format!(".cargo/registry/{LONG}"), b"long");
    let exe = write(ws, "target/debug/app", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(ws.join("target/empty/dir")).unwrap();
    std::os::unix::fs::symlink("debug/app", ws.join("target/latest")).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(ws.join(".cargo/registry/index/config.json"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

fn key_of(ws: &Path) -> String {
    format!("cargo-{}", sha256_hex(&std::fs::read(ws.join("Cargo.lock")).unwrap()))
}

#[test]
fn cache_save_then_restore_round_trips_the_tree() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cacheround");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    seed(&ws);
    let key = key_of(&ws);
    // Small blocks and a small budget: the archive goes up in many blocks, memory-bounded.
    let out = cache(&ws, az, &c, "cache_save").set("block_size", "64KiB").set("max_memory", "1MiB").run();
    out.assert_ok().assert_contains(&format!("cache `{key}` saved"));
    let name = format!("caches/trusted/{key}.tar.zst");
    assert_eq!(list(az, &c), vec![name.clone()]);
    let (blob, props) = fetch(az, &c, &name);
    assert_eq!(props["metadata"]["sha256"].as_str().unwrap(), sha256_hex(&blob), "the archive's SHA-256 is stored");
    assert_eq!(props["blob_type"].as_str().unwrap(), "BlockBlob");
    // A zstd frame (magic 28 B5 2F FD) whose descriptor sets Content_Checksum_flag (bit 2).
    assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    assert_ne!(blob[4] & 0x04, 0, "zstd frame checksum enabled");

    let ws2 = dir.path().join("ws2");
    write(&ws2, "Cargo.lock", b"lock v1");
    write(&ws2, "target/stale.o", b"stale: replaced by the cached directory");
    let outfile = dir.path().join("out");
    let out = cache(&ws2, az, &c, "cache_restore").env("DRONE_OUTPUT", outfile.to_str().unwrap()).run();
    out.assert_ok().assert_contains(&format!("cache `{key}` restored"));
    let o = outputs(&outfile);
    assert_eq!(o.get("cache_hit").map(String::as_str), Some("true"), "{o:?}");
    assert_eq!(o.get("cache_key"), Some(&key), "{o:?}");
    assert_eq!(tree(&ws2), tree(&ws), "the same files, no staging directory left");
    for f in tree(&ws).into_iter().filter(|f| f != "Cargo.lock") {
        let (a, b) =
            (std::fs::symlink_metadata(ws.join(&f)).unwrap(), std::fs::symlink_metadata(ws2.join(&f)).unwrap());
        assert_eq!(a.file_type().is_symlink(), b.file_type().is_symlink(), "{f}");
        if a.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(ws.join(&f)).unwrap(), std::fs::read_link(ws2.join(&f)).unwrap(), "{f}");
            continue;
        }
        assert_eq!(std::fs::read(ws.join(&f)).unwrap(), std::fs::read(ws2.join(&f)).unwrap(), "{f}");
        assert_eq!(a.mode() & 0o777, b.mode() & 0o777, "{f}: mode");
        assert_eq!(a.mtime(), b.mtime(), "{f}: mtime");
    }
    assert!(ws2.join("target/empty/dir").is_dir(), "empty directories are kept");
    assert!(!ws2.join("target/stale.o").exists(), "a cached directory replaces what was there");
}

#[test]
fn cache_save_does_not_write_an_existing_key_again_unless_overwrite_true() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cacheexists");
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let key = key_of(dir.path());
    let name = format!("caches/trusted/{key}.tar.zst");
    cache(dir.path(), az, &c, "cache_save").run().assert_ok();
    let etag = fetch(az, &c, &name).1["etag"].clone();
    write(dir.path(), "target/new.txt", b"new");
    cache(dir.path(), az, &c, "cache_save")
        .run()
        .assert_ok()
        .assert_contains(&format!("cache `{key}` exists: not saved again"));
    assert_eq!(fetch(az, &c, &name).1["etag"], etag, "not rewritten");
    cache(dir.path(), az, &c, "cache_save").set("overwrite", "true").run().assert_ok().assert_contains("saved");
    assert_ne!(fetch(az, &c, &name).1["etag"], etag, "rewritten with overwrite: true");
}

#[test]
fn cache_restore_miss_exits_0_and_creates_nothing_unless_fail_on_miss() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachemiss");
    py(az, &["create-container", &c]);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "Cargo.lock", b"lock");
    let outfile = dir.path().join("out");
    let out = cache(&ws, az, &c, "cache_restore").env("GITHUB_OUTPUT", outfile.to_str().unwrap()).run();
    out.assert_ok().assert_contains("cache miss");
    assert_eq!(tree(&ws), vec!["Cargo.lock"]);
    assert_eq!(std::fs::read_dir(&ws).unwrap().count(), 1, "nothing created");
    let o = outputs(&outfile);
    assert_eq!(o.get("cache_hit").map(String::as_str), Some("false"), "{o:?}");
    assert_eq!(o.get("cache_key").map(String::as_str), Some(""), "{o:?}");
    cache(&ws, az, &c, "cache_restore").set("fail_on_miss", "true").run().assert_code(1).assert_contains("cache miss");
}

#[test]
fn cache_restore_keys_take_the_newest_match_of_the_first_prefix_that_matches() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachekeys");
    let dir = tempfile::tempdir().unwrap();
    let save = |tag: &str, key: &str| {
        let ws = dir.path().join(format!("save-{tag}"));
        write(&ws, &format!("target/{tag}.txt"), tag.as_bytes());
        cache(&ws, az, &c, "cache_save").set("cache_key", key).run().assert_ok();
    };
    save("old", "deps-linux-1");
    // Last-Modified has a resolution of one second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    save("new", "deps-linux-2");
    save("other", "zzz-other");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let outfile = dir.path().join("out");
    cache(&ws, az, &c, "cache_restore")
        .set("cache_key", "deps-linux-3")
        .set("restore_keys", r#"["nothing-", "deps-{{ os }}-", "zzz-"]"#)
        .env("DRONE_OUTPUT", outfile.to_str().unwrap())
        .run()
        .assert_ok()
        .assert_contains("restore key `nothing-`: no match")
        .assert_contains("cache `deps-linux-2` restored (a restore_keys match)");
    assert_eq!(tree(&ws), vec!["target/new.txt"]);
    let o = outputs(&outfile);
    assert_eq!(o.get("cache_hit").map(String::as_str), Some("false"), "not the exact key: {o:?}");
    assert_eq!(o.get("cache_key").map(String::as_str), Some("deps-linux-2"), "{o:?}");
}

/// One member of a hand-made tar: raw name bytes (anything, `..` included), type, link, data.
struct Member<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: &'a [u8],
    data: &'a [u8],
    mode: u32,
}

fn m<'a>(name: &'a str, kind: tar::EntryType, link: &'a str, data: &'a [u8]) -> Member<'a> {
    Member { name: name.as_bytes(), kind, link: link.as_bytes(), data, mode: 0o644 }
}

impl Member<'_> {
    fn mode(self, mode: u32) -> Self {
        Member { mode, ..self }
    }
}

/// A tar.zst written byte by byte, so that names no honest writer produces can be made
/// (with zstd's frame checksum, as `cache_save` writes it).
fn hostile_archive(members: &[Member]) -> Vec<u8> {
    compress(&tar_of(members), 3, None)
}

/// The tar of `members`, byte by byte.
fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for mb in members {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..mb.name.len()].copy_from_slice(mb.name);
        h.as_old_mut().linkname[..mb.link.len()].copy_from_slice(mb.link);
        h.set_entry_type(mb.kind);
        h.set_size(mb.data.len() as u64);
        h.set_mode(mb.mode);
        h.set_cksum();
        t.append(&h, mb.data).unwrap();
    }
    t.into_inner().unwrap()
}

/// zstd with its frame checksum, optionally with a given window (log2).
fn compress(data: &[u8], level: i32, window_log: Option<u32>) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
    z.include_checksum(true).unwrap();
    if let Some(w) = window_log {
        z.set_parameter(zstd::stream::raw::CParameter::WindowLog(w)).unwrap();
    }
    std::io::Write::write_all(&mut z, data).unwrap();
    z.finish().unwrap()
}

/// Stores `archive` as the cache blob `k` with its true SHA-256 (or `sha` when given).
fn store(az: &Azurite, c: &str, dir: &Path, archive: &[u8], sha: Option<&str>) {
    let f = dir.join("k.tar.zst");
    std::fs::write(&f, archive).unwrap();
    py(az, &["create-container", c]);
    let sha = sha.map(str::to_string).unwrap_or_else(|| sha256_hex(archive));
    py(az, &["put", c, "caches/trusted/k.tar.zst", f.to_str().unwrap(), "--metadata", &format!("sha256={sha}")]);
}

/// A workspace with an older cache in place, the file outside it that an attack aims at,
/// and a restore of key `k`.
fn restore_into(az: &Azurite, c: &str, dir: &Path) -> (std::path::PathBuf, Out) {
    let ws = dir.join("ws");
    write(&ws, "cache/old.txt", b"previous cache");
    write(&ws, "src/main.rs", b"fn main() {}");
    let out = plugin(&ws)
        .azurite(az, c)
        .set("action", "cache_restore")
        .set("source", "cache")
        .set("target", "caches")
        .set("cache_key", "k")
        .run();
    (ws, out)
}

#[track_caller]
fn assert_untouched(dir: &Path, ws: &Path) {
    assert_eq!(tree(ws), vec!["cache/old.txt", "src/main.rs"], "the workspace is as it was");
    assert_eq!(std::fs::read(ws.join("cache/old.txt")).unwrap(), b"previous cache");
    let names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["k.tar.zst", "ws"], "nothing written outside the workspace");
}

#[test]
fn cache_restore_refuses_hostile_members_and_leaves_the_workspace_as_it_was() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let az = Azurite::shared();
    let cases: Vec<(&str, Vec<Member>, &str)> = vec![
        (
            "dotdot",
            vec![m("cache/ok.txt", Regular, "", b"x"), m("cache/../../escaped", Regular, "", b"x")],
            "holds `..`",
        ),
        ("absolute", vec![m("/tmp/plugin-cache-absolute", Regular, "", b"x")], "is an absolute path"),
        ("outside-source", vec![m("src/main.rs", Regular, "", b"owned")], "outside the cached directories"),
        ("symlink-out", vec![m("cache/l", Symlink, "../../escaped", b"")], "it leaves the workspace"),
        ("symlink-abs", vec![m("cache/l", Symlink, "/etc/passwd", b"")], "an absolute target"),
        // Links that stay in the workspace but leave the cached directories.
        ("symlink-src", vec![m("cache", Symlink, "src", b"")], "is a cached directory itself"),
        ("symlink-git", vec![m("cache/hooks", Symlink, "../.git/hooks", b"")], "points outside the cached directories"),
        ("symlink-dotdot", vec![m("cache/d", Symlink, "x/../../src", b"")], "`..` after a name"),
        ("hardlink-out", vec![m("cache/h", Link, "/etc/passwd", b"")], "hard link `cache/h` points outside"),
        ("hardlink-src", vec![m("cache/h", Link, "src/main.rs", b"")], "hard link `cache/h` points outside"),
        ("fifo", vec![m("cache/p", Fifo, "", b"")], "device or FIFO"),
        ("chardev", vec![m("cache/null", Char, "", b"")], "device or FIFO"),
        ("blockdev", vec![m("cache/sda", Block, "", b"")], "device or FIFO"),
        // A link inside the cached directory, then a member written through it: refused, not followed.
        (
            "through-link",
            vec![
                m("cache/d", Directory, "", b""),
                m("cache/l", Symlink, "d", b""),
                m("cache/l/main.rs", Regular, "", b"owned"),
            ],
            "cannot restore `cache/l/main.rs`",
        ),
        ("twice", vec![m("cache/a", Regular, "", b"1"), m("cache/a", Regular, "", b"2")], "cannot restore `cache/a`"),
    ];
    for (tag, members, want) in cases {
        let c = container(&format!("cachehostile{tag}"));
        let dir = tempfile::tempdir().unwrap();
        store(az, &c, dir.path(), &hostile_archive(&members), None);
        let (ws, out) = restore_into(az, &c, dir.path());
        out.assert_code(1).assert_contains(want);
        assert_untouched(dir.path(), &ws);
        assert!(!Path::new("/tmp/plugin-cache-absolute").exists(), "{tag}");
    }
}

#[test]
fn cache_restore_of_a_corrupt_or_truncated_archive_leaves_the_workspace_as_it_was() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let good = hostile_archive(&[
        m("cache/a.txt", tar::EntryType::Regular, "", &bytes(200_000, 1)),
        m("cache/b.txt", tar::EntryType::Regular, "", b"b"),
    ]);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let truncated = good[..good.len() - 8].to_vec();
    let wrong_sha = "0".repeat(64);
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("flipped", flipped, None, "corrupt"),
        ("truncated", truncated, None, "truncated"),
        ("sha", good, Some(wrong_sha.as_str()), "is not the stored one"),
    ];
    for (tag, archive, sha, want) in cases {
        let c = container(&format!("cachecorrupt{tag}"));
        let dir = tempfile::tempdir().unwrap();
        store(az, &c, dir.path(), &archive, sha);
        let (ws, out) = restore_into(az, &c, dir.path());
        out.assert_code(1).assert_contains(want);
        assert_untouched(dir.path(), &ws);
    }
}

#[test]
fn cache_key_templates_are_checked_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin(dir.path())
        .set("account_name", "acct")
        .set("container", "c")
        .set("account_key", "a2V5")
        .set("action", "cache_save")
        .set("source", "target")
        .set("cache_key", r#"k-{{ env "NOT_SET_ANYWHERE" }}"#)
        .run();
    out.assert_code(2).assert_contains("cache_key").assert_contains("`NOT_SET_ANYWHERE` is not set");
    let out = plugin(dir.path())
        .set("account_name", "acct")
        .set("container", "c")
        .set("action", "cache_restore")
        .set("source", "target")
        .run();
    out.assert_code(2).assert_contains("cache_key").assert_contains("is required with `action: cache_save`");
}

#[test]
fn cache_restore_from_azure_files_of_an_uploaded_archive() {
    use crate::files_fake::{account_key, FilesFake};
    let fake = FilesFake::start();
    fake.create_share("caches");
    let files = |ws: &Path| {
        plugin(ws)
            .set("service", "file")
            .set("share", "caches")
            .set("endpoint", fake.endpoint())
            .set("account_key", account_key())
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    let archive = hostile_archive(&[
        m("cache/d", tar::EntryType::Directory, "", b""),
        m("cache/d/a.txt", tar::EntryType::Regular, "", &bytes(300_000, 3)),
        m("cache/l", tar::EntryType::Symlink, "d/a.txt", b""),
    ]);
    write(&seed, "k.tar.zst", &archive);
    // An ordinary upload stores it with its `sha256`, as a save would.
    files(&seed).set("source", "k.tar.zst").set("target", "caches/trusted").run().assert_ok();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let restore = files(&ws).set("action", "cache_restore").set("source", "cache").set("target", "caches");
    // Small ranges: several parallel ranged GETs, delivered in order.
    restore.set("cache_key", "k").set("block_size", "64KiB").run().assert_ok().assert_contains("cache `k` restored");
    assert_eq!(tree(&ws), vec!["cache/d/a.txt", "cache/l"]);
    assert_eq!(std::fs::read(ws.join("cache/d/a.txt")).unwrap(), bytes(300_000, 3));
    assert_eq!(std::fs::read_link(ws.join("cache/l")).unwrap(), Path::new("d/a.txt"));
}

/// `cache_save` to Azure Files: the file is created empty under a temporary name, grown
/// by Set File Properties before a range would pass its end (the fake refuses ranges
/// outside the current length), cut to the archive's exact length, renamed into place;
/// then restored. An existing key is not written again unless `overwrite: true`.
#[test]
fn cache_save_to_azure_files_grows_the_file_and_round_trips() {
    use crate::files_fake::{account_key, FilesFake};
    let fake = FilesFake::start();
    fake.create_share("share");
    let files = |ws: &Path, action: &str| {
        plugin(ws)
            .set("service", "file")
            .set("share", "share")
            .set("endpoint", fake.endpoint())
            .set("account_key", account_key())
            .set("action", action)
            .set("source", ".cargo/registry,target")
            .set("target", "caches")
            .set("cache_key", r#"cargo-{{ checksum "Cargo.lock" }}"#)
            .set("block_size", "64KiB")
            .set("max_memory", "1MiB")
    };
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    seed(&ws);
    let key = key_of(&ws);
    let path = format!("caches/trusted/{key}.tar.zst");
    fake.clear_log();
    files(&ws, "cache_save").run().assert_ok().assert_contains(&format!("cache `{key}` saved"));
    let stored = fake.file("share", &path).expect("the archive is stored under its final name");
    assert!(stored.data.len() > 4 * 64 * 1024, "a multi-range archive: {} bytes", stored.data.len());
    assert_eq!(stored.metadata.get("sha256"), Some(&sha256_hex(&stored.data)), "exact length: the hash covers it all");
    assert_eq!(stored.content_type.as_deref(), Some("application/zstd"), "resizes kept the content headers");
    // One grow (8 MiB covers this archive) and the exact length at the end.
    assert_eq!(fake.count("Set File Properties"), 2, "{:?}", fake.log());
    assert!(fake.count("Put Range") >= 5);
    assert_eq!(fake.files("share"), vec![path.clone()], "no temporary file left");

    let back = dir.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    write(&back, "Cargo.lock", b"lock v1");
    files(&back, "cache_restore").run().assert_ok().assert_contains(&format!("cache `{key}` restored"));
    assert_eq!(tree(&back), tree(&ws));
    let big = ".cargo/registry/big.crate";
    assert_eq!(std::fs::read(back.join(big)).unwrap(), std::fs::read(ws.join(big)).unwrap());
    assert_eq!(std::fs::read_link(back.join("target/latest")).unwrap(), Path::new("debug/app"));

    // The key exists: not written again, not even its bytes sent.
    write(&ws, big, &bytes(200_000, 9));
    fake.clear_log();
    files(&ws, "cache_save").run().assert_ok().assert_contains("exists: not saved again");
    assert_eq!(fake.count("Put Range"), 0);
    assert_eq!(fake.file("share", &path).unwrap().data, stored.data);
    // `overwrite: true` replaces it.
    files(&ws, "cache_save").set("overwrite", "true").run().assert_ok().assert_contains("saved");
    let replaced = fake.file("share", &path).unwrap();
    assert_ne!(replaced.data, stored.data);
    assert_eq!(replaced.metadata.get("sha256"), Some(&sha256_hex(&replaced.data)));
}

/// Two runs saving one key on Azure Files: the other run's archive lands just before this
/// run's Rename File; the rename (replace-if-exists false) is refused, the other archive
/// stays, this run reports it as saved meanwhile and leaves no temporary file.
#[test]
fn cache_save_to_azure_files_never_replaces_an_archive_saved_meanwhile() {
    use crate::files_fake::{account_key, FilesFake};
    let fake = FilesFake::start();
    fake.create_share("share");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    seed(&ws);
    let path = format!("caches/trusted/{}.tar.zst", key_of(&ws));
    fake.race_on_rename("share", &path, b"the other run's archive");
    let out = plugin(&ws)
        .set("service", "file")
        .set("share", "share")
        .set("endpoint", fake.endpoint())
        .set("account_key", account_key())
        .set("action", "cache_save")
        .set("source", ".cargo/registry,target")
        .set("target", "caches")
        .set("cache_key", r#"cargo-{{ checksum "Cargo.lock" }}"#)
        .set("block_size", "64KiB")
        .run();
    out.assert_ok().assert_contains("was saved meanwhile by another run");
    assert_eq!(fake.file("share", &path).unwrap().data, b"the other run's archive");
    assert_eq!(fake.files("share"), vec![path]);
}

/// A cache save over a slow link prints progress lines: bytes so far, no total or ETA
/// (the archive's length is not known while it is written).
#[test]
fn a_slow_cache_save_prints_progress_lines_without_an_eta() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cacheprogress");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    seed(&ws);
    // About 1 MiB through 512 KiB/s: two seconds, many 100 ms ticks.
    let port = throttled_proxy(az.port, 512 << 10);
    let out = cache(&ws, az, &c, "cache_save")
        .set("endpoint", format!("{}://127.0.0.1:{port}/{DEV_ACCOUNT}", az.scheme))
        .set("block_size", "64KiB")
        .set("progress_interval", "100ms")
        .set("log_format", "text")
        .run();
    out.assert_ok().assert_contains("progress: ").assert_contains(" so far, ");
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| !l.contains("ETA")), "{lines:?}");
}

// ---- restore keys, listed names, exit codes --------------------------------

/// Otherwise `restore_keys: /` under `target: caches/app` would list `caches/app` and
/// restore `caches/apple.tar.zst`, a key with `..` would only be found out when listed, and
/// a `cache_key` of `../x` would exit 3 after the run began.
#[test]
fn restore_keys_and_cache_key_are_checked_by_the_same_rules_before_any_request() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cacheprefix");
    let dir = tempfile::tempdir().unwrap();
    let save_ws = dir.path().join("save");
    write(&save_ws, "target/apple.txt", b"apple");
    cache(&save_ws, az, &c, "cache_save").set("cache_key", "apple").run().assert_ok();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let restore = |key: &str| {
        cache(&ws, az, &c, "cache_restore").set("target", "caches/app").set("cache_key", "k1").set("restore_keys", key)
    };
    for (key, why) in [("/", "begins or ends with `/`"), ("../apple", "`..` path segment"), ("x//y", "empty")] {
        let out = restore(key).run();
        out.assert_code(2).assert_contains("restore_keys").assert_contains(why).assert_lacks("restored");
        assert!(tree(&ws).is_empty(), "{key}: restored {:?}", tree(&ws));
    }
    // A key that is a prefix inside `caches/app/` is fine (a miss here).
    restore("app").run().assert_ok().assert_contains("cache miss");
    assert!(tree(&ws).is_empty());
    // `cache_key` by the same rules, as a settings error (2), before any request.
    for key in ["../x", "a//b", "/abs", "{{ checksum \"Cargo.lock\" }}/"] {
        let out = plugin(dir.path())
            .set("account_name", "acct")
            .set("container", "c")
            .set("account_key", "a2V5")
            .set("endpoint", "http://127.0.0.1:9/acct")
            .set("action", "cache_save")
            .set("source", "target")
            .set("cache_key", key)
            .run();
        out.assert_code(2).assert_contains("cache_key").assert_contains("renders to a name that");
    }
}

/// A listing for a restore key that names `caches/dep-1/../../other/evil.tar.zst` must not
/// make the restore fetch `other/evil.tar.zst`, an archive outside `target`, and extract it.
#[test]
fn a_restore_key_listing_naming_dot_dot_is_refused_and_nothing_outside_target_is_fetched() {
    if !crate::support::azurite_present() {
        return;
    }
    use crate::fault_proxy::{inject_into_listing, op, FaultProxy, Rule, Times};
    let az = Azurite::shared();
    let c = container("cachedotdot");
    let dir = tempfile::tempdir().unwrap();
    let save_ws = dir.path().join("save");
    write(&save_ws, "target/evil.txt", b"evil");
    cache(&save_ws, az, &c, "cache_save").set("target", "other").set("cache_key", "evil").run().assert_ok();
    let inject = "<Blob><Name>caches/trusted/dep-1/../../../other/trusted/evil.tar.zst</Name><Properties><Content-Length>100</Content-Length><Etag>\"0x1\"</Etag></Properties></Blob>";
    // Nothing is stored under `caches/`: the page is empty but for the injected entry.
    let proxy = FaultProxy::start(
        az,
        vec![Rule::new("inject", op("ListBlobs"), Times::Every, inject_into_listing(inject.to_string()))],
    );
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let out = cache(&ws, az, &c, "cache_restore")
        .set("endpoint", proxy.endpoint())
        .set("cache_key", "dep-none")
        .set("restore_keys", "dep-")
        .run();
    assert!(proxy.fired("inject") >= 1, "{}", proxy.log());
    out.assert_code(3).assert_contains("has a `..` component").assert_contains("refusing to restore from it");
    let touched: Vec<String> = proxy.records().iter().filter_map(|r| r.req.blob().map(str::to_string)).collect();
    assert!(!touched.iter().any(|b| b.contains("evil")), "requested: {touched:?}");
    assert!(tree(&ws).is_empty(), "restored: {:?}", tree(&ws));
}

/// A restore from a container that does not exist is not a silent miss (nor exit 1 with
/// `fail_on_miss`).
#[test]
fn a_cache_restore_from_a_missing_container_says_so() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachenocontainer");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "Cargo.lock", b"lock");
    let out = cache(&ws, az, &c, "cache_restore").run();
    out.assert_ok().assert_contains(&format!("the container `{c}` does not exist: nothing to restore"));
    let out = cache(&ws, az, &c, "cache_restore").set("restore_keys", "cargo-").set("fail_on_miss", "true").run();
    out.assert_code(3).assert_contains(&format!("the container `{c}` does not exist"));
    assert_eq!(tree(&ws), vec!["Cargo.lock"]);
}

/// A restore into `ws` of `sources` from the cache blob `caches/trusted/k.tar.zst`.
fn restore_of(ws: &Path, az: &Azurite, c: &str, sources: &str) -> Plugin {
    plugin(ws)
        .azurite(az, c)
        .set("action", "cache_restore")
        .set("source", sources)
        .set("target", "caches")
        .set("cache_key", "k")
}

/// A `source` under a workspace link is refused before anything is downloaded, and nothing
/// changes: found half-way, it would fail the restore after the first cached directory had
/// been replaced (and its old content deleted).
#[test]
fn cache_restore_refuses_a_source_under_a_link_before_downloading_and_changes_nothing() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    use crate::fault_proxy::FaultProxy;
    let az = Azurite::shared();
    let c = container("cachelinkedsource");
    let dir = tempfile::tempdir().unwrap();
    let archive = hostile_archive(&[
        m("cache/new.txt", tar::EntryType::Regular, "", b"new"),
        m("lnk/deps/new.txt", tar::EntryType::Regular, "", b"new"),
    ]);
    store(az, &c, dir.path(), &archive, None);
    let ws = dir.path().join("ws");
    write(&ws, "cache/old.txt", b"previous cache");
    write(&ws, "real/deps/old.txt", b"previous deps");
    std::os::unix::fs::symlink("real", ws.join("lnk")).unwrap();
    let proxy = FaultProxy::start(az, vec![]);
    let out = restore_of(&ws, az, &c, "cache,lnk/deps").set("endpoint", proxy.endpoint()).run();
    assert_eq!(std::fs::read(ws.join("cache/old.txt")).ok(), Some(b"previous cache".to_vec()), "the first source");
    assert_eq!(std::fs::read(ws.join("real/deps/old.txt")).unwrap(), b"previous deps");
    assert_eq!(std::fs::read_link(ws.join("lnk")).unwrap(), Path::new("real"));
    assert_eq!(tree(&ws), vec!["cache/old.txt", "lnk", "real/deps/old.txt"], "no staging directory left");
    out.assert_code(1).assert_contains("`source` `lnk/deps`: `lnk` is a symbolic link");
    assert!(proxy.ops("GetBlob").is_empty(), "nothing downloaded:\n{}", proxy.log());
}

/// A move into place that fails at the second directory (here: the old `ro/deps` cannot be
/// moved aside, its parent is read-only for the run's user) undoes every move: the first
/// directory is not left replaced with its old content deleted.
#[test]
fn cache_restore_that_fails_half_way_puts_every_directory_back() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachehalfway");
    let dir = tempfile::tempdir().unwrap();
    let archive = hostile_archive(&[
        m("cache/new.txt", tar::EntryType::Regular, "", b"new"),
        m("ro/deps/new.txt", tar::EntryType::Regular, "", b"new"),
    ]);
    store(az, &c, dir.path(), &archive, None);
    let ws = dir.path().join("ws");
    write(&ws, "cache/old.txt", b"previous cache");
    write(&ws, "ro/deps/old.txt", b"previous deps");
    let open = std::fs::Permissions::from_mode(0o777);
    for d in ["", "cache", "ro/deps"] {
        std::fs::set_permissions(ws.join(d), open.clone()).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(ws.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    // As `nobody` when the tests run as root (root may write anywhere).
    let out = restore_of(&ws, az, &c, "cache,ro/deps").run_unprivileged();
    std::fs::set_permissions(ws.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(tree(&ws), vec!["cache/old.txt", "ro/deps/old.txt"], "as it was, no staging directory left");
    assert_eq!(std::fs::read(ws.join("cache/old.txt")).unwrap(), b"previous cache");
    out.assert_code(1)
        .assert_contains("cannot move the old `ro/deps` aside")
        .assert_contains("every directory was put back as it was");
}

/// `cache_save` never stores an archive every restore would refuse (exit 0, the key then
/// "existing"): a link leaving the cached directories (a venv's absolute link) fails the
/// save naming it, and nothing is stored.
#[test]
fn cache_save_refuses_a_link_a_restore_would_refuse_and_stores_nothing() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachesavevenv");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "venv/bin/activate", b"# venv");
    std::os::unix::fs::symlink("/usr/bin/python3", ws.join("venv/bin/python")).unwrap();
    let save = || {
        plugin(&ws)
            .azurite(az, &c)
            .set("action", "cache_save")
            .set("source", "venv")
            .set("target", "caches")
            .set("cache_key", "venv")
            .run()
    };
    save().assert_code(1).assert_contains("the link `venv/bin/python` → `/usr/bin/python3` cannot be cached");
    assert!(list(az, &c).is_empty(), "nothing stored: {:?}", list(az, &c));
    // Not "exists" the next time: the save is tried again (and refused again).
    save().assert_code(1).assert_lacks("exists: not saved again");
}

/// Overlapping sources and the whole workspace are settings errors
/// (exit 2); a source named twice is cached once, and its archive restores.
#[test]
fn cache_sources_may_not_overlap_and_duplicates_are_cached_once() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cacheoverlap");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "sub/b.txt", b"b");
    let run = |action: &str, sources: &str| {
        plugin(&ws)
            .azurite(az, &c)
            .set("action", action)
            .set("source", sources)
            .set("target", "caches")
            .set("cache_key", "k")
            .run()
    };
    run("cache_save", "sub,sub/b.txt").assert_code(2).assert_contains("`sub/b.txt` is inside `sub`");
    run("cache_save", ".").assert_code(2).assert_contains("`.` is the whole workspace");
    run("cache_restore", "./").assert_code(2).assert_contains("is the whole workspace");
    run("cache_save", "sub,./sub/").assert_ok().assert_contains("cache `k` saved: 1 file(s), 1 dir(s)");
    let back = dir.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    let out = plugin(&back)
        .azurite(az, &c)
        .set("action", "cache_restore")
        .set("source", "sub,./sub/")
        .set("target", "caches")
        .set("cache_key", "k")
        .run();
    out.assert_ok().assert_contains("cache `k` restored");
    assert_eq!(tree(&back), vec!["sub/b.txt"]);
}

/// An archive of zeros, which would expand until the disk is full, stops at
/// `max_restore_size`, before writing past it, and nothing is restored.
#[test]
fn cache_restore_stops_an_archive_that_expands_past_max_restore_size() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let dir = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 64 << 20];
    let bomb = hostile_archive(&[m("cache/zeros", tar::EntryType::Regular, "", &zeros)]);
    assert!(bomb.len() < 128 << 10, "a small archive: {} bytes", bomb.len());
    // Zeros after the tar's end expand too.
    let mut trailing = tar_of(&[m("cache/a.txt", tar::EntryType::Regular, "", b"a")]);
    trailing.extend_from_slice(&zeros);
    let trailing = compress(&trailing, 3, None);
    for (tag, archive) in [("entry", bomb), ("trailing", trailing)] {
        let c = container(&format!("cachebomb{tag}"));
        let sub = dir.path().join(tag);
        std::fs::create_dir_all(&sub).unwrap();
        store(az, &c, &sub, &archive, None);
        let ws = sub.join("ws");
        write(&ws, "cache/old.txt", b"previous cache");
        let out = restore_of(&ws, az, &c, "cache").set("max_restore_size", "16MiB").run();
        out.assert_code(1).assert_contains("the archive expands past max_restore_size (16.0 MiB)");
        assert_eq!(tree(&ws), vec!["cache/old.txt"], "{tag}: nothing restored, no staging directory left");
        // The same archive within a larger limit restores.
        restore_of(&ws, az, &c, "cache").set("max_restore_size", "80MiB").run().assert_ok();
    }
}

/// A frame whose zstd window is larger than `max_memory` is refused,
/// naming the setting, before its window is allocated.
#[test]
fn cache_restore_refuses_a_zstd_window_larger_than_max_memory() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachewindow");
    let dir = tempfile::tempdir().unwrap();
    let tar = tar_of(&[m("cache/a.bin", tar::EntryType::Regular, "", &bytes(300_000, 5))]);
    store(az, &c, dir.path(), &compress(&tar, 3, Some(27)), None);
    let ws = dir.path().join("ws");
    write(&ws, "cache/old.txt", b"previous cache");
    let out = restore_of(&ws, az, &c, "cache").set("max_memory", "8MiB").run();
    out.assert_code(1).assert_contains("needs a zstd window of 128.0 MiB, larger than `max_memory` (8.0 MiB) allows");
    assert_eq!(tree(&ws), vec!["cache/old.txt"]);
    // With the memory for its window (128 MiB), it restores.
    restore_of(&ws, az, &c, "cache").set("max_memory", "128MiB").run().assert_ok();
    assert_eq!(tree(&ws), vec!["cache/a.bin"]);
}

/// The umask of this process (and so of the plugin it starts).
fn process_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("Umask in /proc/self/status");
    u32::from_str_radix(v.trim(), 8).unwrap()
}

/// World-writable modes are restored less the process umask, as tar does for a user
/// other than root.
#[test]
fn cache_restore_applies_the_umask_to_world_writable_modes() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    use tar::EntryType::{Directory, Regular};
    let mask = process_umask();
    assert_ne!(mask & 0o002, 0, "this test needs a umask that removes world write (umask 022)");
    let az = Azurite::shared();
    let c = container("cacheumask");
    let dir = tempfile::tempdir().unwrap();
    let archive = hostile_archive(&[
        m("cache", Directory, "", b"").mode(0o777),
        m("cache/f", Regular, "", b"f").mode(0o666),
        m("cache/x", Regular, "", b"x").mode(0o777),
        m("cache/tmp", Directory, "", b"").mode(0o1777),
    ]);
    store(az, &c, dir.path(), &archive, None);
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    restore_of(&ws, az, &c, "cache").run().assert_ok();
    let mode = |p: &str| std::fs::symlink_metadata(ws.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("cache"), 0o777 & !mask);
    assert_eq!(mode("cache/f"), 0o666 & !mask);
    assert_eq!(mode("cache/x"), 0o777 & !mask);
    assert_eq!(mode("cache/tmp"), 0o1777 & !mask);
}

/// A restore killed (SIGKILL) while it downloads leaves its staging
/// directory; the next restore removes it, and only it: not a look-alike that is not
/// marked as the plugin's, not one a live run holds locked.
#[test]
fn a_restore_removes_the_staging_directory_of_a_killed_restore_and_only_that() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    use crate::fault_proxy::{Fault, FaultProxy, Gate, Req, Rule, Times};
    use crate::faults::{finish, spawn};
    let az = Azurite::shared();
    let c = container("cachestale");
    let dir = tempfile::tempdir().unwrap();
    store(az, &c, dir.path(), &hostile_archive(&[m("cache/a.txt", tar::EntryType::Regular, "", b"a")]), None);
    let ws = dir.path().join("ws");
    write(&ws, "cache/old.txt", b"previous cache");
    let stages = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&ws)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".plugin-azure-storage-cache-"))
            .collect();
        v.sort();
        v
    };
    // A look-alike without the plugin's mark, and a live run's (marked, locked by us).
    let unmarked = format!(".plugin-azure-storage-cache-{}", "a".repeat(32));
    std::fs::create_dir(ws.join(&unmarked)).unwrap();
    let live = format!(".plugin-azure-storage-cache-{}", "b".repeat(32));
    std::fs::create_dir(ws.join(&live)).unwrap();
    std::fs::write(ws.join(&live).join(".plugin-azure-storage-owner"), b"").unwrap();
    let live_lock = std::fs::File::open(ws.join(&live)).unwrap();
    rustix::fs::flock(&live_lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();

    let gate = Gate::new();
    // The download's Get Blob is held (not the 18-byte read of the frame header before it).
    let download = |r: &Req| r.op() == "GetBlob" && r.header("x-ms-range") != Some("bytes=0-17");
    let hold = Rule::new("hold", download, Times::Every, Fault::Hold(gate.clone()));
    let proxy = FaultProxy::start(az, vec![hold]);
    let mut child = spawn(&restore_of(&ws, az, &c, "cache").set("endpoint", proxy.endpoint()));
    let held = proxy.wait_until(Duration::from_secs(60), |recs| recs.iter().any(|r| r.fault == Some("hold")));
    // The staging directory is made before the download is read; wait for it to appear.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stages().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let out = finish(child);
    gate.open();
    assert!(held, "the download was not held:\n{}\n{}", proxy.log(), out.all());
    assert_eq!(out.code, 128 + libc::SIGKILL);
    let after_kill = stages();
    assert_eq!(after_kill.len(), 3, "the killed run's staging directory is left: {after_kill:?}");
    assert_eq!(std::fs::read(ws.join("cache/old.txt")).unwrap(), b"previous cache");

    let out = restore_of(&ws, az, &c, "cache").run();
    out.assert_ok().assert_contains("the staging directory of an interrupted restore");
    assert_eq!(stages(), vec![unmarked, live], "only the killed run's staging directory is removed");
    assert_eq!(std::fs::read(ws.join("cache/a.txt")).unwrap(), b"a");
    drop(live_lock);
}

// `{{ hashFiles "GLOB" ... }}` in key templates.

/// The documented `hashFiles` digest, computed here on its own: SHA-256 over the files in
/// path order, each as its path's length (8 bytes, big endian), the path, and the SHA-256
/// (hex) of its content.
fn hash_files_of(ws: &Path, rels: &[&str]) -> String {
    let mut framed = Vec::new();
    for rel in rels {
        framed.extend_from_slice(&(rel.len() as u64).to_be_bytes());
        framed.extend_from_slice(rel.as_bytes());
        framed.extend_from_slice(sha256_hex(&std::fs::read(ws.join(rel)).unwrap()).as_bytes());
    }
    sha256_hex(&framed)
}

fn hashed_cache(ws: &Path, az: &Azurite, c: &str, action: &str) -> Plugin {
    plugin(ws)
        .azurite(az, c)
        .set("action", action)
        .set("source", "target")
        .set("target", "caches")
        .set("cache_key", r#"cargo-{{ hashFiles "**/Cargo.lock" "rust-toolchain.toml" }}"#)
}

#[test]
fn cache_hash_files_key_is_the_same_after_a_restore_changed_the_cached_directory() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachehashfiles");
    let dir = tempfile::tempdir().unwrap();
    let lay_out = |ws: &Path, built: &[u8]| {
        write(ws, "Cargo.lock", b"lock v1");
        write(ws, "crates/a/Cargo.lock", b"member lock");
        write(ws, "rust-toolchain.toml", b"[toolchain]\nchannel = \"1.85\"\n");
        write(ws, ".hidden/Cargo.lock", b"hidden: not hashed");
        write(ws, "target/Cargo.lock", built);
    };
    let ws = dir.path().join("ws");
    lay_out(&ws, b"what the build left in the cached directory");
    let key = format!("cargo-{}", hash_files_of(&ws, &["Cargo.lock", "crates/a/Cargo.lock", "rust-toolchain.toml"]));
    hashed_cache(&ws, az, &c, "cache_save").run().assert_ok().assert_contains(&format!("cache `{key}` saved"));
    assert_eq!(list(az, &c), vec![format!("caches/trusted/{key}.tar.zst")]);

    // Another run: the same lock files, another `target/Cargo.lock` (inside the cached directory).
    let ws2 = dir.path().join("ws2");
    lay_out(&ws2, b"stale");
    let outfile = dir.path().join("out");
    let out = hashed_cache(&ws2, az, &c, "cache_restore").env("DRONE_OUTPUT", outfile.to_str().unwrap()).run();
    out.assert_ok().assert_contains(&format!("cache `{key}` restored"));
    let o = outputs(&outfile);
    assert_eq!(o.get("cache_hit").map(String::as_str), Some("true"), "{o:?}");
    assert_eq!(std::fs::read(ws2.join("target/Cargo.lock")).unwrap(), b"what the build left in the cached directory");
    // The restore changed the cached directory; the key the save computes does not change.
    hashed_cache(&ws2, az, &c, "cache_save")
        .run()
        .assert_ok()
        .assert_contains(&format!("cache `{key}` exists: not saved again"));
    // A lock file outside the cached directory changes the key.
    write(&ws2, "crates/a/Cargo.lock", b"member lock v2");
    let key2 = format!("cargo-{}", hash_files_of(&ws2, &["Cargo.lock", "crates/a/Cargo.lock", "rust-toolchain.toml"]));
    assert_ne!(key2, key);
    hashed_cache(&ws2, az, &c, "cache_save").run().assert_ok().assert_contains(&format!("cache `{key2}` saved"));
}

#[test]
fn cache_hash_files_glob_that_selects_nothing_is_exit_2_naming_it() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachehashnone");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    write(ws, "Cargo.lock", b"lock");
    write(ws, "target/x.lock", b"inside the cached directory");
    write(ws, ".config/x.lock", b"hidden");
    for glob in ["nothing/*.lock", "target/*.lock", "*/x.lock"] {
        let out = hashed_cache(ws, az, &c, "cache_save")
            .set("cache_key", format!(r#"k-{{{{ hashFiles "Cargo.lock" "{glob}" }}}}"#))
            .run();
        out.assert_code(2)
            .assert_contains("PLUGIN_CACHE_KEY")
            .assert_contains(&format!("`{glob}` selects no file to hash"));
    }
    let out = hashed_cache(ws, az, &c, "cache_restore")
        .set("cache_key", "k-exact")
        .set("restore_keys", r#"k-{{ hashFiles "*.toml" }}"#)
        .run();
    out.assert_code(2).assert_contains("PLUGIN_RESTORE_KEYS").assert_contains("`*.toml` selects no file to hash");
    assert!(pyblob(az, &["list", &c]).is_err(), "nothing was written, not even the container");
}

#[test]
fn cache_hash_files_does_not_hash_a_link_to_a_file_outside_the_workspace() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachehashlink");
    let dir = tempfile::tempdir().unwrap();
    let outside = write(dir.path(), "outside/Cargo.lock", b"a file outside the workspace");
    let ws = dir.path().join("ws");
    write(&ws, "Cargo.lock", b"lock");
    write(&ws, "target/a", b"a");
    std::fs::create_dir_all(ws.join("vendor")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("vendor/Cargo.lock")).unwrap();
    let key = format!("cargo-{}", hash_files_of(&ws, &["Cargo.lock"]));
    let save =
        |ws: &Path| hashed_cache(ws, az, &c, "cache_save").set("cache_key", r#"cargo-{{ hashFiles "**/Cargo.lock" }}"#);
    save(&ws).run().assert_ok().assert_contains(&format!("cache `{key}` saved"));
    // What the link points at changes: the key does not.
    std::fs::write(&outside, b"changed outside").unwrap();
    save(&ws).run().assert_ok().assert_contains(&format!("cache `{key}` exists: not saved again"));
    assert_eq!(list(az, &c), vec![format!("caches/trusted/{key}.tar.zst")]);
}

/// A cache dry run makes the real run's decisions: no `would save` (exit 0) for a save the
/// real run refuses (an absolute link) or skips (the key exists), no `would restore`
/// (exit 0) for a miss the real run fails on (`fail_on_miss`).
#[test]
fn cache_dry_runs_make_the_real_runs_decisions() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cachedryrun");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "venv/bin/activate", b"# venv");
    std::os::unix::fs::symlink("/usr/bin/python3", ws.join("venv/bin/python")).unwrap();
    write(&ws, "deps/a.txt", b"a");
    let run = |action: &str, source: &str, key: &str, dry: bool| {
        plugin(&ws)
            .azurite(az, &c)
            .set("action", action)
            .set("source", source)
            .set("target", "caches")
            .set("cache_key", key)
            .set("fail_on_miss", "true")
            .set("dry_run", if dry { "true" } else { "false" })
            .run()
    };
    // A save the real run refuses: the dry run refuses it alike, with the same exit code.
    let real = run("cache_save", "venv", "venv", false);
    real.assert_code(1).assert_contains("the link `venv/bin/python` → `/usr/bin/python3` cannot be cached");
    run("cache_save", "venv", "venv", true)
        .assert_code(1)
        .assert_contains("the link `venv/bin/python` → `/usr/bin/python3` cannot be cached")
        .assert_lacks("would save");
    // A key that exists: the real run does not save it again, nor does the dry run say it would.
    run("cache_save", "deps", "deps", false).assert_code(0).assert_contains("cache `deps` saved");
    run("cache_save", "deps", "deps", true).assert_code(0).assert_contains("exists").assert_lacks("would save");
    // A key that does not exist yet: the dry run would save it, and stores nothing.
    run("cache_save", "deps", "deps2", true).assert_code(0).assert_contains("would save deps");
    assert_eq!(list(az, &c), vec!["caches/trusted/deps.tar.zst".to_string()]);
    // A container that does not exist, `create_container: false`: the real run's exit 3.
    let missing = container("cachedrynone");
    let to_missing = |dry: bool| {
        plugin(&ws)
            .azurite(az, &missing)
            .set("create_container", "false")
            .set("action", "cache_save")
            .set("source", "deps")
            .set("cache_key", "deps")
            .set("dry_run", if dry { "true" } else { "false" })
            .run()
    };
    to_missing(false).assert_code(3).assert_contains("does not exist");
    to_missing(true).assert_code(3).assert_contains("does not exist").assert_lacks("would save");
    // A miss under `fail_on_miss`: the same exit code as the real run's.
    let real = run("cache_restore", "deps", "nothere", false);
    real.assert_contains("cache miss");
    run("cache_restore", "deps", "nothere", true)
        .assert_code(real.code)
        .assert_contains("cache miss")
        .assert_lacks("would restore");
    // A hit: the dry run names the archive; the workspace is not touched.
    std::fs::remove_dir_all(ws.join("deps")).unwrap();
    run("cache_restore", "deps", "deps", true)
        .assert_code(0)
        .assert_contains("cache `deps` found in the trusted tier")
        .assert_contains("not downloaded (dry run)");
    assert!(!ws.join("deps").exists(), "a dry run restored the cache");
}

// Cache tiers, identity, `lookup_only`, cache errors.

/// A `cache` run of one directory `target` under `caches/`, with key `key` and CI variables.
fn tiered(ws: &Path, az: &Azurite, c: &str, action: &str, key: &str, env: &[(&str, &str)]) -> Plugin {
    let mut p = cache(ws, az, c, action).set("source", "target").set("cache_key", key);
    for (k, v) in env {
        p = p.env(k, *v);
    }
    p
}

const PR: &[(&str, &str)] = &[("DRONE_BUILD_EVENT", "pull_request"), ("DRONE_BRANCH", "main")];
const PUSH: &[(&str, &str)] =
    &[("DRONE_BUILD_EVENT", "push"), ("DRONE_BRANCH", "main"), ("DRONE_COMMIT_SHA", "abc123")];

/// A pull-request run must not save `caches/k.tar.zst`, the very name a trusted run
/// restores (with `overwrite: true`, over the trusted archive).
#[test]
fn a_pull_request_run_writes_only_the_untrusted_tier_and_restores_the_trusted_one() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("tier-pr");
    let dir = tempfile::tempdir().unwrap();
    let trusted_ws = dir.path().join("trusted");
    write(&trusted_ws, "target/who.txt", b"trusted");
    tiered(&trusted_ws, az, &c, "cache_save", "k", PUSH).run().assert_ok();
    assert_eq!(list(az, &c), vec!["caches/trusted/k.tar.zst"]);
    let (_, props) = fetch(az, &c, "caches/trusted/k.tar.zst");
    let meta = &props["metadata"];
    assert_eq!(meta["cache_event"], "DRONE_BUILD_EVENT=push", "{meta}");
    assert_eq!(meta["cache_ref"], "main", "{meta}");
    assert_eq!(meta["cache_commit"], "abc123", "{meta}");
    assert_eq!(meta["cache_sources"], "target", "{meta}");
    assert_eq!(meta["cache_format"], "tar+zstd/1", "{meta}");
    let etag = props["etag"].clone();

    let pr_ws = dir.path().join("pr");
    write(&pr_ws, "target/who.txt", b"pull request");
    for overwrite in ["false", "true"] {
        let mut p = tiered(&pr_ws, az, &c, "cache_save", "k", PR);
        if overwrite == "true" {
            p = p.set("overwrite", "true");
        }
        p.run().assert_ok();
    }
    assert_eq!(list(az, &c), vec!["caches/trusted/k.tar.zst", "caches/untrusted/k.tar.zst"]);
    assert_eq!(fetch(az, &c, "caches/trusted/k.tar.zst").1["etag"], etag, "the trusted archive was rewritten");

    // A pull-request restore reads the trusted tier first, and says who wrote it.
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    tiered(&ws, az, &c, "cache_restore", "k", PR)
        .run()
        .assert_ok()
        .assert_contains(
            "cache `k` found in the trusted tier, written by event=DRONE_BUILD_EVENT=push, ref=main, commit=abc123",
        )
        .assert_contains("cache `k` restored");
    assert_eq!(std::fs::read(ws.join("target/who.txt")).unwrap(), b"trusted");
}

/// A trusted run's `restore_keys` fallback must not take the newest match whoever wrote it.
#[test]
fn a_trusted_run_never_restores_an_untrusted_archive_even_a_newer_fallback_match() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("tier-fallback");
    let dir = tempfile::tempdir().unwrap();
    let save = |tag: &str, key: &str, env: &[(&str, &str)]| {
        let ws = dir.path().join(format!("save-{tag}"));
        write(&ws, "target/who.txt", tag.as_bytes());
        tiered(&ws, az, &c, "cache_save", key, env).run().assert_ok();
    };
    save("trusted", "deps-1", PUSH);
    // Last-Modified has a resolution of one second: the pull request's archive is newer.
    std::thread::sleep(Duration::from_millis(1100));
    save("pr", "deps-2", PR);
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let outfile = dir.path().join("out");
    tiered(&ws, az, &c, "cache_restore", "deps-3", PUSH)
        .set("restore_keys", "deps-")
        .env("DRONE_OUTPUT", outfile.to_str().unwrap())
        .run()
        .assert_ok()
        .assert_contains("cache `deps-1` restored (a restore_keys match)");
    assert_eq!(std::fs::read(ws.join("target/who.txt")).unwrap(), b"trusted");
    let o = outputs(&outfile);
    assert_eq!(o.get("cache_matched_key").map(String::as_str), Some("deps-1"), "{o:?}");
    // The untrusted archive's exact key is a miss for a trusted run.
    let ws2 = dir.path().join("ws2");
    std::fs::create_dir_all(&ws2).unwrap();
    tiered(&ws2, az, &c, "cache_restore", "deps-2", PUSH).run().assert_ok().assert_contains("cache miss");
    assert!(tree(&ws2).is_empty(), "{:?}", tree(&ws2));
    // A pull request finds its own tier's exact key.
    tiered(&ws2, az, &c, "cache_restore", "deps-2", PR)
        .run()
        .assert_ok()
        .assert_contains("cache `deps-2` found in the untrusted tier");
    assert_eq!(std::fs::read(ws2.join("target/who.txt")).unwrap(), b"pr");
}

/// The layout of earlier versions (`<target>/<key>.tar.zst`) stays readable for one
/// release, as untrusted.
#[test]
fn a_legacy_plain_archive_is_restored_only_by_an_untrusted_run() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("tier-legacy");
    let dir = tempfile::tempdir().unwrap();
    let save_ws = dir.path().join("save");
    write(&save_ws, "target/who.txt", b"legacy");
    tiered(&save_ws, az, &c, "cache_save", "k", PUSH).set("target", "made").run().assert_ok();
    // As an earlier version stored it: the plain name, `sha256` only.
    let (data, props) = fetch(az, &c, "made/trusted/k.tar.zst");
    let f = dir.path().join("k.tar.zst");
    std::fs::write(&f, &data).unwrap();
    let sha = props["metadata"]["sha256"].as_str().unwrap().to_string();
    py(az, &["put", &c, "caches/k.tar.zst", f.to_str().unwrap(), "--metadata", &format!("sha256={sha}")]);

    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    for restore_keys in [None, Some("k")] {
        let mut p = tiered(&ws, az, &c, "cache_restore", "k", PUSH);
        if let Some(r) = restore_keys {
            p = p.set("restore_keys", r);
        }
        p.run().assert_ok().assert_contains("cache miss");
        assert!(tree(&ws).is_empty(), "a trusted run restored a legacy archive: {:?}", tree(&ws));
    }
    tiered(&ws, az, &c, "cache_restore", "k", PR)
        .run()
        .assert_ok()
        .assert_contains("found in the plain layout of earlier versions (read as untrusted)")
        .assert_contains("cache `k` restored");
    assert_eq!(std::fs::read(ws.join("target/who.txt")).unwrap(), b"legacy");
}

/// `lookup_only` (and a `dry_run` restore) find the archive and set the outputs: only
/// HEAD and listing requests reach the service, nothing is downloaded or changed.
#[test]
fn lookup_only_sends_only_listing_and_head_requests_and_sets_the_outputs() {
    if !crate::support::azurite_present() {
        return;
    }
    use crate::fault_proxy::FaultProxy;
    let az = Azurite::shared();
    let c = container("cache-lookup");
    let dir = tempfile::tempdir().unwrap();
    let save_ws = dir.path().join("save");
    write(&save_ws, "target/a.txt", b"a");
    tiered(&save_ws, az, &c, "cache_save", "deps-1", PUSH).run().assert_ok();
    let ws = dir.path().join("ws");
    write(&ws, "keep.txt", b"keep");
    for (setting, key, hit, matched) in [
        ("lookup_only", "deps-1", "true", "deps-1"),
        ("lookup_only", "deps-9", "false", "deps-1"),
        ("dry_run", "deps-1", "true", "deps-1"),
        ("lookup_only", "zzz", "false", ""),
    ] {
        let proxy = FaultProxy::start(az, vec![]);
        let outfile = dir.path().join(format!("out-{setting}-{key}"));
        let out = tiered(&ws, az, &c, "cache_restore", key, PUSH)
            .set("endpoint", proxy.endpoint())
            .set("restore_keys", if key == "zzz" { "zzz-" } else { "deps-" })
            .set(setting, "true")
            .env("DRONE_OUTPUT", outfile.to_str().unwrap())
            .run();
        out.assert_ok();
        let o = outputs(&outfile);
        assert_eq!(o.get("cache_hit").map(String::as_str), Some(hit), "{setting} {key}: {o:?}");
        assert_eq!(o.get("cache_matched_key").map(String::as_str), Some(matched), "{setting} {key}: {o:?}");
        assert_eq!(o.get("transferred").map(String::as_str), Some("0"), "{o:?}");
        let ops: Vec<String> = proxy.records().iter().map(|r| r.req.op()).collect();
        let allowed: &[&str] =
            if matched.is_empty() { &["HeadBlob", "ListBlobs", "GetContainer"] } else { &["HeadBlob", "ListBlobs"] };
        assert!(!ops.is_empty() && ops.iter().all(|o| allowed.contains(&o.as_str())), "{setting} {key}: {ops:?}");
        assert_eq!(tree(&ws), vec!["keep.txt"], "{setting} {key}: the workspace changed");
    }
}

/// A restore with another `source` set must not take the archive and replace the
/// directories it holds, whatever this run caches.
#[test]
fn a_changed_source_set_is_a_miss_saying_why() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cache-sources");
    let dir = tempfile::tempdir().unwrap();
    let save_ws = dir.path().join("save");
    write(&save_ws, "target/a.txt", b"a");
    tiered(&save_ws, az, &c, "cache_save", "deps-1", PUSH).run().assert_ok();
    let ws = dir.path().join("ws");
    write(&ws, "node_modules/m.js", b"m");
    for restore_keys in [None, Some("deps-")] {
        let mut p = tiered(&ws, az, &c, "cache_restore", "deps-1", PUSH).set("source", "node_modules,target");
        if let Some(r) = restore_keys {
            p = p.set("cache_key", "deps-2").set("restore_keys", r);
        }
        p.run()
            .assert_ok()
            .assert_contains("passed over: it holds the `source` set `target`, this run caches `node_modules,target`")
            .assert_contains("cache miss");
        assert_eq!(tree(&ws), vec!["node_modules/m.js"], "{restore_keys:?}");
    }
}

/// A service failing on every request (no retries): by default a warning, exit 0, and
/// `cache_error` in the outputs; with `fail_on_cache_error: true` the step fails.
#[test]
fn a_service_failure_on_save_or_restore_is_a_warning_with_cache_error_unless_fail_on_cache_error() {
    if !crate::support::azurite_present() {
        return;
    }
    use crate::fault_proxy::{Fault, FaultProxy, Rule, Times};
    let az = Azurite::shared();
    let c = container("cache-outage");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "target/a.txt", b"a");
    let proxy =
        FaultProxy::start(az, vec![Rule::new("busy", |_| true, Times::Every, Fault::status(503, "ServerBusy"))]);
    for action in ["cache_save", "cache_restore"] {
        let outfile = dir.path().join(format!("out-{action}"));
        let run = |fail: bool| {
            let mut p = tiered(&ws, az, &c, action, "k", PUSH)
                .set("endpoint", proxy.endpoint())
                .set("retries", "0")
                .env("DRONE_OUTPUT", outfile.to_str().unwrap());
            if fail {
                p = p.set("fail_on_cache_error", "true");
            }
            p.run()
        };
        let out = run(false);
        out.assert_ok().assert_contains("cache error, not failing the build");
        let o = outputs(&outfile);
        assert!(o.get("cache_error").is_some_and(|e| e.contains("503")), "{action}: {o:?}\n{}", out.all());
        let out = run(true);
        assert_ne!(out.code, 0, "{action} with fail_on_cache_error:\n{}", out.all());
        assert!(out.code != 2, "{action}: not a settings error:\n{}", out.all());
        assert_eq!(tree(&ws), vec!["target/a.txt"], "{action}");
    }
    assert!(proxy.fired("busy") >= 4, "{}", proxy.log());
}
