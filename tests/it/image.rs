//! The OCI image, for real: built from the static binary by `scripts/build-image`
//! (buildah, `Dockerfile.local`, `--storage-driver vfs --isolation chroot --timestamp 0`),
//! then run the way Drone and Woodpecker run a plugin — the workspace mounted at
//! `/woodpecker/src` and used as the working directory, settings as `PLUGIN_*` — with
//! podman (`--runtime runc`, host network to reach the shared Azurite) and with the `docker`
//! CLI talking to `podman system service`'s socket; and its `-shell` variant
//! (`scripts/build-image --shell`) run the way GitLab's Docker executor runs a job. The image,
//! the store and the socket are shared with tests/it/runners.rs (act, gitlab-ci-local), and
//! the sizes are checked against docs/image.md (helpers in tests/it/release.rs).
//!
//! Needs buildah, podman and runc (`scripts/ensure-tools image` installs them with apt) and
//! the static binary in `STATIC_BINARY` (`scripts/test` builds it with `scripts/build-static`
//! and sets it). They are `#[ignore]`d with that reason, so a plain `cargo test` reports
//! them as ignored instead of passing them silently; scripts/test runs them with
//! `--include-ignored` where the tools exist, and under `CI=true` a missing tool fails
//! the run. Run explicitly without the tools or the binary, they fail, saying what to do.
//!
//! Everything lives in a private containers-storage root under `CARGO_TARGET_TMPDIR`
//! (`CONTAINERS_STORAGE_CONF`), so the tests neither see nor leave images in the machine's
//! store; a run removes the roots of earlier runs whose process is gone.
//!
//! Flags that work on these machines (no overlay, no user namespaces, a hard `nofile` limit
//! of 20000): vfs storage; chroot isolation for builds; runc; explicit `--ulimit nofile` and
//! `nproc` (podman's default `nofile` of 1048576 exceeds the hard limit and runc refuses to
//! start the container: "error setting rlimit type 7: operation not permitted"), and the same
//! limits as podman's defaults (`CONTAINERS_CONF`) for clients that pass none.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::*;

pub(crate) const TAG: &str = "localhost/plugin-azure-storage:it";
pub(crate) const ULIMITS: [&str; 4] = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"];

/// The built image and the private store it lives in.
pub(crate) struct Image {
    pub(crate) dir: PathBuf,
    storage_conf: PathBuf,
    id: String,
    /// Manifest digest of the OCI layout written by the build (what a registry receives).
    digest: String,
}

pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// The image, built once per test binary. These tests are `#[ignore]`d (a plain `cargo
/// test` lists them as ignored, with the reason); run explicitly (`--include-ignored`, as
/// scripts/test does where the tools exist) they fail, naming what is missing.
pub(crate) fn image() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| {
        let missing: Vec<&str> = ["buildah", "podman", "runc"].into_iter().filter(|t| !on_path(t)).collect();
        assert!(
            missing.is_empty(),
            "the image tests need {} (`scripts/ensure-tools image` installs them with apt-get)",
            missing.join(", ")
        );
        let binary = std::env::var("STATIC_BINARY").unwrap_or_else(|_| {
            panic!(
                "STATIC_BINARY is not set: build the static binary (`scripts/build-static`) and run \
                 `STATIC_BINARY=$(scripts/build-static --print-path) cargo test -- --include-ignored`, \
                 or run `scripts/test`, which does both"
            )
        });
        assert!(Path::new(&binary).is_file(), "STATIC_BINARY={binary} does not exist: run scripts/build-static");
        build_first(&binary)
    })
}

