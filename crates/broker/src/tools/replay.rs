//! `permission-broker replay --policy CANDIDATE LOG...`: every request recorded in decision logs,
//! decided again under a candidate policy, and what would change.
//!
//! A record carries what decided it: the subject's facts (uid, gid, supplementary groups,
//! executable, unit), the value as asked, as made absolute (`resolved`) and where its links led
//! (`target`). Replay decides on those, never on the filesystem or the processes of the host it
//! runs on: a relative path is replayed from the working directory it was resolved in, a link from
//! where it led then. What it cannot replay it counts and says: the broker's own files (not the
//! policy's to decide), values that could not be interpreted, faults.
//!
//! Identical requests are decided once (a fleet's week repeats the same few thousand requests
//! millions of times), so the cost is reading the records.

use super::load_or_report;
use crate::cli::Accounts;
use crate::exit::EXIT_CONFIG;
use permission_broker_policy::{Directory, Effect, Permission, Policy, Subject};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The memos, with a hash made for speed (foldhash, the standard hash map's own in hashbrown):
/// their keys come from the logs being replayed, and a slow hash was a third of the time.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Flipped requests listed one by one, at most (the counts below them cover all).
const LISTED: usize = 200;

/// The fields of a decision record that replay reads; the rest are skipped unparsed.
#[derive(Debug, Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    permission: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    value: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resolved: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<Cow<'a, str>>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    groups: Option<Vec<u32>>,
    #[serde(borrow, default)]
    exe: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    unit: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
    /// What Deno was told: the verdict, but in audit mode a would-deny was answered allow.
    #[serde(borrow, default)]
    answered: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
}

/// A request as replay decides it: everything that went into the recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Request {
    permission: Permission,
    /// The value as decided: made absolute and normalised where the record says so.
    value: Option<String>,
    /// Where the value's links led, when that differed.
    target: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    exe: Option<String>,
    unit: Option<String>,
}

/// A recorded verdict and the candidate's, for one kind of request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Flip {
    before: Effect,
    after: Effect,
    rule_before: String,
    rule_after: String,
    permission: &'static str,
    value: String,
    unit: String,
    exe: String,
}

/// Names of uids and gids, looked up once each.
struct Names<'d> {
    directory: &'d dyn Directory,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names<'_> {
    fn user(&mut self, uid: u32) -> Option<String> {
        let directory = self.directory;
        self.users
            .entry(uid)
            .or_insert_with(|| directory.user_name(uid))
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        let directory = self.directory;
        self.groups
            .entry(gid)
            .or_insert_with(|| directory.group_name(gid))
            .clone()
    }
}

/// What the candidate would answer for `request` (its verdict, under its mode: audit answers a
/// would-deny with allow) and the deciding rule's id.
fn decide(policy: &Policy, names: &mut Names<'_>, request: &Request) -> (Effect, String) {
    let user = request.uid.map(|uid| names.user(uid).unwrap_or_default());
    let group = request.gid.and_then(|gid| names.group(gid));
    let group_names: Option<Vec<String>> = request
        .groups
        .as_ref()
        .map(|gids| gids.iter().filter_map(|g| names.group(*g)).collect());
    let subject = Subject {
        pid: 0,
        uid: request.uid,
        gid: request.gid,
        groups: request.groups.as_deref(),
        user: user.as_deref(),
        group: group.as_deref(),
        group_names: group_names.as_deref(),
        exe: request.exe.as_deref(),
        unit: request.unit.as_deref(),
        cwd: None,
    };
    // Links lead where they led when the request was recorded; every other path is its own.
    let lexical = request.value.clone();
    let target = request.target.clone();
    let mut recorded = move |path: &str| -> Result<String, String> {
        Ok(match (&lexical, &target) {
            (Some(lexical), Some(target)) if lexical == path => target.clone(),
            _ => path.to_owned(),
        })
    };
    let decision = policy.decide(
        request.permission,
        request.value.as_deref(),
        &subject,
        &mut recorded,
    );
    let rule = match decision.decided_by {
        permission_broker_policy::DecidedBy::Rule(i) => policy.rule(i).id.clone(),
        permission_broker_policy::DecidedBy::Default => "default".to_owned(),
        permission_broker_policy::DecidedBy::Unresolvable => "unresolvable".to_owned(),
    };
    let answer = policy.answer(request.permission, request.value.as_deref(), &decision);
    (answer, rule)
}

