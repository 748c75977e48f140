//! Every load error is `file:line:column: message`, and one run reports every error it can.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{NoDirectory, Policy, Source};

/// Compiles `text` as `p.toml` and returns its error lines.
fn errors(text: &str) -> Vec<String> {
    match Policy::compile(&[Source::new("p.toml", text)], &NoDirectory) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.errors().map(|d| d.to_string()).collect(),
    }
}

fn rule(body: &str) -> String {
    format!("version = 1\n[[rule]]\n{body}\n")
}

fn rule_with(extra: &str) -> String {
    rule(&format!("id = \"a\"\neffect = \"allow\"\n{extra}"))
}

/// Every load error the compiler can give: (policy, expected `file:line:column: message` prefix,
/// the phrase docs/policy.md documents it by).
fn catalogue() -> Vec<(String, &'static str, &'static str)> {
    vec![
        (
            "version = 2\n".into(),
            "p.toml:1:11: unsupported policy version `2`",
            "unsupported policy version",
        ),
        (
            "version = \"1\"\n".into(),
            "p.toml:1:11: `version` must be the integer 1",
            "must be the integer 1",
        ),
        (
            "[defaults]\n".into(),
            "p.toml:1:1: missing `version = 1` at the top of the file",
            "missing `version = 1`",
        ),
        (
            "version = 1\nverison = 1\n".into(),
            "p.toml:2:1: unknown key `verison` (expected `version`, `requires`, `defaults` or `rule`)",
            "unknown key",
        ),
        (
            "version = 1\nrequires = \">= 999\"\n".into(),
            "p.toml:2:12: this policy requires permission-broker >=999; this is ",
            "requires permission-broker",
        ),
        (
            "version = 1\nrequires = \"soon\"\n".into(),
            "p.toml:2:12: `requires = \"soon\"` is not a version requirement",
            "is not a version requirement",
        ),
        (
            "version = 1\nrequires = 2\n".into(),
            "p.toml:2:12: `requires` must be a version requirement as a string",
            "must be a version requirement as a string",
        ),
        (
            "version = 1\nrule = 3\n".into(),
            "p.toml:2:8: `rule` must be an array of tables",
            "must be an array of tables",
        ),
        (
            "version = \n".into(),
            "p.toml:1:11: string values must be quoted",
            "TOML syntax",
        ),
        (
            "version = 1\n[defaults]\ndecision = \"maybe\"\n".into(),
            "p.toml:3:12: unknown decision `maybe` (expected `deny` or `allow`)",
            "unknown decision",
        ),
        (
            "version = 1\n[defaults]\nmode = \"observe\"\n".into(),
            "p.toml:3:8: unknown mode `observe` (expected `enforce` or `audit`)",
            "unknown mode",
        ),
        (
            "version = 1\n[defaults]\nsymlinks = \"follow\"\n".into(),
            "p.toml:3:12: unknown symlinks `follow` (expected `resolve` or `lexical`)",
            "unknown symlinks",
        ),
        (
            "version = 1\n[defaults]\nmood = \"deny\"\n".into(),
            "p.toml:3:1: unknown field `mood`",
            "unknown field",
        ),
        (
            "version = 1\n[[rule]]\nid = \"a\"\n".into(),
            "p.toml:2:1: missing field `effect`",
            "missing field",
        ),
        (
            rule("id = \"a\"\neffect = \"alow\"\npermissions = [\"read\"]"),
            "p.toml:4:10: unknown effect `alow` (expected `allow` or `deny`)",
            "unknown effect",
        ),
        (
            rule("id = \"a b\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `a b` may contain only ASCII letters, digits, `.`, `_` and `-`",
            "may contain only ASCII letters",
        ),
        (
            // A trailing zero-width space: the same id to a reader.
            rule("id = \"app\\u200b\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `app\\u{200b}` may contain only ASCII letters, digits, `.`, `_` and `-` (found \\u{200b})",
            "may contain only ASCII letters",
        ),
        (
            // A right-to-left override that reverses how the rest of a log line reads.
            rule("id = \"x\\u202Eyfnob\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `x\\u{202e}yfnob` may contain only ASCII letters",
            "may contain only ASCII letters",
        ),
        (
            rule("id = \"default\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `default` is reserved: the decision log uses it for what no rule decided",
            "is reserved",
        ),
        (
            rule("id = \"unresolvable\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `unresolvable` is reserved",
            "is reserved",
        ),
        (
            // The metrics' label for rules past their limit: a rule of that name would be a
            // second series with the same labels, and Prometheus would keep one.
            rule("id = \"other\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `other` is reserved: the metrics count the rules past their label limit under it",
            "is reserved",
        ),
        (
            rule_with("permissions = [\"reed\"]"),
            "p.toml:5:16: unknown permission `reed`",
            "unknown permission",
        ),
        (
            rule_with("permissions = []"),
            "p.toml:5:15: `permissions` is empty",
            "`permissions` is empty",
        ),
        (
            rule_with("permissions = [\"*\", \"read\"]"),
            "p.toml:5:16: `*` stands for every permission",
            "`*` stands for every permission",
        ),
        (
            rule_with("permissions = [\"read\"]\npaths = [\"srv/app\"]"),
            "p.toml:6:10: path `srv/app` is relative",
            "is relative",
        ),
        (
            rule_with("permissions = [\"read\"]\npaths = [\"/srv/[a\"]"),
            "p.toml:6:10: invalid glob `/srv/[a`",
            "invalid glob",
        ),
        (
            rule_with("permissions = [\"read\"]\npaths = [\"/srv/a[/]b\"]"),
            "p.toml:6:10: invalid glob `/srv/a[/]b`: character class `[/]` names `/`",
            "invalid glob",
        ),
        (
            rule_with("permissions = [\"read\"]\npaths = []"),
            "p.toml:6:9: `paths` is empty",
            "`paths` is empty",
        ),
        (
            rule_with("permissions = [\"read\"]\nhosts = [\"x:1\"]"),
            "p.toml:6:9: `hosts` does not fit this rule's permissions (read)",
            "does not fit this rule's permissions",
        ),
        (
            rule_with("permissions = [\"read\", \"net\"]\npaths = [\"/x\"]"),
            "p.toml:5:15: permission `net` needs `hosts`",
            "needs `hosts`",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"x:99999\"]"),
            "p.toml:6:10: port `99999` is not a number from 0 to 65535",
            "is not a number from 0 to 65535",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"x:90-80\"]"),
            "p.toml:6:10: port range `90-80` is empty",
            "port range",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"10.0.0.1/8\"]"),
            "p.toml:6:10: `10.0.0.1/8` has host bits set; the network is `10.0.0.0/8`",
            "has host bits set",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"10.0.0.0/40\"]"),
            "p.toml:6:10: prefix length `/40` is not 0 to 32",
            "prefix length",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"a.*.com\"]"),
            "p.toml:6:10: `a.*.com`: `*` may only stand as the first label",
            "may only stand as the first label",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"*\"]"),
            "p.toml:6:10: `*` alone is not a host",
            "`*` alone is not a host",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"unix:x.sock\"]"),
            "p.toml:6:10: `unix:x.sock`: a Unix socket path in a policy must be absolute",
            "Unix socket path in a policy must be absolute",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"bad host\"]"),
            "p.toml:6:10: host `bad host` contains ` `",
            "contains",
        ),
        (
            rule_with("permissions = [\"net\"]\nhosts = [\"[nope]:1\"]"),
            "p.toml:6:10: `nope` is not an IPv6 address",
            "is not an IPv6 address",
        ),
        (
            rule_with("permissions = [\"env\"]\nnames = [\"A*B\"]"),
            "p.toml:6:10: `*` may only end a name",
            "`*` may only end a name",
        ),
        (
            rule_with("permissions = [\"env\"]\nnames = [\"\"]"),
            "p.toml:6:10: empty name",
            "empty name",
        ),
        (
            rule_with("permissions = [\"run\"]\nnames = [\"git\"]"),
            "p.toml:6:10: `git` is a bare command name: Deno runs whichever `git` the script's PATH finds",
            "is a bare command name",
        ),
        (
            rule_with("permissions = [\"env\"]\nnames = [\"HOME\"]\ntrusts_path = true"),
            "p.toml:7:15: `trusts_path` is only for rules with the `run` permission",
            "`trusts_path` is only for rules with",
        ),
        (
            rule_with("permissions = [\"env\"]\nwhen = {}"),
            "p.toml:6:8: `when` is empty",
            "`when` is empty",
        ),
        (
            rule_with("permissions = [\"env\"]\nwhen = { uids = [] }"),
            "p.toml:6:17: `uids` is empty",
            "is empty: the rule could never apply",
        ),
        (
            rule_with("permissions = [\"env\"]\nwhen = { uids = [-1] }"),
            "p.toml:6:18: invalid value",
            "invalid value",
        ),
        (
            rule_with("permissions = [\"env\"]\nwhen = { executables = [\"deno\"] }"),
            "p.toml:6:25: executable `deno` must be an absolute path",
            "must be an absolute path",
        ),
        (
            rule_with("permissions = [\"env\"]\nwhen = { units = [\"a b\"] }"),
            "p.toml:6:19: `a b` is not a systemd unit name",
            "is not a systemd unit name",
        ),
        (
            rule_with("permissions = [\"env\"]\nwhen = { pids = [1] }"),
            "p.toml:6:10: unknown field `pids`",
            "unknown field",
        ),
    ]
}

