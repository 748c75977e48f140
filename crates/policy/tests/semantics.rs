//! The semantics of policy-v1, one small table per concern. A case is one line:
//! (permission, value, subject, expected verdict, deciding rule).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{
    DecidedBy, Effect, Mode, Permission, Policy, Source, Subject, lexical_only, run_cases,
};
use std::collections::HashMap;

mod common;

use common::{A, D, by, compile, directory, table};

#[test]
fn globs_in_paths() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "app"
effect = "allow"
permissions = ["read", "write"]
paths = ["/srv/app", "/home/*/public", "/usr/share/zoneinfo/**"]
[[rule]]
id = "pem"
effect = "deny"
permissions = ["read", "write"]
paths = ["/srv/app/**/*.pem", "/srv/app/.env", "/srv/app/{tmp,cache}/secret?"]
"#,
    );
    let s = Subject {
        cwd: Some("/srv/app/work"),
        ..Subject::default()
    };
    table(
        &policy,
        &s,
        &[
            ("read", Some("/srv/app/work/scratch.txt"), A, "app"),
            ("read", Some("/srv//app/work/scratch.txt"), A, "app"),
            ("read", Some("./scratch.txt"), A, "app"),
            ("read", Some("/srv/app/keys/server.pem"), D, "pem"),
            ("read", Some("/srv/app/server.pem"), D, "pem"),
            ("read", Some("../server.pem"), D, "pem"),
            ("read", Some("/srv/app/server.pem.txt"), A, "app"),
            ("write", Some("/srv/app/.env"), D, "pem"),
            ("read", Some("/srv/app/tmp/secret1"), D, "pem"),
            ("read", Some("/srv/app/tmp/secret12"), A, "app"),
            ("read", Some("/srv/app/logs/secret1"), A, "app"),
            ("read", Some("/home/ann/public/index.html"), A, "app"),
            ("read", Some("/home/ann/private/public"), D, "default"),
            ("read", Some("/usr/share/zoneinfo/Europe/Paris"), A, "app"),
            // A trailing `/**` covers its base too, as every path covers itself.
            ("read", Some("/usr/share/zoneinfo"), A, "app"),
            ("read", Some("../x_outside.txt"), A, "app"),
            ("read", Some("../../x_outside.txt"), D, "default"),
            ("read", None, D, "pem"),
        ],
    );
}

