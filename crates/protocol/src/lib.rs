//! The Deno permission broker protocol, version 1: one JSON request per line from the runtime, one
//! JSON response per line from the broker, strictly in order.
//!
//! This crate owns the wire format and nothing else: it does no IO. The daemon and the client crate
//! both build on it, so they cannot disagree about what a valid frame is.
//!
//! - [`parse_request`] turns one line into a typed [`Request`] ([`parse_request_ref`]: borrowing
//!   its strings, in one pass), rejecting anything that is not valid UTF-8, not JSON, has duplicate
//!   keys, or does not match the strict v1 request schema
//!   (`schemas/permission-broker-request.v1.json`, embedded at build time;
//!   [`parse_request_by_schema`] is the reference that validates with it directly).
//! - [`IdSequence`] enforces that ids strictly increase on a connection.
//! - [`Response`] is what the broker answers; deny reasons are sanitised when it is built, so a
//!   reason that reaches Deno's terminal is always one printable line.

mod frame;
mod json;
mod reason;
mod schema;
mod sequence;

pub use frame::{
    Effect, Permission, Request, RequestRef, Response, parse_request, parse_request_by_schema,
    parse_request_ref, parse_response, write_answer,
};
pub use reason::{MAX_REASON_CHARS, escape_unprintable, is_unprintable, one_line, sanitize_reason};
pub use schema::{REQUEST_SCHEMA, RESPONSE_SCHEMA, Schema, request_schema, response_schema};
pub use sequence::{IdSequence, OutOfOrder};

/// The protocol version this crate speaks (`"v": 1`).
pub const PROTOCOL_VERSION: u64 = 1;

/// Default bound on one frame (request line), newline excluded. A longer line is a protocol fault.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Why a line is not a valid frame. Every variant is a protocol fault: the daemon closes the
/// connection without answering, the client terminates its process.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("frame is blank")]
    Blank,
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    #[error("frame does not match the v1 {kind} schema at `{path}`: {message}")]
    Schema {
        kind: &'static str,
        path: String,
        message: String,
    },
}
