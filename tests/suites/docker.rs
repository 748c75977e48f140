//! The Docker image, as far as this machine can run it without a Docker engine: the Dockerfile is
//! read for what it promises, and its entrypoint is run the way the image would run it -- as the
//! image's `USER`, with the binary's file capability set as the Dockerfile sets it, the
//! documented `docker run` flags emulated (`--pid=host`: the host's pid namespace;
//! `--cap-drop=ALL --cap-add=SYS_PTRACE`: a bounding set of that one alone; `--security-opt seccomp`:
//! the shipped profile loaded with libseccomp; the two `-v` mounts: bind mounts in a mount
//! namespace of its own) -- and a real Deno on the host is served.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::BROKER;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = include_str!("../../Dockerfile");

/// An instruction's JSON array (`ENTRYPOINT [...]`, `CMD [...]`, `HEALTHCHECK ... CMD [...]`).
fn exec_form(instruction: &str) -> Vec<String> {
    let joined = DOCKERFILE.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with(instruction))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    let array = &line[line.find('[').unwrap()..];
    serde_json::from_str(array).unwrap()
}

fn image_uid() -> u32 {
    DOCKERFILE
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap()
        .trim()
        .parse()
        .expect("USER is a numeric uid")
}

#[test]
fn the_dockerfile_pins_its_bases_ships_no_policy_and_runs_unprivileged() {
    let froms: Vec<&str> = DOCKERFILE
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2);
    for from in froms {
        let digest = from
            .split_whitespace()
            .next()
            .and_then(|image| image.split_once("@sha256:"))
            .unwrap_or_else(|| panic!("`{from}` is not pinned by digest"))
            .1;
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{from}"
        );
    }
    assert!(
        !DOCKERFILE
            .lines()
            .any(|l| l.starts_with("COPY") && l.contains("config")),
        "the image must not ship a default policy"
    );
    assert_ne!(image_uid(), 0);
    assert!(DOCKERFILE.contains("setcap cap_sys_ptrace+ep /usr/local/bin/permission-broker"));
    assert_eq!(
        exec_form("ENTRYPOINT")[0],
        "/usr/local/bin/permission-broker"
    );
    let health = exec_form("HEALTHCHECK");
    assert_eq!(health[0], "/usr/local/bin/permission-broker");
    assert!(health.contains(&"--any-answer".to_owned()));
    // The documented run line has the flags the emulation below plays.
    for flag in [
        "--pid=host",
        "--cap-drop=ALL --cap-add=SYS_PTRACE",
        "/etc/permission-broker:/etc/permission-broker:ro",
        "/run/permission-broker:/run/permission-broker",
        "install -d -o permission-broker -m 0755 /run/permission-broker",
        "--user \"$(id -u permission-broker):$(id -g permission-broker)\"",
        "--security-opt seccomp=config/docker/seccomp.json",
    ] {
        assert!(DOCKERFILE.contains(flag), "the run line lacks {flag}");
        assert!(
            include_str!("../../README.md").contains(flag),
            "the README's run line lacks {flag}"
        );
    }
}

/// What `docker run` would do, played here.
struct Container {
    /// The host directory bind-mounted at /run/permission-broker.
    run_dir: PathBuf,
    /// The host directory bind-mounted at /etc/permission-broker (read-only), if any.
    policy_dir: Option<PathBuf>,
    /// `--cap-add=SYS_PTRACE`.
    cap_add_ptrace: bool,
    /// The image's binary, with its file capability.
    binary: PathBuf,
    scratch: PathBuf,
}