/// No glob token but `**` crosses `/`: not a negated class, not a range that spans `/` in ASCII
/// (`.-0` is 0x2E-0x30), not `?` or `*`, in an allow rule or in a deny rule.
#[test]
fn character_classes_never_match_a_separator() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "classes"
effect = "allow"
permissions = ["read"]
paths = [
  "/srv/report[!_]final", "/srv/r[^_]x", "/srv/dot[.-0]y", "/srv/any[ -~]z", "/srv/q?w", "/srv/s*t",
  "/srv/b[!]]c", "/srv/m[!a-]n", "/srv/n[!-0]o", "/srv/{p[!_]q,alt}", "/srv/e[!.-0]f",
]
[[rule]]
id = "data"
effect = "allow"
permissions = ["read"]
paths = ["/data"]
[[rule]]
id = "no-a-b"
effect = "deny"
permissions = ["read"]
paths = ["/data/a[!_]b", "/data/c[.-0]d"]
"#,
    );
    let s = Subject::default();
    table(
        &policy,
        &s,
        &[
            ("read", Some("/srv/report/final"), D, "default"),
            ("read", Some("/srv/report/final/x"), D, "default"),
            ("read", Some("/srv/reportxfinal"), A, "classes"),
            ("read", Some("/srv/reportxfinal/sub/x"), A, "classes"),
            ("read", Some("/srv/report_final"), D, "default"),
            ("read", Some("/srv/r/x"), D, "default"),
            ("read", Some("/srv/r-x"), A, "classes"),
            ("read", Some("/srv/r_x"), D, "default"),
            ("read", Some("/srv/dot/y"), D, "default"),
            ("read", Some("/srv/dot.y"), A, "classes"),
            ("read", Some("/srv/dot0y"), A, "classes"),
            ("read", Some("/srv/dot1y"), D, "default"),
            ("read", Some("/srv/any/z"), D, "default"),
            ("read", Some("/srv/any z"), A, "classes"),
            ("read", Some("/srv/any~z"), A, "classes"),
            ("read", Some("/srv/any-z"), A, "classes"),
            ("read", Some("/srv/any]z"), A, "classes"),
            ("read", Some("/srv/q/w"), D, "default"),
            ("read", Some("/srv/qxw"), A, "classes"),
            ("read", Some("/srv/s/t"), D, "default"),
            ("read", Some("/srv/s/x/t"), D, "default"),
            ("read", Some("/srv/st"), A, "classes"),
            ("read", Some("/srv/sxyt"), A, "classes"),
            ("read", Some("/srv/b/c"), D, "default"),
            ("read", Some("/srv/b]c"), D, "default"),
            ("read", Some("/srv/bxc"), A, "classes"),
            ("read", Some("/srv/m/n"), D, "default"),
            ("read", Some("/srv/m-n"), D, "default"),
            ("read", Some("/srv/man"), D, "default"),
            ("read", Some("/srv/mxn"), A, "classes"),
            ("read", Some("/srv/n/o"), D, "default"),
            ("read", Some("/srv/n-o"), D, "default"),
            ("read", Some("/srv/nxo"), A, "classes"),
            ("read", Some("/srv/p/q"), D, "default"),
            ("read", Some("/srv/pxq"), A, "classes"),
            ("read", Some("/srv/alt"), A, "classes"),
            ("read", Some("/srv/e/f"), D, "default"),
            ("read", Some("/srv/exf"), A, "classes"),
            // A deny means what it says too: `/data/a/b` is not `a`, one character, `b`.
            ("read", Some("/data/a/b"), A, "data"),
            ("read", Some("/data/a/b/x"), A, "data"),
            ("read", Some("/data/a-b"), D, "no-a-b"),
            ("read", Some("/data/a_b"), A, "data"),
            ("read", Some("/data/c/d"), A, "data"),
            ("read", Some("/data/c.d"), D, "no-a-b"),
        ],
    );
}

#[test]
fn hosts_every_form() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "out"
effect = "allow"
permissions = ["net", "import"]
hosts = [
  "api.example.com:443", "*.internal.example.com", "10.0.0.0/8:5432", "[::1]:8000-8100",
  "jsr.io:443", "Bücher.invalid", "[fd00::]/8", "unix:/srv/app/sockets", "localhost",
]
[[rule]]
id = "no-meta"
effect = "deny"
permissions = ["net"]
hosts = ["10.255.0.0/16", "evil.internal.example.com"]
"#,
    );
    let s = Subject {
        cwd: Some("/srv/app"),
        ..Subject::default()
    };
    table(
        &policy,
        &s,
        &[
            ("net", Some("api.example.com:443"), A, "out"),
            ("net", Some("api.example.com:80"), D, "default"),
            ("net", Some("API.EXAMPLE.COM.:443"), A, "out"),
            ("net", Some("db.internal.example.com:5432"), A, "out"),
            ("net", Some("a.b.internal.example.com:1"), A, "out"),
            ("net", Some("internal.example.com:443"), D, "default"),
            ("net", Some("evil.internal.example.com:443"), D, "no-meta"),
            ("net", Some("10.1.2.3:5432"), A, "out"),
            ("net", Some("10.1.2.3:5433"), D, "default"),
            ("net", Some("10.255.255.53:5432"), D, "no-meta"),
            ("net", Some("[::ffff:10.1.2.3]:5432"), A, "out"),
            ("net", Some("[::1]:8000"), A, "out"),
            ("net", Some("[::1]:8100"), A, "out"),
            ("net", Some("[::1]:59999"), D, "default"),
            ("net", Some("[fd12::5]:22"), A, "out"),
            ("net", Some("xn--bcher-kva.invalid:59999"), A, "out"),
            ("net", Some("localhost:80"), A, "out"),
            ("net", Some("localhost"), A, "out"),
            ("net", Some("127.0.0.1:9"), D, "default"),
            ("net", Some("0.0.0.0:0"), D, "default"),
            ("net", Some("unix:/srv/app/sockets/db.sock"), A, "out"),
            ("net", Some("unix:./sockets/db.sock"), A, "out"),
            (
                "net",
                Some("unix:/srv/app/work/nonexistent.sock"),
                D,
                "default",
            ),
            ("net", Some("example.com:notaport"), D, "unresolvable"),
            ("import", Some("jsr.io:443"), A, "out"),
            ("import", Some("deno.land:443"), D, "default"),
            ("net", None, D, "no-meta"),
            ("import", None, D, "default"),
        ],
    );
}

