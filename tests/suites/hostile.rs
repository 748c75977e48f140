//! The hostile-peer suite: malformed and hostile inputs against the real daemon, each with its
//! expected fate. For every case: the offending connection is answered or closed without an
//! answer as expected, a closed one leaves a logged fault naming its connection, the daemon stays
//! up, and a bystander connection opened before all of them is still answered. SECURITY.md
//! quotes the counts this test asserts.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Daemon, RawConn};
use std::io::BufRead;
use std::net::Shutdown;
use std::time::Duration;

const POLICY: &str = r#"
version = 1
[defaults]
reason = "not in policy"
[[rule]]
id = "tmp"
effect = "allow"
permissions = ["read"]
paths = ["/tmp"]
[[rule]]
id = "home"
effect = "allow"
permissions = ["env"]
names = ["HOME"]
"#;

const DATETIME: &str = "\"2026-11-23T16:30:45.262660275+00:00\"";

/// A frame from raw `key:value` JSON members, in order, newline-terminated.
fn raw(members: &[(&str, String)]) -> Vec<u8> {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}\n", body.join(",")).into_bytes()
}

/// A valid read frame from this process with `id` and `value` (raw JSON), with `edit` applied
/// to its members: `(key, Some(v))` replaces or appends, `(key, None)` removes.
fn frame_with(id: &str, value: &str, edits: &[(&str, Option<&str>)]) -> Vec<u8> {
    let pid = std::process::id().to_string();
    let mut members: Vec<(&str, String)> = vec![
        ("v", "1".to_owned()),
        ("pid", pid),
        ("id", id.to_owned()),
        ("datetime", DATETIME.to_owned()),
        ("permission", "\"read\"".to_owned()),
        ("value", value.to_owned()),
    ];
    for (key, edit) in edits {
        let at = members.iter().position(|(k, _)| k == key);
        match (at, edit) {
            (Some(i), Some(v)) => members[i].1 = (*v).to_owned(),
            (None, Some(v)) => members.push((key, (*v).to_owned())),
            (Some(i), None) => {
                members.remove(i);
            }
            (None, None) => {}
        }
    }
    raw(&members)
}

fn good(id: u32) -> Vec<u8> {
    frame_with(&id.to_string(), "\"/tmp/x\"", &[])
}

fn edit(key: &'static str, value: &'static str) -> Vec<u8> {
    frame_with("1", "\"/tmp/x\"", &[(key, Some(value))])
}

fn without(key: &'static str) -> Vec<u8> {
    frame_with("1", "\"/tmp/x\"", &[(key, None)])
}

/// What the suite sends on a fresh connection.
enum Input {
    /// One write.
    Bytes(Vec<u8>),
    /// Several writes with a pause between them.
    Pieces(Vec<Vec<u8>>),
    /// One write, then the write side is shut down (half-closed).
    ThenHalfClose(Vec<u8>),
}

