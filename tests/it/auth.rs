//! Keyless auth end to end: the real binary, a real Azurite over HTTPS with `--oauth basic`,
//! and wiremock standing in for what cannot run here (Entra ID, IMDS, the Actions
//! ID-token endpoint). No account key is configured in any of the keyless runs: Azurite
//! accepts the bearer tokens the mock Entra mints (v1 issuer, `aud` https://storage.azure.com,
//! iat/nbf/exp; it does not check signatures — docs/azurite-notes.md).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::*;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const MI_CLIENT: &str = "99999999-8888-7777-6666-555555555555";
const SUBJECT: &str = "repo:acme/app:ref:refs/heads/main";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A compact JWT with a recognisable fake signature (nothing here verifies signatures).
fn jwt(claims: serde_json::Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"test"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// A CI OIDC token as GitHub Actions would mint it.
fn ci_token(exp_in: i64) -> String {
    jwt(
        json!({
            "iss": "https://token.actions.githubusercontent.com",
            "sub": SUBJECT,
            "aud": "api://AzureADTokenExchange",
            "iat": now(), "nbf": now() - 5, "exp": now() + exp_in,
        }),
        &format!("ci-signature-{}", fastrand_suffix()),
    )
}

fn fastrand_suffix() -> String {
    container("x").trim_start_matches("t-x-").to_string()
}

/// Mints Azurite-acceptable storage tokens; `jwt_lifetime` is what the JWT says,
/// `expires_in` what the endpoint tells the plugin (they differ to force a 403 mid-run).
struct Mint {
    jwt_lifetime: i64,
    expires_in: i64,
    imds: bool,
    minted: Arc<Mutex<Vec<String>>>,
}

impl Respond for Mint {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let n = now();
        let mut minted = self.minted.lock().unwrap();
        let token = jwt(
            json!({
                "iss": format!("https://sts.windows.net/{TENANT}/"),
                "aud": "https://storage.azure.com",
                "iat": n, "nbf": n - 60, "exp": n + self.jwt_lifetime,
                "appid": if self.imds { MI_CLIENT } else { CLIENT },
                "tid": TENANT,
            }),
            &format!("access-signature-{}-{}", minted.len(), fastrand_suffix()),
        );
        minted.push(token.clone());
        let body = if self.imds {
            json!({
                "access_token": token, "expires_on": (n + self.expires_in).to_string(),
                "expires_in": self.expires_in.to_string(), "client_id": MI_CLIENT,
                "resource": "https://storage.azure.com", "token_type": "Bearer",
            })
        } else {
            json!({"token_type": "Bearer", "expires_in": self.expires_in, "ext_expires_in": self.expires_in, "access_token": token})
        };
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// A wiremock server on its own runtime (the tests are synchronous; the plugin is a child process).
struct Fake {
    rt: tokio::runtime::Runtime,
    server: MockServer,
    minted: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start() -> Fake {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(MockServer::start());
        Fake { rt, server, minted: Arc::default() }
    }

    fn uri(&self) -> String {
        self.server.uri()
    }

    fn mount(&self, mock: Mock) {
        self.rt.block_on(mock.mount(&self.server));
    }

    /// Entra's token endpoint for TENANT, minting tokens.
    fn entra(&self, jwt_lifetime: i64, expires_in: i64) {
        self.mount(Mock::given(method("POST")).and(path(format!("/{TENANT}/oauth2/v2.0/token"))).respond_with(Mint {
            jwt_lifetime,
            expires_in,
            imds: false,
            minted: self.minted.clone(),
        }));
    }

    fn requests(&self) -> Vec<Request> {
        self.rt.block_on(self.server.received_requests()).unwrap()
    }

    fn minted(&self) -> Vec<String> {
        self.minted.lock().unwrap().clone()
    }
}

fn form(req: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&req.body).into_owned().collect()
}

/// The plugin pointed at the OAuth Azurite with federated settings and no key.
fn federated(dir: &std::path::Path, az: &Azurite, entra: &Fake, c: &str, ci: &str) -> Plugin {
    plugin(dir)
        .set("endpoint", az.endpoint())
        .set("container", c)
        .set("create_container", "true")
        .set("tenant_id", TENANT)
        .set("client_id", CLIENT)
        .set("federated_token", ci)
        .set("authority_host", entra.uri())
        .env("SSL_CERT_FILE", az.cert.as_ref().unwrap().to_str().unwrap())
}

/// Asserts that no secret (nor a JWT's signature part) appears in `text`.
#[track_caller]
fn assert_no_secrets(text: &str, secrets: &[(&str, &str)]) {
    for (what, s) in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "{what} appears in the output:\n{text}");
        if s.matches('.').count() == 2 {
            let sig = s.rsplit('.').next().unwrap();
            assert!(!text.contains(sig), "the signature of {what} appears in the output:\n{text}");
        }
    }
}

