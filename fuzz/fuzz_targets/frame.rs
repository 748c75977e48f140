//! Frame decoding and validation: the daemon's one-pass parser must accept exactly what the
//! schema path accepts and read the same request; what the client accepts as a response, the
//! broker's writer reproduces as one line that reads back the same. An accepted frame is a JSON
//! object (seeds `regression-array-*`: an array of a valid frame's values was once answered).
#![no_main]

use libfuzzer_sys::fuzz_target;
use permission_broker_protocol::{
    parse_request_by_schema, parse_request_ref, parse_response, write_answer,
};

fuzz_target!(|line: &[u8]| {
    let fast = parse_request_ref(line).map(|r| r.into_owned());
    let reference = parse_request_by_schema(line);
    assert_eq!(
        fast.as_ref().ok(),
        reference.as_ref().ok(),
        "parsers disagree"
    );
    if let Ok(request) = fast {
        // Checked against the bytes, not against the other parser (which could share a mistake):
        // only a JSON object is a frame, never an array of a frame's values or any other top.
        let top = line
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        assert_eq!(top, Some(&b'{'), "accepted a frame that is not an object");
        // An accepted frame, written back, is accepted with the same meaning.
        let again = serde_json::to_vec(&request).expect("a request serialises");
        let reread = parse_request_ref(&again).map(|r| r.into_owned());
        assert_eq!(reread.ok(), Some(request));
    }
    if let Ok(response) = parse_response(line) {
        let mut out = Vec::new();
        write_answer(
            &mut out,
            response.id(),
            response.result(),
            response.reason().unwrap_or(""),
        );
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        assert_eq!(
            parse_response(&out).expect("our own answer parses"),
            response
        );
    }
});
