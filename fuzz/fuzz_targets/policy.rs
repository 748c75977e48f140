//! Policy parsing and compilation: any text either compiles or yields diagnostics that name a
//! line and column inside it; never a panic. A policy that compiles answers any request.
//!
//! Globs: no token but `**` crosses `/`. The input's first line, as one path component pattern
//! under `/f/`, may only match a path of exactly two components, so a request below `/f/` is
//! allowed exactly when its first component below `/f/` is (seed
//! `regression-negated-class-crosses-separator`: `[!_]` once matched `/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use permission_broker_policy::{
    Effect, NoDirectory, Permission, Policy, Source, Subject, lexical_only, normalize_absolute,
};

/// See the module documentation.
fn one_component_glob(text: &str) {
    let mut lines = text.lines();
    let (Some(pattern), Some(below)) = (lines.next(), lines.next()) else {
        return;
    };
    if pattern.contains('/') || pattern.contains("**") {
        return;
    }
    let Ok(quoted) = serde_json::to_string(&format!("/f/{pattern}")) else {
        return;
    };
    let policy_text = format!(
        "version = 1\n[defaults]\nsymlinks = \"lexical\"\n[[rule]]\nid = \"g\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [{quoted}]\n"
    );
    let Ok((policy, _)) = Policy::compile(&[Source::new("glob.toml", policy_text)], &NoDirectory)
    else {
        return;
    };
    let Some(request) = normalize_absolute(&format!("/f/{below}")) else {
        return;
    };
    let Some(first) = request
        .strip_prefix("/f/")
        .and_then(|rest| rest.split('/').next())
    else {
        return;
    };
    let allowed = |path: &str| {
        policy
            .decide(
                Permission::Read,
                Some(path),
                &Subject::default(),
                &mut lexical_only,
            )
            .effect
            == Effect::Allow
    };
    assert_eq!(
        allowed(&request),
        allowed(&format!("/f/{first}")),
        "`/f/{pattern}` on `{request}`: a token other than `**` crossed `/`"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    one_component_glob(text);
    let lines = text.lines().count().max(1);
    match Policy::compile(&[Source::new("fuzz.toml", text)], &NoDirectory) {
        Ok((policy, _warnings)) => {
            let subject = Subject {
                pid: 1,
                uid: Some(1000),
                gid: Some(1000),
                groups: None,
                exe: None,
                unit: None,
                cwd: Some("/home/u"),
            };
            let mut resolve = |p: &str| lexical_only(p);
            for (permission, value) in [
                (Permission::Read, Some("/etc/passwd")),
                (Permission::Write, Some("./x")),
                (Permission::Net, Some("example.com:443")),
                (Permission::Env, Some("HOME")),
                (Permission::Run, None),
            ] {
                let _ = policy.decide(permission, value, &subject, &mut resolve);
            }
        }
        Err(diagnostics) => {
            let mut any = false;
            for d in diagnostics.errors() {
                any = true;
                let shown = d.to_string();
                assert!(shown.starts_with("fuzz.toml:"), "{shown}");
                let line: usize = shown
                    .split(':')
                    .nth(1)
                    .and_then(|l| l.parse().ok())
                    .expect("a line number");
                assert!(
                    line >= 1 && line <= lines + 1,
                    "line {line} of {lines}: {shown}"
                );
            }
            assert!(any, "a failed compile names at least one error");
        }
    }
});