#[test]
fn names_and_run_null() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "env"
effect = "allow"
permissions = ["env"]
names = ["HOME", "TZ", "AWS_*", "MARKER_*"]
[[rule]]
id = "sys"
effect = "allow"
permissions = ["sys"]
names = ["*"]
[[rule]]
id = "tools"
effect = "allow"
permissions = ["run"]
names = ["ls", "/bin/echo"]
trusts_path = true
"#,
    );
    table(
        &policy,
        &Subject::default(),
        &[
            ("env", Some("HOME"), A, "env"),
            ("env", Some("MARKER_sys_loadavg"), A, "env"),
            ("env", Some("AWS_"), A, "env"),
            ("env", Some("PATH"), D, "default"),
            ("env", None, D, "default"),
            ("sys", Some("hostname"), A, "sys"),
            ("sys", Some("networkInterfaces"), A, "sys"),
            ("sys", None, D, "default"),
            ("run", None, D, "default"),
            ("run", Some("ls"), A, "tools"),
            ("run", Some("/bin/echo"), A, "tools"),
            ("run", Some("/usr/bin/ls"), D, "default"),
            // A command with a `/` is a path; without a working directory it cannot be placed.
            ("run", Some("./sub/../script.sh"), D, "unresolvable"),
        ],
    );
}

/// A `run` value that contains `/` is a path to an executable: normalised before it is matched,
/// so `..` cannot walk out of an allowed directory; a relative one is refused.
#[test]
fn run_values_with_a_slash_are_paths() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "bin"
effect = "allow"
permissions = ["run"]
names = ["/usr/bin/*", "ls"]
trusts_path = true
"#,
    );
    let subject = Subject {
        cwd: Some("/srv/app"),
        ..Subject::default()
    };
    table(
        &policy,
        &subject,
        &[
            ("run", Some("/usr/bin/git"), A, "bin"),
            ("run", Some("/usr/bin/./git"), A, "bin"),
            ("run", Some("/usr/bin//git"), A, "bin"),
            ("run", Some("/usr/bin/../../tmp/evil.sh"), D, "default"),
            ("run", Some("/usr/bin/.."), D, "default"),
            // Relative commands run from the spawn's `cwd`, which Deno does not send.
            ("run", Some("../../usr/bin/git"), D, "unresolvable"),
            ("run", Some("./evil"), D, "unresolvable"),
            (
                "run",
                Some("../../usr/bin/../../tmp/evil"),
                D,
                "unresolvable",
            ),
            ("run", Some("ls"), A, "bin"),
            ("run", Some("sub/ls"), D, "unresolvable"),
        ],
    );
}

