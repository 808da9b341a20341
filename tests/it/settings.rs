//! Settings: parsing, validation before any network call, warnings, `--help`.

use crate::support::*;

#[test]
fn help_prints_the_settings_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin(dir.path()).arg("--help").run();
    out.assert_ok();
    for needle in [
        "source",
        "strip_prefix",
        "overwrite",
        "true|false|skip|changed",
        "block_size",
        "account_key",
        "secret",
        "Exit codes",
    ] {
        assert!(out.stdout.contains(needle), "--help lacks {needle}:\n{}", out.stdout);
    }
}

#[test]
fn invalid_values_fail_before_any_network_call_naming_each_setting() {
    // A listener that records whether anything connects.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", listener.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    let out = plugin(dir.path())
        .set("endpoint", &endpoint)
        .set("account_key", DEV_KEY)
        .set("container", "artifacts")
        .set("source", "a.txt")
        .set("overwrite", "sometimes")
        .set("block_size", "8 parsecs")
        .set("timeout", "soon")
        .set("content_type", "{\"*.html\": ")
        .set("access_tier", "Frozen")
        .run();
    out.assert_code(2);
    for needle in [
        "`overwrite` (PLUGIN_OVERWRITE): `sometimes` is not one of: true, false, skip, changed",
        "`block_size` (PLUGIN_BLOCK_SIZE)",
        "`timeout` (PLUGIN_TIMEOUT)",
        "`content_type` (PLUGIN_CONTENT_TYPE)",
        "`access_tier` (PLUGIN_ACCESS_TIER): `Frozen` is not one of: Hot, Cool, Cold, Archive",
    ] {
        out.assert_contains(needle);
    }
    assert!(listener.accept().is_err(), "the plugin connected to storage despite invalid settings");
}

#[test]
fn missing_required_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin(dir.path()).run();
    out.assert_code(2);
    out.assert_contains("`source` (PLUGIN_SOURCE): is required");
    out.assert_contains("`container` (PLUGIN_CONTAINER): is required");
    out.assert_contains("`account_name` (PLUGIN_ACCOUNT_NAME): is required");
}

#[test]
fn unknown_settings_are_warned_about_with_the_closest_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin(dir.path()).set("strip_prefx", "dist").set("source", "x").run();
    out.assert_contains(
        "unknown setting `strip_prefx` (PLUGIN_STRIP_PREFX): did you mean `strip_prefix` (PLUGIN_STRIP_PREFIX)?",
    );
}

#[test]
fn a_setting_for_the_other_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin(dir.path())
        .set("account_name", "acct")
        .set("container", "c12")
        .set("share", "s12")
        .set("source", "x")
        .run();
    out.assert_code(2).assert_contains("`share` (PLUGIN_SHARE): does not apply to `service: blob`: use `container`");
}

#[test]
fn sources_as_json_array_with_brace_globs_and_human_sizes() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("jsonlist");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/a.js", b"a");
    write(dir.path(), "dist/b.css", b"b");
    write(dir.path(), "dist/c.txt", b"c");
    write(dir.path(), "other/d.js", b"d");
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", r#"["dist/*.{js,css}", "other/d.js"]"#)
        .set("block_size", "64KiB")
        .set("max_memory", "1MiB")
        .set("timeout", "1m30s")
        .run()
        .assert_ok();
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, vec!["dist/a.js", "dist/b.css", "other/d.js"]);
}

#[test]
fn comma_joined_lists_work_too() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("commalist");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    write(dir.path(), "b.txt", b"b");
    write(dir.path(), "c.txt", b"c");
    plugin(dir.path()).azurite(az, &c).set("source", "a.txt,b.txt").run().assert_ok();
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, vec!["a.txt", "b.txt"]);
}

/// Runs the plugin with `settings` against a listener that records whether anything
/// connected; returns the output and asserts exit 2 with no connection.
fn refused_before_any_connection(settings: &[(&str, &str)]) -> Out {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", listener.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    let mut p = plugin(dir.path()).set("endpoint", &endpoint).set("account_key", DEV_KEY).set("container", "artifacts");
    for (k, v) in settings {
        p = p.set(k, *v);
    }
    let out = p.run();
    out.assert_code(2);
    assert!(listener.accept().is_err(), "the plugin connected to storage despite invalid settings");
    out
}

