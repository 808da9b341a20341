//! Settings are outside data: whatever a pipeline or its
//! environment sets, the plugin never panics; an invalid value is exit 2 naming the
//! setting (and its variable) before any network call, and no secret is ever printed.

use crate::support::*;

/// Stands for a real account key: it must never appear in the output.
const SECRET_KEY: &str = "U2VjcmV0S2V5VGhhdE11c3ROZXZlckJlUHJpbnRlZA==";

/// A loopback listener that tells whether anything connected to it.
struct Listener(std::net::TcpListener);

impl Listener {
    fn new() -> Listener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.0.local_addr().unwrap().port())
    }
    #[track_caller]
    fn assert_untouched(&self) {
        assert!(self.0.accept().is_err(), "the plugin connected despite invalid settings");
    }
}

/// Exit 2, no panic, every `needle` in the output, no secret.
#[track_caller]
fn refused(out: &Out, needles: &[&str]) {
    out.assert_code(2).assert_lacks("panicked").assert_lacks(SECRET_KEY).assert_lacks("TOPSECRET");
    for n in needles {
        out.assert_contains(n);
    }
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    dir
}

#[test]
fn an_endpoint_that_is_not_a_url_is_exit_2_naming_its_setting_not_a_panic() {
    let dir = workspace();
    let base = || plugin(dir.path()).set("container", "artifacts").set("source", "a.txt");
    // BlobEndpoint in a connection string (a panic, exit 134, if parsed unchecked).
    let cs = format!("AccountName=devstoreaccount1;AccountKey={SECRET_KEY};BlobEndpoint=notaurl");
    refused(
        &base().set("connection_string", &cs).run(),
        &[
            "`connection_string` (PLUGIN_CONNECTION_STRING): `BlobEndpoint`: `notaurl` is not a URL",
            "http:// or https://",
        ],
    );
    // The same from AZURE_STORAGE_CONNECTION_STRING: named as such.
    refused(
        &base().env("AZURE_STORAGE_CONNECTION_STRING", &cs).run(),
        &["`BlobEndpoint`: `notaurl` is not a URL", "(from AZURE_STORAGE_CONNECTION_STRING)"],
    );
    // FileEndpoint with `service: file`.
    let cs = format!("AccountName=devstoreaccount1;AccountKey={SECRET_KEY};FileEndpoint=file:///etc");
    refused(
        &plugin(dir.path())
            .set("service", "file")
            .set("share", "s12")
            .set("source", "a.txt")
            .set("connection_string", &cs)
            .run(),
        &["`FileEndpoint`: `file:///etc` has the scheme `file`"],
    );
    // endpoint_suffix with a space (a panic, exit 134, if unchecked), and from the connection string.
    refused(
        &base()
            .set("account_name", "acct1")
            .set("account_key", SECRET_KEY)
            .set("endpoint_suffix", "core windows.net")
            .run(),
        &["`endpoint_suffix` (PLUGIN_ENDPOINT_SUFFIX): `core windows.net` is not a DNS suffix"],
    );
    let cs = format!("AccountName=acct1;AccountKey={SECRET_KEY};EndpointSuffix=core windows.net");
    refused(&base().set("connection_string", &cs).run(), &["`EndpointSuffix`: `core windows.net` is not a DNS suffix"]);
    // `endpoint` itself: no scheme, another scheme, a password, a SAS in the query.
    for (endpoint, why) in [
        ("127.0.0.1:10000/devstoreaccount1", "is not a URL"),
        ("ftp://127.0.0.1/devstoreaccount1", "has the scheme `ftp`"),
        ("http://user:TOPSECRET@127.0.0.1:10000/devstoreaccount1", "carries a user name or password"),
        ("http://127.0.0.1:10000/devstoreaccount1?sv=2025&sig=TOPSECRET", "carries a query string"),
        ("http://127.0.0.1:10000/dev store", "contains a space"),
    ] {
        refused(
            &base().set("endpoint", endpoint).set("account_key", SECRET_KEY).run(),
            &["`endpoint` (PLUGIN_ENDPOINT): ", why],
        );
    }
}

