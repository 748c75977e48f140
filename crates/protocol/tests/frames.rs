//! The v1 request schema against real Deno frames and against junk.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_protocol::{
    FrameError, Permission, Response, parse_request, request_schema, response_schema,
};
use serde_json::Value;

const FRAMES: &str = include_str!("data/frames-2.9.6.jsonl");

#[test]
fn every_real_deno_frame_validates_and_round_trips() {
    let mut count = 0;
    let mut seen = std::collections::HashSet::new();
    for (n, line) in FRAMES.lines().enumerate() {
        let request = parse_request(line.as_bytes())
            .unwrap_or_else(|e| panic!("frame {} rejected: {e}\n{line}", n + 1));
        seen.insert(request.permission);
        // Field order and formatting are Deno's, so re-serialising gives the same bytes.
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            line,
            "frame {}",
            n + 1
        );
        count += 1;
    }
    assert_eq!(count, 642);
    assert_eq!(
        seen.len(),
        Permission::ALL.len(),
        "the capture covers all 8 permissions"
    );
}

#[test]
fn frames_without_pid_from_deno_2_5_3_validate() {
    for line in FRAMES.lines().take(50) {
        let mut value: Value = serde_json::from_str(line).unwrap();
        value.as_object_mut().unwrap().remove("pid");
        let text = serde_json::to_string(&value).unwrap();
        assert!(parse_request(text.as_bytes()).is_ok(), "{text}");
    }
}

const GOOD: &str = r#"{"v":1,"pid":42,"id":1,"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"read","value":"./x"}"#;

/// Replaces or removes one key of the good frame.
fn with(key: &str, value: Option<&str>) -> String {
    let mut frame: serde_json::Map<String, Value> = serde_json::from_str(GOOD).unwrap();
    match value {
        Some(raw) => {
            frame.insert(key.to_owned(), serde_json::from_str(raw).unwrap());
        }
        None => {
            frame.remove(key);
        }
    }
    serde_json::to_string(&frame).unwrap()
}