impl Container {
    /// The entrypoint with `args` (the image's CMD by default) inside the container's mounts,
    /// as its user, with its capabilities.
    fn command(&self, args: &[String]) -> Command {
        let uid = image_uid();
        // `--cap-drop=ALL`, then `--cap-add=SYS_PTRACE` or not.
        let mut bounding = vec!["-all".to_owned()];
        if self.cap_add_ptrace {
            bounding.push("+sys_ptrace".to_owned());
        }
        let upper = self.scratch.join("upper");
        let work = self.scratch.join("work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let policy_mount = match &self.policy_dir {
            Some(dir) => format!(
                "mkdir /etc/permission-broker; mount --bind -o ro '{}' /etc/permission-broker",
                dir.display()
            ),
            None => "true".to_owned(),
        };
        let script = format!(
            "set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir='{upper}',workdir='{work}' /etc
{policy_mount}
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/permission-broker
mount --bind '{run}' /run/permission-broker
exec '{seccomp_exec}' '{allowed}' -- setpriv --reuid {uid} --regid {uid} --clear-groups --inh-caps=-all --bounding-set={bounding} -- \"$@\"",
            seccomp_exec = env!("CARGO_BIN_EXE_seccomp-exec"),
            allowed = self.seccomp_profile().display(),
            upper = upper.display(),
            work = work.display(),
            run = self.run_dir.display(),
            bounding = bounding.join(","),
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            &script,
            "container",
        ])
        .arg(&self.binary)
        .args(args)
        .env("RUST_LOG", "permission_broker=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    }

    /// `--security-opt seccomp=config/docker/seccomp.json`: its allowed calls, for seccomp-exec.
    fn seccomp_profile(&self) -> PathBuf {
        let profile: serde_json::Value =
            serde_json::from_str(include_str!("../../config/docker/seccomp.json")).unwrap();
        let names: Vec<&str> = profile["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        std::fs::create_dir_all(&self.scratch).unwrap();
        let path = self.scratch.join("seccomp-allowed.txt");
        std::fs::write(&path, names.join("\n")).unwrap();
        path
    }

    fn cmd() -> Vec<String> {
        exec_form("CMD")
    }
}

/// The image's binary: the one under test with the Dockerfile's file capability, in a directory
/// its user can reach.
fn image_binary(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
    let binary = dir.join("permission-broker");
    std::fs::copy(&*BROKER, &binary).unwrap();
    std::fs::set_permissions(&binary, PermissionsExt::from_mode(0o755)).unwrap();
    let set = Command::new("setcap")
        .args(["cap_sys_ptrace+ep"])
        .arg(&binary)
        .status()
        .expect("setcap (Debian package libcap2-bin) is needed");
    assert!(set.success());
    binary
}

/// The host side of the documented setup: the socket directory made the image user's, a policy.
fn host_setup(root: &Path, app: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let run_dir = root.join("run-permission-broker");
    let out = Command::new("install")
        .args(["-d", "-o", &image_uid().to_string(), "-m", "0755"])
        .arg(&run_dir)
        .status()
        .unwrap();
    assert!(out.success());
    let policy_dir = root.join("etc-permission-broker");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::set_permissions(&policy_dir, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        policy_dir.join("00-app.toml"),
        format!(
            "version = 1\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}/**\"]\n",
            app.join("data").display()
        ),
    )
    .unwrap();
    (run_dir, policy_dir)
}

/// The container's daemon, killed if the test fails before it stops it (it would outlive the test
/// in its mount namespace).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
    text
}

#[test]
fn the_image_entrypoint_serves_deno_on_the_host_with_the_documented_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let app = root.join("app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    std::fs::write(app.join("data/x.txt"), "inside\n").unwrap();
    std::fs::write(app.join("secret.txt"), "s3cr3t\n").unwrap();
    // The app's directories are root's and private, as another user's would be: the daemon sees
    // into them only through the capability.
    for d in [&root, &app] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    }
    std::fs::write(
        app.join("main.ts"),
        "console.log(Deno.readTextFileSync('./data/x.txt').trim());\n\
         try { Deno.readTextFileSync('./secret.txt'); console.log('LEAK'); } catch (e) { console.log(e.name); }\n",
    )
    .unwrap();
    let bin = tempfile::tempdir().unwrap();
    let (run_dir, policy_dir) = host_setup(&root, &app);
    let container = Container {
        run_dir: run_dir.clone(),
        policy_dir: Some(policy_dir),
        cap_add_ptrace: true,
        binary: image_binary(bin.path()),
        scratch: root.join("scratch"),
    };
    let mut daemon = KillOnDrop(container.command(&Container::cmd()).spawn().unwrap());
    let daemon = &mut daemon.0;
    let stdout = daemon.stdout.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    common::capture_lines(daemon.stderr.take().unwrap(), log.clone());
    let ready = common::wait_for_line(
        &log,
        &["permission-broker ready on /run/permission-broker/broker.sock"],
    );
    assert!(ready.contains("DENO_PERMISSION_BROKER_PATH="), "{ready}");
    let socket = run_dir.join("broker.sock");