#[test]
fn subjects_fail_closed_both_ways() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "reports-write"
effect = "allow"
permissions = ["write"]
paths = ["/var/lib/reports"]
when = { users = ["reports"], units = ["reports.service"] }
[[rule]]
id = "wheel-read"
effect = "allow"
permissions = ["read"]
paths = ["/etc"]
when = { groups = ["wheel"] }
[[rule]]
id = "deno-only"
effect = "allow"
permissions = ["env"]
when = { executables = ["/usr/bin/deno"] }
[[rule]]
id = "no-root-net"
effect = "deny"
permissions = ["net"]
when = { uids = [0] }
reason = "root may not open connections"
[[rule]]
id = "net"
effect = "allow"
permissions = ["net"]
"#,
    );
    // Names as the deciding host gives them for these ids.
    let wheel = ["wheel".to_owned()];
    let reports = Subject {
        uid: Some(1500),
        gid: Some(1500),
        groups: Some(&[]),
        user: Some("reports"),
        group: Some("reports"),
        group_names: Some(&[]),
        exe: Some("/usr/bin/deno"),
        unit: Some("reports.service"),
        ..Subject::default()
    };
    table(
        &policy,
        &reports,
        &[
            ("write", Some("/var/lib/reports/x.csv"), A, "reports-write"),
            ("read", Some("/etc/hosts"), D, "default"),
            ("env", Some("X"), A, "deno-only"),
            ("env", None, A, "deno-only"),
            ("net", Some("example.com:443"), A, "net"),
        ],
    );
    let other_unit = Subject {
        unit: Some("shell.scope"),
        ..reports
    };
    table(
        &policy,
        &other_unit,
        &[("write", Some("/var/lib/reports/x.csv"), D, "default")],
    );
    let no_unit_known = Subject {
        unit: None,
        ..reports
    };
    table(
        &policy,
        &no_unit_known,
        &[("write", Some("/var/lib/reports/x.csv"), D, "default")],
    );
    let wheel_supplementary = Subject {
        groups: Some(&[10]),
        group_names: Some(&wheel),
        ..reports
    };
    table(
        &policy,
        &wheel_supplementary,
        &[("read", Some("/etc/hosts"), A, "wheel-read")],
    );
    let wheel_primary = Subject {
        gid: Some(10),
        groups: None,
        group: Some("wheel"),
        group_names: None,
        ..reports
    };
    table(
        &policy,
        &wheel_primary,
        &[("read", Some("/etc/hosts"), A, "wheel-read")],
    );
    let groups_unknown = Subject {
        groups: None,
        group_names: None,
        ..reports
    };
    table(
        &policy,
        &groups_unknown,
        &[("read", Some("/etc/hosts"), D, "default")],
    );
    let other_exe = Subject {
        exe: Some("/tmp/deno"),
        ..reports
    };
    table(&policy, &other_exe, &[("env", Some("X"), D, "default")]);
    let root = Subject {
        uid: Some(0),
        ..reports
    };
    table(
        &policy,
        &root,
        &[("net", Some("example.com:443"), D, "no-root-net")],
    );
    // The uid could not be read: the deny rule that needs it applies.
    let unknown_uid = Subject {
        uid: None,
        user: None,
        ..reports
    };
    table(
        &policy,
        &unknown_uid,
        &[
            ("net", Some("example.com:443"), D, "no-root-net"),
            ("write", Some("/var/lib/reports/x.csv"), D, "default"),
        ],
    );
}

#[test]
fn symlinks_resolve_and_lexical() {
    let rules = r#"
[[rule]]
id = "app"
effect = "allow"
permissions = ["read", "write"]
paths = ["/srv/app", "/srv/shared"]
[[rule]]
id = "no-keys"
effect = "deny"
permissions = ["read"]
paths = ["/srv/shared/keys"]
reason = "keys"
"#;
    let links: HashMap<&str, &str> = HashMap::from([
        ("/srv/app/etc-link/passwd", "/etc/passwd"),
        ("/srv/app/shared", "/srv/shared"),
        ("/srv/app/keys", "/srv/shared/keys"),
        ("/srv/app/new-through-link/x", "/etc/x"),
    ]);
    let mut resolve = |p: &str| {
        Ok(links
            .get(p)
            .map_or_else(|| p.to_owned(), |t| (*t).to_owned()))
    };
    let s = Subject::default();
    let resolving = compile(&format!(
        "version = 1\n[defaults]\nsymlinks = \"resolve\"\n{rules}"
    ));
    let lexical = compile(&format!(
        "version = 1\n[defaults]\nsymlinks = \"lexical\"\n{rules}"
    ));
    let cases: &[(&str, &str, Effect, &str, Effect, &str)] = &[
        ("read", "/srv/app/etc-link/passwd", D, "default", A, "app"),
        ("read", "/srv/app/shared", A, "app", A, "app"),
        ("read", "/srv/app/keys", D, "no-keys", A, "app"),
        (
            "write",
            "/srv/app/new-through-link/x",
            D,
            "default",
            A,
            "app",
        ),
        ("read", "/srv/app/plain.txt", A, "app", A, "app"),
    ];
    for &(p, v, re, rr, le, lr) in cases {
        let p: Permission = p.parse().unwrap();
        let d = resolving.decide(p, Some(v), &s, &mut resolve);
        assert_eq!(
            (d.effect, by(&resolving, d.decided_by).as_str()),
            (re, rr),
            "resolve {v}"
        );
        let d = lexical.decide(p, Some(v), &s, &mut resolve);
        assert_eq!(
            (d.effect, by(&lexical, d.decided_by).as_str()),
            (le, lr),
            "lexical {v}"
        );
    }
    let mut broken = |_: &str| Err("permission denied".to_owned());
    let d = resolving.decide(Permission::Read, Some("/srv/app/x"), &s, &mut broken);
    assert_eq!(d.decided_by, DecidedBy::Unresolvable);
    assert!(
        d.reason
            .unwrap()
            .contains("cannot resolve symlinks in `/srv/app/x`: permission denied")
    );
    // Null and non-path permissions never consult the resolver.
    assert_eq!(
        resolving
            .decide(Permission::Env, Some("HOME"), &s, &mut broken)
            .decided_by,
        DecidedBy::Default
    );
}