#[test]
fn identity_endpoints_from_the_environment_are_validated_before_use() {
    let dir = workspace();
    let base = || plugin(dir.path()).set("account_name", "acct1").set("container", "artifacts").set("source", "a.txt");
    refused(
        &base().set("authority_host", "https://login.example/ x").set("tenant_id", "contoso.onmicrosoft.com").run(),
        &["`authority_host` (PLUGIN_AUTHORITY_HOST): `https://login.example/ x` contains a space"],
    );
    refused(
        &base()
            .set("auth", "managed_identity")
            .env("IDENTITY_ENDPOINT", "::not a url")
            .env("IDENTITY_HEADER", "TOPSECRET")
            .run(),
        &["IDENTITY_ENDPOINT: `::not a url` contains a space"],
    );
}

#[test]
fn a_connection_string_with_spaces_and_any_key_case_works_against_azurite() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("cs-spaces");
    let dir = workspace();
    let cs = format!(
        " defaultendpointsprotocol = http ; AccountName = {DEV_ACCOUNT} ; ACCOUNTKEY = {DEV_KEY} ; BlobEndpoint = {} ; ",
        az.endpoint()
    );
    plugin(dir.path())
        .set("connection_string", cs)
        .set("container", &c)
        .set("create_container", "true")
        .set("source", "a.txt")
        .run()
        .assert_ok();
    assert_eq!(list(az, &c), vec!["a.txt"]);
}

#[test]
fn every_bad_connection_string_segment_is_named_at_once_without_the_key() {
    let dir = workspace();
    let l = Listener::new();
    let cs = format!(
        "AccountName=Bad_Name!;AccountKey={SECRET_KEY};BlobEndpoint={};DefaultEndpointsProtocol=gopher;TOPSECRET;AccountKey={SECRET_KEY}",
        l.endpoint()
    );
    let out =
        plugin(dir.path()).set("connection_string", cs).set("container", "artifacts").set("source", "a.txt").run();
    refused(
        &out,
        &[
            "`AccountName`: `Bad_Name!` is not a storage account name: 3-24 lowercase letters and digits",
            "`DefaultEndpointsProtocol`: `gopher` is not `https` or `http`",
            "segment 5 of 6 has no `=` (its text is not shown",
            "`AccountKey` is given more than once",
        ],
    );
    l.assert_untouched();
    // A key that is not base64, and a SAS without a signature: named, never shown.
    let cs = format!("AccountName=acct1;AccountKey=TOPSECRET not base64;BlobEndpoint={}", l.endpoint());
    refused(
        &plugin(dir.path()).set("connection_string", cs).set("container", "artifacts").set("source", "a.txt").run(),
        &["`AccountKey` is not base64"],
    );
    let cs = format!("SharedAccessSignature=sv=2025&TOPSECRET;BlobEndpoint={}", l.endpoint());
    refused(
        &plugin(dir.path()).set("connection_string", cs).set("container", "artifacts").set("source", "a.txt").run(),
        &["`SharedAccessSignature` is not a SAS"],
    );
    // A SAS broken by a copy-paste (a line break inside): named, never shown.
    refused(
        &plugin(dir.path())
            .set("endpoint", l.endpoint())
            .set("sas_token", "sv=2025-11-05&sig=TOPSECRET\nse=2030")
            .set("container", "artifacts")
            .set("source", "a.txt")
            .run(),
        &["`sas_token` (PLUGIN_SAS_TOKEN): contains the control character U+000A, which a SAS never holds"],
    );
    l.assert_untouched();
}

