//! Real Deno processes against the real daemon, for every supported Deno release we pin.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{
    DENY_REASON, SECRET_REASON, World, assert_success, stdout_lines, wait_with_timeout, wrapped,
};
use common::{DENO_VERSIONS, Daemon};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn reads_allowed_denied_and_relative() {
    let world = World::new();
    let script = format!(
        r#"
const attempt = (label, f) => {{
  try {{ console.log(label + " ok " + f()); }} catch (e) {{ console.log(label + " " + e); }}
}};
attempt("relative-inside", () => Deno.readTextFileSync("./data/x.txt").trim());
attempt("relative-outside", () => Deno.readTextFileSync("../outside.txt").trim());
attempt("absolute-inside", () => Deno.readTextFileSync("{app}/data/x.txt").trim());
attempt("absolute-outside", () => Deno.readTextFileSync("/etc/hostname").trim());
attempt("secret", () => Deno.readTextFileSync("secret.txt").trim());
attempt("write", () => {{ Deno.writeTextFileSync("./data/out.txt", "w"); return "written"; }});
"#,
        app = world.app.display()
    );
    for version in DENO_VERSIONS {
        let output = world.run(version, "reads.ts", &script);
        assert_success(&output, version);
        let lines = stdout_lines(&output);
        let expected = [
            "relative-inside ok inside".to_owned(),
            // A deny names the permission and the value as resolved, then the reason and rule.
            format!(
                "relative-outside NotCapable: read {}/outside.txt: {DENY_REASON} (rule default)",
                world.root.display()
            ),
            "absolute-inside ok inside".to_owned(),
            format!(
                "absolute-outside NotCapable: read /etc/hostname: {DENY_REASON} (rule default)"
            ),
            format!(
                "secret NotCapable: read {}/secret.txt: {SECRET_REASON} (rule secret)",
                world.app.display()
            ),
            "write ok written".to_owned(),
        ];
        assert_eq!(lines, expected, "Deno {version}");
        assert_eq!(
            std::fs::read_to_string(world.app.join("data/out.txt")).unwrap(),
            "w"
        );
    }
}

#[test]
fn a_denied_read_fails_the_script_with_our_reason() {
    let world = World::new();
    for version in DENO_VERSIONS {
        let output = world.run(
            version,
            "throws.ts",
            "Deno.readTextFileSync('../outside.txt');\n",
        );
        assert_eq!(
            output.status.code(),
            Some(1),
            "Deno {version}: uncaught deny exits 1"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "NotCapable: read {}/outside.txt: {DENY_REASON} (rule default)",
                world.root.display()
            )),
            "Deno {version} stderr:\n{stderr}"
        );
    }
}

#[test]
fn env_null_denied_named_variable_allowed() {
    let world = World::new();
    let script = r#"
try { Deno.env.toObject(); console.log("toObject allowed"); } catch (e) { console.log("toObject " + e); }
console.log("APP_MODE=" + Deno.env.get("APP_MODE"));
try { Deno.env.get("HOME"); console.log("HOME allowed"); } catch (e) { console.log("HOME " + e); }
"#;
    for version in DENO_VERSIONS {
        let output = world.run(version, "env.ts", script);
        assert_success(&output, version);
        assert_eq!(
            stdout_lines(&output),
            [
                format!("toObject NotCapable: env (all): {DENY_REASON} (rule default)"),
                "APP_MODE=production".to_owned(),
                format!("HOME NotCapable: env HOME: {DENY_REASON} (rule default)"),
            ],
            "Deno {version}"
        );
    }
}

#[test]
fn run_null_denied_then_the_allowed_command_runs_and_another_is_refused() {
    let world = World::new();
    let script = r#"
const ls = new Deno.Command("ls", { args: ["data"] }).outputSync();
console.log("ls: " + new TextDecoder().decode(ls.stdout).trim());
try {
  new Deno.Command("cat", { args: ["data/x.txt"] }).outputSync();
  console.log("cat ran");
} catch (e) { console.log("cat " + e); }
"#;
    for version in DENO_VERSIONS {
        let output = world.run(version, "run.ts", script);
        assert_success(&output, version);
        assert_eq!(
            stdout_lines(&output),
            [
                "ls: x.txt".to_owned(),
                format!("cat NotCapable: run cat: {DENY_REASON} (rule default)")
            ],
            "Deno {version}"
        );
    }
    // Deno asked "may I run anything?" (null) first, and was told no.
    world
        .daemon
        .wait_for_log(&["decision", "permission=run", "value=None", "decision=deny"]);
    world.daemon.wait_for_log(&[
        "decision",
        "permission=run",
        "value=Some(\"ls\")",
        "decision=allow",
        "rule=\"ls-only\"",
    ]);
}