#[test]
fn every_documented_error_is_located_and_documented() {
    let docs = include_str!("../../../docs/policy.md");
    for (text, expected, phrase) in catalogue() {
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "expected an error starting with {expected:?}, got {errors:#?}\nfor:\n{text}"
        );
        for e in &errors {
            let mut parts = e.splitn(4, ':');
            let (file, line, column) = (parts.next(), parts.next(), parts.next());
            assert_eq!(file, Some("p.toml"), "{e}");
            assert!(
                line.and_then(|l| l.parse::<usize>().ok())
                    .is_some_and(|l| l >= 1),
                "{e}"
            );
            assert!(
                column
                    .and_then(|c| c.parse::<usize>().ok())
                    .is_some_and(|c| c >= 1),
                "{e}"
            );
        }
        assert!(
            docs.contains(phrase),
            "docs/policy.md does not document {phrase:?}"
        );
    }
}

/// A class can never match `/` (only `**` crosses it), so one that names `/` is a mistake; and
/// normalising the path would split its text at the `/`. Refused wherever the `/` sits.
#[test]
fn a_class_that_names_a_separator_is_refused() {
    for (glob, class) in [
        ("/srv/a[/]b", "[/]"),
        ("/srv/a[!/]b", "[!/]"),
        ("/srv/a[^/]b", "[^/]"),
        ("/srv/a[x/y]b", "[x/y]"),
        ("/srv/a[--/]b", "[--/]"),
        ("/srv/a[/-9]b", "[/-9]"),
        ("/srv/a[]/]b", "[]/]"),
        ("/srv/a[/./]b", "[/./]"),
        ("/srv/[a/../b]", "[a/../b]"),
        ("/srv/{x,a[/]b}", "[/]"),
        ("/srv/ok[!_]/a[/]b", "[/]"),
    ] {
        let text = rule_with(&format!("permissions = [\"read\"]\npaths = [{glob:?}]"));
        let expected = format!(
            "p.toml:6:10: invalid glob `{glob}`: character class `{class}` names `/`, which no class matches"
        );
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.starts_with(&expected)),
            "expected {expected:?}, got {errors:#?}"
        );
    }
    // An escaped `[` opens no class; honest classes load.
    for glob in [
        "/srv/\\[/x]",
        "/srv/a[!_]b",
        "/srv/a[.-0]b",
        "/srv/a[ -~]b",
        "/srv/a[!]]b",
    ] {
        let text = rule_with(&format!("permissions = [\"read\"]\npaths = [{glob:?}]"));
        let compiled = Policy::compile(&[Source::new("p.toml", text.clone())], &NoDirectory);
        assert!(
            compiled.is_ok(),
            "{glob}: {:?}",
            compiled.err().map(|e| e.to_string())
        );
    }
}

