//! Policy parsing and compilation: any text either compiles or yields diagnostics that name a
//! line and column inside it; never a panic. A policy that compiles answers any request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permission_broker_policy::{NoDirectory, Permission, Policy, Source, Subject, lexical_only};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