#[test]
fn federated_upload_and_download_over_https_with_no_key() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = oauth_azurite();
    let entra = Fake::start();
    entra.entra(3600, 3599);
    let c = container("federated");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/app.tar", &bytes(300_000, 1));
    write(dir.path(), "dist/notes.txt", b"release notes");
    let ci = ci_token(600);
    let out = federated(dir.path(), az, &entra, &c, &ci)
        .set("source", "dist/**")
        .set("strip_prefix", "dist")
        .set("block_size", "64KiB")
        .run();
    out.assert_ok();
    out.assert_contains(&format!("auth: federated workload identity (client_id {CLIENT}, subject `{SUBJECT}`"));
    assert_no_secrets(&out.all(), &[("the CI token", &ci), ("the access token", &entra.minted()[0])]);

    // Exactly one exchange, with every field of the client-assertion form.
    let reqs = entra.requests();
    assert_eq!(reqs.len(), 1, "one exchange for the whole run");
    let f = form(&reqs[0]);
    assert_eq!(f["client_id"], CLIENT);
    assert_eq!(f["scope"], "https://storage.azure.com/.default");
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(f["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(f["client_assertion"], ci);
    assert_eq!(f.len(), 5);
    assert_eq!(reqs[0].headers.get("content-type").unwrap(), "application/x-www-form-urlencoded");

    // What the independent client (Shared Key) reads back is what was uploaded.
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, vec!["app.tar", "notes.txt"]);
    assert_eq!(fetch(az, &c, "app.tar").0, bytes(300_000, 1));

    // And the plugin downloads it again, keyless.
    let out = federated(dir.path(), az, &entra, &c, &ci)
        .set("action", "download")
        .set("source", "*")
        .set("target", "back")
        .set("create_container", "false")
        .run();
    out.assert_ok();
    assert_eq!(std::fs::read(dir.path().join("back/app.tar")).unwrap(), bytes(300_000, 1));
    assert_eq!(std::fs::read(dir.path().join("back/notes.txt")).unwrap(), b"release notes");
}

#[test]
fn actions_token_endpoint_and_azure_env_fallbacks() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = oauth_azurite();
    let fake = Fake::start();
    fake.entra(3600, 3599);
    let ci = ci_token(300);
    fake.mount(
        Mock::given(method("GET"))
            .and(path("/_apis/idtoken"))
            .and(wiremock::matchers::query_param("api-version", "2.0"))
            .and(wiremock::matchers::query_param("audience", "api://AzureADTokenExchange"))
            .and(wiremock::matchers::header("authorization", "Bearer actions-request-secret-123"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 1, "value": ci}))),
    );
    let c = container("actions");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out.bin", &bytes(10_000, 2));
    // Only what an Actions job with `id-token: write` and the azure/login-style variables has.
    let out = plugin(dir.path())
        .set("endpoint", az.endpoint())
        .set("container", &c)
        .set("create_container", "true")
        .set("source", "out.bin")
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", CLIENT)
        .env("AZURE_AUTHORITY_HOST", fake.uri())
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", format!("{}/_apis/idtoken?api-version=2.0", fake.uri()))
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "actions-request-secret-123")
        .env("SSL_CERT_FILE", az.cert.as_ref().unwrap().to_str().unwrap())
        .run();
    out.assert_ok();
    out.assert_contains("token from the Actions ID-token endpoint");
    assert_eq!(fetch(az, &c, "out.bin").0, bytes(10_000, 2));
    let reqs = fake.requests();
    assert_eq!(reqs.iter().filter(|r| r.url.path() == "/_apis/idtoken").count(), 1);
    let exchange = reqs.iter().find(|r| r.method.as_str() == "POST").unwrap();
    assert_eq!(form(exchange)["client_assertion"], ci);
    assert_no_secrets(
        &out.all(),
        &[("the Actions request token", "actions-request-secret-123"), ("the CI token", &ci)],
    );
}

