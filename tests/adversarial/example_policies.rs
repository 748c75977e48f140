//! Attack: the example policies hand out secrets.
//!
//! `config/laptop.toml` allowed read and write on all of `/home` — every user's `~/.ssh`,
//! `~/.gnupg`, `~/.aws`, shell history and `~/.bashrc` — and write on the broker's own socket
//! `/tmp/perm.sock`; it and `config/fleet` allowed env `DENO_*`: `DENO_AUTH_TOKENS` (registry
//! tokens), `DENO_CERT` and `DENO_PERMISSION_BROKER_PATH`, which a script may read and also set
//! for every subprocess it starts (Deno asks the same env check for both). Under the laptop
//! policy real Deno 2.9.6 read a private key in a home directory and the registry token.
//!
//! Expected refusal: the laptop policy grants the projects its comment promises (`~/src` of any
//! user, `/root/src`, scratch files in `/tmp`) and denies, with a reason, the credential
//! directories of every home, the broker's socket and every `DENO_*` variable; the fleet base
//! denies `DENO_*` (so no drop-in can grant it) and a few more credential files. The case files
//! `config/tests/{laptop,fleet}-secrets.toml` say so case by case.
//!
//! Fix: `config/laptop.toml`, `config/fleet/00-base.toml` and their case files.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{World, assert_success, stdout_lines, wait_with_timeout};
use common::{BROKER, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn config(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(path)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(&*BROKER).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_policies_hand_out_no_secrets() {
    for (policy, cases, count) in [
        ("laptop.toml", "tests/laptop-secrets.toml", 20),
        ("fleet", "tests/fleet-secrets.toml", 11),
        // What they are for still holds.
        ("laptop.toml", "tests/laptop.toml", 14),
        ("fleet", "tests/fleet.toml", 18),
    ] {
        let output = run(&[
            "test".as_ref(),
            config(policy).as_os_str(),
            config(cases).as_os_str(),
        ]);
        assert_eq!(
            (output.status.code(), text(&output.stdout)),
            (Some(0), format!("{count} passed, 0 failed\n")),
            "{policy} {cases}: {}",
            text(&output.stderr)
        );
    }
    // And the daemon serving them agrees (the tools decide through the same code).
    for policy in ["laptop.toml", "fleet"] {
        let daemon = Daemon::start_in(tempfile::tempdir().unwrap(), &config(policy), &[]);
        for name in [
            "DENO_AUTH_TOKENS",
            "DENO_CERT",
            "DENO_PERMISSION_BROKER_PATH",
        ] {
            let output = run(&[
                "ask".as_ref(),
                "--socket".as_ref(),
                daemon.socket.as_os_str(),
                "env".as_ref(),
                name.as_ref(),
            ]);
            assert_eq!(
                output.status.code(),
                Some(1),
                "{policy}: env {name}: {}",
                text(&output.stdout)
            );
        }
    }
}

/// A home directory made for the test, removed when dropped.
struct Home(PathBuf);

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn deno_under_the_laptop_policy_reads_no_keys_and_no_tokens() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes a home directory under /home and needs root (CI runs as root)"
    );
    let home = Home(PathBuf::from(format!(
        "/home/pb-adv-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(home.0.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.0.join("src/app")).unwrap();
    std::fs::write(home.0.join(".ssh/id_ed25519"), "PRIVATE KEY\n").unwrap();
    std::fs::write(home.0.join(".bash_history"), "history\n").unwrap();
    std::fs::write(home.0.join("src/app/notes.txt"), "project\n").unwrap();
    let laptop = std::fs::read_to_string(config("laptop.toml")).unwrap();
    let world = World::with_policy(|_| laptop, &[]);
    let script = format!(
        r#"
const attempt = (label, f) => {{
  try {{ console.log(label + " ok " + f()); }} catch (e) {{ console.log(label + " refused " + e.message); }}
}};
attempt("project", () => Deno.readTextFileSync("{home}/src/app/notes.txt").trim());
attempt("key", () => Deno.readTextFileSync("{home}/.ssh/id_ed25519").trim());
attempt("history", () => Deno.readTextFileSync("{home}/.bash_history").trim());
attempt("token", () => Deno.env.get("DENO_AUTH_TOKENS"));
attempt("broker", () => {{ Deno.env.set("DENO_PERMISSION_BROKER_PATH", "/tmp/evil.sock"); return "redirected"; }});
"#,
        home = home.0.display()
    );
    let mut cmd = world.deno("2.9.6", "secrets.ts", &script);
    cmd.env("DENO_AUTH_TOKENS", "s3cr3t@registry.example.com");
    let output = wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_success(&output, "laptop");
    assert_eq!(
        stdout_lines(&output),
        [
            "project ok project".to_owned(),
            format!(
                "key refused read {}/.ssh/id_ed25519: credentials stay out of scripts (rule no-secrets)",
                home.0.display()
            ),
            format!(
                "history refused read {}/.bash_history: not permitted by the laptop policy (config/laptop.toml) (rule default)",
                home.0.display()
            ),
            "token refused env DENO_AUTH_TOKENS: Deno's own settings are not for scripts (rule no-deno-settings)".to_owned(),
            "broker refused env DENO_PERMISSION_BROKER_PATH: Deno's own settings are not for scripts (rule no-deno-settings)".to_owned(),
        ]
    );
}