/// What must become of the connection.
enum Fate {
    /// Answered: each answer line, in order, contains the matching text; then the connection is
    /// still open (or cleanly at its end after a half-close).
    Answered(Vec<&'static str>),
    /// Closed without an answer (after answering `before` earlier frames), with a logged
    /// protocol fault containing the text.
    Closed { before: usize, fault: &'static str },
}

struct Case {
    name: &'static str,
    input: Input,
    fate: Fate,
}

fn closed(fault: &'static str) -> Fate {
    Fate::Closed { before: 0, fault }
}

fn cases() -> Vec<Case> {
    use Fate::Answered;
    use Input::{Bytes, Pieces, ThenHalfClose};
    let pid = std::process::id();
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let case = |name, input, fate| Case { name, input, fate };
    let mut with_nul = good(1);
    with_nul.insert(10, 0);
    let mut invalid_utf8 = good(1);
    let x = invalid_utf8.len() - 4;
    invalid_utf8[x] = 0xff;
    let mut overlong_utf8 = good(1);
    overlong_utf8.splice(x..=x, [0xc0, 0xaf]);
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend(good(1));
    let mut two_then_junk = good(1);
    two_then_junk.extend(good(2));
    two_then_junk.extend(b"junk\n");
    let half = good(1);
    vec![
        // Framing.
        case(
            "blank line",
            Bytes(b"\n".to_vec()),
            closed("frame is blank"),
        ),
        case(
            "whitespace line",
            Bytes(b"   \t \n".to_vec()),
            closed("frame is blank"),
        ),
        case(
            "CRLF only",
            Bytes(b"\r\n".to_vec()),
            closed("frame is blank"),
        ),
        case(
            "oversize frame, no newline",
            Bytes(vec![b'a'; 70_000]),
            closed("frame exceeds 65536 bytes"),
        ),
        case(
            "oversize frame with a newline",
            Bytes(frame_with(
                "1",
                &format!("\"/tmp/{}\"", "a".repeat(70_000)),
                &[],
            )),
            closed("frame exceeds 65536 bytes"),
        ),
        case(
            "truncated frame, then half-close",
            ThenHalfClose(good(1)[..40].to_vec()),
            closed("connection closed in the middle of a frame (40 bytes unread)"),
        ),
        case(
            "slowloris: a frame started and never finished",
            Bytes(b"{\"v\":1,".to_vec()),
            closed("frame not finished within 500ms"),
        ),
        case(
            "a frame split across writes",
            Pieces(vec![
                good(1)[..7].to_vec(),
                good(1)[7..30].to_vec(),
                good(1)[30..].to_vec(),
            ]),
            Answered(vec!["\"id\":1,\"result\":\"allow\""]),
        ),
        case(
            "several frames in one write",
            Bytes([good(1), good(2), good(3)].concat()),
            Answered(vec!["\"id\":1,", "\"id\":2,", "\"id\":3,"]),
        ),
        case(
            "good frames then junk in one write",
            Bytes(two_then_junk),
            Fate::Closed {
                before: 2,
                fault: "frame is not valid JSON",
            },
        ),
        case(
            "a frame, then half-close: answered, then a clean end",
            ThenHalfClose(half),
            Answered(vec!["\"id\":1,\"result\":\"allow\""]),
        ),
        // Below JSON.
        case(
            "NUL byte",
            Bytes(with_nul),
            closed("frame is not valid JSON"),
        ),
        case(
            "invalid UTF-8",
            Bytes(invalid_utf8),
            closed("not valid UTF-8"),
        ),
        case(
            "overlong UTF-8",
            Bytes(overlong_utf8),
            closed("not valid UTF-8"),
        ),
        case(
            "UTF-8 byte-order mark",
            Bytes(bom),
            closed("frame is not valid JSON"),
        ),
        case(
            "not JSON",
            Bytes(b"GET / HTTP/1.1\n".to_vec()),
            closed("frame is not valid JSON"),
        ),
        case(
            "JSON array",
            Bytes(b"[]\n".to_vec()),
            closed("frame does not match the v1 request schema"),
        ),
        case(
            "JSON string",
            Bytes(b"\"read\"\n".to_vec()),
            closed("frame does not match"),
        ),
        case(
            "JSON null",
            Bytes(b"null\n".to_vec()),
            closed("frame does not match"),
        ),
        case(
            "truncated JSON",
            Bytes(b"{\"v\":1,\n".to_vec()),
            closed("frame is not valid JSON"),
        ),
        case(
            "deep nesting in an unknown field",
            Bytes(format!("{{\"x\":{}}}\n", nested(10_000)).into_bytes()),
            closed("frame is not valid JSON"),
        ),
        case(
            "deep nesting in the value",
            Bytes(frame_with("1", &nested(200), &[])),
            closed("frame is not valid JSON"),
        ),
        case(
            "nesting under the recursion limit in the value",
            Bytes(frame_with("1", &nested(50), &[])),
            closed("frame does not match"),
        ),
        // Numbers.
        case(
            "id huge (1e400)",
            Bytes(edit("id", "1e400")),
            closed("frame is not valid JSON"),
        ),
        case(
            "id negative",
            Bytes(edit("id", "-1")),
            closed("frame does not match"),
        ),
        case(
            "id float 1.5",
            Bytes(edit("id", "1.5")),
            closed("frame does not match"),
        ),
        case(
            "id float 1.0",
            Bytes(edit("id", "1.0")),
            closed("frame does not match"),
        ),
        case(
            "id past u32",
            Bytes(edit("id", "4294967296")),
            closed("frame does not match"),
        ),
        case(
            "id as string",
            Bytes(edit("id", "\"1\"")),
            closed("frame does not match"),
        ),
        case(
            "id null",
            Bytes(edit("id", "null")),
            closed("frame does not match"),
        ),
        case(
            "id missing",
            Bytes(without("id")),
            closed("frame does not match"),
        ),
        case(
            "id reused",
            Bytes([good(5), good(5)].concat()),
            Fate::Closed {
                before: 1,
                fault: "5",
            },
        ),
        case(
            "id decreasing",
            Bytes([good(5), good(4)].concat()),
            Fate::Closed {
                before: 1,
                fault: "4",
            },
        ),
        case(
            "id u32::MAX then wrapping to 0",
            Bytes([good(u32::MAX), good(0)].concat()),
            Fate::Closed {
                before: 1,
                fault: "0",
            },
        ),
        // Identity.
        case(
            "pid spoofed as 1",
            Bytes(edit("pid", "1")),
            closed("frame claims pid 1"),
        ),
        case(
            "pid spoofed as a neighbour",
            Bytes(edit(
                "pid",
                Box::leak((pid + 1).to_string().into_boxed_str()),
            )),
            closed("but the kernel reports pid"),
        ),
        case(
            "pid 0",
            Bytes(edit("pid", "0")),
            closed("frame does not match"),
        ),
        case(
            "pid negative",
            Bytes(edit("pid", "-7")),
            closed("frame does not match"),
        ),
        case(
            "pid null",
            Bytes(edit("pid", "null")),
            closed("frame does not match"),
        ),
        case(
            "pid absent (Deno 2.5.3): answered",
            Bytes(without("pid")),
            Answered(vec!["\"id\":1,\"result\":\"allow\""]),
        ),
        // Version and permission.
        case("v 2", Bytes(edit("v", "2")), closed("frame does not match")),
        case("v 0", Bytes(edit("v", "0")), closed("frame does not match")),
        case(
            "v as string",
            Bytes(edit("v", "\"1\"")),
            closed("frame does not match"),
        ),
        case(
            "v missing",
            Bytes(without("v")),
            closed("frame does not match"),
        ),
        case(
            "permission unknown",
            Bytes(edit("permission", "\"hrtime\"")),
            closed("/permission"),
        ),
        case(
            "permission upper case",
            Bytes(edit("permission", "\"READ\"")),
            closed("/permission"),
        ),
        case(
            "permission as an enum object",
            Bytes(edit("permission", "{\"read\":null}")),
            closed("/permission"),
        ),
        case(
            "permission missing",
            Bytes(without("permission")),
            closed("frame does not match"),
        ),
        // Value and other fields.
        case(
            "value as number",
            Bytes(edit("value", "42")),
            closed("/value"),
        ),
        case(
            "value as array",
            Bytes(edit("value", "[\"/tmp\"]")),
            closed("/value"),
        ),
        case(
            "value as object",
            Bytes(edit("value", "{}")),
            closed("/value"),
        ),
        case(
            "value missing",
            Bytes(without("value")),
            closed("frame does not match"),
        ),
        case(
            "datetime not RFC 3339",
            Bytes(edit("datetime", "\"yesterday\"")),
            closed("/datetime"),
        ),
        case(
            "datetime missing",
            Bytes(without("datetime")),
            closed("frame does not match"),
        ),
        case(
            "extra field",
            Bytes(edit("worker", "\"w1\"")),
            closed("frame does not match"),
        ),
        case(
            "extra __proto__ field",
            Bytes(edit("__proto__", "{}")),
            closed("frame does not match"),
        ),
        case(
            "duplicate permission key",
            Bytes(
                frame_with("1", "\"/tmp/x\"", &[("permission", Some("\"read\""))])
                    .into_iter()
                    .collect::<Vec<u8>>()
                    .strip_suffix(b"}\n")
                    .map(|f| [f, b",\"permission\":\"run\"}\n"].concat())
                    .unwrap(),
            ),
            closed("duplicate"),
        ),
        case(
            "duplicate value key, escaped",
            Bytes(
                good(1)
                    .strip_suffix(b"}\n")
                    .map(|f| [f, b",\"\\u0076alue\":\"/etc/passwd\"}\n"].concat())
                    .unwrap(),
            ),
            closed("duplicate"),
        ),
        // Hostile but well-formed: answered, and denied where the policy says so.
        case(
            "path escaping /tmp with ..",
            Bytes(frame_with("1", "\"/tmp/../etc/shadow\"", &[])),
            Answered(vec![
                "\"result\":\"deny\",\"reason\":\"read /etc/shadow: not in policy (rule default)\"",
            ]),
        ),
        case(
            "ten thousand .. components",
            Bytes(frame_with(
                "1",
                &format!("\"/tmp/{}etc/shadow\"", "../".repeat(10_000)),
                &[],
            )),
            Answered(vec!["\"result\":\"deny\""]),
        ),
        case(
            "escaped NUL in a path",
            Bytes(frame_with("1", "\"/tmp/x\\u0000/../../etc/shadow\"", &[])),
            Answered(vec!["\"result\":\"deny\""]),
        ),
        case(
            "ANSI escapes and newlines in a path",
            Bytes(frame_with("1", "\"/etc/\\u001b[2J\\n\\u202epasswd\"", &[])),
            // The path is shown in the message with what would draw on the terminal escaped
            // (in the JSON, each `\u{..}` escape's backslash is doubled).
            Answered(vec![
                r#""result":"deny","reason":"read /etc/\\u{1b}[2J\\u{a}\\u{202e}passwd: not in policy (rule default)""#,
            ]),
        ),
        case(
            "env name with a glob",
            Bytes(frame_with(
                "1",
                "\"HOM*\"",
                &[("permission", Some("\"env\""))],
            )),
            Answered(vec!["\"result\":\"deny\""]),
        ),
        case(
            "the whole permission (null) for read",
            Bytes(frame_with("1", "null", &[])),
            Answered(vec!["\"result\":\"deny\""]),
        ),
    ]
}

#[test]
fn hostile_peers_cost_only_their_own_connection() {
    // Every fault is checked in the decision log: the daemon's own log takes only a few per
    // uid at a time (a flood of faults must not flood it).
    let records = tempfile::tempdir().unwrap();
    let record_log = records.path().join("decisions.jsonl");
    let record_arg = record_log.display().to_string();
    let mut daemon = Daemon::start(
        POLICY,
        &["--frame-timeout", "0.5", "--decision-log", &record_arg],
    );
    let fault_records = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&record_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["kind"] == "fault")
            .collect()
    };
    let mut bystander = RawConn::open(&daemon);
    let mut bystander_id = 1;
    bystander.send(&good(bystander_id));
    assert!(bystander.answer().contains("allow"));
    let cases = cases();
    let mut faults = 0;
    for (n, case) in cases.iter().enumerate() {
        // Connections are numbered in accept order; the bystander is 1.
        let conn_id = n + 2;
        let mut conn = RawConn::open(&daemon);
        match &case.input {
            Input::Bytes(bytes) => conn.send_hostile(bytes),
            Input::Pieces(pieces) => {
                for piece in pieces {
                    conn.send_hostile(piece);
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            Input::ThenHalfClose(bytes) => {
                conn.send_hostile(bytes);
                conn.0.get_ref().shutdown(Shutdown::Write).unwrap();
            }
        }
        match &case.fate {
            Fate::Answered(expected) => {
                for text in expected {
                    let line = conn.answer();
                    assert!(
                        line.contains(text),
                        "{}: expected {text:?}, got {line:?}",
                        case.name
                    );
                    assert!(
                        !line.trim_end().chars().any(char::is_control),
                        "{}: control characters in {line:?}",
                        case.name
                    );
                }
                if matches!(case.input, Input::ThenHalfClose(_)) {
                    conn.assert_closed_unanswered(&format!(
                        "{}: a clean end after the half-close",
                        case.name
                    ));
                }
            }
            Fate::Closed { before, fault } => {
                for _ in 0..*before {
                    assert!(
                        conn.answer().contains("\"result\""),
                        "{}: earlier frame answered",
                        case.name
                    );
                }
                conn.assert_closed_unanswered(case.name);
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while !fault_records().iter().any(|r| {
                    r["conn"] == conn_id && r["fault"].as_str().is_some_and(|f| f.contains(fault))
                }) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{}: no fault record for conn {conn_id} with {fault:?}: {:?}",
                        case.name,
                        fault_records()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                faults += 1;
            }
        }
        assert!(daemon.is_running(), "{}: the daemon is still up", case.name);
        bystander_id += 1;
        bystander.send(&good(bystander_id));
        let answer = bystander.answer();
        assert!(
            answer.starts_with(&format!("{{\"id\":{bystander_id},\"result\":\"allow\"")),
            "{}: the bystander is still answered, got {answer:?}",
            case.name
        );
    }
    let logged = daemon
        .log()
        .iter()
        .filter(|l| l.contains("protocol fault"))
        .count();
    assert_eq!(
        fault_records().len(),
        faults,
        "one fault record per closed connection, none for the others"
    );
    // The daemon's own log: the first of a burst, not one line per fault.
    assert!(
        logged >= 20.min(faults) && logged <= faults,
        "{logged} fault lines for {faults} faults"
    );
    eprintln!(
        "{} hostile inputs, {faults} closed with a logged fault",
        cases.len()
    );
    // The counts SECURITY.md quotes.
    assert_eq!(
        (cases.len(), faults),
        (64, 54),
        "update SECURITY.md with the new counts"
    );
}

#[test]
fn a_flood_of_connections_past_the_limit_waits_and_is_served_in_turn() {
    let mut daemon = Daemon::start(
        POLICY,
        &["--max-connections", "8", "--max-connections-per-uid", "8"],
    );
    let mut first: Vec<RawConn> = (0..8).map(|_| RawConn::open(&daemon)).collect();
    for (i, conn) in first.iter_mut().enumerate() {
        conn.send_hostile(&good(1));
        assert!(conn.answer().contains("allow"), "connection {i} served");
    }
    // Past the limit: connecting succeeds (the kernel queues it), but nothing is answered...
    let mut waiting: Vec<RawConn> = (0..24).map(|_| RawConn::open(&daemon)).collect();
    for conn in &mut waiting {
        conn.send_hostile(&good(1));
    }
    waiting[0]
        .0
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut probe = String::new();
    assert!(
        waiting[0].0.read_line(&mut probe).is_err(),
        "not served while 8 are open: {probe:?}"
    );
    waiting[0]
        .0
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // ...until served connections close: then every waiting one is answered, in turn.
    drop(first);
    for (i, mut conn) in waiting.into_iter().enumerate() {
        assert!(
            conn.answer().contains("\"id\":1,\"result\":\"allow\""),
            "waiting connection {i}"
        );
        // Dropped once answered, which frees a slot for the next.
    }
    assert!(
        daemon.log().iter().all(|l| !l.contains("protocol fault")),
        "waiting is not a fault"
    );
    let mut after = RawConn::open(&daemon);
    after.send(&good(1));
    assert!(after.answer().contains("allow"));
    assert!(daemon.is_running());
}

/// A local user sending bad frames as fast as it can (20,000 faults in 1.9 s made 20,000 log
/// lines, and journald drops past its burst, hiding everyone else's). The daemon's log takes 20
/// per uid per 5 s and then says how many it left out; each one is in the decision log.
#[test]
fn a_flood_of_faults_from_one_uid_does_not_flood_the_log() {
    let records = tempfile::tempdir().unwrap();
    let record_log = records.path().join("decisions.jsonl");
    let record_arg = record_log.display().to_string();
    let daemon = Daemon::start(POLICY, &["--decision-log", &record_arg]);
    for _ in 0..200 {
        let mut conn = RawConn::open(&daemon);
        conn.send(b"not json\n");
        conn.assert_closed_unanswered("a bad frame");
    }
    let fault_lines = |daemon: &Daemon| {
        daemon
            .log()
            .iter()
            .filter(|l| l.contains("protocol fault; closing"))
            .count()
    };
    daemon.wait_for_logs(&["protocol fault; closing"], 20);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fault_lines(&daemon), 20);
    std::thread::sleep(Duration::from_millis(4800));
    let mut conn = RawConn::open(&daemon);
    conn.send(b"not json\n");
    conn.assert_closed_unanswered("a bad frame after the window");
    let summary = daemon.wait_for_log(&["180 protocol faults from this uid were not logged"]);
    assert!(summary.contains("uid=0"), "{summary}");
    daemon.wait_for_logs(&["protocol fault; closing"], 21);
    assert_eq!(fault_lines(&daemon), 21);
    let recorded = std::fs::read_to_string(&record_log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""kind":"fault""#))
        .count();
    assert_eq!(recorded, 201, "every fault is on record");
}