#[test]
fn deno_cannot_start_without_a_broker() {
    let world = World::new();
    for version in DENO_VERSIONS {
        let missing: &Path = &world.root.join("no-such.sock");
        let output = wait_with_timeout(
            world
                .deno(version, "hello.ts", "console.log('hello');\n")
                .env("DENO_PERMISSION_BROKER_PATH", missing)
                .spawn()
                .unwrap(),
            Duration::from_secs(30),
        );
        assert_eq!(output.status.code(), Some(87), "Deno {version}");
        assert!(stdout_lines(&output).is_empty());
    }
}

#[test]
fn a_deno_in_its_own_pid_namespace_is_recognised_by_its_nspid() {
    // Deno 2.9.6 sends the pid it sees (1 inside the namespace); the kernel reports the daemon
    // its pid in the daemon's namespace, and /proc/<pid>/status NSpid links the two.
    let world = World::new();
    let script = "console.log('pid ' + Deno.pid);\nconsole.log(Deno.readTextFileSync('./data/x.txt').trim());\n";
    std::fs::write(world.app.join("ns.ts"), script).unwrap();
    let inner = world.deno("2.9.6", "ns.ts", script);
    let mut cmd = wrapped("unshare", &["--pid", "--fork", "--kill-child"], &inner);
    let output = wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_success(
        &output,
        "deno in a pid namespace (needs root for unshare --pid)",
    );
    assert_eq!(stdout_lines(&output), ["pid 1", "inside"]);
    assert!(
        !world
            .daemon
            .log()
            .iter()
            .any(|l| l.contains("protocol fault")),
        "{:#?}",
        world.daemon.log()
    );
}

#[test]
fn a_users_rule_allows_root_and_not_nobody() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to run Deno as `nobody` (CI runs as root)"
    );
    let world = World::with_policy(
        |app| {
            format!(
                "version = 1\n[defaults]\nreason = \"{DENY_REASON}\"\n[[rule]]\nid = \"root-reads\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}\"]\nwhen = {{ users = [\"root\"] }}\n",
                app.display()
            )
        },
        // `nobody` must be able to connect.
        &["--socket-mode", "666"],
    );
    // `nobody` must be able to reach the script and Deno's cache.
    for dir in [&world.root, &world.app] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(world.root.join("deno-dir")).unwrap();
    std::fs::set_permissions(
        world.root.join("deno-dir"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let script = "try { console.log(Deno.readTextFileSync('./data/x.txt').trim()); } catch (e) { console.log(String(e)); }\n";
    for version in DENO_VERSIONS {
        let as_root = world.run(version, "who.ts", script);
        assert_success(&as_root, version);
        assert_eq!(stdout_lines(&as_root), ["inside"], "Deno {version} as root");

        let inner = world.deno(version, "who.ts", script);
        let setpriv = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"];
        let mut cmd = wrapped("setpriv", &setpriv, &inner);
        let as_nobody = wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
        assert_success(&as_nobody, version);
        assert_eq!(
            stdout_lines(&as_nobody),
            [format!(
                "NotCapable: read {}/data/x.txt: {DENY_REASON} (rule default)",
                world.app.display()
            )],
            "Deno {version} as nobody"
        );
    }
    world
        .daemon
        .wait_for_log(&["decision", "uid=65534", "decision=deny", "rule=\"default\""]);
    world
        .daemon
        .wait_for_log(&["decision", "uid=0", "decision=allow", "rule=\"root-reads\""]);
}

#[test]
fn a_symlink_out_of_the_allowed_tree_is_denied_under_resolve_and_allowed_under_lexical() {
    let policy = |symlinks: &'static str| {
        move |app: &Path| {
            format!(
                "version = 1\n[defaults]\nreason = \"{DENY_REASON}\"\nsymlinks = \"{symlinks}\"\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}\"]\n",
                app.display()
            )
        }
    };
    let script = r#"
const attempt = (label, f) => {
  try { console.log(label + " ok " + f()); } catch (e) { console.log(label + " " + e); }
};
attempt("through-link", () => Deno.readTextFileSync("./outlink/outside.txt").trim());
attempt("link-to-file", () => Deno.readTextFileSync("./filelink").trim());
attempt("plain", () => Deno.readTextFileSync("./data/x.txt").trim());
"#;
    // Denied, the message names the path asked for and where its link leads.
    let denied = |world: &World, label: &str, asked: &str| {
        format!(
            "{label} NotCapable: read {}/{asked} (a link to {}/outside.txt): {DENY_REASON} (rule default)",
            world.app.display(),
            world.root.display()
        )
    };
    for symlinks in ["resolve", "lexical"] {
        let world = World::with_policy(policy(symlinks), &[]);
        let (through, to_file) = match symlinks {
            "resolve" => (
                denied(&world, "through-link", "outlink/outside.txt"),
                denied(&world, "link-to-file", "filelink"),
            ),
            _ => (
                "through-link ok outside".to_owned(),
                "link-to-file ok outside".to_owned(),
            ),
        };
        std::os::unix::fs::symlink(&world.root, world.app.join("outlink")).unwrap();
        std::os::unix::fs::symlink("../outside.txt", world.app.join("filelink")).unwrap();
        for version in DENO_VERSIONS {
            let output = world.run(version, "links.ts", script);
            assert_success(&output, version);
            assert_eq!(
                stdout_lines(&output),
                [
                    through.clone(),
                    to_file.clone(),
                    "plain ok inside".to_owned()
                ],
                "symlinks = {symlinks}, Deno {version}"
            );
        }
    }
}