fn build_first(binary: &str) -> Image {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_roots(&base);
    let dir = base.join(format!("image-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let storage_conf = dir.join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("graph").display(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    // The ulimits of ULIMITS as podman's defaults too: containers created through the Docker
    // API by a client that passes no ulimit (act's `uses: docker://` steps ignore
    // --container-options) would otherwise get nofile=1048576, which runc refuses here.
    let ulimits = ULIMITS.iter().skip(1).step_by(2).map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(dir.join("containers.conf"), format!("[containers]\ndefault_ulimits = [{ulimits}]\n")).unwrap();
    let mut img = Image { dir, storage_conf, id: String::new(), digest: String::new() };
    let t = Instant::now();
    let (id, digest) = img.build(binary, TAG, "oci-1");
    eprintln!("image: built {TAG} in {:.1}s: id {id}, manifest {digest}", t.elapsed().as_secs_f64());
    img.id = id;
    img.digest = digest;
    img
}

/// Removes the private stores of earlier test processes that no longer run.
fn remove_stale_roots(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("image-it-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[track_caller]
pub(crate) fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Image {
    /// A command using the private store.
    pub(crate) fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("CONTAINERS_STORAGE_CONF", &self.storage_conf).stdin(Stdio::null());
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    /// `podman --storage-driver vfs --runtime runc <args>`.
    pub(crate) fn podman(&self) -> Command {
        let mut c = self.cmd("podman");
        c.args(["--storage-driver", "vfs", "--runtime", "runc"]);
        c
    }

    /// Builds with scripts/build-image; returns (image id, OCI manifest digest).
    fn build(&self, binary: &str, tag: &str, oci: &str) -> (String, String) {
        let oci_dir = self.dir.join(oci);
        let out = self
            .cmd(repo_root().join("scripts/build-image").to_str().unwrap())
            .args(["--binary", binary, "--tag", tag, "--oci-dir"])
            .arg(&oci_dir)
            .output()
            .expect("run scripts/build-image");
        let id = ok("scripts/build-image", out).trim().to_string();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(oci_dir.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().expect("manifest digest").to_string();
        (id, digest)
    }

    /// `podman run` as a CI runner would: workspace mounted and current, host network.
    fn podman_run(&self, workspace: &Path, extra: &[&str], env: &[(&str, String)]) -> Out {
        let mut c = self.podman();
        c.args(["run", "--rm", "--network", "host"]).args(ULIMITS);
        c.arg("-v").arg(format!("{}:/woodpecker/src", workspace.display())).args(["-w", "/woodpecker/src"]);
        c.args(extra);
        for (k, v) in env {
            c.arg("-e").arg(format!("{k}={v}"));
        }
        c.arg(TAG);
        out(c.output().expect("run podman"))
    }

    /// `podman run <image> <args>` with the workspace mounted and current, no settings.
    fn podman_run_image(&self, image: &str, workspace: &Path, args: &[&str]) -> Out {
        let mut c = self.podman();
        c.args(["run", "--rm", "--network", "host"]).args(ULIMITS);
        c.arg("-v").arg(format!("{}:/woodpecker/src", workspace.display())).args(["-w", "/woodpecker/src"]);
        c.arg(image).args(args);
        out(c.output().expect("run podman"))
    }
}

pub(crate) fn out(o: Output) -> Out {
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Settings for the shared Azurite (Shared Key) at `endpoint`.
fn azurite_env(endpoint: String, container: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PLUGIN_ENDPOINT", endpoint),
        ("PLUGIN_ACCOUNT_KEY", DEV_KEY.to_string()),
        ("PLUGIN_CONTAINER", container.to_string()),
        ("PLUGIN_PROGRESS_INTERVAL", "1h".to_string()),
    ]
}

/// A workspace like a CI checkout: `dist/` with a multi-block file, a nested file and a source map.
fn workspace() -> (tempfile::TempDir, Vec<u8>) {
    let ws = tempfile::tempdir().unwrap();
    let big = bytes(9 * 1024 * 1024 + 123, 7); // three 4 MiB blocks: Put Block + Put Block List
    write(ws.path(), "dist/app.tar.gz", &big);
    write(ws.path(), "dist/sub/readme.txt", b"hello from the image\n");
    write(ws.path(), "dist/app.js.map", b"{}");
    (ws, big)
}

#[test]
#[ignore = "image test: needs buildah, podman, runc and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn image_builds_reproducibly_with_only_the_binary_and_ca_bundle() {
    let img = image();
    let binary = std::env::var("STATIC_BINARY").unwrap();

    // A second build from a freshly staged context (new mtimes, new directory): same bytes.
    let (id2, digest2) = img.build(&binary, "localhost/plugin-azure-storage:it-again", "oci-2");
    assert_eq!(id2, img.id, "image ID differs between two builds of the same binary");
    assert_eq!(digest2, img.digest, "manifest digest differs between two builds of the same binary");
    eprintln!("image: reproducible: two builds gave manifest {digest2}");

    // The configuration users rely on.
    let inspect = ok("podman image inspect", img.podman().args(["image", "inspect", TAG]).output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let cfg = &v[0]["Config"];
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/plugin-azure-storage"]));
    assert!(cfg["Env"].as_array().unwrap().iter().any(|e| e == "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));
    let labels = &cfg["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "plugin-azure-storage");
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert!(labels["org.opencontainers.image.source"].as_str().unwrap().starts_with("https://"));
    assert_eq!(v[0]["Created"].as_str().unwrap().get(..4), Some("1970"), "--timestamp 0");
    // Its size is the one docs/image.md gives for the binary's profile (within 5%).
    let profile = crate::release::profile_of(Path::new(&binary));
    let size = v[0]["Size"].as_u64().expect("image Size");
    eprintln!("image: size {size} bytes ({profile} binary)");
    let documented = crate::release::documented_size("image", &profile);
    crate::release::assert_size_documented(&format!("the image ([profile.{profile}] binary)"), size, documented);

    // Its whole file system: the binary and the CA bundle, nothing else.
    let ctr = ok("podman create", img.podman().args(["create", TAG]).output().unwrap()).trim().to_string();
    let tar = img.dir.join("export.tar");
    let exported = img.podman().args(["export", "-o"]).arg(&tar).arg(&ctr).output().unwrap();
    let _ = img.podman().args(["rm", &ctr]).output();
    ok("podman export", exported);
    let listing = ok("tar -t", Command::new("tar").arg("-tvf").arg(&tar).output().unwrap());
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|p| !p.starts_with("etc/hosts") && !p.starts_with("etc/resolv.conf") && !p.starts_with("etc/hostname"))
        .filter(|p| {
            !p.starts_with("run/") && !p.starts_with("dev/") && !p.starts_with("proc/") && !p.starts_with("sys/")
        })
        .collect();
    files.sort();
    assert_eq!(files, ["bin/plugin-azure-storage", "etc/ssl/certs/ca-certificates.crt"], "{listing}");
    let ca = ok(
        "tar -x",
        Command::new("tar").arg("-xOf").arg(&tar).arg("etc/ssl/certs/ca-certificates.crt").output().unwrap(),
    );
    assert_eq!(ca.as_bytes(), std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap(), "the host's CA bundle");
    let bin = Command::new("tar").arg("-xOf").arg(&tar).arg("bin/plugin-azure-storage").output().unwrap();
    assert_eq!(bin.stdout, std::fs::read(&binary).unwrap(), "the static binary, unchanged");
}

#[test]
#[ignore = "image test: needs buildah, podman, runc and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn image_podman_run_uploads_and_downloads_a_mounted_workspace() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let img = image();
    let az = Azurite::shared();
    let c = container("image-podman");
    let (ws, big) = workspace();

    // Upload, naming Azurite by a host name the container resolves through /etc/hosts
    // (static glibc's resolver in a `FROM scratch` image), production style: the account is
    // the host's first label, for the plugin and for Azurite.
    let host = format!("{DEV_ACCOUNT}.blob.azurite.test");
    let mut env = azurite_env(format!("http://{host}:{}", az.port), &c);
    env.extend([
        ("PLUGIN_CREATE_CONTAINER", "true".to_string()),
        ("PLUGIN_SOURCE", "dist/**".to_string()),
        ("PLUGIN_EXCLUDE", "*.map".to_string()),
        ("PLUGIN_STRIP_PREFIX", "dist".to_string()),
        ("PLUGIN_TARGET", "build/42".to_string()),
        ("PLUGIN_MANIFEST", "artifacts.json".to_string()),
        ("DRONE_REPO", "acme/app".to_string()),
        ("DRONE_COMMIT_SHA", "0123456789abcdef".to_string()),
    ]);
    let up = img.podman_run(ws.path(), &["--add-host", &format!("{host}:127.0.0.1")], &env);
    up.assert_ok().assert_lacks(DEV_KEY);
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, ["build/42/app.tar.gz", "build/42/sub/readme.txt"]);
    let (data, props) = fetch(az, &c, "build/42/app.tar.gz");
    assert!(data == big, "uploaded bytes differ");
    assert_eq!(props["metadata"]["sha256"], sha256_hex(&big));
    assert_eq!(props["metadata"]["ci_repo"], "acme/app", "the CI's variables reach the plugin");
    // The manifest was written into the mounted workspace (relative to the working directory).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path().join("artifacts.json")).expect("manifest in the workspace"))
            .unwrap();
    assert!(manifest.to_string().contains("build/42/app.tar.gz"), "{manifest}");

    // Download it back into the workspace.
    let mut env = azurite_env(az.endpoint(), &c);
    env.extend([
        ("PLUGIN_ACTION", "download".to_string()),
        ("PLUGIN_SOURCE", "build/42/".to_string()),
        ("PLUGIN_STRIP_PREFIX", "build/42".to_string()),
        ("PLUGIN_TARGET", "restored".to_string()),
    ]);
    img.podman_run(ws.path(), &[], &env).assert_ok();
    assert_eq!(tree(&ws.path().join("restored")), ["app.tar.gz", "sub/readme.txt"]);
    assert!(std::fs::read(ws.path().join("restored/app.tar.gz")).unwrap() == big, "downloaded bytes differ");
    assert_eq!(std::fs::read(ws.path().join("restored/sub/readme.txt")).unwrap(), b"hello from the image\n");
}

#[test]
#[ignore = "image test: needs buildah, podman, runc and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn image_verifies_tls_against_its_ca_bundle_or_a_mounted_one() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    let img = image();
    let az = oauth_azurite(); // HTTPS, self-signed certificate for 127.0.0.1
    let cert = az.cert.clone().unwrap();
    let c = container("image-tls");
    let (ws, _) = workspace();
    let env = |extra: &[(&'static str, String)]| {
        let mut e = vec![
            ("PLUGIN_ENDPOINT", az.endpoint()),
            ("PLUGIN_ACCOUNT_KEY", DEV_KEY.to_string()),
            ("PLUGIN_CONTAINER", c.clone()),
            ("PLUGIN_CREATE_CONTAINER", "true".to_string()),
            ("PLUGIN_SOURCE", "dist/sub/readme.txt".to_string()),
            ("PLUGIN_STRIP_PREFIX", "dist".to_string()),
        ];
        e.extend_from_slice(extra);
        e
    };
    // The baked-in public CA bundle does not trust the self-signed certificate: refused.
    let refused = img.podman_run(ws.path(), &[], &env(&[]));
    refused.assert_code(3);
    assert!(refused.all().to_lowercase().contains("certificate"), "{}", refused.all());
    // A CA mounted and named by SSL_CERT_FILE (how a private CA is added): verified, uploaded.
    let mount = format!("{}:/certs/azurite.pem:ro", cert.display());
    img.podman_run(ws.path(), &["-v", &mount], &env(&[("SSL_CERT_FILE", "/certs/azurite.pem".to_string())]))
        .assert_ok();
    assert_eq!(list(az, &c), ["sub/readme.txt"]);
}

/// `podman system service` on a private socket, stopped when the test binary exits.
pub(crate) fn docker_host(img: &'static Image) -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| {
        let sock = img.dir.join("podman.sock");
        let log = std::fs::File::create(img.dir.join("podman-service.log")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let mut c = img.podman();
        c.args(["system", "service", "--time", "0"]).arg(format!("unix://{}", sock.display()));
        c.stdout(Stdio::null()).stderr(log);
        // The keeper thread is the PDEATHSIG parent: it outlives every test.
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            unsafe {
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            match c.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap().expect("start podman system service");
        let host = format!("unix://{}", sock.display());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = Command::new("docker")
                .env("DOCKER_HOST", &host)
                .args(["version", "--format", "{{.Server.Version}}"])
                .output();
            if matches!(&v, Ok(o) if o.status.success()) {
                break;
            }
            assert!(Instant::now() < deadline, "podman's socket did not answer `docker version` in 30 s: {v:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        host
    })
}

/// `docker run` as a user runs the plugin locally (docs/image.md, README). Without `--rm`:
/// through podman's Docker API, `docker run --rm` reports exit code 0 whatever the container
/// returned (podman issue #18889; a Docker engine is fine), so the container is named and
/// removed afterwards instead, and the exit code asserted is the real one.
fn docker_run(img: &'static Image, workspace: &Path, env: &[(&str, String)], args: &[&str]) -> Out {
    let name = container("docker-run");
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", docker_host(img)).stdin(Stdio::null());
    c.args(["run", "--name", &name, "--network", "host"]).args(ULIMITS);
    c.arg("-v").arg(format!("{}:/woodpecker/src", workspace.display())).args(["-w", "/woodpecker/src"]);
    for (k, v) in env {
        c.arg("-e").arg(format!("{k}={v}"));
    }
    c.arg(TAG).args(args);
    let o = out(c.output().expect("run docker"));
    let rm = Command::new("docker").env("DOCKER_HOST", docker_host(img)).args(["rm", &name]).output().unwrap();
    ok("docker rm", rm);
    o
}

#[test]
#[ignore = "image test: needs buildah, podman, runc and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn image_docker_run_through_podmans_socket() {
    if !crate::support::azurite_present() || !crate::support::python_present() {
        return;
    }
    assert!(on_path("docker"), "the docker CLI test needs `docker` on PATH (the client only; podman serves it)");
    let img = image();
    let az = Azurite::shared();
    let (ws, big) = workspace();

    // --help works without any setting.
    docker_run(img, ws.path(), &[], &["--help"]).assert_ok().assert_contains("PLUGIN_<NAME>");

    // The plugin's exit code is docker run's: a missing container is 3, before any transfer.
    let c = container("image-docker");
    let mut env = azurite_env(az.endpoint(), &c);
    env.push(("PLUGIN_SOURCE", "dist/**".to_string()));
    docker_run(img, ws.path(), &env, &[]).assert_code(3).assert_contains("does not exist");

    // An upload through docker run.
    env.extend([("PLUGIN_CREATE_CONTAINER", "true".to_string()), ("PLUGIN_STRIP_PREFIX", "dist".to_string())]);
    docker_run(img, ws.path(), &env, &[]).assert_ok();
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, ["app.js.map", "app.tar.gz", "sub/readme.txt"]);
    assert!(fetch(az, &c, "app.tar.gz").0 == big);
}

pub(crate) const SHELL_TAG: &str = "localhost/plugin-azure-storage:it-shell";

/// The `-shell` variant (`scripts/build-image --shell`: Dockerfile.shell FROM the image
/// above, plus Debian's static busybox), built once per test binary.
pub(crate) fn shell_image() -> &'static Image {
    let img = image();
    shell_image_id();
    img
}

/// The ID of the `-shell` variant, built once (from [`image`]'s).
fn shell_image_id() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    let img = image();
    S.get_or_init(|| {
        assert!(
            Path::new("/bin/busybox").is_file(),
            "the -shell image needs Debian's static busybox at /bin/busybox (`scripts/ensure-tools image` \
             installs busybox-static)"
        );
        let t = Instant::now();
        let out = img
            .cmd(repo_root().join("scripts/build-image").to_str().unwrap())
            .args(["--shell", "--base", TAG, "--tag", SHELL_TAG])
            .output()
            .expect("run scripts/build-image --shell");
        let id = ok("scripts/build-image --shell", out).trim().to_string();
        eprintln!("image: built {SHELL_TAG} in {:.1}s: id {id}", t.elapsed().as_secs_f64());
        id
    })
}

/// The files of an image (`podman export` of a container made from it), each with its tar
/// listing line, the run-time mounts left out.
fn files_of(img: &Image, tag: &str, tar: &Path) -> Vec<(String, String)> {
    let ctr = ok("podman create", img.podman().args(["create", tag]).output().unwrap()).trim().to_string();
    let exported = img.podman().args(["export", "-o"]).arg(tar).arg(&ctr).output().unwrap();
    let _ = img.podman().args(["rm", &ctr]).output();
    ok("podman export", exported);
    let listing = ok("tar -t", Command::new("tar").arg("-tvf").arg(tar).output().unwrap());
    let skip = ["etc/hosts", "etc/resolv.conf", "etc/hostname", "run/", "dev/", "proc/", "sys/"];
    let mut files: Vec<(String, String)> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            // `lrwxrwxrwx 0/0 0 1970-01-01 00:00 bin/sh -> busybox`: the path is after the time.
            let path = l.split_whitespace().nth(5)?.to_string();
            Some((path, l.to_string()))
        })
        .filter(|(p, _)| !skip.iter().any(|s| p.starts_with(s)))
        .collect();
    files.sort();
    files
}