/// Azurite behind a loopback forwarder that passes about 512 KiB/s towards it, so that a
/// 2.5 MiB upload lasts about 5 s: longer than the short-lived tokens below.
fn slow_endpoint(az: &Azurite) -> String {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let port = *PORT.get_or_init(|| throttled_proxy(az.port, 512 << 10));
    format!("https://127.0.0.1:{port}/{DEV_ACCOUNT}")
}

/// The JWT expires after 3 s while Entra claims an hour: storage refuses the token
/// mid-transfer (Azurite: 403 AuthenticationFailed), the plugin drops it, fetches a new
/// one and carries on. Concurrency 1, 64 KiB blocks and a throttled link make the
/// transfer outlive the token.
#[test]
fn a_token_refused_mid_transfer_is_refreshed_and_the_transfer_completes() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = oauth_azurite();
    let entra = Fake::start();
    entra.entra(3, 3600);
    let c = container("expiring");
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5 << 19, 3);
    write(dir.path(), "big.bin", &data);
    let ci = ci_token(600);
    let started = std::time::Instant::now();
    let out = federated(dir.path(), az, &entra, &c, &ci)
        .set("endpoint", slow_endpoint(az))
        .set("source", "big.bin")
        .set("block_size", "64KiB")
        .set("concurrency", "1")
        .run();
    out.assert_ok();
    assert!(started.elapsed().as_secs() >= 4, "the transfer must outlive the token: {:?}", started.elapsed());
    out.assert_contains("storage refused the access token (403 AuthenticationFailed)");
    assert!(entra.requests().len() >= 2, "expected a refresh: {} exchanges", entra.requests().len());
    assert_eq!(fetch(az, &c, "big.bin").0, data);
}

/// An honest short lifetime (4 s): the cache refreshes at half-life, before storage refuses.
#[test]
fn short_tokens_are_refreshed_ahead_of_expiry() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = oauth_azurite();
    let entra = Fake::start();
    entra.entra(4, 4);
    let c = container("shortlived");
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5 << 19, 4);
    write(dir.path(), "big.bin", &data);
    let out = federated(dir.path(), az, &entra, &c, &ci_token(600))
        .set("endpoint", slow_endpoint(az))
        .set("source", "big.bin")
        .set("block_size", "64KiB")
        .set("concurrency", "1")
        .run();
    out.assert_ok();
    assert!(entra.requests().len() >= 2, "expected a proactive refresh");
    out.assert_lacks("storage refused the access token");
    assert_eq!(fetch(az, &c, "big.bin").0, data);
}

#[test]
fn managed_identity_through_imds_when_nothing_else_is_configured() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let az = oauth_azurite();
    let imds = Fake::start();
    imds.mount(
        Mock::given(method("GET"))
            .and(path("/metadata/identity/oauth2/token"))
            .and(wiremock::matchers::header("metadata", "true"))
            .and(wiremock::matchers::query_param("resource", "https://storage.azure.com"))
            .and(wiremock::matchers::query_param("api-version", "2018-02-01"))
            .respond_with(Mint { jwt_lifetime: 3600, expires_in: 3600, imds: true, minted: imds.minted.clone() }),
    );
    // What IMDS answers the probe, which carries no `Metadata` header (the probe needs this shape).
    imds.mount(Mock::given(method("GET")).and(path("/metadata/identity/oauth2/token")).respond_with(
        ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_request", "error_description": "Required metadata header not specified"
        })),
    ));
    let c = container("imds");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"from a VM");
    let out = plugin(dir.path())
        .set("endpoint", az.endpoint())
        .set("container", &c)
        .set("create_container", "true")
        .set("source", "a.txt")
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.uri())
        .env("SSL_CERT_FILE", az.cert.as_ref().unwrap().to_str().unwrap())
        .run();
    out.assert_ok();
    out.assert_contains(&format!("auth: managed identity (client_id {MI_CLIENT}, via IMDS"));
    assert_eq!(fetch(az, &c, "a.txt").0, b"from a VM");
    assert_no_secrets(&out.all(), &[("the access token", &imds.minted()[0])]);
}

