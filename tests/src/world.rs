//! A Deno project for end-to-end tests: an app directory, a daemon whose policy allows it, and
//! `deno run` commands pointed at that daemon.

use super::{Daemon, Launch, deno};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A project directory `<root>/app` with data, a secret and a file outside it, and a daemon whose
/// policy allows the app directory only.
pub struct World {
    pub daemon: Daemon,
    pub root: PathBuf,
    pub app: PathBuf,
}

pub const DENY_REASON: &str = "blocked by the e2e policy";
pub const SECRET_REASON: &str = "secrets stay put";

impl World {
    pub fn new() -> World {
        World::with_policy(Self::default_policy, &[])
    }

    /// A world whose daemon runs `policy(app_dir)` with extra `serve` flags.
    pub fn with_policy(policy: impl FnOnce(&Path) -> String, flags: &[&str]) -> World {
        World::with_launch(
            policy,
            Launch {
                extra: flags,
                ..Launch::default()
            },
        )
    }

    /// A world whose daemon runs `policy(app_dir)`, started as `launch` says.
    pub fn with_launch(policy: impl FnOnce(&Path) -> String, launch: Launch) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let app = root.join("app");
        std::fs::create_dir_all(app.join("data")).unwrap();
        std::fs::write(app.join("data/x.txt"), "inside\n").unwrap();
        std::fs::write(app.join("secret.txt"), "s3cr3t\n").unwrap();
        std::fs::write(root.join("outside.txt"), "outside\n").unwrap();
        let policy_path = root.join("policy.toml");
        std::fs::write(&policy_path, policy(&app)).unwrap();
        let daemon = Daemon::launch(dir, &policy_path, launch);
        World { daemon, root, app }
    }

    pub fn default_policy(app: &Path) -> String {
        format!(
            r#"
version = 1
[defaults]
decision = "deny"
reason = "{DENY_REASON}"

[[rule]]
id = "app"
effect = "allow"
permissions = ["read", "write"]
paths = ["{app}"]

[[rule]]
id = "secret"
effect = "deny"
permissions = ["read"]
paths = ["{app}/secret.txt"]
reason = "{SECRET_REASON}"

[[rule]]
id = "app-env"
effect = "allow"
permissions = ["env"]
names = ["APP_*"]

[[rule]]
id = "ls-only"
effect = "allow"
permissions = ["run"]
names = ["ls"]
# The e2e scripts run `ls` by name, as most scripts do.
trusts_path = true
"#,
            app = app.display()
        )
    }

    /// A `deno run` of `script` (written to the app directory), with the app directory as cwd.
    pub fn deno(&self, version: &str, name: &str, script: &str) -> Command {
        std::fs::write(self.app.join(name), script).unwrap();
        deno_run(version, &self.root, &self.app, &self.daemon.socket, name)
    }

    pub fn run(&self, version: &str, name: &str, script: &str) -> Output {
        let child = self.deno(version, name, script).spawn().unwrap();
        wait_with_timeout(child, Duration::from_secs(60))
    }
}

/// `inner` (a prepared `deno run`) run through `program args…`, with the same directory and
/// environment.
/// A `deno run` of the script `name` in `app` (its working directory), pointed at the broker on
/// `socket`, with `root` as its home.
pub fn deno_run(version: &str, root: &Path, app: &Path, socket: &Path, name: &str) -> Command {
    let mut cmd = Command::new(deno(version));
    cmd.arg("run")
        .arg("--no-config")
        .arg(name)
        .current_dir(app)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("DENO_DIR", root.join("deno-dir"))
        .env("NO_COLOR", "1")
        .env("DENO_NO_UPDATE_CHECK", "1")
        .env("APP_MODE", "production")
        .env("DENO_PERMISSION_BROKER_PATH", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub fn wrapped(program: &str, args: &[&str], inner: &Command) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd
}

pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("deno did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

pub fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: deno failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
