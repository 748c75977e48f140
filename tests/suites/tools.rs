//! The security team's tools on the real binary: `check`, `test`, `explain`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::BROKER;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
fn check_accepts_every_shipped_policy_and_rejects_a_bad_one() {
    for policy in ["laptop.toml", "fleet"] {
        let output = run(&["check".as_ref(), config(policy).as_os_str()]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{policy}: {}",
            text(&output.stderr)
        );
        assert!(
            !text(&output.stderr).contains("warning"),
            "{policy}: {}",
            text(&output.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[[rule]]\nid = \"a\"\neffect = \"permit\"\npermissions = [\"read\"]\npaths = [\"rel\"]\n\n[[rule]]\nid = \"b\"\neffect = \"allow\"\npermissions = [\"net\"]\nhosts = [\"10.0.0.1/8\"]\n",
    )
    .unwrap();
    let output = run(&["check".as_ref(), bad.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let file = bad.display();
    for expected in [
        format!("{file}:4:10: unknown effect `permit` (expected `allow` or `deny`)"),
        format!("{file}:6:10: path `rel` is relative: policy paths must be absolute"),
        format!("{file}:12:10: `10.0.0.1/8` has host bits set; the network is `10.0.0.0/8`"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\nnot in:\n{stderr}");
    }
}

#[test]
fn shipped_case_files_pass() {
    for (policy, cases, count) in [
        ("laptop.toml", "tests/laptop.toml", 14),
        ("fleet", "tests/fleet.toml", 18),
        ("laptop.toml", "tests/laptop-secrets.toml", 20),
        ("fleet", "tests/fleet-secrets.toml", 11),
    ] {
        let output = run(&[
            "test".as_ref(),
            config(policy).as_os_str(),
            config(cases).as_os_str(),
        ]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{policy}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), format!("{count} passed, 0 failed\n"));
    }
}

#[test]
fn a_failing_case_shows_expected_and_actual() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"ok\"\npermission = \"env\"\nvalue = \"HOME\"\nexpect = \"allow\"\n\n[[case]]\nname = \"wishful\"\npermission = \"run\"\nvalue = \"curl\"\nexpect = \"allow\"\nrule = \"tools\"\n",
    )
    .unwrap();
    let output = run(&[
        "test".as_ref(),
        config("laptop.toml").as_os_str(),
        cases.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stdout),
        format!(
            "{}:7:1: case `wishful` failed: expected allow by `tools`, got deny by `default`\n1 passed, 1 failed\n",
            cases.display()
        )
    );
}

#[test]
fn explain_shows_the_decision_its_rule_and_the_resolved_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("secret")).unwrap();
    std::os::unix::fs::symlink(root.join("secret"), root.join("app/link")).unwrap();
    let policy = root.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{0}/app\"]\n[[rule]]\nid = \"all-reads\"\neffect = \"allow\"\npermissions = [\"read\"]\nwhen = {{ uids = [4242] }}\n",
            root.display()
        ),
    )
    .unwrap();
    let explain = |extra: &[&str]| {
        let mut cmd = Command::new(&*BROKER);
        cmd.arg("explain").arg("--policy").arg(&policy).args([
            "--permission",
            "read",
            "--value",
            "./link/x",
        ]);
        cmd.arg("--cwd").arg(root.join("app")).args(extra);
        cmd.output().unwrap()
    };
    let output = explain(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let root = root.display();
    for line in [
        "decision:   deny".to_owned(),
        "decided by: the default decision (no rule applied)".to_owned(),
        format!("normalized: {root}/app/link/x"),
        format!("resolved:   {root}/secret/x (symlinks followed; both paths must pass)"),
        // The link's target decided, and the rules are listed per path (issue 18: "decided by
        // the default" beside an applicable allow rule, without a word of why, misled).
        format!(
            "applicable to the path as written:\n  allow `app` ({}:2)",
            policy.display()
        ),
        "applicable to where the link leads: none".to_owned(),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in:\n{stdout}");
    }
    let output = explain(&["--lexical"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stdout).contains("decided by: rule `app`"),
        "{}",
        text(&output.stdout)
    );
    let output = explain(&["--uid", "4242"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a subject the second rule covers"
    );
    assert!(
        text(&output.stdout).contains("allow `all-reads`"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn the_readme_example_policy_serves_and_says_how_to_point_deno_at_it() {
    // README, first command: `serve --policy config/laptop.toml` (here on a temporary socket).
    let daemon =
        common::Daemon::start_in(tempfile::tempdir().unwrap(), &config("laptop.toml"), &[]);
    let ready = daemon.ready_line();
    assert!(
        ready.contains(&format!(
            "DENO_PERMISSION_BROKER_PATH={} deno run app.ts",
            daemon.socket.display()
        )),
        "{ready}"
    );
    let mut asker = common::Asker::open(&daemon);
    assert!(asker.allowed("/tmp/project/x.txt"), "the laptop workspace");
    assert!(!asker.allowed("/root/.ssh/id_ed25519"), "no-secrets");
    assert!(!asker.allowed("/etc/shadow"), "default deny");
}

/// A value that holds a line break cannot forge a line of `explain`'s output, and a reader that
/// goes away (`| head -1`) is not a panic.
#[test]
fn explain_escapes_what_it_prints_and_survives_a_closed_pipe() {
    let forged = "/srv/x\ndecision:   allow\u{202e}";
    let out = run(&[
        "explain".as_ref(),
        "--policy".as_ref(),
        config("laptop.toml").as_os_str(),
        "--permission".as_ref(),
        "read".as_ref(),
        "--value".as_ref(),
        forged.as_ref(),
        "--lexical".as_ref(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("decision:"))
            .count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains(r"request:    read /srv/x\u{a}decision:   allow\u{202e}"),
        "{stdout}"
    );
    let mut child = Command::new(&*BROKER)
        .args([
            "explain",
            "--permission",
            "read",
            "--value",
            "/etc/hosts",
            "--policy",
        ])
        .arg(config("laptop.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// The README's exit code table, as `(command, code)` rows.
fn readme_exit_codes() -> Vec<(String, i32)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let table = readme
        .split("### Exit codes")
        .nth(1)
        .expect("README has an exit code table");
    table
        .lines()
        .skip_while(|l| !l.starts_with("| command | code |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                cells[2].parse().unwrap(),
            )
        })
        .collect()
}

/// Runs the broker with `args` and returns its exit code.
fn code_of(args: &[&str]) -> Option<i32> {
    Command::new(&*BROKER)
        .args(args)
        .output()
        .unwrap()
        .status
        .code()
}

#[test]
fn every_exit_code_in_the_readme_table_is_what_the_command_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let laptop = config("laptop.toml").display().to_string();
    std::fs::write(
        path("policy.toml"),
        "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp/**\"]\n",
    )
    .unwrap();
    std::fs::write(path("broken.toml"), "version = 1\n[[rule]]\nid = 3\n").unwrap();
    std::fs::write(path("deny-all.toml"), "version = 1\n").unwrap();
    let case = |allowed: &str| {
        format!(
            "[[case]]\nname = \"tmp\"\npermission = \"read\"\nvalue = \"/tmp/x\"\nexpect = \"{allowed}\"\n"
        )
    };
    std::fs::write(path("pass.cases.toml"), case("allow")).unwrap();
    std::fs::write(path("fail.cases.toml"), case("deny")).unwrap();
    std::fs::write(
        path("decisions.jsonl"),
        r#"{"kind":"decision","time":"2026-12-01T10:00:00Z","conn":1,"pid":9,"uid":0,"gid":0,"id":1,"permission":"read","value":"/tmp/x","decision":"allow","answered":"allow","mode":"audit","rule":"tmp","revision":"r"}"#.to_owned() + "\n",
    )
    .unwrap();
    let status = path("status.json");
    let daemon = common::Daemon::start_in(
        tempfile::tempdir().unwrap(),
        Path::new(&path("policy.toml")),
        &["--status-file", &status],
    );
    let socket = daemon.socket.display().to_string();
    let (policy, broken) = (path("policy.toml"), path("broken.toml"));
    let explain = |value: &'static str| {
        let policy = policy.clone();
        move |extra: &[&str]| {
            let mut args = vec!["explain", "--policy", &policy, "--permission", "read"];
            args.extend(["--value", value]);
            args.extend(extra);
            code_of(&args)
        }
    };
    let (explain_tmp, explain_etc) = (explain("/tmp/x"), explain("/etc/passwd"));
    let stopped_by_sigterm = || {
        let mut d = common::Daemon::start_in(tempfile::tempdir().unwrap(), Path::new(&policy), &[]);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        d.child.wait().unwrap().code()
    };
    // Each row of the table, and what makes the command exit with it.
    let cases: Vec<((&str, i32), Option<i32>)> = vec![
        (
            ("any", 0),
            code_of(&["--version"]).max(code_of(&["check", "--help"])),
        ),
        (("any", 64), code_of(&["serve", "--socket-mode", "abc"])),
        (("serve", 0), stopped_by_sigterm()),
        (
            ("serve", 64),
            code_of(&["serve", "--socket", &path("a.sock"), "--policy", &broken]),
        ),
        (
            ("serve", 69),
            code_of(&["serve", "--socket", &policy, "--policy", &policy]),
        ),
        (("check", 0), code_of(&["check", &laptop])),
        (("check", 1), code_of(&["check", &broken])),
        (
            ("test", 0),
            code_of(&["test", &policy, &path("pass.cases.toml")]),
        ),
        (
            ("test", 1),
            code_of(&["test", &policy, &path("fail.cases.toml")]),
        ),
        (
            ("test", 64),
            code_of(&["test", &policy, &path("missing.cases.toml")]),
        ),
        (("explain", 0), explain_tmp(&[])),
        (("explain", 1), explain_etc(&[])),
        (
            ("explain", 64),
            explain_tmp(&["--user", "no-such-user-here"]),
        ),
        (
            ("suggest", 0),
            code_of(&["suggest", &path("decisions.jsonl")]),
        ),
        (("suggest", 74), {
            let full = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            Command::new(&*BROKER)
                .args(["suggest", &path("decisions.jsonl")])
                .stdout(full)
                .status()
                .unwrap()
                .code()
        }),
        (
            ("suggest", 64),
            code_of(&["suggest", &path("missing.jsonl")]),
        ),
        (
            ("reload", 64),
            code_of(&["reload", "--status-file", &status, "--policy", &broken]),
        ),
        (
            ("replay", 0),
            code_of(&["replay", "--policy", &policy, &path("decisions.jsonl")]),
        ),
        (
            ("replay", 1),
            code_of(&[
                "replay",
                "--policy",
                &path("deny-all.toml"),
                &path("decisions.jsonl"),
            ]),
        ),
        (
            ("replay", 64),
            code_of(&["replay", "--policy", &policy, &path("missing.jsonl")]),
        ),
        (
            ("ask", 0),
            code_of(&["ask", "--socket", &socket, "read", "/tmp/x"]),
        ),
        (
            ("ask", 1),
            code_of(&["ask", "--socket", &socket, "read", "/etc/passwd"]),
        ),
        (
            ("ask", 87),
            code_of(&["ask", "--socket", &path("none.sock"), "read", "/tmp/x"]),
        ),
    ];
    // Held by `systemctl_reload_succeeds_only_when_the_checked_revision_serves` and
    // `reload_believes_only_the_running_daemons_own_status_file` (tests/suites/systemd.rs),
    // which play a running daemon's status file through each outcome.
    let elsewhere = [("reload", 0), ("reload", 1), ("reload", 69), ("reload", 75)];
    for ((command, expected), got) in &cases {
        assert_eq!(got, &Some(*expected), "{command} exiting {expected}");
    }
    let mut tested: Vec<(String, i32)> = cases
        .iter()
        .map(|((c, n), _)| ((*c).to_owned(), *n))
        .chain(elsewhere.iter().map(|(c, n)| ((*c).to_owned(), *n)))
        .collect();
    let mut documented = readme_exit_codes();
    tested.sort();
    documented.sort();
    assert_eq!(
        documented, tested,
        "the README's table and this test list different rows"
    );
}

/// `check` on a policy file of `policy`: its output, and the file's path as messages name it.
fn check_text(policy: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, policy).unwrap();
    (
        run(&["check".as_ref(), path.as_os_str()]),
        path.display().to_string(),
    )
}

#[test]
fn check_says_when_a_policy_is_in_audit_mode() {
    let (output, _) = check_text("version = 1\n[defaults]\nmode = \"audit\"\n");
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stderr).contains("this policy is in AUDIT mode"),
        "{}",
        text(&output.stderr)
    );
    let enforcing = run(&["check".as_ref(), config("laptop.toml").as_os_str()]);
    assert!(!text(&enforcing.stderr).contains("AUDIT"));
}

#[test]
fn a_bad_deny_message_is_an_error_at_its_place() {
    let (output, policy) =
        check_text("version = 1\n[defaults]\ndeny_message = \"{permission} {who}: {reason}\"\n");
    assert_eq!(output.status.code(), Some(1));
    let expected = format!("{policy}:3:16: deny_message: unknown placeholder `{{who}}`");
    assert!(
        text(&output.stderr).contains(&expected),
        "{}",
        text(&output.stderr)
    );
}

/// A link allowed where it is written and denied where it leads: explain says in words that the
/// link's target decided, and which rules apply to which path.
#[test]
fn explain_says_when_a_links_target_decided() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("other")).unwrap();
    std::fs::write(root.join("other/real.txt"), "x").unwrap();
    std::os::unix::fs::symlink("../other/real.txt", root.join("app/link")).unwrap();
    let policy = root.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"{}/app/**\"]\n",
            root.display()
        ),
    )
    .unwrap();
    let link = root.join("app/link");
    let output = run(&[
        "explain".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--permission".as_ref(),
        "read".as_ref(),
        "--value".as_ref(),
        link.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stdout);
    for line in [
        format!(
            "decided by: the default decision (no rule applied), for where the link leads ({}/other/real.txt)",
            root.display()
        ),
        "because:    the path as written is a link; it alone would be allowed by rule `app`"
            .to_owned(),
        "applicable to the path as written:\n  allow `app`".to_owned(),
        "applicable to where the link leads: none".to_owned(),
    ] {
        assert!(said.contains(&line), "{line:?} in:\n{said}");
    }
    // A plain path in the tree: no word about links.
    let plain = run(&[
        "explain".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--permission".as_ref(),
        "read".as_ref(),
        "--value".as_ref(),
        root.join("app/x").as_os_str(),
    ]);
    assert_eq!(plain.status.code(), Some(0));
    assert!(
        !text(&plain.stdout).contains("link"),
        "{}",
        text(&plain.stdout)
    );
}

