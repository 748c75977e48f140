//! Data-driven decision tests: one policy, many one-line cases.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{
    DecidedBy, Effect, NoDirectory, Permission, Policy, Source, Subject, lexical_only,
};

const POLICY: &str = r#"
version = 1

[defaults]
decision = "deny"
reason = "not permitted by host policy"

[[rule]]
id = "app-files"
effect = "allow"
permissions = ["read", "write"]
paths = ["/srv/app", "/usr/share/zoneinfo"]

[[rule]]
id = "no-secrets"
effect = "deny"
permissions = ["read", "write"]
paths = ["/srv/app/.env", "/srv/app/keys"]
reason = "secrets are managed by the platform team"

[[rule]]
id = "no-keys-either"
effect = "deny"
permissions = ["read"]
paths = ["/srv/app/keys"]
reason = "second deny: never the reason, it comes later in the file"

[[rule]]
id = "outbound"
effect = "allow"
permissions = ["net", "import"]
hosts = ["api.example.com:443", "db.internal", "[::1]:8000", "jsr.io:443"]

[[rule]]
id = "env"
effect = "allow"
permissions = ["env"]
names = ["HOME", "TZ", "AWS_*"]

[[rule]]
id = "no-aws-secret"
effect = "deny"
permissions = ["env"]
names = ["AWS_SECRET_ACCESS_KEY"]

[[rule]]
id = "sys-all"
effect = "allow"
permissions = ["sys"]

[[rule]]
id = "tools"
effect = "allow"
permissions = ["run"]
names = ["/usr/bin/git", "/bin/echo"]

[[rule]]
id = "ffi-never"
effect = "deny"
permissions = ["ffi"]
reason = "no native code"
"#;

fn policy() -> Policy {
    match Policy::compile(&[Source::new("policy.toml", POLICY)], &NoDirectory) {
        Ok((policy, warnings)) => {
            assert!(warnings.0.is_empty(), "{warnings}");
            policy
        }
        Err(errors) => panic!("{errors}"),
    }
}

/// (permission, value, cwd, expected effect, deciding rule id or "default"/"unresolvable")
type Case = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Effect,
    &'static str,
);

const ALLOW: Effect = Effect::Allow;
const DENY: Effect = Effect::Deny;

