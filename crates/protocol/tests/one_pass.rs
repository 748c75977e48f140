//! The daemon's one-pass parser (`parse_request_ref`) against the reference that validates with
//! the shipped JSON schema (`parse_request_by_schema`): both must accept exactly the same lines and
//! read the same request from them. The `frame` fuzz target checks the same on random input.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_protocol::{parse_request_by_schema, parse_request_ref};
use proptest::prelude::*;

const FRAMES: &str = include_str!("data/frames-2.9.6.jsonl");

/// Panics, naming the line, if the two parsers disagree on it. Returns whether it was accepted.
fn agree(line: &[u8]) -> bool {
    let fast = parse_request_ref(line).map(|r| r.into_owned());
    let reference = parse_request_by_schema(line);
    assert_eq!(
        fast.as_ref().ok(),
        reference.as_ref().ok(),
        "the parsers disagree on {:?}: one-pass {fast:?}, schema {reference:?}",
        String::from_utf8_lossy(line)
    );
    reference.is_ok()
}

const KEYS: [&str; 6] = ["v", "pid", "id", "datetime", "permission", "value"];

/// Values every field is tried with: each JSON type, edge numbers, look-alikes of valid values.
const VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-0",
    "1",
    "-1",
    "1.0",
    "1e0",
    "1.5",
    "2",
    "42",
    "4294967295",
    "4294967296",
    "-4294967296",
    "18446744073709551616",
    "1e400",
    "\"\"",
    "\"1\"",
    "\"read\"",
    "\"Read\"",
    "\"READ\"",
    "\"re\\u0061d\"",
    "\"./x\"",
    "\"a\\u0000b\"",
    "\"2026-11-23T16:30:45.262660275+00:00\"",
    "\"2026-11-23T16:30:45Z\"",
    "\"2026-11-23t16:30:45z\"",
    "\"2026-02-30T16:30:45+00:00\"",
    "\"2026-11-23T24:00:00+00:00\"",
    "\"2026-11-23T23:59:60Z\"",
    "\"2026-11-23 16:30:45+00:00\"",
    "\"2026-11-23T16:30:45+25:00\"",
    "[]",
    "[1]",
    "{}",
    "{\"read\":null}",
    "{\"v\":1}",
];