#[test]
fn malformed_globs_maps_lists_numbers_and_durations_are_each_named() {
    let out = refused_before_any_connection(&[
        ("source", "dist/[a-"),
        ("exclude", "*.{map"),
        ("metadata", r#"{"1team": "x", "sha256": "forged"}"#),
        ("cache_control", r#"{"[": "no-cache"}"#),
        ("retries", "-1"),
        ("concurrency", "0"),
        ("max_memory", "12 bananas"),
        ("timeout", "0s"),
        ("progress_interval", "25h"),
    ]);
    for needle in [
        "`source` (PLUGIN_SOURCE): `dist/[a-` is not a valid glob",
        "`exclude` (PLUGIN_EXCLUDE)",
        "`metadata` (PLUGIN_METADATA): `1team` is not a valid metadata name",
        "`sha256` is reserved",
        "`cache_control` (PLUGIN_CACHE_CONTROL)",
        "`retries` (PLUGIN_RETRIES): `-1` is not a whole number from 0 to 50",
        "`concurrency` (PLUGIN_CONCURRENCY): `0` is not a whole number from 1 to 256",
        "`max_memory` (PLUGIN_MAX_MEMORY): `12 bananas` has an unknown unit",
        "`timeout` (PLUGIN_TIMEOUT): `0s` is out of range",
        "`progress_interval` (PLUGIN_PROGRESS_INTERVAL): `25h` is out of range",
    ] {
        out.assert_contains(needle);
    }
    let out = refused_before_any_connection(&[
        ("source", r#"["a.txt", "#),
        ("metadata", r#"["not", "a", "map"]"#),
        ("content_type", r#"{"*.txt": {"nested": true}}"#),
        ("retries", "99"),
        ("block_size", "1KiB"),
        ("timeout", "3 fortnights"),
    ]);
    for needle in [
        "`source` (PLUGIN_SOURCE): looks like a JSON array but does not parse",
        "`metadata` (PLUGIN_METADATA): expected a JSON object",
        "`content_type` (PLUGIN_CONTENT_TYPE)",
        "must be a string",
        "`retries` (PLUGIN_RETRIES): `99` is not a whole number from 0 to 50",
        "`block_size` (PLUGIN_BLOCK_SIZE): `1KiB` is out of range",
        "`timeout` (PLUGIN_TIMEOUT): `3 fortnights` is not a duration",
    ] {
        out.assert_contains(needle);
    }
    let out =
        refused_before_any_connection(&[("source", r#"[{"a": 1}]"#), ("block_size", "8MiB"), ("max_memory", "4MiB")]);
    out.assert_contains("`source` (PLUGIN_SOURCE): list items must be strings")
        .assert_contains("`max_memory` (PLUGIN_MAX_MEMORY): must hold at least one block");
}

#[test]
fn a_source_or_target_an_empty_substitution_emptied_is_refused_and_nothing_moves() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // `source: ${CI_REPO}/${CI_COMMIT_SHA}` under Drone (which substitutes DRONE_* only)
    // arrives as `/`: taken as written it downloaded the whole container with exit 0.
    let az = Azurite::shared();
    let c = container("emptied");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/a.txt", b"a");
    plugin(dir.path()).azurite(az, &c).set("source", "dist/**").set("target", "org/repo/abc").run().assert_ok();
    plugin(dir.path()).azurite(az, &c).set("source", "dist/**").set("target", "other").run().assert_ok();
    for source in ["/", "//", "/abc", "org//abc/", "org/repo//"] {
        let out = plugin(dir.path())
            .azurite(az, &c)
            .set("action", "download")
            .set("source", source)
            .set("target", "out")
            .run();
        out.assert_code(2).assert_contains("`source` (PLUGIN_SOURCE)").assert_contains("unset or empty?");
        assert!(!dir.path().join("out").exists(), "{source}: something was downloaded");
    }
    plugin(dir.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "//")
        .set("target", "out")
        .run()
        .assert_contains("is only slashes")
        .assert_contains("to select everything, write `**`");
    // The whole container, asked for explicitly.
    plugin(dir.path())
        .azurite(az, &c)
        .set("action", "download")
        .set("source", "**")
        .set("target", "out")
        .run()
        .assert_ok();
    assert_eq!(tree(&dir.path().join("out")), vec!["org/repo/abc/dist/a.txt", "other/dist/a.txt"]);

    // An upload's target the same way: nothing is written.
    for (action, target) in [("upload", "/"), ("upload", "org//abc"), ("sync", "/abc123")] {
        let c2 = container("emptiedup");
        let out = plugin(dir.path())
            .azurite(az, &c2)
            .set("action", action)
            .set("source", "dist/**")
            .set("target", target)
            .run();
        out.assert_code(2).assert_contains("`target` (PLUGIN_TARGET)").assert_contains("unset or empty?");
        assert!(pyblob(az, &["list", &c2]).is_err() || list(az, &c2).is_empty(), "{action} {target}: written");
    }
}

#[test]
fn account_name_naming_another_account_than_the_endpoint_is_refused_naming_both() {
    if !crate::support::azurite_present() {
        return;
    }
    // Shared Key signed with `account_name` while the URL reached the endpoint's account:
    // every file got 403 and the hint blamed the key.
    let out = refused_before_any_connection(&[
        ("account_name", "mystorage"),
        ("source", "a.txt"),
        ("retries", "0"),
        ("timeout", "2s"),
    ]);
    out.assert_contains(
        "`account_name` (PLUGIN_ACCOUNT_NAME): names the account `mystorage`, but the endpoint `http://127.0.0.1:",
    )
    .assert_contains("/devstoreaccount1` is the account `devstoreaccount1`");
    // The same name is fine, and the start line names the account used.
    let az = Azurite::shared();
    let c = container("acctagree");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    plugin(dir.path())
        .azurite(az, &c)
        .set("account_name", "devstoreaccount1")
        .set("source", "a.txt")
        .run()
        .assert_ok()
        .assert_contains("account `devstoreaccount1`");
}

#[test]
fn action_inputs_misspelt_lower_case_or_shadowed_are_warned_about() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("inputwarn");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .set("target", "from-plugin")
        .env("INPUT_TARGET", "from-input")
        .env("INPUT_STRIP_PREFX", "dist")
        .env("input_overwrite", "false")
        .env("INPUT_ACCOUNT_KEY", "b3RoZXIta2V5LW5ldmVyLXNob3du")
        .run();
    out.assert_ok()
        .assert_contains("unknown setting `strip_prefx` (INPUT_STRIP_PREFX): did you mean `strip_prefix` (INPUT_STRIP_PREFIX)?")
        .assert_contains("`input_overwrite` is ignored: settings are read from upper-case INPUT_<NAME> variables only; did you mean `overwrite` (INPUT_OVERWRITE)?")
        .assert_contains("`target` is set by both PLUGIN_TARGET and INPUT_TARGET, to different values: PLUGIN_TARGET wins")
        .assert_contains("`account_key` is set by both PLUGIN_ACCOUNT_KEY and INPUT_ACCOUNT_KEY")
        .assert_lacks("b3RoZXIta2V5LW5ldmVyLXNob3du")
        .assert_lacks("from-input");
    assert_eq!(list(az, &c), vec!["from-plugin/a.txt"]);
}

/// An ambient AZURE_STORAGE_SAS_TOKEN (a runner's leftover, here one
/// Azurite refuses) never beats the pipeline's explicit `account_key`: the key is used, and
/// the start line says which credential and why the other was ignored. The ambient token
/// is not even checked (were it to win silently, the run would fail with 403).
#[test]
fn an_explicit_account_key_wins_over_an_ambient_sas_and_the_start_line_says_so() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("precedence");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"explicit wins");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .env("AZURE_STORAGE_SAS_TOKEN", "sv=2024-08-04&ss=b&srt=sco&sp=r&se=2020-01-01T00:00:00Z&sig=AMBIENTSIG")
        .env("AZURE_ACCESS_TOKEN", "not-a-jwt")
        .run();
    out.assert_ok()
        .assert_contains(
            "auth: shared key (explicit PLUGIN_* credentials win over ambient variables: AZURE_ACCESS_TOKEN, AZURE_STORAGE_SAS_TOKEN ignored)",
        )
        .assert_lacks("AMBIENTSIG");
    assert_eq!(fetch(az, &c, "a.txt").0, b"explicit wins");
}