/// Runs `test` on the laptop policy with a case file of `file`, expecting it refused (64) with
/// each of `located` (`line:column: message`, after the file's path) on stderr; returns stderr.
fn refused_cases(file: &str, located: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("bad.cases.toml");
    std::fs::write(&cases, file).unwrap();
    let output = run(&[
        "test".as_ref(),
        config("laptop.toml").as_os_str(),
        cases.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(64));
    let said = text(&output.stderr);
    for line in located {
        let line = format!("{}:{line}", cases.display());
        assert!(said.contains(&line), "{line:?} in:\n{said}");
    }
    said
}

#[test]
fn every_mistake_in_a_case_file_is_reported_in_one_run() {
    let said = refused_cases(
        "[[case]]\nname = \"a\"\npermission = \"reed\"\nexpect = \"allow\"\n\n[[case]]\nname = \"b\"\npermission = \"read\"\nexpect = \"maybe\"\n\n[[case]]\nname = \"c\"\npermision = \"read\"\nexpect = \"deny\"\n",
        &[
            "3:14: unknown variant `reed`",
            "9:10: unknown variant `maybe`",
            "13:1: unknown field `permision`",
        ],
    );
    assert!(!said.contains("passed"), "no case runs: {said}");
}

/// A policy file's bytes quoted in an error cannot forge a line (of the log, of `STATUS=`) or draw
/// on the terminal of whoever runs `check`: they are shown escaped.
#[test]
fn an_error_quoting_a_hostile_file_is_one_escaped_line() {
    let (output, _) = check_text(
        "version = 1\n[[rule]]\nid = \"r\"\neffect = \"\\u001b[1A\\u001b[2K\\r\\nSTATUS=policy x (1 rules)\\nok\"\npermissions = [\"read\"]\n",
    );
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stderr);
    assert!(!said.contains('\u{1b}') && !said.contains('\r'), "{said:?}");
    assert_eq!(said.trim_end().lines().count(), 1, "{said:?}");
    assert!(
        said.contains("\\u{1b}[1A") && said.contains("\\u{a}STATUS="),
        "{said:?}"
    );
}

#[test]
fn a_case_naming_an_unknown_user_or_another_uid_is_refused() {
    refused_cases(
        "[[case]]\nname = \"a\"\npermission = \"read\"\nvalue = \"/tmp/x\"\nuser = \"no-such-user-here\"\nexpect = \"deny\"\n\n[[case]]\nname = \"b\"\npermission = \"read\"\nvalue = \"/tmp/x\"\nuser = \"root\"\nuid = 65534\nexpect = \"deny\"\n",
        &[
            "5:8: no user `no-such-user-here` in the accounts",
            "12:8: user `root` is uid 0 in the accounts, not uid 65534",
        ],
    );
}
