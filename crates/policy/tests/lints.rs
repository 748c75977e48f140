//! Lint warnings, case by case: each policy gives exactly the warnings listed (by their
//! `file:line:column: warning: message` prefix and phrases the message must contain).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{NoDirectory, Policy, Source};

/// The warnings `p.toml` compiles with (it must compile).
fn warnings(text: &str) -> Vec<String> {
    match Policy::compile(&[Source::new("p.toml", text)], &NoDirectory) {
        Ok((_, diagnostics)) => diagnostics.warnings().map(|w| w.to_string()).collect(),
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// One rule `r` as `p.toml` (its `[[rule]]` on line 2, `hosts` on line 6, its first entry at
/// column 10).
fn rule(effect: &str, permissions: &str, hosts: Option<&str>) -> String {
    let mut text = format!(
        "version = 1\n[[rule]]\nid = \"r\"\neffect = \"{effect}\"\npermissions = {permissions}\n"
    );
    if let Some(hosts) = hosts {
        text += &format!("hosts = {hosts}\n");
    }
    text
}

/// A deny rule on `net`/`import` with only addresses and networks in `hosts`: (policy, the
/// warning's prefix, phrases its message must contain, phrases it must not).
type Case = (String, &'static str, Vec<&'static str>, Vec<&'static str>);

fn address_only_cases() -> Vec<Case> {
    const PREFIX: &str = "p.toml:6:10: warning: deny rule `r` lists only IP addresses in `hosts`";
    vec![
        (
            rule("deny", r#"["net"]"#, Some(r#"["169.254.169.254"]"#)),
            PREFIX,
            vec![
                "never resolves host names",
                "`169.254.169.254.nip.io`",
                "`metadata.google.internal`",
                "default deny",
            ],
            vec!["`localhost`"],
        ),
        (
            rule("deny", r#"["net"]"#, Some(r#"["127.0.0.0/8"]"#)),
            PREFIX,
            vec![
                "`127.0.0.1.nip.io`",
                "deny names too (`localhost`, `*.localhost`)",
                "default deny",
            ],
            vec!["metadata.google.internal"],
        ),
        (
            rule("deny", r#"["import"]"#, Some(r#"["[::1]"]"#)),
            PREFIX,
            vec!["`--1.sslip.io`", "`localhost`"],
            vec!["metadata.google.internal"],
        ),
        // inet_aton's shorthand is an address too.
        (
            rule("deny", r#"["net"]"#, Some(r#"["127.1:8080"]"#)),
            PREFIX,
            vec!["`localhost`"],
            vec![],
        ),
        // `0.0.0.0` connects to the local host.
        (
            rule("deny", r#"["net"]"#, Some(r#"["0.0.0.0"]"#)),
            PREFIX,
            vec!["`0.0.0.0.nip.io`", "`localhost`"],
            vec!["metadata.google.internal"],
        ),
        // A network that holds the metadata address, and one that holds everything.
        (
            rule("deny", r#"["net"]"#, Some(r#"["169.254.0.0/16"]"#)),
            PREFIX,
            vec!["`169.254.0.1.nip.io`", "`metadata.google.internal`"],
            vec!["`localhost`"],
        ),
        (
            rule("deny", r#"["net"]"#, Some(r#"["0.0.0.0/0"]"#)),
            PREFIX,
            vec!["`localhost`", "`metadata.google.internal`"],
            vec![],
        ),
        // No well-known name: the names that point there, and the default deny.
        (
            rule(
                "deny",
                r#"["net", "import"]"#,
                Some(r#"["10.0.0.0/8", "[2001:db8::]/32"]"#),
            ),
            PREFIX,
            vec!["`10.0.0.1.nip.io`", "names that point at", "default deny"],
            vec!["`localhost`", "metadata.google.internal"],
        ),
        // A Unix socket is not a host name: the addresses are still all there is.
        (
            rule(
                "deny",
                r#"["net"]"#,
                Some(r#"["unix:/run/app.sock", "127.0.0.1"]"#),
            ),
            "p.toml:6:32: warning: deny rule `r` lists only IP addresses in `hosts`",
            vec!["`localhost`"],
            vec![],
        ),
    ]
}

#[test]
fn a_deny_rule_with_only_addresses_is_warned_about() {
    for (text, prefix, contains, lacks) in address_only_cases() {
        let warnings = warnings(&text);
        assert_eq!(warnings.len(), 1, "{text}\n{warnings:#?}");
        let warning = &warnings[0];
        assert!(warning.starts_with(prefix), "{text}\n{warning}");
        for phrase in contains {
            assert!(
                warning.contains(phrase),
                "{phrase:?} missing:\n{text}\n{warning}"
            );
        }
        for phrase in lacks {
            assert!(
                !warning.contains(phrase),
                "{phrase:?} present:\n{text}\n{warning}"
            );
        }
    }
}

#[test]
fn rules_that_name_hosts_or_allow_are_not_warned_about() {
    let cases = [
        // A name next to the addresses: the author thought of names.
        rule(
            "deny",
            r#"["net"]"#,
            Some(r#"["169.254.169.254", "metadata.google.internal"]"#),
        ),
        rule(
            "deny",
            r#"["net"]"#,
            Some(r#"["127.0.0.0/8", "*.localhost"]"#),
        ),
        rule("deny", r#"["net"]"#, Some(r#"["[::1]:8080", "localhost"]"#)),
        // Only names, or only Unix sockets.
        rule("deny", r#"["net"]"#, Some(r#"["example.com"]"#)),
        rule("deny", r#"["net"]"#, Some(r#"["unix:/run/docker.sock"]"#)),
        // Unscoped: every host, names included.
        rule("deny", r#"["net"]"#, None),
        // An allow rule on addresses grants no name either, which is what it says.
        rule(
            "allow",
            r#"["net"]"#,
            Some(r#"["127.0.0.1", "10.0.0.0/8"]"#),
        ),
        rule("allow", r#"["import"]"#, Some(r#"["[::1]"]"#)),
    ];
    for text in cases {
        let warnings = warnings(&text);
        assert!(warnings.is_empty(), "{text}\n{warnings:#?}");
    }
}

/// Each rule is judged on its own: a name in another deny rule does not silence the warning.
#[test]
fn each_rule_is_judged_on_its_own() {
    let text = r#"version = 1
[[rule]]
id = "metadata-names"
effect = "deny"
permissions = ["net"]
hosts = ["metadata.google.internal"]
[[rule]]
id = "metadata"
effect = "deny"
permissions = ["net"]
hosts = ["169.254.169.254:80"]
"#;
    let warnings = warnings(text);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(
            "p.toml:11:10: warning: deny rule `metadata` lists only IP addresses in `hosts`"
        ),
        "{warnings:#?}"
    );
}