#[test]
fn a_configured_key_wins_over_a_managed_identity_on_the_machine() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = Azurite::shared();
    let imds = Fake::start();
    imds.mount(Mock::given(method("GET")).respond_with(ResponseTemplate::new(500)));
    let c = container("keywins");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out = plugin(dir.path())
        .azurite(az, &c)
        .set("source", "a.txt")
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.uri())
        .run();
    out.assert_ok().assert_contains("auth: shared key");
    assert_eq!(imds.requests().len(), 0, "IMDS must not even be probed");
}

#[test]
fn auto_that_finds_nothing_lists_every_source() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let out =
        plugin(dir.path()).set("account_name", "mystorage").set("container", "artifacts").set("source", "a.txt").run();
    out.assert_code(3);
    for needle in [
        "`auth: auto` looked for these, in order, and found none:",
        "federated: no CI OIDC token in `federated_token`",
        "AZURE_FEDERATED_TOKEN_FILE",
        "PLUGIN_OIDC_TOKEN_ID",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "`sas_token`",
        "`account_key`",
        "`connection_string`",
        "managed identity: IDENTITY_ENDPOINT + IDENTITY_HEADER not set, and no IMDS answered at http://127.0.0.1:9",
    ] {
        out.assert_contains(needle);
    }
    // A token without tenant/client is called out rather than silently ignored.
    let out = plugin(dir.path())
        .set("account_name", "mystorage")
        .set("container", "artifacts")
        .set("source", "a.txt")
        .set("federated_token", ci_token(300))
        .run();
    out.assert_code(3).assert_contains(
        "federated: found a CI token in `federated_token` (PLUGIN_FEDERATED_TOKEN), but `tenant_id` (AZURE_TENANT_ID) nor `client_id` (AZURE_CLIENT_ID) is not set",
    );
}

#[test]
fn malformed_or_expired_tokens_and_bad_ids_fail_before_the_network() {
    let entra = Fake::start();
    entra.entra(3600, 3600);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let base = || {
        plugin(dir.path())
            .set("account_name", "mystorage")
            .set("container", "artifacts")
            .set("source", "a.txt")
            .set("tenant_id", TENANT)
            .set("client_id", CLIENT)
            .set("authority_host", entra.uri())
    };
    let out = base().set("federated_token", "ghp_notajwt").run();
    out.assert_code(2).assert_contains("`federated_token` (PLUGIN_FEDERATED_TOKEN): is not a JWT");
    out.assert_lacks("ghp_notajwt");
    let expired = ci_token(-120);
    let out = base().set("federated_token", &expired).run();
    out.assert_code(2).assert_contains("`federated_token` (PLUGIN_FEDERATED_TOKEN): has expired: exp ");
    assert_no_secrets(&out.all(), &[("the expired token", &expired)]);
    let out = base().set("federated_token_file", "/nonexistent/token").run();
    out.assert_code(2)
        .assert_contains("`federated_token_file` (PLUGIN_FEDERATED_TOKEN_FILE): cannot read `/nonexistent/token`");
    // A file without end (`/dev/zero`) is refused after 64 KiB, not read into memory.
    let out = base().set("federated_token_file", "/dev/zero").run();
    out.assert_code(2).assert_contains("cannot read `/dev/zero`").assert_contains("more than 64 KiB: not a token");
    let out = base()
        .set("federated_token", ci_token(300))
        .set("client_id", "my-app")
        .set("tenant_id", "not a tenant")
        .set("authority_host", "http://login.example.com")
        .run();
    out.assert_code(2)
        .assert_contains("`client_id` (PLUGIN_CLIENT_ID): `my-app` is not a client id")
        .assert_contains("`tenant_id` (PLUGIN_TENANT_ID): `not a tenant` is not a tenant")
        .assert_contains(
            "`authority_host` (PLUGIN_AUTHORITY_HOST): `http://login.example.com` must be an https:// URL",
        );
    // A bearer token never goes to a plain-HTTP storage endpoint.
    let out = base()
        .unset("account_name")
        .set("federated_token", ci_token(300))
        .set("endpoint", "http://127.0.0.1:1/devstoreaccount1")
        .run();
    out.assert_code(3).assert_contains("accepts only over HTTPS");
    assert_eq!(entra.requests().len(), 0, "nothing may reach Entra");
}

