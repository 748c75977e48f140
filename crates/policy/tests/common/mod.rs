//! What the data-driven policy tests share: a compiled policy from TOML text, and a table of
//! `(permission, value, expected verdict, deciding rule)` cases checked for one subject.

#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_policy::{
    DecidedBy, Effect, Policy, Source, StaticDirectory, Subject, lexical_only,
};

pub fn directory() -> StaticDirectory {
    StaticDirectory {
        users: vec![
            ("root".into(), 0),
            ("reports".into(), 1500),
            ("app".into(), 1000),
        ],
        groups: vec![("wheel".into(), 10), ("reports".into(), 1500)],
    }
}

pub fn compile(text: &str) -> Policy {
    match Policy::compile(&[Source::new("p.toml", text)], &directory()) {
        Ok((policy, _)) => policy,
        Err(e) => panic!("{e}"),
    }
}

pub fn by(policy: &Policy, d: DecidedBy) -> String {
    match d {
        DecidedBy::Rule(i) => policy.rule(i).id.clone(),
        DecidedBy::Default => "default".into(),
        DecidedBy::Unresolvable => "unresolvable".into(),
    }
}

/// Runs `(permission, value, expected, rule)` cases for one subject, lexical paths.
pub fn table(policy: &Policy, subject: &Subject<'_>, cases: &[(&str, Option<&str>, Effect, &str)]) {
    let mut failures = Vec::new();
    for &(permission, value, effect, rule) in cases {
        let d = policy.decide(
            permission.parse().unwrap(),
            value,
            subject,
            &mut lexical_only,
        );
        let got = by(policy, d.decided_by);
        if d.effect != effect || got != rule {
            failures.push(format!(
                "{permission} {value:?}: expected {effect} by {rule}, got {} by {got}",
                d.effect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

pub const A: Effect = Effect::Allow;
pub const D: Effect = Effect::Deny;