const CASES: &[Case] = &[
    // Paths: a directory covers its subtree; deny overrides allow.
    ("read", Some("/srv/app"), None, ALLOW, "app-files"),
    (
        "read",
        Some("/srv/app/data/x.txt"),
        None,
        ALLOW,
        "app-files",
    ),
    ("write", Some("/srv/app/out.txt"), None, ALLOW, "app-files"),
    ("read", Some("/srv/application"), None, DENY, "default"),
    ("read", Some("/srv"), None, DENY, "default"),
    ("read", Some("/etc/passwd"), None, DENY, "default"),
    ("read", Some("/srv/app/.env"), None, DENY, "no-secrets"),
    (
        "read",
        Some("/srv/app/keys/a.pem"),
        None,
        DENY,
        "no-secrets",
    ),
    ("write", Some("/srv/app/.env"), None, DENY, "no-secrets"),
    (
        "read",
        Some("/usr/share/zoneinfo/Europe/Paris"),
        None,
        ALLOW,
        "app-files",
    ),
    // Lexical normalisation as Deno sends paths.
    (
        "read",
        Some("/srv//app/work/scratch.txt"),
        None,
        ALLOW,
        "app-files",
    ),
    (
        "read",
        Some("/srv/app/../etc/passwd"),
        None,
        DENY,
        "default",
    ),
    ("read", Some("/srv/app/x/../.env"), None, DENY, "no-secrets"),
    // Relative paths against the peer's working directory.
    (
        "read",
        Some("./data/x.txt"),
        Some("/srv/app"),
        ALLOW,
        "app-files",
    ),
    (
        "read",
        Some("data/x.txt"),
        Some("/srv/app"),
        ALLOW,
        "app-files",
    ),
    ("read", Some("."), Some("/srv/app"), ALLOW, "app-files"),
    (
        "read",
        Some("../outside.txt"),
        Some("/srv/app"),
        DENY,
        "default",
    ),
    (
        "read",
        Some("sub/../../app/.env"),
        Some("/srv/app"),
        DENY,
        "no-secrets",
    ),
    ("read", Some("~/foo"), Some("/srv/app"), ALLOW, "app-files"),
    (
        "read",
        Some("./data/x.txt"),
        Some("/home/user"),
        DENY,
        "default",
    ),
    ("read", Some("./data/x.txt"), None, DENY, "unresolvable"),
    (
        "write",
        Some("<TMP>"),
        Some("/srv/app"),
        DENY,
        "unresolvable",
    ),
    ("read", Some(""), Some("/srv/app"), DENY, "unresolvable"),
    // Null: an allow grants it only if unscoped; any deny of the permission denies it.
    ("read", None, None, DENY, "no-secrets"),
    ("write", None, None, DENY, "no-secrets"),
    ("env", None, None, DENY, "no-aws-secret"),
    ("sys", None, None, ALLOW, "sys-all"),
    ("sys", Some("hostname"), None, ALLOW, "sys-all"),
    ("run", None, None, DENY, "default"),
    ("net", None, None, DENY, "default"),
    ("ffi", None, None, DENY, "ffi-never"),
    (
        "ffi",
        Some("/lib/x86_64-linux-gnu/libc.so.6"),
        None,
        DENY,
        "ffi-never",
    ),
    // Hosts.
    ("net", Some("api.example.com:443"), None, ALLOW, "outbound"),
    ("net", Some("API.Example.com.:443"), None, ALLOW, "outbound"),
    ("net", Some("api.example.com:80"), None, DENY, "default"),
    ("net", Some("db.internal:5432"), None, ALLOW, "outbound"),
    ("net", Some("db.internal"), None, ALLOW, "outbound"),
    ("net", Some("x.db.internal:5432"), None, DENY, "default"),
    ("net", Some("[::1]:8000"), None, ALLOW, "outbound"),
    ("net", Some("[0::1]:8000"), None, ALLOW, "outbound"),
    ("net", Some("[::1]:8001"), None, DENY, "default"),
    ("net", Some("unix:/srv/app/x.sock"), None, DENY, "default"),
    ("net", Some("not a host"), None, DENY, "unresolvable"),
    ("import", Some("jsr.io:443"), None, ALLOW, "outbound"),
    ("import", Some("deno.land:443"), None, DENY, "default"),
    // Names.
    ("env", Some("HOME"), None, ALLOW, "env"),
    ("env", Some("home"), None, DENY, "default"),
    ("env", Some("AWS_REGION"), None, ALLOW, "env"),
    (
        "env",
        Some("AWS_SECRET_ACCESS_KEY"),
        None,
        DENY,
        "no-aws-secret",
    ),
    ("env", Some("PATH"), None, DENY, "default"),
    // By path; the bare name is whatever the script's PATH finds.
    ("run", Some("git"), None, DENY, "default"),
    ("run", Some("/usr/bin/git"), None, ALLOW, "tools"),
    ("run", Some("/bin/echo"), None, ALLOW, "tools"),
    // A command with a `/` is a path; without a working directory it cannot be placed.
    (
        "run",
        Some("./sub/../script.sh"),
        None,
        DENY,
        "unresolvable",
    ),
];

fn decided_by(policy: &Policy, d: DecidedBy) -> &str {
    match d {
        DecidedBy::Rule(i) => &policy.rule(i).id,
        DecidedBy::Default => "default",
        DecidedBy::Unresolvable => "unresolvable",
    }
}