#[test]
fn audit_mode_is_a_verdict_plus_a_mode() {
    let policy =
        compile("version = 1\n[defaults]\nmode = \"audit\"\nreason = \"would be denied\"\n");
    assert_eq!(policy.mode(), Mode::Audit);
    let d = policy.decide(
        Permission::Read,
        Some("/etc/shadow"),
        &Subject::default(),
        &mut lexical_only,
    );
    assert_eq!(
        (d.effect, d.reason.as_deref()),
        (D, Some("would be denied")),
        "the verdict is kept for the record"
    );
    assert_eq!(
        policy.answer(Permission::Read, Some("/etc/shadow"), &d),
        A,
        "audit answers allow"
    );
    let run_null = policy.decide(
        Permission::Run,
        None,
        &Subject::default(),
        &mut lexical_only,
    );
    assert_eq!(
        policy.answer(Permission::Run, None, &run_null),
        D,
        "so that Deno names the command"
    );
    let run_ls = policy.decide(
        Permission::Run,
        Some("ls"),
        &Subject::default(),
        &mut lexical_only,
    );
    assert_eq!(policy.answer(Permission::Run, Some("ls"), &run_ls), A);
    let enforcing = compile("version = 1\n");
    let verdict = enforcing.decide(
        Permission::Run,
        None,
        &Subject::default(),
        &mut lexical_only,
    );
    assert_eq!(
        enforcing.answer(Permission::Run, None, &verdict),
        verdict.effect,
        "enforce answers the verdict"
    );
}

#[test]
fn explain_shows_every_applicable_rule_and_both_paths() {
    let policy = compile(
        r#"version = 1
[[rule]]
id = "app"
effect = "allow"
permissions = ["read"]
paths = ["/srv/app"]
[[rule]]
id = "everything"
effect = "allow"
permissions = ["read"]
[[rule]]
id = "etc"
effect = "deny"
permissions = ["read"]
paths = ["/etc"]
"#,
    );
    let s = Subject {
        cwd: Some("/srv/app"),
        ..Subject::default()
    };
    let mut resolve = |p: &str| {
        Ok(if p == "/srv/app/link" {
            "/etc/passwd".to_owned()
        } else {
            p.to_owned()
        })
    };
    let e = policy.explain(Permission::Read, Some("./link"), &s, &mut resolve);
    assert_eq!(e.decision.effect, D);
    assert_eq!(e.normalized.as_deref(), Some("/srv/app/link"));
    assert_eq!(e.resolved.as_deref(), Some("/etc/passwd"));
    let ids: Vec<&str> = e
        .applicable
        .iter()
        .map(|i| policy.rule(*i).id.as_str())
        .collect();
    assert_eq!(ids, ["app", "everything", "etc"]);
}