#[test]
fn an_entra_refusal_explains_the_code_and_the_credential_to_create() {
    let entra = Fake::start();
    entra.mount(
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client",
            "error_description": format!("AADSTS700213: No matching federated identity record found for presented assertion subject '{SUBJECT}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.\r\nTrace ID: 0a1b\r\nCorrelation ID: 2c3d\r\nTimestamp: 2026-01-01 00:00:00Z"),
            "error_codes": [700213],
            "trace_id": "0a1b",
            "correlation_id": "2c3d",
        }))),
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    let ci = ci_token(300);
    let out = plugin(dir.path())
        .set("account_name", "mystorage")
        .set("container", "artifacts")
        .set("source", "a.txt")
        .set("tenant_id", TENANT)
        .set("client_id", CLIENT)
        .set("federated_token", &ci)
        .set("authority_host", entra.uri())
        .set("log_level", "trace")
        .run();
    out.assert_code(3);
    for needle in [
        "AADSTS700213: no federated credential on the app registration has this token's subject (`sub`)",
        "iss: https://token.actions.githubusercontent.com",
        &format!("sub: {SUBJECT}"),
        "aud: api://AzureADTokenExchange",
        "exp: ",
        &format!("subject:  {SUBJECT}"),
        &format!(
            r#"az ad app federated-credential create --id '{CLIENT}' --parameters '{{"audiences":["api://AzureADTokenExchange"],"issuer":"https://token.actions.githubusercontent.com","name":"ci-repo-acme-app-ref-refs-heads-main","subject":"{SUBJECT}"}}'"#
        ),
        "Entra trace id 0a1b, correlation id 2c3d",
    ] {
        out.assert_contains(needle);
    }
    assert_no_secrets(&out.all(), &[("the CI token", &ci)]);
    assert_eq!(entra.requests().len(), 1, "a refusal is not retried");
}