/// What was read, and what could not be replayed.
#[derive(Debug, Default)]
struct Totals {
    decisions: u64,
    /// Decided by the broker's built-in protection of its own files, not by a policy.
    broker_files: u64,
    /// Recorded as a value that could not be interpreted (unknown working directory, the
    /// deadline): nothing recorded says what the value was.
    unresolvable: u64,
    /// Other records: faults, reloads, the header.
    other: u64,
    flipped: u64,
}

pub fn run(policy_path: &Path, logs: &[PathBuf], accounts: &Accounts) -> ExitCode {
    let (loaded, directory) = match load_or_report(policy_path, accounts) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let policy = &loaded.policy;
    let mut names = Names {
        directory: directory.as_ref(),
        users: HashMap::new(),
        groups: HashMap::new(),
    };
    // Keyed by the request's fields as read (see `key`), so that a request seen before costs one
    // lookup and no allocation.
    let mut decided: FastMap<Vec<u8>, (Effect, String)> = FastMap::default();
    let mut key = Vec::new();
    // Lines seen before whose replay changed nothing, by the bytes that decide them (`raw_key`):
    // they are counted without being parsed.
    let mut seen: FastMap<Vec<u8>, Seen> = FastMap::default();
    let mut raw = Vec::new();
    let finders = Finders::new();
    let mut flips: HashMap<Flip, u64> = HashMap::new();
    let mut totals = Totals::default();
    for log in logs {
        let file = match std::fs::File::open(log) {
            Ok(file) => file,
            Err(e) => {
                eprintln!("{}: cannot read the decision log: {e}", log.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut text = Vec::new();
        let mut number = 0usize;
        loop {
            text.clear();
            match reader.read_until(b'\n', &mut text) {
                Ok(0) => break,
                Ok(_) => number += 1,
                Err(e) => {
                    eprintln!(
                        "{}:{}: cannot read the decision log: {e}",
                        log.display(),
                        number + 1
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            let line = text.trim_ascii_end();
            if line.is_empty() {
                continue;
            }
            let fast = raw_key(line, &finders, &mut raw);
            if fast && let Some(seen) = seen.get(raw.as_slice()) {
                totals.decisions += 1;
                match seen {
                    Seen::Unchanged => {}
                    Seen::BrokerFiles => totals.broker_files += 1,
                    Seen::Unresolvable => totals.unresolvable += 1,
                }
                continue;
            }
            let mut remember = |what: Seen| {
                if fast {
                    seen.insert(raw.clone(), what);
                }
            };
            let record: Line<'_> = match serde_json::from_slice(line) {
                Ok(record) => record,
                Err(e) => {
                    eprintln!(
                        "{}:{number}:{}: not a decision log record: {e}",
                        log.display(),
                        e.column()
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if record.kind != "decision" {
                totals.other += 1;
                continue;
            }
            totals.decisions += 1;
            // What changes for Deno is its answer: an audit log's would-denies were answered
            // allow, and an enforcing candidate would deny them.
            let (Some(permission), Some(before), Some(rule_before)) = (
                record.permission.as_deref(),
                record.answered.as_deref().or(record.decision.as_deref()),
                record.rule.as_deref(),
            ) else {
                eprintln!(
                    "{}:{number}: a decision record without permission, decision or rule",
                    log.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            };
            match rule_before {
                "broker-files" => {
                    totals.broker_files += 1;
                    remember(Seen::BrokerFiles);
                    continue;
                }
                "unresolvable" => {
                    totals.unresolvable += 1;
                    remember(Seen::Unresolvable);
                    continue;
                }
                _ => {}
            }
            let (Ok(permission), Some(before)) = (permission.parse::<Permission>(), effect(before))
            else {
                eprintln!(
                    "{}:{number}: unknown permission `{permission}` or answer `{before}`",
                    log.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            };
            let value = record.resolved.or(record.value);
            key.clear();
            key.push(permission as u8);
            for text in [&value, &record.target, &record.exe, &record.unit] {
                field(&mut key, text.as_deref().map(str::as_bytes));
            }
            for id in [record.uid, record.gid] {
                field(&mut key, id.map(u32::to_le_bytes).as_ref().map(|b| &b[..]));
            }
            if let Some(groups) = &record.groups {
                for g in groups {
                    key.extend_from_slice(&g.to_le_bytes());
                }
            }
            let known = decided.get(key.as_slice());
            let request = || Request {
                permission,
                target: record.target.as_deref().map(str::to_owned),
                value: value.as_deref().map(str::to_owned),
                uid: record.uid,
                gid: record.gid,
                groups: record.groups.clone(),
                exe: record.exe.as_deref().map(str::to_owned),
                unit: record.unit.as_deref().map(str::to_owned),
            };
            let (after, rule_after) = match known {
                // Unchanged: nothing more to do, the common case.
                Some((after, _)) if *after == before => {
                    remember(Seen::Unchanged);
                    continue;
                }
                Some(known) => known.clone(),
                None => {
                    let verdict = decide(policy, &mut names, &request());
                    decided.insert(key.clone(), verdict.clone());
                    verdict
                }
            };
            if after == before {
                remember(Seen::Unchanged);
            }
            if after != before {
                let request = request();
                totals.flipped += 1;
                let flip = Flip {
                    before,
                    after,
                    rule_before: rule_before.to_owned(),
                    rule_after,
                    permission: permission.as_str(),
                    value: match (request.value, request.target) {
                        (None, _) => "(all)".to_owned(),
                        (Some(value), None) => value,
                        (Some(value), Some(target)) => format!("{value} (a link to {target})"),
                    },
                    unit: request.unit.unwrap_or_default(),
                    exe: request.exe.unwrap_or_default(),
                };
                *flips.entry(flip).or_default() += 1;
            }
        }
    }
    let out = report(
        policy_path,
        &loaded.revision,
        policy.mode(),
        logs.len(),
        &totals,
        flips,
    );
    // A reader that went away (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if totals.flipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What replaying a line seen before came to, when nothing about it changed.
#[derive(Debug, Clone, Copy)]
enum Seen {
    Unchanged,
    BrokerFiles,
    Unresolvable,
}

/// The bytes of a decision record, as the daemon writes it, that decide its replay: everything
/// but the time, the connection, the pid and its start time, the request id, the reason, the
/// revision and the microseconds. `false` (and the line is parsed) unless the line has exactly
/// the daemon's shape, so that no field that matters can hide in the parts left out:
///
/// `{"kind":"decision","time":..,"conn":..,"pid":..,"start_time":..,` KEPT `,"id":DIGITS`
/// KEPT `,"reason":..,"revision":..,"micros":..}`
///
/// A key in JSON text is the only place `":` appears other than after an escaped quote (`\"`),
/// which only adds to the counts below, so counting `":` in a part that is left out proves it
/// holds just the keys named.
fn raw_key(line: &[u8], find: &Finders, out: &mut Vec<u8>) -> bool {
    const HEAD: &[u8] = br#"{"kind":"decision","time":"#;
    if !line.starts_with(HEAD) {
        return false;
    }
    let (Some(uid), Some(id), Some(permission), Some(reason)) = (
        find.uid.find(line),
        find.id.find(line),
        find.permission.find(line),
        find.reason.find(line),
    ) else {
        return false;
    };
    if !(uid < id && id < permission && permission < reason) {
        return false;
    }
    let head = &line[..uid];
    let digits = &line[id + find.id.needle().len()..permission];
    let tail = &line[reason..];
    let keys = |part: &[u8]| find.key.find_iter(part).count();
    let well_formed = keys(head) == 5
        && [&find.time, &find.conn, &find.pid, &find.start_time]
            .iter()
            .all(|k| k.find(head).is_some())
        && !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && keys(tail) == 3
        && find.revision.find(tail).is_some()
        && find.micros.find(tail).is_some()
        && tail.ends_with(b"}");
    if !well_formed {
        return false;
    }
    out.clear();
    out.extend_from_slice(&line[uid..id]);
    out.extend_from_slice(&line[permission..reason]);
    true
}

/// The searches [`raw_key`] makes, built once.
struct Finders {
    key: memchr::memmem::Finder<'static>,
    uid: memchr::memmem::Finder<'static>,
    id: memchr::memmem::Finder<'static>,
    permission: memchr::memmem::Finder<'static>,
    reason: memchr::memmem::Finder<'static>,
    time: memchr::memmem::Finder<'static>,
    conn: memchr::memmem::Finder<'static>,
    pid: memchr::memmem::Finder<'static>,
    start_time: memchr::memmem::Finder<'static>,
    revision: memchr::memmem::Finder<'static>,
    micros: memchr::memmem::Finder<'static>,
}

impl Finders {
    fn new() -> Finders {
        fn f(needle: &'static [u8]) -> memchr::memmem::Finder<'static> {
            memchr::memmem::Finder::new(needle)
        }
        Finders {
            key: f(br#"":"#),
            uid: f(br#","uid":"#),
            id: f(br#","id":"#),
            permission: f(br#","permission":"#),
            reason: f(br#","reason":"#),
            time: f(br#","time":"#),
            conn: f(br#","conn":"#),
            pid: f(br#","pid":"#),
            start_time: f(br#","start_time":"#),
            revision: f(br#","revision":"#),
            micros: f(br#","micros":"#),
        }
    }
}

/// Appends one optional field to a memo key: absent, or present with its length (so that no
/// two different requests have one key).
fn field(key: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => key.push(0),
        Some(bytes) => {
            key.push(1);
            key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            key.extend_from_slice(bytes);
        }
    }
}

fn effect(text: &str) -> Option<Effect> {
    match text {
        "allow" => Some(Effect::Allow),
        "deny" => Some(Effect::Deny),
        _ => None,
    }
}

/// Printed text: escapes for what a logged value could hold (a newline, an escape sequence).
fn shown(text: &str) -> String {
    text.escape_debug().to_string()
}

fn report(
    policy: &Path,
    revision: &str,
    mode: permission_broker_policy::Mode,
    logs: usize,
    totals: &Totals,
    flips: HashMap<Flip, u64>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let replayed = totals.decisions - totals.broker_files - totals.unresolvable;
    let _ = writeln!(
        out,
        "replay: {replayed} recorded decision(s) from {logs} log(s) decided again under {} (revision {revision}, {} mode): {} answer(s) would change",
        policy.display(),
        mode.as_str(),
        totals.flipped
    );
    if mode == permission_broker_policy::Mode::Audit {
        let _ = writeln!(
            out,
            "note: the candidate is in AUDIT mode: it answers allow to everything it would deny, and that is what is compared"
        );
    }
    if totals.broker_files + totals.unresolvable > 0 {
        let _ = writeln!(
            out,
            "not replayed: {} decided by the broker's protection of its own files (no policy decides them), {} recorded as values that could not be interpreted",
            totals.broker_files, totals.unresolvable
        );
    }
    if flips.is_empty() {
        return out;
    }
    let mut listed: Vec<(&Flip, u64)> = flips.iter().map(|(f, n)| (f, *n)).collect();
    listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let _ = writeln!(
        out,
        "\nchanged answers (count, answer before → after, request, deciding rule before → after, unit, executable):"
    );
    for (flip, count) in listed.iter().take(LISTED) {
        let _ = writeln!(
            out,
            "  {count:>8}  {} → {}  {} {}  (rule {} → {})  unit {}  exe {}",
            flip.before,
            flip.after,
            flip.permission,
            shown(&flip.value),
            shown(&flip.rule_before),
            shown(&flip.rule_after),
            shown(or_none(&flip.unit)),
            shown(or_none(&flip.exe)),
        );
    }
    if listed.len() > LISTED {
        let _ = writeln!(
            out,
            "  … and {} more kinds of request",
            listed.len() - LISTED
        );
    }
    type Group = (&'static str, fn(&Flip) -> String);
    let groups: [Group; 3] = [
        ("by rule (before → after)", |f| {
            format!(
                "{} → {} ({} → {})",
                f.rule_before, f.rule_after, f.before, f.after
            )
        }),
        ("by unit", |f| or_none(&f.unit).to_owned()),
        ("by executable", |f| or_none(&f.exe).to_owned()),
    ];
    for (heading, key) in groups {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for (flip, count) in &flips {
            *counts.entry(key(flip)).or_default() += count;
        }
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let _ = writeln!(out, "\n{heading}:");
        for (name, count) in counts {
            let _ = writeln!(out, "  {count:>8}  {}", shown(&name));
        }
    }
    out
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "(none)" } else { text }
}

#[cfg(test)]
mod tests {
    use super::{Finders, raw_key};
    use crate::daemon::decision_log::{DecisionRecord, Record};

    fn daemon_line(exe: &str, reason: Option<&str>) -> Vec<u8> {
        let record = Record::Decision(Box::new(DecisionRecord {
            time: std::time::SystemTime::UNIX_EPOCH,
            conn: 3,
            pid: Some(42),
            start_time: Some(7),
            uid: Some(1000),
            gid: Some(1000),
            groups: Some(vec![27]),
            exe: Some(exe.to_owned()),
            unit: Some("app.service".to_owned()),
            id: 9,
            permission: "read",
            value: Some("./x".to_owned()),
            resolved: Some("/srv/x".to_owned()),
            target: None,
            decision: "deny",
            answered: "deny",
            mode: "enforce",
            rule: "default".to_owned(),
            reason: reason.map(str::to_owned),
            revision: "abc".to_owned(),
            micros: 5,
        }));
        serde_json::to_vec(&record).unwrap()
    }

    /// The fast path reads the daemon's own records: if `DecisionRecord`'s fields are reordered,
    /// this fails instead of every replay quietly taking the slow path.
    #[test]
    fn a_record_as_the_daemon_writes_it_has_a_key_of_what_decides_it() {
        let find = Finders::new();
        let mut key = Vec::new();
        let line = daemon_line("/usr/bin/deno", Some("no"));
        assert!(
            raw_key(&line, &find, &mut key),
            "{}",
            String::from_utf8_lossy(&line)
        );
        let key = String::from_utf8(key).unwrap();
        for kept in [
            "\"exe\":\"/usr/bin/deno\"",
            "\"groups\":[27]",
            "\"resolved\":\"/srv/x\"",
            "\"rule\":\"default\"",
            "\"decision\":\"deny\"",
        ] {
            assert!(key.contains(kept), "{kept} in {key}");
        }
        for left_out in [
            "\"time\"",
            "\"conn\"",
            "\"pid\"",
            "\"id\"",
            "\"reason\"",
            "\"micros\"",
        ] {
            assert!(!key.contains(left_out), "{left_out} in {key}");
        }
        // Another executable, another key; another reason or time, the same one.
        let mut other = Vec::new();
        assert!(raw_key(
            &daemon_line("/tmp/evil", Some("no")),
            &find,
            &mut other
        ));
        assert_ne!(key.as_bytes(), &other[..]);
        assert!(raw_key(
            &daemon_line("/usr/bin/deno", None),
            &find,
            &mut other
        ));
        assert_eq!(key.as_bytes(), &other[..]);
    }

    /// A line not shaped like the daemon's is parsed, never keyed on a part that leaves out
    /// something that decides it.
    #[test]
    fn a_field_hidden_where_the_key_does_not_look_takes_the_slow_path() {
        let find = Finders::new();
        let mut key = Vec::new();
        let line = String::from_utf8(daemon_line("/usr/bin/deno", Some("no"))).unwrap();
        let hidden = [
            // The executable moved into the part before the uid.
            line.replacen(
                r#","start_time":7"#,
                r#","start_time":7,"exe":"/tmp/evil""#,
                1,
            ),
            // ... or into the tail, after the reason.
            line.replacen(r#","micros":5"#, r#","micros":5,"exe":"/tmp/evil""#, 1),
            // An id that is not just digits.
            line.replacen(r#","id":9"#, r#","id":9,"unit":"x""#, 1),
            // Fields out of order.
            line.replacen(
                r#"{"kind":"decision","#,
                r#"{"kind":"decision","uid":0,"#,
                1,
            ),
            // Pretty-printed.
            line.replace(',', ", "),
        ];
        for text in hidden {
            assert!(!raw_key(text.as_bytes(), &find, &mut key), "{text}");
        }
        // A reason that quotes a key is still one string: its escaped quote only makes the
        // line take the slow path.
        let quoted = daemon_line("/usr/bin/deno", Some(r#"x","exe":"/tmp/evil"#));
        assert!(!raw_key(&quoted, &find, &mut key));
    }
}