#[test]
fn junk_is_rejected() {
    let mut junk: Vec<(String, &str)> = vec![
        (String::new(), "empty line"),
        ("   ".into(), "blank line"),
        (
            "{}".into(),
            "empty object (Deno's published schema accepts it)",
        ),
        ("[]".into(), "array"),
        ("null".into(), "null"),
        ("1".into(), "number"),
        (r#""read""#.into(), "string"),
        (GOOD[..40].into(), "truncated"),
        (format!("{GOOD}{GOOD}"), "two frames on one line"),
        (format!("{GOOD} x"), "trailing garbage"),
        (
            GOOD.replace(r#""id":1"#, r#""id":1,"id":2"#),
            "duplicate id",
        ),
        (
            GOOD.replace(r#""v":1"#, r#""v":1,"v":1"#),
            "duplicate v, same value",
        ),
        (GOOD.replace("./x", "./x\\ud800"), "lone surrogate escape"),
    ];
    let fields: &[(&str, Option<&str>, &str)] = &[
        ("v", Some("2"), "v = 2"),
        ("v", Some("0"), "v = 0"),
        ("v", Some("\"1\""), "v as string"),
        ("v", Some("1.5"), "v as float"),
        ("v", None, "missing v"),
        ("id", None, "missing id"),
        ("id", Some("-1"), "negative id"),
        ("id", Some("4294967296"), "id past u32"),
        ("id", Some("1.5"), "fractional id"),
        ("id", Some("1.0"), "id written as float"),
        ("id", Some("\"1\""), "id as string"),
        ("id", Some("null"), "null id"),
        ("pid", Some("0"), "pid 0"),
        ("pid", Some("-5"), "negative pid"),
        ("pid", Some("4294967296"), "pid past u32"),
        ("pid", Some("\"42\""), "pid as string"),
        ("pid", Some("null"), "null pid"),
        ("datetime", None, "missing datetime"),
        ("datetime", Some("\"yesterday\""), "datetime not RFC 3339"),
        ("datetime", Some("\"2026-11-23\""), "date without time"),
        (
            "datetime",
            Some("\"2026-13-23T16:30:45+00:00\""),
            "month 13",
        ),
        ("datetime", Some("\"2026-11-23T16:30:45\""), "no offset"),
        ("datetime", Some("1763915445"), "datetime as number"),
        ("permission", None, "missing permission"),
        ("permission", Some("\"Read\""), "permission in wrong case"),
        ("permission", Some("\"hrtime\""), "retired permission"),
        ("permission", Some("\"all\""), "unknown permission"),
        ("permission", Some("null"), "null permission"),
        ("value", None, "missing value (Deno always sends it)"),
        ("value", Some("42"), "value as number"),
        ("value", Some("[\"./x\"]"), "value as array"),
        ("value", Some("{}"), "value as object"),
        ("value", Some("true"), "value as bool"),
        ("extra", Some("1"), "unknown field"),
        ("worker", Some("\"w1\""), "unknown field claiming identity"),
    ];
    for (key, value, what) in fields {
        junk.push((with(key, *value), what));
    }
    for (frame, what) in &junk {
        let err = parse_request(frame.as_bytes());
        assert!(err.is_err(), "{what}: accepted {frame}");
    }
    // Below the schema: bytes that are not text at all.
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes[50] = 0xff;
    assert_eq!(
        parse_request(&bytes),
        Err(FrameError::NotUtf8 { offset: 50 })
    );
    assert!(parse_request(b"{\"v\":1\0}").is_err(), "NUL byte");
}

/// serde's derived reader also takes a struct as an array of its fields in declaration order; a
/// frame is only ever a JSON object.
#[test]
fn an_array_of_a_frames_values_is_rejected() {
    // GOOD's values in Deno's field order.
    let array = r#"[1,42,1,"2026-11-23T16:30:45.262660275+00:00","read","./x"]"#.to_owned();
    let typed = parse_request(GOOD.as_bytes()).unwrap();
    assert_eq!(
        serde_json::to_string(&typed).unwrap(),
        GOOD,
        "GOOD is in Deno's order"
    );
    for line in [
        array.clone(),
        format!("[{array}]"),
        format!("[{GOOD}]"),
        r#"[1,6937,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]"#.to_owned(),
        r#"[1,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]"#.to_owned(),
    ] {
        match parse_request(line.as_bytes()) {
            Err(FrameError::Schema { path, .. }) => assert_eq!(path, "", "{line}"),
            other => panic!("{line}: expected a schema error at the top, got {other:?}"),
        }
    }
}

#[test]
fn schema_errors_name_the_offending_field() {
    match parse_request(with("v", Some("2")).as_bytes()) {
        Err(FrameError::Schema { path, .. }) => assert_eq!(path, "/v"),
        other => panic!("expected a schema error, got {other:?}"),
    }
    match parse_request(with("permission", Some("\"hrtime\"")).as_bytes()) {
        Err(FrameError::Schema { path, .. }) => assert_eq!(path, "/permission"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[test]
fn the_schema_file_and_the_parser_agree_on_every_case() {
    // The schema is the contract others can use without our code; it must not be looser than the
    // parser on anything but the documented float-integer case.
    for line in FRAMES.lines() {
        assert!(request_schema().is_valid(&serde_json::from_str(line).unwrap()));
    }
    assert!(!request_schema().is_valid(&serde_json::json!({})));
    assert!(
        request_schema().is_valid(&serde_json::from_str(&with("id", Some("1.0"))).unwrap()),
        "JSON Schema counts 1.0 as an integer; the typed stage is what rejects it"
    );
}

#[test]
fn everything_we_send_matches_the_response_schema() {
    let mut out = Vec::new();
    Response::allow(1).write_line(&mut out);
    Response::deny(u32::MAX, "secrets are managed by the platform team").write_line(&mut out);
    Response::deny(3, "").write_line(&mut out);
    Response::deny(4, "a\nb\x1b[1m\u{85}c").write_line(&mut out);
    for line in String::from_utf8(out).unwrap().lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        assert!(response_schema().is_valid(&value), "{line}");
    }
    for bad in [
        r#"{"id":1,"result":"Allow"}"#,
        r#"{"id":1,"result":"allow","reason":"allowed things carry no reason"}"#,
        r#"{"id":1,"result":"deny","reason":"two\nlines"}"#,
        r#"{"id":1}"#,
        r#"{"id":-1,"result":"deny"}"#,
        r#"{"id":1,"result":"deny","extra":true}"#,
    ] {
        assert!(
            !response_schema().is_valid(&serde_json::from_str(bad).unwrap()),
            "{bad}"
        );
    }
}