#[test]
fn table() {
    let policy = policy();
    let mut failures = Vec::new();
    for &(permission, value, cwd, effect, rule) in CASES {
        let permission: Permission = permission.parse().unwrap();
        let subject = Subject {
            pid: 4242,
            uid: Some(1000),
            gid: Some(1000),
            cwd,
            ..Subject::default()
        };
        let d = policy.decide(permission, value, &subject, &mut lexical_only);
        let by = decided_by(&policy, d.decided_by);
        if d.effect != effect || by != rule {
            failures.push(format!(
                "{permission} {value:?} (cwd {cwd:?}): expected {effect} by {rule}, got {} by {by}",
                d.effect
            ));
        }
        assert_eq!(
            d.reason.is_some(),
            d.effect == Effect::Deny,
            "reason only on deny"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reasons() {
    let policy = policy();
    let subject = Subject {
        pid: 4242,
        cwd: Some("/srv/app"),
        ..Subject::default()
    };
    let reason = |p: &str, v: Option<&str>| {
        policy
            .decide(p.parse().unwrap(), v, &subject, &mut lexical_only)
            .reason
            .map(|r| r.into_owned())
    };
    assert_eq!(
        reason("read", Some("/etc/passwd")).as_deref(),
        Some("not permitted by host policy")
    );
    assert_eq!(
        reason("read", Some("keys/a.pem")).as_deref(),
        Some("secrets are managed by the platform team"),
        "the first applicable deny in file order gives the reason"
    );
    assert_eq!(
        reason("env", Some("AWS_SECRET_ACCESS_KEY")).as_deref(),
        Some("not permitted by host policy"),
        "a deny rule without a reason uses the default reason"
    );
    let unknown_cwd = Subject {
        pid: 77,
        ..Subject::default()
    };
    let r = policy
        .decide(Permission::Read, Some("x"), &unknown_cwd, &mut lexical_only)
        .reason
        .unwrap();
    assert!(
        r.contains("relative path `x`") && r.contains("process 77"),
        "{r}"
    );
}

#[test]
fn every_real_deno_value_gets_a_decision_without_panicking() {
    let policy = policy();
    let frames = include_str!("../../protocol/tests/data/frames-2.9.6.jsonl");
    let subject = Subject {
        pid: 1,
        cwd: Some("/srv/app/work"),
        ..Subject::default()
    };
    let mut allowed = 0;
    for line in frames.lines() {
        let request = permission_broker_protocol::parse_request(line.as_bytes()).unwrap();
        let d = policy.decide(
            request.permission,
            request.value.as_deref(),
            &subject,
            &mut lexical_only,
        );
        if d.effect == Effect::Allow {
            allowed += 1;
        }
    }
    assert!(
        allowed > 100,
        "the app's own files and HOME are allowed ({allowed})"
    );
}

#[test]
fn default_allow_and_default_reason() {
    let (policy, _) = Policy::compile(
        &[Source::new(
            "p.toml",
            "version = 1\n[defaults]\ndecision = \"allow\"\n[[rule]]\nid = \"x\"\neffect = \"deny\"\npermissions = [\"run\"]\n",
        )],
        &NoDirectory,
    )
    .unwrap();
    let s = Subject::default();
    assert_eq!(
        policy
            .decide(Permission::Read, Some("/etc"), &s, &mut lexical_only)
            .effect,
        Effect::Allow
    );
    let d = policy.decide(Permission::Run, Some("ls"), &s, &mut lexical_only);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reason.as_deref(),
        Some(permission_broker_policy::DEFAULT_REASON)
    );
}

#[test]
fn deny_all_is_fail_closed() {
    let policy = Policy::deny_all("no policy loaded");
    for p in Permission::ALL {
        let d = policy.decide(p, None, &Subject::default(), &mut lexical_only);
        assert_eq!(
            (d.effect, d.reason.as_deref()),
            (Effect::Deny, Some("no policy loaded"))
        );
    }
}