#[test]
fn case_files_pass_and_fail_with_locations() {
    let policy = compile(
        "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\nwhen = { users = [\"app\"] }\n",
    );
    let cases = Source::new(
        "cases.toml",
        r#"[[case]]
name = "app reads tmp"
permission = "read"
value = "/tmp/x"
user = "app"
expect = "allow"
rule = "tmp"

[[case]]
name = "wrong expectation"
permission = "read"
value = "/tmp/x"
uid = 1
expect = "allow"

[[case]]
name = "reason and default"
permission = "read"
expect = "deny"
rule = "default"
reason = "not permitted by the permission broker policy"
"#,
    );
    let report = run_cases(&policy, &cases, &directory()).unwrap();
    assert_eq!((report.passed(), report.failed()), (2, 1));
    let failed = report.outcomes.iter().find(|o| !o.passed).unwrap();
    assert_eq!(failed.location, "cases.toml:9:1");
    assert_eq!(
        (failed.expected.as_str(), failed.actual.as_str()),
        ("allow", "deny by `default`")
    );
    // A malformed value is denied as unresolvable whatever the rules say: a case passes on that
    // only if it says so, or a typo would pass for the wrong reason.
    let malformed = Source::new(
        "malformed.toml",
        r#"[[case]]
name = "a typo denied for the wrong reason"
permission = "net"
value = "exa mple.com:443"
expect = "deny"

[[case]]
name = "knowingly unresolvable"
permission = "net"
value = "exa mple.com:443"
expect = "deny"
rule = "unresolvable"
"#,
    );
    let report = run_cases(&policy, &malformed, &directory()).unwrap();
    assert_eq!((report.passed(), report.failed()), (1, 1));
    let failed = report.outcomes.iter().find(|o| !o.passed).unwrap();
    assert_eq!(failed.name, "a typo denied for the wrong reason");
    assert!(
        failed
            .actual
            .starts_with("deny by `unresolvable` (\"denied: cannot interpret"),
        "{}",
        failed.actual
    );
    let bad = Source::new(
        "bad.toml",
        "[[case]]\nname = \"x\"\npermission = \"reed\"\nexpect = \"allow\"\n",
    );
    let err = run_cases(&policy, &bad, &directory())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("bad.toml:3:14: unknown variant `reed`"),
        "{err}"
    );
}

#[test]
fn lints() {
    let text = r#"version = 1
[[rule]]
id = "no-env"
effect = "deny"
permissions = ["env"]
[[rule]]
id = "env"
effect = "allow"
permissions = ["env"]
names = ["HOME", "HOME"]
[[rule]]
id = "sys"
effect = "allow"
permissions = ["sys"]
names = ["hostnme"]
[[rule]]
id = "proc"
effect = "allow"
permissions = ["read"]
paths = ["/proc/self"]
[[rule]]
id = "odd-subject"
effect = "allow"
permissions = ["net"]
when = { uids = [1], users = ["root"] }
[[rule]]
id = "secrets"
effect = "deny"
permissions = ["read"]
paths = ["/srv/app/secrets"]
[[rule]]
id = "secret-subdir"
effect = "allow"
permissions = ["read"]
paths = ["/srv/app/secrets/public"]
[[rule]]
id = "fine"
effect = "allow"
permissions = ["read"]
paths = ["/srv/app"]
"#;
    let (_, diagnostics) = Policy::compile(&[Source::new("p.toml", text)], &directory()).unwrap();
    let warnings: Vec<String> = diagnostics.warnings().map(|w| w.to_string()).collect();
    let expected = [
        "p.toml:6:1: warning: allow rule `env` never allows anything: everything it grants is denied by `no-env` (p.toml:2)",
        "p.toml:10:18: warning: `HOME` is listed twice in `names`",
        "p.toml:15:10: warning: `hostnme` is not a sys kind Deno asks about",
        "p.toml:16:1: warning: rule `proc` can never take effect",
        "p.toml:25:17: warning: rule `odd-subject` can never apply: no uid in `uids` is one of its `users`",
        "p.toml:31:1: warning: allow rule `secret-subdir` never allows anything: everything it grants is denied by `secrets` (p.toml:26)",
    ];
    for e in expected {
        assert!(
            warnings.iter().any(|w| w.starts_with(e)),
            "missing {e:?} in {warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
}