/// GitLab's Docker executor: the job image has no entrypoint (the -shell image declares none), the
/// command is this shell detection (gitlab-runner's `BashDetectShellScript`, run with
/// `sh -c`), and the job script arrives on standard input, the job's variables as `-e`.
const GITLAB_DETECT_SHELL: &str = "if [ -x /usr/local/bin/bash ]; then\n\texec /usr/local/bin/bash \n\
elif [ -x /usr/bin/bash ]; then\n\texec /usr/bin/bash \nelif [ -x /bin/bash ]; then\n\texec /bin/bash \n\
elif [ -x /usr/local/bin/sh ]; then\n\texec /usr/local/bin/sh \nelif [ -x /usr/bin/sh ]; then\n\t\
exec /usr/bin/sh \nelif [ -x /bin/sh ]; then\n\texec /bin/sh \nelif [ -x /busybox/sh ]; then\n\t\
exec /busybox/sh \nelse\n\techo shell not found\n\texit 1\nfi\n\n";

/// Runs `script:` lines as GitLab's Docker executor does, in `image` with the project at
/// `/builds/acme/app`: `set -eo pipefail`, each line echoed and `eval`ed.
pub(crate) fn gitlab_job(img: &Image, image: &str, project: &Path, script: &[&str], env: &[(&str, String)]) -> Out {
    use std::io::Write;
    let mut c = img.podman();
    c.args(["run", "-i", "--rm", "--network", "host"]).args(ULIMITS);
    c.arg("-v").arg(format!("{}:/builds/acme/app", project.display())).args(["-w", "/builds/acme/app"]);
    let vars = [
        ("CI", "true".to_string()),
        ("GITLAB_CI", "true".to_string()),
        ("CI_PROJECT_DIR", "/builds/acme/app".to_string()),
        ("CI_PROJECT_PATH", "acme/app".to_string()),
        ("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567".to_string()),
        ("CI_PIPELINE_ID", "77".to_string()),
    ];
    for (k, v) in vars.iter().chain(env) {
        c.arg("-e").arg(format!("{k}={v}"));
    }
    c.args([image, "sh", "-c", GITLAB_DETECT_SHELL]);
    let mut job = String::from("set -eo pipefail\nset +o noclobber\n");
    for line in script {
        job.push_str(&format!("echo '$ {}'\n{line}\n", line.replace('\'', "")));
    }
    job.push_str("exit 0\n");
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("podman run");
    child.stdin.take().unwrap().write_all(job.as_bytes()).unwrap();
    out(child.wait_with_output().unwrap())
}

