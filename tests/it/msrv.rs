//! The declared `rust-version` is true: no locked dependency needs a newer compiler
//! (a dependency update can raise the compiler it needs without anything else failing).

use std::process::Command;

/// `1.89` or `1.89.0` as comparable numbers (a missing patch is 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u64>().unwrap_or_else(|_| panic!("not a version: {v}")));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn msrv_no_locked_dependency_needs_a_newer_compiler_than_rust_version() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let root = meta["resolve"]["root"].as_str().unwrap();
    let ours = packages.iter().find(|p| p["id"] == root).unwrap();
    let declared = ours["rust_version"].as_str().expect("Cargo.toml declares rust-version");
    // Every package of the lock's resolve (normal, build and dev: `cargo test` builds them all).
    let resolved: std::collections::BTreeSet<&str> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    let too_new: Vec<String> = packages
        .iter()
        .filter(|p| resolved.contains(p["id"].as_str().unwrap()))
        .filter_map(|p| Some((p["name"].as_str()?, p["version"].as_str()?, p["rust_version"].as_str()?)))
        .filter(|(_, _, needs)| version(needs) > version(declared))
        .map(|(n, v, needs)| format!("{n} {v} needs rustc {needs}"))
        .collect();
    assert!(too_new.is_empty(), "rust-version = \"{declared}\" in Cargo.toml is false: {}", too_new.join(", "));
}
