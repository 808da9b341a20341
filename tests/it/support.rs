//! Test support: real Azurite, the real plugin binary, and an independent client.
//!
//! Azurite (installed by `scripts/ensure-tools` into `.cache/`) is started once per
//! test binary, in memory, on a port the OS picks, from a keeper thread that lives as
//! long as the process; `PR_SET_PDEATHSIG` stops it when the tests end. Each test uses
//! its own container. The plugin runs as a child process with a clean environment, the
//! way a CI runner starts it: only `PLUGIN_*` settings and what the test adds.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A prerequisite a test cannot run without, checked at run time (where `#[ignore]` cannot
/// decide: a filesystem feature, say). Under `CI=true` a missing one fails the test;
/// elsewhere the test prints `SKIPPED: …` with the reason and returns early.
pub fn prerequisite(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "missing under CI=true: {what}");
    eprintln!("SKIPPED: {what}");
    false
}

/// Where `rel` (under the repository) or the path in `env` is, if it exists.
fn tool_path(rel: &str, env: &str) -> Option<PathBuf> {
    std::env::var_os(env).map(PathBuf::from).or_else(|| Some(repo_root().join(rel))).filter(|p| p.exists())
}

/// Azurite is installed (`.cache/bin/azurite-blob`, or `AZURITE_BLOB_BIN`): a test that
/// needs it starts with `if !azurite_present() { return; }` (see [`prerequisite`]).
pub fn azurite_present() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    let present = *P.get_or_init(|| tool_path(".cache/bin/azurite-blob", "AZURITE_BLOB_BIN").is_some());
    prerequisite(present, "Azurite is not installed (.cache/bin/azurite-blob): run `scripts/ensure-tools azurite`")
}