#[test]
#[ignore = "image test: needs buildah, podman, runc, busybox-static and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn image_shell_variant_runs_the_plugin_from_a_gitlab_job_script() {
    let img = shell_image();
    let binary = std::env::var("STATIC_BINARY").unwrap();

    // Reproducible like the plain image: a second build from a freshly staged context.
    let again = img
        .cmd(repo_root().join("scripts/build-image").to_str().unwrap())
        .args(["--shell", "--base", TAG, "--tag", "localhost/plugin-azure-storage:it-shell-again"])
        .output()
        .unwrap();
    assert_eq!(ok("scripts/build-image --shell", again).trim(), shell_image_id(), "two -shell builds differ");

    // Its file system: the plain image's two files, unchanged, and busybox with its applet
    // links under /bin; no package manager, no libc, nothing else.
    let files = files_of(img, SHELL_TAG, &img.dir.join("export-shell.tar"));
    let mut extra = vec![];
    for (path, line) in &files {
        match path.as_str() {
            "bin/plugin-azure-storage" | "etc/ssl/certs/ca-certificates.crt" | "bin/busybox" => {}
            p if p.starts_with("bin/") && line.starts_with('l') && line.ends_with(" -> busybox") => {}
            _ => extra.push(line.as_str()),
        }
    }
    assert!(extra.is_empty(), "the -shell image holds more than the plugin, its CA bundle and busybox: {extra:#?}");
    for want in ["bin/sh", "bin/plugin-azure-storage", "bin/busybox", "etc/ssl/certs/ca-certificates.crt"] {
        assert!(files.iter().any(|(p, _)| p == want), "{want} missing from the -shell image");
    }
    for pm in ["apk", "apt", "apt-get", "dpkg", "dpkg-deb", "rpm", "rpm2cpio", "opkg"] {
        assert!(!files.iter().any(|(p, _)| p == &format!("bin/{pm}")), "a package manager ({pm}) in the -shell image");
    }
    let tar = img.dir.join("export-shell.tar");
    let bin = Command::new("tar").arg("-xOf").arg(&tar).arg("bin/plugin-azure-storage").output().unwrap();
    assert!(bin.stdout == std::fs::read(&binary).unwrap(), "the -shell image's binary differs from STATIC_BINARY");
    let bb = Command::new("tar").arg("-xOf").arg(&tar).arg("bin/busybox").output().unwrap();
    assert!(bb.stdout == std::fs::read("/bin/busybox").unwrap(), "not Debian's busybox-static");

    // Its configuration: no entrypoint (GitLab gives the shell as the command), the plugin as
    // the default command, the plain image's environment and labels.
    let inspect = ok("podman image inspect", img.podman().args(["image", "inspect", SHELL_TAG]).output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let cfg = &v[0]["Config"];
    assert!(cfg["Entrypoint"].as_array().is_none_or(|e| e.is_empty()), "an entrypoint: {}", cfg["Entrypoint"]);
    assert_eq!(cfg["Cmd"], serde_json::json!(["/bin/plugin-azure-storage"]));
    assert!(cfg["Env"].as_array().unwrap().iter().any(|e| e == "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));
    assert_eq!(cfg["Labels"]["org.opencontainers.image.title"], "plugin-azure-storage");
    assert_eq!(cfg["Labels"]["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    let profile = crate::release::profile_of(Path::new(&binary));
    let size = v[0]["Size"].as_u64().expect("image Size");
    eprintln!("image: -shell size {size} bytes ({profile} binary)");
    let documented = crate::release::documented_size("`-shell` image", &profile);
    crate::release::assert_size_documented(&format!("the -shell image ([profile.{profile}] binary)"), size, documented);

    // Run as a plugin step runs an image (no command: Drone, Woodpecker, `docker run IMAGE`),
    // it is the plugin: here without settings, so exit 2 naming a missing one. A command
    // replaces it (no entrypoint): `plugin-azure-storage --help`.
    let (ws, big) = workspace();
    img.podman_run_image(SHELL_TAG, ws.path(), &[]).assert_code(2).assert_contains("PLUGIN_");
    let help = img.podman_run_image(SHELL_TAG, ws.path(), &["plugin-azure-storage", "--help"]);
    help.assert_ok().assert_contains("PLUGIN_<NAME>");

    // A GitLab job with `image:` the -shell variant and `script: [plugin-azure-storage]`,
    // settings as job variables: an upload, with the job's CI_* variables as provenance.
    let az = Azurite::shared();
    let c = container("image-gitlab");
    let mut env = azurite_env(az.endpoint(), &c);
    env.extend([
        ("PLUGIN_CREATE_CONTAINER", "true".to_string()),
        ("PLUGIN_SOURCE", "dist/**".to_string()),
        ("PLUGIN_STRIP_PREFIX", "dist".to_string()),
        ("PLUGIN_TARGET", "acme/app/0123456789abcdef".to_string()),
    ]);
    let job = gitlab_job(img, SHELL_TAG, ws.path(), &["plugin-azure-storage"], &env);
    job.assert_ok().assert_contains("$ plugin-azure-storage").assert_lacks(DEV_KEY);
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(
        names,
        [
            "acme/app/0123456789abcdef/app.js.map",
            "acme/app/0123456789abcdef/app.tar.gz",
            "acme/app/0123456789abcdef/sub/readme.txt"
        ]
    );
    let (data, props) = fetch(az, &c, "acme/app/0123456789abcdef/app.tar.gz");
    assert!(data == big, "uploaded bytes differ");
    assert_eq!(props["metadata"]["ci_repo"], "acme/app", "GitLab's CI_PROJECT_PATH reaches the plugin");

    // A failing plugin fails the job with its exit code (3: the container does not exist),
    // and the script stops there (`set -e`).
    env.retain(|(k, _)| *k != "PLUGIN_CREATE_CONTAINER" && *k != "PLUGIN_CONTAINER");
    env.push(("PLUGIN_CONTAINER", container("image-gitlab-missing")));
    let failed = gitlab_job(img, SHELL_TAG, ws.path(), &["plugin-azure-storage", "touch after-the-plugin"], &env);
    failed.assert_code(3).assert_contains("does not exist");
    assert!(!ws.path().join("after-the-plugin").exists(), "the job went on after the plugin failed");
}