    // A real Deno on the host, as root (another user than the daemon's), with relative paths.
    let out = common::world::deno_run("2.9.6", &root, &app, &socket, "main.ts")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}\ndaemon:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.lock().unwrap().join("\n")
    );
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["inside", "NotCapable"],
        "{said}"
    );

    // The health check, run in the container as its user: healthy.
    let health = exec_form("HEALTHCHECK");
    let mut nsenter = Command::new("nsenter");
    nsenter
        .arg(format!("--mount=/proc/{}/ns/mnt", daemon_pid(daemon)))
        .args([
            "setpriv",
            "--reuid",
            &image_uid().to_string(),
            "--regid",
            &image_uid().to_string(),
            "--clear-groups",
            "--",
        ])
        .arg(&container.binary)
        .args(&health[1..]);
    let checked = nsenter.output().unwrap();
    assert!(
        checked.status.success(),
        "HEALTHCHECK: {:?} {}",
        checked.status,
        String::from_utf8_lossy(&checked.stderr)
    );

    // stdout is the decision log alone: every line one JSON record.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon_pid(daemon) as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(daemon, Duration::from_secs(20)).expect("the daemon stops");
    assert!(status.success(), "{status:?}");
    let lines: Vec<String> = BufReader::new(stdout).lines().map(Result::unwrap).collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout is not pure JSON ({e}): {line}"));
        assert!(record["kind"].is_string(), "{line}");
    }
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["kind"], "log", "{lines:?}");
    let answered = |value: &str| {
        records
            .iter()
            .find(|r| r["kind"] == "decision" && r["value"] == value)
            .map(|r| r["answered"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        answered("./data/x.txt").as_deref(),
        Some("allow"),
        "{lines:#?}"
    );
    assert_eq!(
        answered("./secret.txt").as_deref(),
        Some("deny"),
        "{lines:#?}"
    );
}

/// The daemon's pid: unshare without `--fork` execs bash, which execs setpriv, which execs the
/// daemon: one pid throughout.
fn daemon_pid(child: &Child) -> u32 {
    child.id()
}

#[test]
fn without_each_required_flag_the_container_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let app = root.join("app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    let bin = tempfile::tempdir().unwrap();
    let binary = image_binary(bin.path());
    let (run_dir, policy_dir) = host_setup(&root, &app);
    let run = |container: &Container| {
        let mut child = container.command(&Container::cmd()).spawn().unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(20)).expect("it exits");
        (status.code(), stderr_of(&mut child))
    };

    // No --cap-add=SYS_PTRACE: the kernel refuses to run the binary at all.
    let (code, said) = run(&Container {
        run_dir: run_dir.clone(),
        policy_dir: Some(policy_dir.clone()),
        cap_add_ptrace: false,
        binary: binary.clone(),
        scratch: root.join("s1"),
    });
    assert_ne!(code, Some(0));
    assert!(said.contains("Operation not permitted"), "{said}");

    // No policy mounted: the image has none, and the daemon does not start.
    let (code, said) = run(&Container {
        run_dir: run_dir.clone(),
        policy_dir: None,
        cap_add_ptrace: true,
        binary: binary.clone(),
        scratch: root.join("s2"),
    });
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("/etc/permission-broker"), "{said}");

    // The socket directory left root's (no `install -d -o`): exit 69, saying what to do.
    let root_owned = root.join("run-root");
    std::fs::create_dir(&root_owned).unwrap();
    std::fs::set_permissions(
        &root_owned,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, said) = run(&Container {
        run_dir: root_owned,
        policy_dir: Some(policy_dir),
        cap_add_ptrace: true,
        binary,
        scratch: root.join("s3"),
    });
    assert_eq!(code, Some(69), "{said}");
    assert!(
        said.contains(&format!(
            "install -d -o {} -m 0755 /run/permission-broker",
            image_uid()
        )),
        "{said}"
    );
}
