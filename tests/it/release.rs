//! What a user can verify in a release, checked on the real static binary
//! (`STATIC_BINARY`, built by `scripts/build-static`, which `scripts/test` runs and sets):
//!
//! - the dependency list `cargo auditable` embedded in it, read back with the
//!   `auditable-info` crate (the reader cargo-audit uses), names every crate Cargo.lock
//!   resolves into the binary for its target — `cargo tree -e normal,build` computes that set
//!   independently — at the same version, each a crates.io entry of Cargo.lock, no
//!   dev-dependency, linked crates not marked build-only. It names a few more, and exactly
//!   those explained by how cargo-auditable builds the list (from `cargo metadata`, whose
//!   resolve unifies dev-dependencies' features and turns on optional dependencies named only
//!   by weak `dep?/feature` features): the h2 and quinn subtrees, which are not compiled;
//! - the CycloneDX SBOM beside it (`<binary>.cdx.json`, written by `scripts/sbom`) lists
//!   exactly the compiled crates, each with its version, purl and its Cargo.toml license, in
//!   CycloneDX 1.5 shape, linked ones as required and build-only ones as excluded, and is what
//!   `scripts/sbom` gives for that binary again (reproducible).
//!
//! The tests of the static binary are `#[ignore]`d with that reason (a plain `cargo test`
//! on a developer machine reports them as ignored); `scripts/test` builds the binary, sets
//! `STATIC_BINARY` and runs them with `--include-ignored`. Run without it, they fail saying
//! how to build it. The refusal of a binary without dependency data runs everywhere, on the
//! ordinary (non-auditable) test build of the plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// (name, version)
type Crate = (String, String);

fn static_binary() -> PathBuf {
    let p = PathBuf::from(std::env::var("STATIC_BINARY").unwrap_or_else(|_| {
        panic!(
            "STATIC_BINARY is not set: `STATIC_BINARY=$(scripts/build-static) cargo test --test it release -- \
             --include-ignored`, or scripts/test"
        )
    }));
    assert!(p.is_file(), "STATIC_BINARY={} does not exist: run scripts/build-static", p.display());
    p
}

/// The target triple of a binary built by scripts/build-static:
/// `<target-dir>/<triple>/<profile>/plugin-azure-storage`.
fn triple_of(binary: &Path) -> String {
    let triple = binary.parent().and_then(Path::parent).and_then(Path::file_name).map(|s| s.to_string_lossy());
    let triple = triple.unwrap_or_default().into_owned();
    assert!(triple.contains("-linux-"), "cannot tell the target triple from {}", binary.display());
    triple
}

/// The `.dep-v0` data of the binary, as JSON, through cargo-auditable's own reader.
fn audit_data(binary: &Path) -> Value {
    let json = auditable_info::json_from_file(binary, Default::default())
        .unwrap_or_else(|e| panic!("{}: no readable cargo-auditable data: {e}", binary.display()));
    serde_json::from_str(&json).expect("the .dep-v0 section is JSON")
}

/// One entry of the binary's embedded list.
struct Listed {
    krate: Crate,
    /// `"kind": "build"`: used only to build the binary (build scripts, some proc macros).
    build: bool,
    /// Indices of its dependencies in the list.
    deps: Vec<usize>,
}

/// The binary's embedded dependency list and the index of its root package.
struct Audited {
    packages: Vec<Listed>,
    root: usize,
}

impl Audited {
    fn read(binary: &Path) -> Audited {
        let data = audit_data(binary);
        let mut packages = vec![];
        let mut roots = vec![];
        for (i, p) in data["packages"].as_array().expect("packages array").iter().enumerate() {
            let krate = (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string());
            let deps = p["dependencies"].as_array().map(|d| d.iter().filter_map(Value::as_u64).map(|d| d as usize));
            let (build, deps) = (p["kind"].as_str() == Some("build"), deps.map(Iterator::collect).unwrap_or_default());
            packages.push(Listed { krate, build, deps });
            if p["root"].as_bool() == Some(true) {
                roots.push(i);
            }
        }
        assert_eq!(roots.len(), 1, "exactly one root package in .dep-v0: {roots:?}");
        Audited { packages, root: roots[0] }
    }

    /// Every listed crate but the root.
    fn listed(&self) -> BTreeSet<Crate> {
        self.packages.iter().enumerate().filter(|(i, _)| *i != self.root).map(|(_, p)| p.krate.clone()).collect()
    }

