//! Cache mode (issue 14): `cache_save` / `cache_restore` through the real binary against
//! Azurite: the round trip of a tree (long names, modes, mtimes, links, empty directories),
//! keys and `restore_keys`, misses, and hostile or corrupt archives, which must leave the
//! workspace as it was.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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
    let name = format!("caches/{key}.tar.zst");
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
    let name = format!("caches/{key}.tar.zst");
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
}

fn m<'a>(name: &'a str, kind: tar::EntryType, link: &'a str, data: &'a [u8]) -> Member<'a> {
    Member { name: name.as_bytes(), kind, link: link.as_bytes(), data }
}

/// A tar.zst written byte by byte, so that names no honest writer produces can be made
/// (with zstd's frame checksum, as `cache_save` writes it).
fn hostile_archive(members: &[Member]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for mb in members {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..mb.name.len()].copy_from_slice(mb.name);
        h.as_old_mut().linkname[..mb.link.len()].copy_from_slice(mb.link);
        h.set_entry_type(mb.kind);
        h.set_size(mb.data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, mb.data).unwrap();
    }
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut z, &t.into_inner().unwrap()).unwrap();
    z.finish().unwrap()
}

/// Stores `archive` as the cache blob `k` with its true SHA-256 (or `sha` when given).
fn store(az: &Azurite, c: &str, dir: &Path, archive: &[u8], sha: Option<&str>) {
    let f = dir.join("k.tar.zst");
    std::fs::write(&f, archive).unwrap();
    py(az, &["create-container", c]);
    let sha = sha.map(str::to_string).unwrap_or_else(|| sha256_hex(archive));
    py(az, &["put", c, "caches/k.tar.zst", f.to_str().unwrap(), "--metadata", &format!("sha256={sha}")]);
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
        ("symlink-out", vec![m("cache/l", Symlink, "../../escaped", b"")], "points outside the workspace"),
        ("symlink-abs", vec![m("cache/l", Symlink, "/etc/passwd", b"")], "points outside the workspace"),
        ("hardlink-out", vec![m("cache/h", Link, "/etc/passwd", b"")], "hard link `cache/h` points outside"),
        ("hardlink-src", vec![m("cache/h", Link, "src/main.rs", b"")], "hard link `cache/h` points outside"),
        ("fifo", vec![m("cache/p", Fifo, "", b"")], "device or FIFO"),
        ("chardev", vec![m("cache/null", Char, "", b"")], "device or FIFO"),
        ("blockdev", vec![m("cache/sda", Block, "", b"")], "device or FIFO"),
        // A link inside the workspace, then a member written through it: refused, not followed.
        (
            "through-link",
            vec![
                m("cache/d", Directory, "", b""),
                m("cache/l", Symlink, "../src", b""),
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
    files(&seed).set("source", "k.tar.zst").set("target", "caches").run().assert_ok();
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
    let path = format!("caches/{key}.tar.zst");
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
    let path = format!("caches/{}.tar.zst", key_of(&ws));
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