#[test]
fn a_long_running_deno_sees_a_policy_edit_within_a_second_and_survives_a_bad_one() {
    let base = |app: &Path, extra: &str| {
        format!(
            "version = 1\n[defaults]\nreason = \"{DENY_REASON}\"\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}\"]\n{extra}",
            app.display()
        )
    };
    for version in DENO_VERSIONS {
        let world = World::with_policy(|app| base(app, ""), &["--poll-interval", "3600"]);
        let script = r#"
while (true) {
  let line;
  try { Deno.readTextFileSync("../outside.txt"); line = "allowed"; } catch (e) { line = "denied"; }
  console.log(line);
  await new Promise((resolve) => setTimeout(resolve, 20));
}
"#;
        let mut child = world.deno(version, "watch.ts", script).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut next = || {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim().to_owned()
        };
        assert_eq!(next(), "denied", "Deno {version}");
        // Atomic rename-save of a policy that also allows the file outside the app.
        let policy = world.root.join("policy.toml");
        let outside = world.root.join("outside.txt");
        let tmp = world.root.join(".policy.toml.tmp");
        let allow_outside = format!(
            "[[rule]]\nid = \"outside\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}\"]\n",
            outside.display()
        );
        std::fs::write(&tmp, base(&world.app, &allow_outside)).unwrap();
        let edited = Instant::now();
        std::fs::rename(&tmp, &policy).unwrap();
        while next() != "allowed" {
            assert!(
                edited.elapsed() < Duration::from_secs(1),
                "Deno {version}: not allowed within 1 s of the edit"
            );
        }
        eprintln!(
            "Deno {version}: allowed {:?} after the edit",
            edited.elapsed()
        );
        // A broken edit: the running policy keeps answering.
        std::fs::write(&tmp, "version = 1\n[[rule]]\nid = \"x\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"relative/path\"]\n").unwrap();
        std::fs::rename(&tmp, &policy).unwrap();
        world.daemon.wait_for_log(&[&format!(
            "{}:6:10: path `relative/path` is relative",
            policy.display()
        )]);
        for _ in 0..10 {
            assert_eq!(
                next(),
                "allowed",
                "Deno {version} keeps the last good policy"
            );
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the same Deno process is still running"
        );
        child.kill().unwrap();
        let _ = child.wait();
    }
}

