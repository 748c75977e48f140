//! Policy parsing and compilation: any text either compiles or yields diagnostics that name a
//! line and column inside it; never a panic. A policy that compiles answers any request.
//!
//! Globs: no token but `**` crosses `/`. The input's first line, as one path component pattern
//! under `/f/`, may only match a path of exactly two components, so a request below `/f/` is
//! allowed exactly when its first component below `/f/` is (seed
//! `regression-negated-class-crosses-separator`: `[!_]` once matched `/`).
//!
//! Commands: a `run` value with a `/` is a path. The input's first line, as a `run` value under
//! `names = ["/f/*"]` (allowed by one policy, denied by another), is allowed (denied) exactly when
//! it is absolute and normalises to a path below `/f/` — `.`, `..` and `//` taken lexically, by
//! this file's own code — whatever the working directory (several, and none); a bare name never
//! is. A relative command (Deno runs it from a `cwd` it does not send), and one no system call
//! takes (a NUL byte, Linux's `PATH_MAX`, `NAME_MAX`), is denied as unresolvable under both.
//!
//! Requests that no system call takes are denied whatever the policy says; the glob property
//! leaves them out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permission_broker_policy::{
    DecidedBy, Effect, NoDirectory, Permission, Policy, RuleIndex, Source, Subject, lexical_only,
    normalize_absolute,
};
use std::sync::OnceLock;

/// Linux's limit on a path handed to a system call, with its NUL (bytes).
const PATH_MAX: usize = 4096;
/// Linux's limit on one path component (bytes).
const NAME_MAX: usize = 255;

/// Whether a system call takes `path`: no NUL byte (it would end the path there), under
/// `PATH_MAX` in all, no component over `NAME_MAX`.
fn within_limits(path: &str) -> bool {
    !path.contains('\0') && path.len() < PATH_MAX && path.split('/').all(|c| c.len() <= NAME_MAX)
}

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
    if !within_limits(&request) {
        return;
    }
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

/// What a `run` value is, as the language defines it.
#[derive(Debug)]
enum Command {
    /// No `/`: a name, matched as written.
    Name,
    /// A path that cannot be checked: relative (run from a working directory Deno does not
    /// send), or one no system call takes.
    Unresolvable,
    /// The absolute, lexically normalised path.
    Path(String),
}

/// [`Command`] for `value`, written here without the crate's path code. No working directory
/// is taken: a relative command is refused whatever the process's is.
fn command_path(value: &str) -> Command {
    if !value.contains('/') {
        return Command::Name;
    }
    if !value.starts_with('/') || !within_limits(value) {
        return Command::Unresolvable;
    }
    let mut stack: Vec<&str> = Vec::new();
    for part in value.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            part => stack.push(part),
        }
    }
    Command::Path(format!("/{}", stack.join("/")))
}

/// The two command policies, `names = ["/f/*"]` allowed under a default deny and denied under a
/// default allow, compiled once per process.
fn command_policies() -> &'static [(&'static str, Policy); 2] {
    static POLICIES: OnceLock<[(&'static str, Policy); 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        [("allow", "deny"), ("deny", "allow")].map(|(effect, default)| {
            let text = format!(
                "version = 1\n[defaults]\ndecision = \"{default}\"\nsymlinks = \"lexical\"\n[[rule]]\nid = \"f\"\neffect = \"{effect}\"\npermissions = [\"run\"]\nnames = [\"/f/*\"]\n"
            );
            match Policy::compile(&[Source::new("run.toml", text)], &NoDirectory) {
                Ok((policy, _)) => (effect, policy),
                Err(e) => panic!("the command policy compiles: {e}"),
            }
        })
    })
}

/// See the module documentation.
fn command_under_prefix(text: &str) {
    let Some(value) = text.lines().next() else {
        return;
    };
    for (effect, policy) in command_policies() {
        for cwd in [None, Some("/"), Some("/f"), Some("/f/sub"), Some("/g")] {
            let subject = Subject {
                cwd,
                ..Subject::default()
            };
            let decision = policy.decide(Permission::Run, Some(value), &subject, &mut lexical_only);
            let expected = command_path(value);
            let want = match (&expected, *effect) {
                (Command::Unresolvable, _) => (Effect::Deny, DecidedBy::Unresolvable),
                (Command::Path(p), "allow") if p.starts_with("/f/") => {
                    (Effect::Allow, DecidedBy::Rule(RuleIndex(0)))
                }
                (Command::Path(p), "deny") if p.starts_with("/f/") => {
                    (Effect::Deny, DecidedBy::Rule(RuleIndex(0)))
                }
                (_, "allow") => (Effect::Deny, DecidedBy::Default),
                _ => (Effect::Allow, DecidedBy::Default),
            };
            assert_eq!(
                (decision.effect, decision.decided_by),
                want,
                "run {value:?} in {cwd:?} under a policy that {effect}s `/f/*`: {expected:?}; {decision:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    one_component_glob(text);
    command_under_prefix(text);
    let lines = text.lines().count().max(1);
    match Policy::compile(&[Source::new("fuzz.toml", text)], &NoDirectory) {
        Ok((policy, _warnings)) => {
            // Facts not named are unknown; `..Default` keeps this building as `Subject` grows.
            let subject = Subject {
                pid: 1,
                uid: Some(1000),
                gid: Some(1000),
                cwd: Some("/home/u"),
                ..Subject::default()
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