/// The test venv's Python with azure-storage-blob and PyYAML (`.cache/venv`, or
/// `PYBLOB_PYTHON`) is installed (see [`prerequisite`]).
pub fn python_present() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    let present = *P.get_or_init(|| {
        tool_path(".cache/venv/bin/python", "PYBLOB_PYTHON").is_some_and(|py| {
            Command::new(py)
                .args(["-c", "import yaml, azure.storage.blob"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    });
    prerequisite(
        present,
        "the test Python (.cache/venv with PyYAML and azure-storage-blob) is not installed: run `scripts/ensure-tools python`",
    )
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tool(rel: &str, env: &str, install: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let p = repo_root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/ensure-tools {install}` (scripts/test does it for you)",
        p.display()
    );
    p
}

/// A running Azurite blob service.
pub struct Azurite {
    pub port: u16,
    pub scheme: &'static str,
    /// PEM of its certificate (HTTPS instances).
    pub cert: Option<PathBuf>,
}

impl Azurite {
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}/{DEV_ACCOUNT}", self.scheme, self.port)
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol={};AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={};",
            self.scheme,
            self.endpoint()
        )
    }

    /// Starts an instance with extra arguments; it lives until the test process exits.
    pub fn start(extra: &[String], scheme: &'static str, cert: Option<PathBuf>) -> Azurite {
        let bin = tool(".cache/bin/azurite-blob", "AZURITE_BLOB_BIN", "azurite");
        // Its output goes to a file, not a pipe: a pipe closed at exit would crash its shutdown.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "azurite-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let extra = extra.to_vec();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::create(&log2).expect("azurite log file");
            let mut cmd = Command::new(&bin);
            cmd.args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--silent",
                "--disableTelemetry",
            ])
            .args(["--extentMemoryLimit", "1024"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::inherit());
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    // This thread is the PDEATHSIG parent: it must outlive every test.
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start {}: {e}", bin.display())));
                    return;
                }
            }
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("azurite thread").expect("Azurite failed to start");
        let deadline = Instant::now() + Duration::from_secs(90);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("successfully listens on ")) {
                break line
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    .expect("port in Azurite's output");
            }
            assert!(Instant::now() < deadline, "Azurite did not start in 90 s; its output:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        Azurite { port, scheme, cert }
    }

    /// The HTTP, Shared Key instance shared by the tests of this binary.
    pub fn shared() -> &'static Azurite {
        static A: OnceLock<Azurite> = OnceLock::new();
        A.get_or_init(|| Azurite::start(&[], "http", None))
    }
}

/// A fresh container name for one test.
pub fn container(tag: &str) -> String {
    let tag: String =
        tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(30).collect::<String>().to_ascii_lowercase();
    format!("t-{tag}-{:08x}", fastrand_u32())
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ std::process::id() as u128);
    h.finish() as u32
}

/// What a plugin run printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code {} (wanted {code}); output:\n{}", self.code, self.all());
        self
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }
    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(self.all().contains(needle), "output lacks `{needle}`:\n{}", self.all());
        self
    }
    #[track_caller]
    pub fn assert_lacks(&self, needle: &str) -> &Self {
        assert!(!self.all().contains(needle), "output contains `{needle}`:\n{}", self.all());
        self
    }
}

/// The real binary, run like a CI runner runs a plugin.
pub struct Plugin {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    args: Vec<String>,
}

pub fn plugin(dir: &Path) -> Plugin {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), std::env::var("PATH").unwrap_or_default());
    env.insert("PLUGIN_PROGRESS_INTERVAL".to_string(), "1h".to_string());
    // `auth: auto` probes IMDS when nothing else is configured: point the probe at a
    // loopback port nothing listens on, so tests never send traffic to 169.254.169.254.
    env.insert("AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(), "http://127.0.0.1:9".to_string());
    Plugin { dir: dir.to_path_buf(), env, args: vec![] }
}

impl Plugin {
    /// Sets `PLUGIN_<NAME>`.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(format!("PLUGIN_{}", name.to_ascii_uppercase()), value.into());
        self
    }
    pub fn unset_env(mut self, k: &str) -> Self {
        self.env.remove(k);
        self
    }
    pub fn unset(mut self, name: &str) -> Self {
        self.env.remove(&format!("PLUGIN_{}", name.to_ascii_uppercase()));
        self
    }
    /// Sets a raw environment variable.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.to_string(), v.into());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    /// Points at the shared Azurite with the account key and a container.
    pub fn azurite(self, az: &Azurite, container: &str) -> Self {
        self.set("endpoint", az.endpoint())
            .set("account_key", DEV_KEY)
            .set("container", container)
            .set("create_container", "true")
    }
    pub fn command(&self) -> Command {
        self.command_of(Path::new(env!("CARGO_BIN_EXE_plugin-azure-storage")))
    }
    /// The same run with another copy of the binary.
    pub fn command_of(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear().envs(&self.env).args(&self.args).current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }
    /// Runs it as `nobody` when the tests run as root, so that file modes bite (root reads
    /// anything whatever its mode), from a copy of the binary `nobody` can reach (the
    /// checkout may sit in a private directory). The workspace must be reachable by `nobody`.
    pub fn run_unprivileged(&self) -> Out {
        use std::os::unix::fs::PermissionsExt;
        let mut cmd = self.command();
        let bin_dir = tempfile::tempdir().unwrap();
        if unsafe { libc::geteuid() } == 0 {
            std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let bin = bin_dir.path().join("plugin-azure-storage");
            std::fs::copy(env!("CARGO_BIN_EXE_plugin-azure-storage"), &bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            cmd = self.command_of(&bin);
            cmd.uid(65534).gid(65534);
        }
        let o = output_within(&mut cmd, PLUGIN_RUN_LIMIT);
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn run(&self) -> Out {
        let out = output_within(&mut self.command(), PLUGIN_RUN_LIMIT);
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The longest one plugin run of a test may take before it is killed and the test fails.
/// A hung run used to outlive its test: killed by hand, the test binary left the plugin
/// spinning on both cores for 50 minutes, and in CI a hang would have run to the job's limit.
pub const PLUGIN_RUN_LIMIT: Duration = Duration::from_secs(300);

/// `cmd.output()`, but a child still running after `limit` is killed (then reaped) and the
/// test panics saying so, with what it printed so far.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run the plugin");
    wait_within(child, limit)
}

/// `child.wait_with_output()` for a child spawned with piped stdout and stderr, bounded as
/// [`output_within`] is.
pub fn wait_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the plugin") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("the plugin ran longer than {limit:?} and was killed; its stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// The independent client (Python azure-storage-blob), for reads and writes the plugin did not make.
pub fn pyblob(az: &Azurite, args: &[&str]) -> Result<serde_json::Value, String> {
    let py = tool(".cache/venv/bin/python", "PYBLOB_PYTHON", "python");
    let mut cmd = Command::new(py);
    cmd.arg(repo_root().join("tests/support/pyblob.py")).arg(az.connection_string()).args(args);
    if let Some(cert) = &az.cert {
        cmd.env("REQUESTS_CA_BUNDLE", cert);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[track_caller]
pub fn py(az: &Azurite, args: &[&str]) -> serde_json::Value {
    pyblob(az, args).unwrap_or_else(|e| panic!("pyblob {args:?}: {e}"))
}

/// Blob names in a container (via the independent client).
pub fn list(az: &Azurite, container: &str) -> Vec<String> {
    let v = py(az, &["list", container]);
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The container's blob names, sorted.
pub fn names(az: &Azurite, c: &str) -> Vec<String> {
    let mut n = list(az, c);
    n.sort();
    n
}

/// Stores `names` in the container (an upload of files holding their own name).
pub fn plant(az: &Azurite, c: &str, names: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    for n in names {
        write(dir.path(), n, n.as_bytes());
    }
    plugin(dir.path()).azurite(az, c).set("source", "**").set("provenance", "false").run().assert_ok();
}

/// Downloads a blob with the independent client; returns its bytes and properties.
pub fn fetch(az: &Azurite, container: &str, name: &str) -> (Vec<u8>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    let props = py(az, &["get", container, name, f.to_str().unwrap()]);
    (std::fs::read(&f).unwrap(), props)
}

/// Writes a file under `root`, creating parents.
pub fn write(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    p
}

/// Deterministic pseudo-random bytes (xorshift), so content differs at every offset.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under a directory, relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// A self-signed certificate for 127.0.0.1/localhost, written as `cert.pem` and `key.pem` in `dir`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("generate a certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// An HTTPS Azurite with `--oauth basic` (bearer tokens checked for iss/aud/nbf/exp, not
/// signature), started once per test binary with a certificate generated here.
pub fn oauth_azurite() -> &'static Azurite {
    static A: OnceLock<Azurite> = OnceLock::new();
    A.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("azurite-oauth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed_cert(&dir);
        let args: Vec<String> = ["--oauth", "basic", "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Azurite::start(&args, "https", Some(cert))
    })
}

/// A loopback TCP forwarder to `127.0.0.1:target` that lets at most about `bytes_per_sec`
/// flow towards the target (TLS passes through untouched). For tests that need a transfer
/// to last a known minimum time. Returns the port to connect to; it serves until the
/// test process exits.
pub fn throttled_proxy(target: u16, bytes_per_sec: u64) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    const CHUNK: usize = 8 << 10;
    let pause = Duration::from_secs_f64(CHUNK as f64 / bytes_per_sec as f64);
    fn pump(mut from: TcpStream, mut to: TcpStream, pause: Option<Duration>) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if let Some(p) = pause {
                        std::thread::sleep(p);
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client, server, Some(pause)));
            std::thread::spawn(move || pump(s2, c2, None));
        }
    });
    port
}

/// An HTTPS front for the plain-HTTP server on `target` (Azurite, a wiremock stand-in): it closes the first `drop_first`
/// connections right after reading their ClientHello (a load balancer resetting
/// handshakes), then terminates TLS with `cert`/`key` and forwards the bytes. Returns its
/// port and the number of connections it accepted.
pub fn tls_front(
    target: u16,
    cert: &Path,
    key: &Path,
    drop_first: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { continue };
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    if n < drop_first {
                        let mut hello = [0u8; 512];
                        let _ = conn.read(&mut hello).await;
                        return; // dropped: the client sees EOF mid-handshake
                    }
                    let Ok(mut tls) = acceptor.accept(conn).await else { return };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
    });
    (port, seen)
}

/// A plain-TCP front for the HTTPS server on `target` whose certificate is `cert`: it
/// accepts plain connections and forwards their bytes over TLS (so a plain-HTTP proxy can
/// sit in front of the HTTPS-only OAuth Azurite). Returns its port.
pub fn tls_back(target: u16, cert: &Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { continue };
                let connector = connector.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let name = ServerName::try_from("127.0.0.1").unwrap();
                    let Ok(mut tls) = connector.connect(name, up).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut tls).await;
                });
            }
        });
    });
    port
}

/// A run over its limit is killed, not left behind, and the test fails saying so.
#[test]
fn support_output_within_kills_a_run_over_its_limit() {
    let start = Instant::now();
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let r =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| output_within(&mut cmd, Duration::from_millis(200))));
    let msg = r.expect_err("a 30 s run under a 200 ms limit must fail the test");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("was killed"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(10), "waited {:?}", start.elapsed());
    // Within the limit, the output is the run's own.
    let o = output_within(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(30));
    assert_eq!((o.status.code(), &o.stdout[..], &o.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
}