fn frame(fields: &[(&str, &str)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn good() -> Vec<(&'static str, &'static str)> {
    vec![
        ("v", "1"),
        ("pid", "42"),
        ("id", "7"),
        ("datetime", "\"2026-11-23T16:30:45.262660+00:00\""),
        ("permission", "\"read\""),
        ("value", "\"./x\""),
    ]
}

/// A valid frame's values, in Deno's order, as JSON text.
const GOOD_VALUES: [&str; 6] = [
    "1",
    "42",
    "7",
    "\"2026-11-23T16:30:45.262660+00:00\"",
    "\"read\"",
    "\"./x\"",
];

/// Asserts that both parsers refuse the line: a frame is a JSON object and nothing else.
fn refused(line: &str) {
    assert!(
        !agree(line.as_bytes()),
        "accepted a non-object frame {line:?}"
    );
    assert!(
        parse_request_ref(line.as_bytes()).is_err(),
        "the one-pass parser answered {line:?}"
    );
}

#[test]
fn real_frames_are_read_identically() {
    for line in FRAMES.lines() {
        assert!(agree(line.as_bytes()), "{line}");
    }
}

#[test]
fn every_field_with_every_kind_of_value() {
    let (mut accepted, mut refused) = (0, 0);
    for key in KEYS {
        for value in VALUES {
            let fields: Vec<_> = good()
                .into_iter()
                .map(|(k, v)| if k == key { (k, *value) } else { (k, v) })
                .collect();
            if agree(frame(&fields).as_bytes()) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Missing, duplicated (same and different value), and escaped.
        let without: Vec<_> = good().into_iter().filter(|(k, _)| *k != key).collect();
        agree(frame(&without).as_bytes());
        let mut twice = good();
        twice.push(good().into_iter().find(|(k, _)| *k == key).unwrap());
        assert!(!agree(frame(&twice).as_bytes()), "duplicate {key}");
        let mut escaped = frame(&good());
        escaped = escaped.replacen(
            &format!("\"{key}\""),
            &format!("\"\\u{:04x}{}\"", key.as_bytes()[0], &key[1..]),
            1,
        );
        assert!(agree(escaped.as_bytes()), "escaped key {escaped}");
    }
    // Both outcomes occur, so the comparison is not vacuous.
    assert!(
        accepted > 10 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn framing_edges() {
    let good = frame(&good());
    for line in [
        String::new(),
        " ".to_owned(),
        format!(" {good} "),
        format!("{good}\r"),
        format!("{good}{good}"),
        format!("{good},"),
        format!("[{good}]"),
        format!("{good}\u{0}"),
        good.replace("\"read\"", "\"read\" "),
        good.replace(',', " , "),
        good.replace("{", "{\"extra\":1,"),
        good.replace("{", "{\"\":1,"),
        good[..good.len() - 1].to_owned(),
        "{".repeat(200) + &"}".repeat(200),
        format!("{{\"nested\":{}{}}}", "[".repeat(1000), "]".repeat(1000)),
    ] {
        agree(line.as_bytes());
    }
    let mut bytes = good.clone().into_bytes();
    bytes[45] = 0xff;
    assert!(!agree(&bytes));
}

/// The reported hole: serde's derived struct reader also takes a JSON array of the fields in
/// declaration order, so the hot path answered a frame the schema refuses.
#[test]
fn an_array_of_a_valid_frames_values_is_not_a_frame() {
    refused(r#"[1,6937,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]"#);
    refused(&format!("[{}]", GOOD_VALUES.join(",")));
    refused(&format!(" \t[{}]", GOOD_VALUES.join(" , ")));
    // Without the optional pid, with a null value, and with a trailing extra element.
    refused(r#"[1,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]"#);
    refused(r#"[1,6937,1,"2026-11-23T16:30:45.262660275+00:00","env",null]"#);
    refused(&format!("[{},null]", GOOD_VALUES.join(",")));
}

#[test]
fn no_non_object_top_is_a_frame() {
    let good = frame(&good());
    let array = format!("[{}]", GOOD_VALUES.join(","));
    for line in [
        "[]".to_owned(),
        "[[]]".to_owned(),
        "[{}]".to_owned(),
        format!("[{good}]"),
        format!("[[{good}]]"),
        format!("[{array}]"),
        format!("[[{array}]]"),
        "null".to_owned(),
        "true".to_owned(),
        "false".to_owned(),
        "0".to_owned(),
        "1".to_owned(),
        "-1".to_owned(),
        "1.5".to_owned(),
        "\"\"".to_owned(),
        "\"read\"".to_owned(),
        serde_json::to_string(&good).unwrap(),
    ] {
        refused(&line);
    }
}

/// A JSON value that is not an object at its top: scalars, arrays of a frame's values (in order,
/// reordered, truncated, padded, nested) and arrays of anything from [`VALUES`] or of frames.
fn non_object_top() -> impl Strategy<Value = String> {
    let scalar = prop::sample::select(
        VALUES
            .iter()
            .copied()
            .filter(|v| !v.starts_with('{'))
            .collect::<Vec<_>>(),
    )
    .prop_map(str::to_owned);
    let element = prop_oneof![
        prop::sample::select(VALUES.to_vec()).prop_map(str::to_owned),
        prop::sample::select(GOOD_VALUES.to_vec()).prop_map(str::to_owned),
        Just(frame(&good())),
    ];
    let frame_values = (
        any::<bool>(),
        prop::collection::vec(element.clone(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(with_pid, extra, shuffle)| {
            let mut values: Vec<String> = GOOD_VALUES
                .iter()
                .enumerate()
                .filter(|(i, _)| with_pid || *i != 1)
                .map(|(_, v)| (*v).to_owned())
                .collect();
            if shuffle {
                values.rotate_left(1);
            }
            values.extend(extra);
            format!("[{}]", values.join(","))
        });
    let any_array = prop::collection::vec(element, 0..8).prop_map(|e| format!("[{}]", e.join(",")));
    let flat = prop_oneof![scalar, frame_values, any_array];
    (
        flat,
        0usize..3,
        prop::sample::select(vec!["", " ", "\t", "\r\n"]),
    )
        .prop_map(|(inner, depth, space)| {
            format!(
                "{space}{}{inner}{}{space}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Anything but an object at the top is refused by both parsers.
    #[test]
    fn non_object_tops_are_refused(line in non_object_top()) {
        refused(&line);
    }

    /// Random byte edits (replace, insert, delete) of real frames.
    #[test]
    fn mutated_real_frames(
        frame in 0usize..642,
        edits in proptest::collection::vec((0usize..200, any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut line = FRAMES.lines().nth(frame).unwrap().as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at % (line.len() + 1);
            match kind {
                0 if at < line.len() => line[at] = byte,
                1 => line.insert(at, byte),
                _ if at < line.len() => { line.remove(at); }
                _ => {}
            }
        }
        agree(&line);
    }

    /// Random JSON-ish text from the frame's own alphabet.
    #[test]
    fn frame_shaped_text(text in r#"\{("(v|pid|id|datetime|permission|value|x)":(1|0|-1|1\.0|null|"read"|"2026-11-23T16:30:45Z"|"\./x"|\{\}|\[\]),?){0,8}\}"#) {
        agree(text.as_bytes());
    }
}