#[test]
fn one_run_reports_every_semantic_error() {
    let text = r#"version = 1
[[rule]]
id = "a"
effect = "allow"
permissions = ["reed"]

[[rule]]
id = "a"
effect = "deny"
permissions = ["read"]
paths = ["relative"]

[[rule]]
id = "b"
effect = "maybe"
permissions = ["net"]
hosts = ["bad host"]
"#;
    let errors = errors(text);
    let expected = [
        "p.toml:5:16: unknown permission `reed`",
        "p.toml:8:6: duplicate rule id `a` (first defined at p.toml:3:6)",
        "p.toml:11:10: path `relative` is relative",
        "p.toml:15:10: unknown effect `maybe`",
        "p.toml:17:10: host `bad host` contains ` `",
    ];
    for e in expected {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn errors_across_files_name_each_file() {
    let a = Source::new(
        "10-base.toml",
        "version = 1\n[defaults]\ndecision = \"deny\"\n[[rule]]\nid = \"x\"\neffect = \"allow\"\npermissions = [\"sys\"]\n",
    );
    let b = Source::new(
        "20-team.toml",
        "version = 1\n[defaults]\ndecision = \"allow\"\n[[rule]]\nid = \"x\"\neffect = \"allow\"\npermissions = [\"env\"]\n",
    );
    let errors: Vec<String> = Policy::compile(&[a, b], &NoDirectory)
        .unwrap_err()
        .errors()
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "20-team.toml:2:2: `[defaults]` is set again (first set at 10-base.toml:2:2)"
        )),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with(
            "20-team.toml:5:6: duplicate rule id `x` (first defined at 10-base.toml:5:6)"
        )),
        "{errors:#?}"
    );
}