/// Every secret a run used, searched for in everything it printed at `trace` and in its manifest.
#[test]
fn no_secret_in_trace_output_or_manifest() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    // Federated, over HTTPS.
    let az = oauth_azurite();
    let entra = Fake::start();
    entra.entra(3600, 3599);
    let c = container("tracefed");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dist/a.bin", &bytes(200_000, 5));
    let ci = ci_token(600);
    let run = |action: &str| {
        let p = federated(dir.path(), az, &entra, &c, &ci).set("log_level", "trace").set("manifest", "m.json");
        let p = if action == "upload" {
            p.set("source", "dist/**").set("block_size", "64KiB")
        } else {
            p.set("action", "download").set("source", "dist/*").set("target", "back")
        };
        let out = p.run();
        out.assert_ok();
        format!("{}{}", out.all(), std::fs::read_to_string(dir.path().join("m.json")).unwrap())
    };
    let text = run("upload") + &run("download");
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "the run was not verbose:\n{text}");
    let minted = entra.minted();
    assert!(!minted.is_empty());
    let mut secrets: Vec<(&str, &str)> = vec![("the CI token", &ci)];
    secrets.extend(minted.iter().map(|t| ("an access token", t.as_str())));
    assert_no_secrets(&text, &secrets);

    // SAS and account key, over HTTP.
    let az = Azurite::shared();
    let c = container("tracesas");
    py(az, &["create-container", &c]);
    let sas = std::process::Command::new(tool(".cache/venv/bin/python", "PYBLOB_PYTHON", "python"))
        .args(["-c", &format!(
            "from azure.storage.blob import generate_container_sas, ContainerSasPermissions; from datetime import datetime, timedelta, timezone; print(generate_container_sas('{DEV_ACCOUNT}', '{c}', account_key='{DEV_KEY}', permission=ContainerSasPermissions(read=True, write=True, list=True, create=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1)))"
        )])
        .output()
        .unwrap();
    let sas = String::from_utf8(sas.stdout).unwrap().trim().to_string();
    let sig = sas.split('&').find_map(|kv| kv.strip_prefix("sig=")).expect("a sig in the SAS").to_string();
    let out = plugin(dir.path())
        .set("endpoint", az.endpoint())
        .set("container", &c)
        .set("sas_token", &sas)
        .set("source", "dist/**")
        .set("log_level", "trace")
        .set("manifest", "sas.json")
        .run();
    out.assert_ok().assert_contains("auth: SAS token");
    let text = out.all() + &std::fs::read_to_string(dir.path().join("sas.json")).unwrap();
    let sig_decoded = percent_encoding::percent_decode_str(&sig).decode_utf8().unwrap().to_string();
    assert_no_secrets(&text, &[("the SAS signature", &sig), ("the SAS signature (decoded)", &sig_decoded)]);
    let out = plugin(dir.path())
        .azurite(az, &container("tracekey"))
        .set("source", "dist/**")
        .set("log_level", "trace")
        .set("manifest", "key.json")
        .run();
    out.assert_ok();
    let text = out.all() + &std::fs::read_to_string(dir.path().join("key.json")).unwrap();
    assert_no_secrets(&text, &[("the account key", DEV_KEY)]);
}

/// Entra mints one token (4 s by `expires_in`), then refuses every exchange. The transfer
/// outlives the token (throttled link, concurrency 1): the first request that finds no
/// valid token stops the run with one message naming the source; the queued files are not
/// attempted, nothing was transferred, exit 3: not each queued file failing alone with
/// the same error (exit 1) while Entra is asked again every 5 s.
#[test]
fn a_token_that_cannot_be_refreshed_mid_run_stops_the_run() {
    if !crate::support::azurite_present() {
        return;
    }
    let az = oauth_azurite();
    let entra = Fake::start();
    entra.mount(
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(Mint { jwt_lifetime: 3600, expires_in: 4, imds: false, minted: entra.minted.clone() })
            .up_to_n_times(1),
    );
    entra.mount(Mock::given(method("POST")).and(path(format!("/{TENANT}/oauth2/v2.0/token"))).respond_with(
        ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "AADSTS700213: No matching federated identity record found for presented assertion subject.",
            "error_codes": [700213],
        })),
    ));
    let c = container("norefresh");
    let dir = tempfile::tempdir().unwrap();
    // big.bin is planned first (plan order is by path); the z files wait in the queue.
    write(dir.path(), "big.bin", &bytes(5 << 19, 5));
    for i in 0..5 {
        write(dir.path(), &format!("z{i}.txt"), b"queued");
    }
    let out = federated(dir.path(), az, &entra, &c, &ci_token(600))
        .set("endpoint", slow_endpoint(az))
        .set("source", "big.bin,z*.txt")
        .set("block_size", "64KiB")
        .set("concurrency", "1")
        .set("manifest", "m.json")
        .run();
    out.assert_code(3);
    out.assert_contains("The access token could not be renewed mid-run");
    out.assert_contains("AADSTS700213");
    out.assert_contains("5 file(s) not attempted");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    let statuses: Vec<&str> =
        manifest["files"].as_array().unwrap().iter().map(|f| f["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "not_attempted").count(), 5, "{statuses:?}");
    assert!(!statuses.contains(&"transferred"), "{statuses:?}");
    assert!(entra.requests().len() <= 3, "Entra asked {} times", entra.requests().len());
}