#[test]
fn suggest_turns_an_audit_run_into_a_policy_that_allows_that_run_when_enforced() {
    let script = r#"
const text = Deno.readTextFileSync("./data/x.txt").trim();
Deno.writeTextFileSync("./data/out.txt", text + "!");
const again = Deno.readTextFileSync("./data/out.txt");
const mode = Deno.env.get("APP_MODE");
const ls = new TextDecoder().decode(new Deno.Command("ls", { args: ["data"] }).outputSync().stdout).trim();
const shared = Deno.readTextFileSync("./shared-link").trim();
console.log([text, again, mode, ls.replace(/\n/g, ","), shared].join(" "));
let outside;
try { Deno.readTextFileSync("../outside.txt"); outside = "outside read"; } catch (e) { outside = String(e); }
console.log(outside);
"#;
    let audit_log = tempfile::tempdir().unwrap();
    let log = audit_log.path().join("audit.jsonl");
    let log_arg = log.to_str().unwrap().to_owned();
    let mut world = World::with_policy(
        |_| "version = 1\n[defaults]\nmode = \"audit\"\nreason = \"would be denied\"\n".to_owned(),
        &["--decision-log", &log_arg],
    );
    // Read through a link to a file outside the app: the suggestion must allow where it leads,
    // not only the link, or the enforced run is refused the file it read under audit.
    std::fs::write(world.root.join("shared.txt"), "shared\n").unwrap();
    std::os::unix::fs::symlink("../shared.txt", world.app.join("shared-link")).unwrap();
    // Audit: everything is answered allow, and recorded.
    let observed = world.run(
        "2.9.6",
        "job.ts",
        &script.replace("let outside;", "let outside = 'skipped'; if (false)"),
    );
    assert_success(&observed, "audit run");
    assert_eq!(
        stdout_lines(&observed)[0],
        "inside inside! production out.txt,x.txt shared"
    );
    assert!(common::sigterm_and_wait(&mut world.daemon).success());

    let suggested = Command::new(&*common::BROKER)
        .arg("suggest")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        suggested.status.success(),
        "{}",
        String::from_utf8_lossy(&suggested.stderr)
    );
    let policy_text = String::from_utf8(suggested.stdout).unwrap();
    assert!(
        policy_text.contains("NOT granted"),
        "run null was observed and must not be granted:\n{policy_text}"
    );
    let policy = audit_log.path().join("suggested.toml");
    std::fs::write(&policy, &policy_text).unwrap();
    let check = Command::new(&*common::BROKER)
        .arg("check")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}\n{policy_text}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Enforce the suggestion: the same run works, what it never did is refused.
    let enforcing = Daemon::start(&policy_text, &[]);
    let output = wait_with_timeout(
        world
            .deno("2.9.6", "job.ts", script)
            .env("DENO_PERMISSION_BROKER_PATH", &enforcing.socket)
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert_success(&output, "enforced run");
    assert_eq!(
        stdout_lines(&output),
        [
            "inside inside! production out.txt,x.txt shared".to_owned(),
            format!(
                "NotCapable: read {}/outside.txt: not observed during the audit; not permitted (rule default)",
                world.root.display()
            )
        ],
        "{policy_text}"
    );
}

/// What a user reads when a fetch, a listen or a directory listing is denied: the permission and
/// what was asked, then the reason, in the shape the policy gives it.
#[test]
fn a_deny_says_what_was_asked_in_the_policys_shape() {
    let world = World::with_policy(
        |app| {
            format!(
                "version = 1\n[defaults]\nreason = \"{DENY_REASON}\"\ndeny_message = \"{{permission}} access to {{value}} refused: {{reason}}\"\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}/**\"]\n",
                app.display()
            )
        },
        &[],
    );
    let script = r#"
const attempt = async (label, f) => {
  try { await f(); console.log(label + " ok"); } catch (e) { console.log(label + " " + e); }
};
await attempt("fetch", () => fetch("http://127.0.0.1:4508/x"));
await attempt("listen", () => Deno.listen({ hostname: "127.0.0.1", port: 4507 }).close());
await attempt("readDir", () => Array.from(Deno.readDirSync("/etc")));
"#;
    for version in DENO_VERSIONS {
        let output = world.run(version, "asked.ts", script);
        assert_success(&output, version);
        assert_eq!(
            stdout_lines(&output),
            [
                format!("fetch NotCapable: net access to 127.0.0.1:4508 refused: {DENY_REASON}"),
                format!("listen NotCapable: net access to 127.0.0.1:4507 refused: {DENY_REASON}"),
                format!("readDir NotCapable: read access to /etc refused: {DENY_REASON}"),
            ],
            "Deno {version}"
        );
    }
}

