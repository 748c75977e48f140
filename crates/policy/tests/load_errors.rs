//! Every load error is `file:line:column: message`, and one run reports every error it can.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{Policy, Source};

/// Compiles `text` as `p.toml` and returns its error lines.
fn errors(text: &str) -> Vec<String> {
    match Policy::compile(&[Source::new("p.toml", text)]) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.errors().map(|d| d.to_string()).collect(),
    }
}

fn rule(body: &str) -> String {
    format!("version = 1\n[[rule]]\n{body}\n")
}

#[test]
fn each_error_is_located_and_quotes_the_text() {
    let cases: &[(&str, &str)] = &[
        (
            "version = 2\n",
            "p.toml:1:11: unsupported policy version `2`",
        ),
        ("[defaults]\n", "p.toml:1:1: missing field `version`"),
        (
            "version = 1\nverison = 1\n",
            "p.toml:2:1: unknown field `verison`",
        ),
        (
            "version = 1\n[defaults]\ndecision = \"maybe\"\n",
            "p.toml:3:12: unknown decision `maybe`",
        ),
        (
            "version = 1\n[defaults]\nmood = \"deny\"\n",
            "p.toml:3:1: unknown field `mood`",
        ),
        (
            "version = 1\n[[rule]]\nid = \"a\"\n",
            "p.toml:2:1: missing field `effect`",
        ),
        ("version = \n", "p.toml:1:11:"),
        (
            &rule("id = \"a\"\neffect = \"alow\"\npermissions = [\"read\"]"),
            "p.toml:4:10: unknown effect `alow`",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = [\"reed\"]"),
            "p.toml:5:16: unknown permission `reed`",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = []"),
            "p.toml:5:15: `permissions` is empty",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = [\"*\", \"read\"]"),
            "p.toml:5:16: `*` stands for every permission",
        ),
        (
            &rule(
                "id = \"a\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"srv/app\"]",
            ),
            "p.toml:6:10: path `srv/app` is relative",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = []"),
            "p.toml:6:9: `paths` is empty",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = [\"read\"]\nhosts = [\"x:1\"]"),
            "p.toml:6:9: `hosts` does not fit this rule's permissions (read)",
        ),
        (
            &rule(
                "id = \"a\"\neffect = \"allow\"\npermissions = [\"read\", \"net\"]\npaths = [\"/x\"]",
            ),
            "p.toml:5:15: permission `net` needs `hosts`",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = [\"net\"]\nhosts = [\"x:99999\"]"),
            "p.toml:6:10: port `99999` is not a number",
        ),
        (
            &rule("id = \"a\"\neffect = \"allow\"\npermissions = [\"env\"]\nnames = [\"A*B\"]"),
            "p.toml:6:10: `*` may only end a name",
        ),
        (
            &rule("id = \"\"\neffect = \"allow\"\npermissions = [\"env\"]"),
            "p.toml:3:6: rule id `` must be non-empty",
        ),
        (
            &rule(
                "id = \"a\"\neffect = \"allow\"\npermissions = [\"env\"]\nwhen = { users = [\"x\"] }",
            ),
            "p.toml:6:1: unknown field `when`",
        ),
    ];
    for (text, expected) in cases {
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "expected an error starting with {expected:?}, got {errors:#?}\nfor:\n{text}"
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
    let errors: Vec<String> = Policy::compile(&[a, b])
        .unwrap_err()
        .errors()
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "20-team.toml:3:12: `[defaults]` is set again (first set at 10-base.toml:3:12)"
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

#[test]
fn warnings_do_not_stop_a_load() {
    let text = rule(
        "id = \"a\"\neffect = \"allow\"\npermissions = [\"env\", \"env\"]\nreason = \"never sent\"",
    );
    let (_, warnings) = Policy::compile(&[Source::new("p.toml", text)]).unwrap();
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