    /// The crates reachable from the packages named `names` (themselves included).
    fn reachable_from(&self, names: &[&str]) -> BTreeSet<Crate> {
        let mut stack: Vec<usize> =
            (0..self.packages.len()).filter(|&i| names.contains(&self.packages[i].krate.0.as_str())).collect();
        let mut seen = BTreeSet::new();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(&self.packages[i].deps);
            }
        }
        seen.into_iter().map(|i| self.packages[i].krate.clone()).collect()
    }
}

/// `cargo tree` for the binary's target: every package reached over the given edge kinds,
/// the root excluded.
fn cargo_tree(triple: &str, edges: &str) -> BTreeSet<Crate> {
    let out = Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args(["tree", "--locked", "--offline", "--package", "plugin-azure-storage", "--target", triple])
        .args(["--edges", edges, "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, version) = (w.next()?, w.next()?.strip_prefix('v')?);
            (name != "plugin-azure-storage").then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

/// Cargo.lock's packages: (name, version) -> source.
fn lock_packages() -> BTreeMap<Crate, String> {
    let text = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let mut out = BTreeMap::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |k: &str| {
            block.lines().find_map(|l| l.strip_prefix(&format!("{k} = \""))?.strip_suffix('"').map(str::to_string))
        };
        if let (Some(n), Some(v)) = (field("name"), field("version")) {
            out.insert((n, v), field("source").unwrap_or_default());
        }
    }
    out
}

/// Listed by cargo-auditable but not compiled: `cargo metadata` unifies wiremock's (a
/// dev-dependency) hyper features, turning on hyper's h2, and its `futures` features,
/// turning on futures-util's `io` (futures-io); and it activates reqwest's optional quinn
/// through the weak feature `quinn?/ring`. Everything extra must hang below these.
const LISTED_NOT_COMPILED: [&str; 3] = ["futures-io", "h2", "quinn"];

#[test]
#[ignore = "release test: needs STATIC_BINARY (scripts/build-static); scripts/test runs it with --include-ignored"]
fn release_binary_lists_every_crate_cargo_lock_resolves_into_it() {
    let binary = static_binary();
    let triple = triple_of(&binary);
    let audited = Audited::read(&binary);
    let root = &audited.packages[audited.root].krate;
    assert_eq!(root, &("plugin-azure-storage".to_string(), env!("CARGO_PKG_VERSION").to_string()));
    let listed = audited.listed();

    // What Cargo compiles for the binary: its normal dependencies, build scripts' and proc
    // macros' included; of those, what is linked into it.
    let compiled = cargo_tree(&triple, "normal,build");
    let linked = cargo_tree(&triple, "normal,no-proc-macro");
    assert!(linked.len() > 50 && compiled.len() > linked.len(), "implausible: {linked:?} {compiled:?}");
    let missing: Vec<&Crate> = compiled.difference(&listed).collect();
    assert!(missing.is_empty(), "compiled into the binary but not in its embedded list: {missing:?}");
    let extra: BTreeSet<Crate> = listed.difference(&compiled).cloned().collect();
    let explained = audited.reachable_from(&LISTED_NOT_COMPILED);
    let unexplained: Vec<&Crate> = extra.difference(&explained).collect();
    assert!(
        unexplained.is_empty(),
        "listed in the binary, not compiled, not below {LISTED_NOT_COMPILED:?}: {unexplained:?}"
    );
    for name in LISTED_NOT_COMPILED {
        assert!(extra.iter().any(|(n, _)| n == name), "{name} is no longer over-listed: update LISTED_NOT_COMPILED");
    }

    // Nothing linked is marked build-only; build scripts' helpers are.
    for p in &audited.packages {
        assert!(
            !(p.build && linked.contains(&p.krate)),
            "{:?} is linked into the binary but listed as build-only",
            p.krate
        );
    }
    for name in ["cc", "version_check"] {
        let p = audited.packages.iter().find(|p| p.krate.0 == name).unwrap_or_else(|| panic!("{name} not listed"));
        assert!(p.build, "{name} (a build script's dependency) is not listed as build-only");
    }

    // Each listed crate is a Cargo.lock entry from crates.io; no dev-dependency is among them.
    let lock = lock_packages();
    for c in &listed {
        let source = lock.get(c).unwrap_or_else(|| panic!("{c:?} is in the binary but not in Cargo.lock"));
        assert_eq!(source, "registry+https://github.com/rust-lang/crates.io-index", "{c:?}");
    }
    for dev in ["tempfile", "wiremock", "proptest", "rcgen", "auditable-info"] {
        assert!(!listed.iter().any(|(n, _)| n == dev), "dev-dependency {dev} in the binary's list");
    }
}

/// `cargo metadata`'s license field of every package, as scripts/sbom must report it.
fn licenses(triple: &str) -> BTreeMap<Crate, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", triple])
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let c = (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string());
            (c, p["license"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
#[ignore = "release test: needs STATIC_BINARY (scripts/build-static); scripts/test runs it with --include-ignored"]
fn release_sbom_lists_every_crate_in_the_binary_with_version_and_license() {
    let binary = static_binary();
    let triple = triple_of(&binary);
    let path = PathBuf::from(format!("{}.cdx.json", binary.display()));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/build-static writes the SBOM beside the binary)", path.display()));
    let bom: Value = serde_json::from_str(&text).expect("the SBOM is JSON");

    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["version"], 1);
    let app = &bom["metadata"]["component"];
    assert_eq!(app["type"], "application");
    assert_eq!(app["name"], "plugin-azure-storage");
    assert_eq!(app["licenses"][0]["expression"], "Apache-2.0");

    let compiled = cargo_tree(&triple, "normal,build");
    let linked = cargo_tree(&triple, "normal,no-proc-macro");
    let listed = Audited::read(&binary).listed();
    assert!(compiled.is_subset(&listed), "every compiled crate is in the binary's list (previous test)");
    let licenses = licenses(&triple);
    let mut in_sbom = BTreeSet::new();
    for c in bom["components"].as_array().expect("components array") {
        let (name, version) = (c["name"].as_str().unwrap(), c["version"].as_str().unwrap());
        let key = (name.to_string(), version.to_string());
        assert_eq!(c["type"], "library", "{key:?}");
        assert_eq!(c["purl"], format!("pkg:cargo/{name}@{version}"), "{key:?}");
        assert_eq!(c["bom-ref"], c["purl"], "{key:?}");
        let want = licenses.get(&key).unwrap_or_else(|| panic!("{key:?} listed but not in cargo metadata"));
        assert!(!want.is_empty(), "{key:?} declares no license in its Cargo.toml");
        assert_eq!(c["licenses"].as_array().map(Vec::len), Some(1), "{key:?}: one license expression");
        assert_eq!(c["licenses"][0]["expression"], want.replace('/', " OR ").replace("  ", " "), "{key:?}");
        assert_eq!(c["hashes"][0]["alg"], "SHA-256", "{key:?}");
        let (scope, kind) = if linked.contains(&key) { (Value::Null, "runtime") } else { ("excluded".into(), "build") };
        assert_eq!(c["scope"], scope, "{key:?}: linked crates are required (the default), build-only ones excluded");
        assert_eq!(c["properties"][0], serde_json::json!({"name": "cargo:kind", "value": kind}), "{key:?}");
        assert!(in_sbom.insert(key.clone()), "{key:?} listed twice");
    }
    let (missing, extra): (Vec<_>, Vec<_>) =
        (compiled.difference(&in_sbom).collect(), in_sbom.difference(&compiled).collect());
    assert!(missing.is_empty() && extra.is_empty(), "SBOM vs compiled crates: missing {missing:?}, extra {extra:?}");
    let not_compiled: BTreeSet<String> = bom["metadata"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "cargo:listed-not-compiled")
        .map(|p| p["value"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = listed.difference(&compiled).map(|(n, v)| format!("{n}@{v}")).collect();
    assert_eq!(not_compiled, want, "metadata names what the binary lists but was not compiled");

    // Every dependency edge names listed components.
    let refs: BTreeSet<&str> =
        bom["components"].as_array().unwrap().iter().filter_map(|c| c["bom-ref"].as_str()).collect();
    for d in bom["dependencies"].as_array().expect("dependencies array") {
        for r in d["dependsOn"].as_array().unwrap() {
            assert!(refs.contains(r.as_str().unwrap()), "dependency on an unlisted {r}");
        }
    }

    // The file is what scripts/sbom gives for this binary now: nothing stale, nothing random.
    let again = sbom(&binary, &triple);
    assert!(again.status.success(), "scripts/sbom failed: {}", String::from_utf8_lossy(&again.stderr));
    assert!(again.stdout == text.as_bytes(), "{} differs from a fresh `scripts/sbom` of the binary", path.display());
}

fn sbom(binary: &Path, triple: &str) -> std::process::Output {
    Command::new(repo_root().join("scripts/sbom"))
        .args(["--target", triple])
        .arg(binary)
        .output()
        .expect("run scripts/sbom")
}

#[test]
fn release_sbom_refuses_a_binary_without_dependency_data() {
    // The ordinary `cargo test` build of the plugin is not built through cargo-auditable.
    let out = sbom(Path::new(env!("CARGO_BIN_EXE_plugin-azure-storage")), "x86_64-unknown-linux-gnu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no .dep-v0 section") && stderr.contains("cargo auditable build"), "{stderr}");
    assert!(out.stdout.is_empty(), "no partial SBOM on stdout");
}

/// The cargo profile a binary of scripts/build-static was built with:
/// `<target-dir>/<triple>/<profile>/plugin-azure-storage`.
pub(crate) fn profile_of(binary: &Path) -> String {
    let profile = binary.parent().and_then(Path::file_name).map(|s| s.to_string_lossy().into_owned());
    let profile = profile.unwrap_or_default();
    assert!(["ci", "release"].contains(&profile.as_str()), "cannot tell the profile of {}", binary.display());
    profile
}

/// The size documented in docs/image.md's "Sizes and times" table in the row whose first
/// cell starts with `row` and names `[profile.<profile>]`: its `N,NNN,NNN bytes`.
pub(crate) fn documented_size(row: &str, profile: &str) -> u64 {
    let doc = std::fs::read_to_string(repo_root().join("docs/image.md")).unwrap();
    let tag = format!("`[profile.{profile}]`");
    let line = doc
        .lines()
        .find(|l| l.starts_with(&format!("| {row}")) && l.split('|').nth(1).is_some_and(|c| c.contains(&tag)))
        .unwrap_or_else(|| panic!("docs/image.md has no size row `| {row} ... {tag} ... |`"));
    let value = line.split('|').nth(2).unwrap_or_default();
    let digits = value.split(" bytes").next().unwrap_or_default().trim().replace(',', "");
    digits.parse().unwrap_or_else(|_| panic!("docs/image.md: no `N bytes` in {line:?}"))
}

/// `built` is within 5% of `documented`, else a message with both and the fix.
#[track_caller]
pub(crate) fn assert_size_documented(what: &str, built: u64, documented: u64) {
    assert!(documented > 0, "{what}: docs/image.md gives 0 bytes: measure it ({built} bytes built)");
    let off = (built as f64 - documented as f64) / documented as f64 * 100.0;
    assert!(
        off.abs() <= 5.0,
        "{what}: built {built} bytes, docs/image.md says {documented} ({off:+.1}%, more than 5% off): measure \
         it again and update the table"
    );
}

#[test]
#[ignore = "release test: needs STATIC_BINARY (scripts/build-static); scripts/test runs it with --include-ignored"]
fn release_binary_size_is_the_documented_one() {
    let binary = static_binary();
    let profile = profile_of(&binary);
    let built = std::fs::metadata(&binary).unwrap().len();
    let documented = documented_size("static binary", &profile);
    eprintln!("release: {profile} binary {built} bytes, documented {documented}");
    assert_size_documented(&format!("the static binary ([profile.{profile}])"), built, documented);
}

/// `scripts/action-image` on a copy of action.yml (`ACTION_YML`).
fn action_image(file: &Path, args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("scripts/action-image"))
        .env("ACTION_YML", file)
        .args(args)
        .output()
        .expect("run scripts/action-image")
}

#[test]
fn release_action_image_refuses_a_tag_and_pins_the_published_digest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("action.yml");
    std::fs::copy(repo_root().join("action.yml"), &file).unwrap();
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The repository's action.yml names a placeholder tag: what a release must not publish.
    let tagged = action_image(&file, &["check"]);
    assert_eq!(tagged.status.code(), Some(1), "{}", stderr(&tagged));
    assert!(stderr(&tagged).contains("not pinned by digest"), "{}", stderr(&tagged));

    // An image name with upper case (no valid reference) or without a digest is refused.
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    for bad in [format!("ghcr.io/OWNER/plugin-azure-storage@{digest}"), "ghcr.io/owner/plugin-azure-storage:1.0".into()]
    {
        let o = action_image(&file, &["pin", &bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
    assert!(action_image(&file, &["check"]).status.code() == Some(1), "a refused pin changed the file");

    // Pinned to the published digest: accepted, and only the image line changed.
    let image = format!("ghcr.io/owner/plugin-azure-storage@{digest}");
    let pin = action_image(&file, &["pin", &image]);
    assert!(pin.status.success(), "{}", stderr(&pin));
    let ok = action_image(&file, &["check", "--digest", &digest]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let other = action_image(&file, &["check", "--digest", &format!("sha256:{}", "f".repeat(64))]);
    assert_eq!(other.status.code(), Some(1), "another digest than the published one: {}", stderr(&other));
    let before = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    let after = std::fs::read_to_string(&file).unwrap();
    let changed: Vec<(&str, &str)> = before.lines().zip(after.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].1, format!("  image: \"docker://{image}\""));
    assert_eq!(before.lines().count(), after.lines().count());
}