/// A log recorded from real Deno (relative paths, a link, env, run) replayed: under the policy
/// it was recorded with, nothing changes; under a tighter candidate, each flip is listed with
/// its rules before and after and counted.
#[test]
fn replay_re_decides_a_real_log_under_a_candidate() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.jsonl");
    let log_arg = log.to_str().unwrap().to_owned();
    let recorded = |app: &Path| {
        format!(
            "version = 1\n[defaults]\nreason = \"{DENY_REASON}\"\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{app}/**\"]\n[[rule]]\nid = \"mode\"\neffect = \"allow\"\npermissions = [\"env\"]\nnames = [\"APP_MODE\"]\n",
            app = app.display()
        )
    };
    let mut world = World::with_policy(recorded, &["--decision-log", &log_arg]);
    std::fs::create_dir_all(world.root.join("shared")).unwrap();
    std::fs::write(world.root.join("shared/s.txt"), "s\n").unwrap();
    std::os::unix::fs::symlink("../shared", world.app.join("shared-link")).unwrap();
    let script = r#"
const attempt = (label, f) => { try { f(); console.log(label + " ok"); } catch (e) { console.log(label + " denied"); } };
attempt("relative", () => Deno.readTextFileSync("./data/x.txt"));
attempt("again", () => Deno.readTextFileSync("./data/x.txt"));
attempt("link", () => Deno.readTextFileSync("./shared-link/s.txt"));
attempt("env", () => Deno.env.get("APP_MODE"));
attempt("home", () => Deno.env.get("HOME"));
"#;
    let output = world.run("2.9.6", "replayed.ts", script);
    assert_success(&output, "recorded run");
    assert_eq!(
        stdout_lines(&output),
        [
            "relative ok",
            "again ok",
            "link denied",
            "env ok",
            "home denied"
        ]
    );
    assert!(common::sigterm_and_wait(&mut world.daemon).success());
    let replay = |policy: &Path| {
        Command::new(&*common::BROKER)
            .arg("replay")
            .arg("--policy")
            .arg(policy)
            .arg(&log)
            .output()
            .unwrap()
    };
    // The policy it was recorded under: every decision is what the daemon made.
    let same = logs.path().join("same.toml");
    std::fs::write(&same, recorded(&world.app)).unwrap();
    let output = replay(&same);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(said.contains(": 0 answer(s) would change"), "{said}");
    // A candidate that denies the data directory and allows the shared tree: the two relative
    // reads flip to deny, the read through the link (decided where it led) flips to allow.
    let candidate = logs.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        recorded(&world.app)
            + &format!(
                "[[rule]]\nid = \"no-data\"\neffect = \"deny\"\npermissions = [\"read\"]\npaths = [\"{app}/data/**\"]\n[[rule]]\nid = \"shared\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{root}/shared/**\"]\n",
                app = world.app.display(),
                root = world.root.display()
            ),
    )
    .unwrap();
    let output = replay(&candidate);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{said}");
    let deno = common::deno("2.9.6").canonicalize().unwrap();
    for line in [
        ": 3 answer(s) would change".to_owned(),
        format!(
            "         2  allow → deny  read {}/data/x.txt  (rule app → no-data)",
            world.app.display()
        ),
        format!(
            "         1  deny → allow  read {app}/shared-link/s.txt (a link to {root}/shared/s.txt)  (rule default → app)",
            app = world.app.display(),
            root = world.root.display()
        ),
        "by rule (before → after):\n         2  app → no-data (allow → deny)\n         1  default → app (deny → allow)".to_owned(),
        format!("by executable:\n         3  {}", deno.display()),
    ] {
        assert!(said.contains(&line), "{line:?} in:\n{said}");
    }
    // The same candidate in audit mode answers allow to what it would deny: the two data reads
    // stay allowed; the read through the link and the denied `HOME` become allowed; and replay
    // says the candidate audits.
    let auditing = logs.path().join("auditing.toml");
    std::fs::write(
        &auditing,
        std::fs::read_to_string(&candidate).unwrap().replacen(
            "[defaults]\n",
            "[defaults]\nmode = \"audit\"\n",
            1,
        ),
    )
    .unwrap();
    let output = replay(&auditing);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("audit mode): 2 answer(s) would change")
            && said.contains("deny → allow  env HOME")
            && said.contains("note: the candidate is in AUDIT mode")
            && said.contains("deny → allow"),
        "{said}"
    );
    // A log that is not there: 64, nothing decided.
    let output = Command::new(&*common::BROKER)
        .args(["replay", "--policy"])
        .arg(&candidate)
        .arg(logs.path().join("missing.jsonl"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}