/// A fleet policy names accounts this host (or CI) does not have: a warning, not an error; the
/// names are matched where the request is decided.
#[test]
fn unknown_accounts_are_warnings() {
    let text = format!(
        "{}\n[[rule]]\nid = \"b\"\neffect = \"allow\"\npermissions = [\"env\"]\nwhen = {{ groups = [\"no-group\"] }}\n",
        rule(
            "id = \"a\"\neffect = \"allow\"\npermissions = [\"env\"]\nwhen = { users = [\"nobody-here\"] }"
        )
    );
    let (_, warnings) = Policy::compile(&[Source::new("p.toml", text)], &NoDirectory).unwrap();
    let warnings: Vec<String> = warnings.warnings().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("p.toml:6:19: warning: unknown user `nobody-here` on this host")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("warning: unknown group `no-group` on this host")),
        "{warnings:#?}"
    );
}

#[test]
fn warnings_do_not_stop_a_load() {
    let text = rule(
        "id = \"a\"\neffect = \"allow\"\npermissions = [\"env\", \"env\"]\nreason = \"never sent\"",
    );
    let (_, warnings) = Policy::compile(&[Source::new("p.toml", text)], &NoDirectory).unwrap();
    let warnings: Vec<String> = warnings.warnings().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("p.toml:5:23: warning: permission `env` is listed twice")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w
                .starts_with("p.toml:6:10: warning: rule `a` allows: its reason is never sent")),
        "{warnings:#?}"
    );
}

#[test]
fn large_files_keep_rule_order_and_locate_errors_in_every_part() {
    // Above 4,096 rules, rules are deserialised on several threads; nothing may change for it.
    let rule = |i: usize| {
        format!(
            "[[rule]]\nid = \"r{i}\"\neffect = \"allow\"\npermissions = [\"env\"]\nnames = [\"V{i}\"]\n"
        )
    };
    let good: String = std::iter::once("version = 1\n".to_owned())
        .chain((0..10_000).map(rule))
        .collect();
    let (policy, _) =
        Policy::compile(&[Source::new("big.toml", good.clone())], &NoDirectory).unwrap();
    assert!(
        policy
            .rules()
            .iter()
            .enumerate()
            .all(|(i, r)| r.id == format!("r{i}")),
        "file order kept"
    );
    // Break rule 9,000 (last part) and rule 10 (first part).
    let bad = good
        .replace(
            "effect = \"allow\"\npermissions = [\"env\"]\nnames = [\"V9000\"]",
            "effect = \"allow\"\npermissions = [\"nev\"]\nnames = [\"V9000\"]",
        )
        .replace("id = \"r10\"\n", "id = \"r11\"\n");
    let errors = errors_named("big.toml", &bad);
    let line_of = |needle: &str| bad[..bad.find(needle).unwrap()].matches('\n').count() + 1;
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "big.toml:{}:16: unknown permission `nev`",
            line_of("[\"nev\"]")
        ))),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("duplicate rule id `r11`")),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
}

fn errors_named(name: &str, text: &str) -> Vec<String> {
    match Policy::compile(&[Source::new(name, text)], &NoDirectory) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.errors().map(|d| d.to_string()).collect(),
    }
}

/// A policy rolled out ahead of the binaries: served by the brokers it names, refused by others.
#[test]
fn requires_admits_the_running_broker_and_refuses_an_older_one() {
    let this = permission_broker_policy::BROKER_VERSION;
    for ok in [format!("={this}"), format!(">= {this}"), "*".to_owned()] {
        let text = format!("version = 1\nrequires = \"{ok}\"\n");
        assert!(
            Policy::compile(&[Source::new("p.toml", &text)], &NoDirectory).is_ok(),
            "{text}"
        );
    }
    let newer = format!(">{this}");
    let errors = errors(&format!("version = 1\nrequires = \"{newer}\"\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("upgrade the broker before this policy"),
        "{errors:?}"
    );
}