#[test]
fn a_unicode_file_name_in_content_disposition_is_stored_under_shared_key() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("disposition");
    let dir = workspace();
    plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .set("content_disposition", r#"attachment; filename="é.txt""#)
        .set("metadata", r#"{"note": "café\r\n100%"}"#)
        .run()
        .assert_ok();
    let (data, p) = fetch(az, &c, "a.txt");
    assert_eq!(data, b"x");
    assert_eq!(p["content_disposition"], r#"attachment; filename="_.txt"; filename*=UTF-8''%C3%A9.txt"#);
    // Metadata values are percent-encoded (documented), so what is signed is what is sent.
    assert_eq!(p["metadata"]["note"], "caf%C3%A9%0D%0A100%25");
}

#[test]
fn header_settings_with_control_or_non_ascii_characters_are_refused() {
    let dir = workspace();
    let l = Listener::new();
    let out = plugin(dir.path())
        .set("endpoint", l.endpoint())
        .set("account_key", SECRET_KEY)
        .set("container", "artifacts")
        .set("source", "a.txt")
        .set("cache_control", "no-cache\r\nx-ms-meta-evil: 1")
        .set("content_type", "text/plain; charset=ütf-8")
        .set("content_encoding", r#"{"*.txt": "gzip\u0007"}"#)
        .set("content_disposition", "pièce-jointe")
        .set("metadata", r#"{"has-dash": "1", "Build": "1", "build": "2", "9lives": "x"}"#)
        .run();
    refused(
        &out,
        &[
            "`cache_control` (PLUGIN_CACHE_CONTROL): `no-cache\\r\\nx-ms-meta-evil: 1` contains the control character U+000D",
            "`content_type` (PLUGIN_CONTENT_TYPE): `text/plain; charset=ütf-8` contains the non-ASCII character U+00FC",
            "`content_encoding` (PLUGIN_CONTENT_ENCODING): the value `gzip\\u{7}` for `*.txt` contains the control character U+0007",
            "`content_disposition` (PLUGIN_CONTENT_DISPOSITION): `pièce-jointe` has non-ASCII text",
            "`metadata` (PLUGIN_METADATA): `has-dash` is not a valid metadata name: a C# identifier",
            "`metadata` (PLUGIN_METADATA): `9lives` is not a valid metadata name",
            "`metadata` (PLUGIN_METADATA): `build` is given twice",
        ],
    );
    l.assert_untouched();
}

#[test]
fn a_mixed_case_setting_variable_is_warned_about_with_its_real_name() {
    let dir = workspace();
    let out = plugin(dir.path())
        .env("PLUGIN_Source", "a.txt")
        .set("account_name", "acct1")
        .set("container", "artifacts")
        .set("dry_run", "true")
        .run();
    // Not read (settings are PLUGIN_<UPPER CASE>), so `source` is missing; the warning says why.
    out.assert_code(2);
    out.assert_contains("`PLUGIN_Source` is ignored: settings are read from upper-case PLUGIN_<NAME> variables only; did you mean `source` (PLUGIN_SOURCE)?");
    out.assert_contains("`source` (PLUGIN_SOURCE): is required");
}

/// Runs `p` with extra variables given as bytes (names and values need not be UTF-8).
fn run_with_bytes(p: &Plugin, vars: &[(&[u8], &[u8])]) -> Out {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = p.command();
    for (k, v) in vars {
        cmd.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
    }
    let o = output_within(&mut cmd, PLUGIN_RUN_LIMIT);
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The environment is read as bytes. A setting that is not UTF-8 is exit 2 naming the
/// setting and its variable, never printing the value (not a panic, exit 134, with the
/// value in its message); an unrelated variable or a name that is not UTF-8 does not stop
/// a run.
#[test]
fn an_environment_that_is_not_utf8_never_panics_and_never_prints_the_value() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = Azurite::shared();
    let c = container("notutf8");
    let dir = workspace();
    let no_panic = |out: &Out| {
        out.assert_lacks("panicked").assert_lacks("TOPSECRET");
        assert_ne!(out.code, 134, "{}", out.all());
    };
    // A SAS with one stray byte: refused by name, its value not shown.
    let base = || plugin(dir.path()).set("container", "artifacts").set("account_name", "acct1").set("source", "a.txt");
    let out = run_with_bytes(&base(), &[(b"PLUGIN_SAS_TOKEN", b"sv=2024-01-01&sig=TOPSECRET\xff")]);
    no_panic(&out);
    refused(&out, &["invalid setting `sas_token` (PLUGIN_SAS_TOKEN): PLUGIN_SAS_TOKEN is not valid UTF-8"]);
    // The same through its fallback variable, which is read since no PLUGIN_SAS_TOKEN is set.
    let out = run_with_bytes(&base(), &[(b"AZURE_STORAGE_SAS_TOKEN", b"sig=TOPSECRET\xfe")]);
    no_panic(&out);
    refused(&out, &["AZURE_STORAGE_SAS_TOKEN is not valid UTF-8 (its value is not shown)"]);
    // A setting that is not a secret: one problem for one cause (not also "is required").
    let out = run_with_bytes(&base().unset("source"), &[(b"PLUGIN_SOURCE", b"dist/\xe9t\xe9/**")]);
    no_panic(&out);
    refused(&out, &["`source` (PLUGIN_SOURCE): PLUGIN_SOURCE is not valid UTF-8"]);
    out.assert_lacks("is required");
    // INPUT_* (GitHub Actions) likewise.
    let out = run_with_bytes(&base(), &[(b"INPUT_CONTENT_TYPE", b"text/\xff")]);
    no_panic(&out);
    refused(&out, &["`content_type` (PLUGIN_CONTENT_TYPE): INPUT_CONTENT_TYPE is not valid UTF-8"]);

    // An unrelated variable (a commit message in Latin-1) and a name that is not UTF-8:
    // the upload runs; the odd PLUGIN_ name is warned about, escaped.
    let out = run_with_bytes(
        &plugin(dir.path()).azurite(az, &c).set("source", "a.txt"),
        &[
            (b"CI_COMMIT_MESSAGE", b"caf\xe9 TOPSECRET"),
            (b"PLUGIN_SOURC\xc9", b"x"),
            (b"PLUGIN_\xffX", b"\xfe"),
            // Behind the explicit account key, an ambient SAS is set aside, not read.
            (b"AZURE_STORAGE_SAS_TOKEN", b"sig=TOPSECRET\xfe"),
        ],
    );
    no_panic(&out);
    out.assert_ok()
        .assert_contains("explicit PLUGIN_* credentials win over ambient variables: AZURE_STORAGE_SAS_TOKEN ignored")
        .assert_contains("`PLUGIN_SOURC\\xC9` is ignored: its name or value is not valid UTF-8")
        .assert_contains("`PLUGIN_\\xFFX` is ignored");
    assert_eq!(fetch(az, &c, "a.txt").0, b"x");

    // An argument that is not UTF-8: exit 2 naming it (escaped), not a panic.
    let mut cmd = plugin(dir.path()).command();
    cmd.arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"--x\xff\n"));
    let o = output_within(&mut cmd, PLUGIN_RUN_LIMIT);
    let all = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert!(all.contains("unknown argument `--x\u{fffd}\\n`"), "{all}");
}

/// A claim is outside data. An access token whose `oid` holds a line
/// break and a fake log line is printed on the start line escaped, on one line: the
/// forged line never starts a line of its own.
#[test]
fn a_line_break_in_a_token_claim_cannot_forge_a_log_line() {
    let dir = workspace();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let forged = "2026-01-01T00:00:00.000000Z  INFO uploaded 999 file(s): all verified";
    let token = crate::ci_encoding::jwt(serde_json::json!({
        "aud": "https://storage.azure.com", "exp": now + 3600, "iat": now,
        "oid": format!("11111111-1111-1111-1111-111111111111\n{forged}\r\u{1b}[2K"),
    }));
    let out = plugin(dir.path())
        .set("account_name", "acct1")
        .set("container", "artifacts")
        .set("source", "a.txt")
        .set("dry_run", "true")
        .set("access_token", &token)
        .run();
    out.assert_ok().assert_lacks(&token);
    let all = out.all();
    assert!(
        all.contains(&format!("oid 11111111-1111-1111-1111-111111111111\\n{forged}\\r\\u{{1b}}[2K")),
        "the claim is not shown escaped:\n{all}"
    );
    assert!(!all.lines().any(|l| l.starts_with(forged)), "a forged line starts a line:\n{all}");
    assert!(!all.contains('\u{1b}'), "a terminal escape reached the log:\n{all}");
}
