//! Attack: a Worker's `Deno.chdir` races the main thread's relative paths.
//!
//! Deno sends a relative path as written and opens it later against the process's working
//! directory at that moment; the working directory is process-wide, so a Worker flipping it
//! between two allowed directories makes the broker decide `secret/key` under one and Deno open
//! it under the other. Expected: a relative path is allowed only if it is allowed under every
//! working directory the process may have had (each `Deno.chdir` is a read check of its target,
//! so the broker sees them all), and a directory that would turn an earlier allowed relative path
//! into a denied one is refused. Fix: `crates/broker/src/daemon/working_dirs.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{assert_success, stdout_lines, wait_with_timeout};
use common::{Daemon, deno};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SECRET: &str = "TOPSECRET";

/// `<root>/a/secret/key` is harmless, `<root>/b/secret/key` is the secret: the same relative
/// path from two allowed directories.
struct Tree {
    daemon: Daemon,
    root: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    for (sub, content) in [("a", "harmless"), ("b", SECRET)] {
        std::fs::create_dir_all(root.join(sub).join("secret")).unwrap();
        std::fs::write(root.join(sub).join("secret/key"), content).unwrap();
        std::fs::write(root.join(sub).join("notes.txt"), "notes").unwrap();
    }
    let policy = format!(
        r#"
version = 1
[[rule]]
id = "tree"
effect = "allow"
permissions = ["read"]
paths = ["{root}"]

[[rule]]
id = "b-secret"
effect = "deny"
permissions = ["read"]
paths = ["{root}/b/secret"]
reason = "b's secret stays put"
"#,
        root = root.display()
    );
    let policy_path = root.join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let daemon = Daemon::start_in(dir, &policy_path, &[]);
    Tree { daemon, root }
}

impl Tree {
    fn run(&self, script: &str, extra: &[(&str, &str)], cwd: &Path) -> Output {
        for (name, text) in extra {
            std::fs::write(self.root.join(name), text).unwrap();
        }
        std::fs::write(self.root.join("main.ts"), script).unwrap();
        let mut cmd = Command::new(deno("2.9.6"));
        cmd.arg("run")
            .arg("--no-config")
            .arg(self.root.join("main.ts"))
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DENO_DIR", self.root.join("deno-dir"))
            .env("NO_COLOR", "1")
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("DENO_PERMISSION_BROKER_PATH", &self.daemon.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60))
    }
}

/// The race itself: a Worker flips the working directory between `a` and `b` while the main
/// thread reads `secret/key` for three seconds. Before the fix `b`'s secret was read (111 times
/// in 7 s); now never, and the refusals show the race was run.
#[test]
fn a_worker_flipping_the_working_directory_never_reaches_the_denied_file() {
    let tree = tree();
    let root = tree.root.display().to_string();
    let script = format!(
        r#"
const worker = new Worker(new URL("./flip.ts", import.meta.url).href, {{ type: "module" }});
const end = Date.now() + 3000;
worker.postMessage(["{root}/a", "{root}/b", end]);
let leaked = 0, harmless = 0, denied = 0;
while (Date.now() < end) {{
  try {{
    const text = Deno.readTextFileSync("secret/key");
    if (text.includes("{SECRET}")) leaked++; else harmless++;
  }} catch (_) {{ denied++; }}
}}
console.log(JSON.stringify({{ leaked, harmless, denied }}));
worker.terminate();
"#
    );
    let flip = r#"
self.onmessage = (e) => {
  const [a, b, end] = e.data;
  while (Date.now() < end) {
    try { Deno.chdir(a); } catch (_) { /* refused */ }
    try { Deno.chdir(b); } catch (_) { /* refused */ }
  }
  self.close();
};
"#;
    let output = tree.run(&script, &[("flip.ts", flip)], &tree.root.join("a"));
    assert_success(&output, "race");
    let line = stdout_lines(&output).pop().unwrap();
    let counts: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(counts["leaked"], 0, "the secret leaked: {line}");
    let reads = counts["harmless"].as_u64().unwrap() + counts["denied"].as_u64().unwrap();
    assert!(reads > 100, "the race did not run: {line}");
}

/// The same without a race, step by step: having been in `b`, the process may be there again
/// when it opens `secret/key`, so the path is denied even while it is in `a` -- with the
/// directory named in the reason.
#[test]
fn a_relative_path_must_pass_under_every_directory_the_process_has_been_in() {
    let tree = tree();
    let root = tree.root.display().to_string();
    let script = format!(
        r#"
Deno.chdir("{root}/b");
Deno.chdir("{root}/a");
try {{ Deno.readTextFileSync("secret/key"); console.log("read"); }}
catch (e) {{ console.log(e.message); }}
console.log(Deno.readTextFileSync("notes.txt"));
"#
    );
    let output = tree.run(&script, &[], &tree.root);
    assert_success(&output, "chdir then relative");
    let lines = stdout_lines(&output);
    assert!(
        lines[0].contains("b's secret stays put") && lines[0].contains(&format!("{root}/b")),
        "{lines:?}"
    );
    assert_eq!(
        lines[1], "notes",
        "a relative path allowed everywhere is still allowed"
    );
}

/// The other order: `secret/key` was allowed from `a`; a later `chdir` into `b` would make that
/// open (possibly still in flight) reach the secret, so the chdir's read check is refused.
#[test]
fn a_directory_that_would_turn_an_allowed_relative_path_into_a_denied_one_is_refused() {
    let tree = tree();
    let root = tree.root.display().to_string();
    let script = format!(
        r#"
console.log(Deno.readTextFileSync("secret/key"));
try {{ Deno.chdir("{root}/b"); console.log("moved"); }}
catch (e) {{ console.log(e.message); }}
console.log(Deno.cwd());
"#
    );
    let output = tree.run(&script, &[], &tree.root.join("a"));
    assert_success(&output, "relative then chdir");
    let lines = stdout_lines(&output);
    assert_eq!(lines[0], "harmless");
    assert!(
        lines[1].contains("could become this process's working directory")
            && lines[1].contains("secret/key"),
        "{lines:?}"
    );
    assert_eq!(lines[2], format!("{root}/a"));
}

/// Honest scripts that never change directory keep their relative paths.
#[test]
fn a_script_that_never_changes_directory_keeps_relative_paths() {
    let tree = tree();
    let script = r#"
console.log(Deno.readTextFileSync("secret/key"));
console.log(Deno.readTextFileSync("./notes.txt"));
console.log(Deno.readTextFileSync("../a/notes.txt"));
"#;
    let output = tree.run(script, &[], &tree.root.join("a"));
    assert_success(&output, "relative paths");
    assert_eq!(stdout_lines(&output), ["harmless", "notes", "notes"]);
}
