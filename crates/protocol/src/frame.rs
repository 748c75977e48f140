//! Typed v1 frames.

use crate::{FrameError, json, reason::sanitize_reason, schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The eight permissions Deno asks a broker about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Net,
    Env,
    Sys,
    Run,
    Ffi,
    Import,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::Read,
        Permission::Write,
        Permission::Net,
        Permission::Env,
        Permission::Sys,
        Permission::Run,
        Permission::Ffi,
        Permission::Import,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Net => "net",
            Permission::Env => "env",
            Permission::Sys => "sys",
            Permission::Run => "run",
            Permission::Ffi => "ffi",
            Permission::Import => "import",
        }
    }

    /// Position in [`Permission::ALL`], for tables indexed by permission.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission `{0}` (expected one of read, write, net, env, sys, run, ffi, import)")]
pub struct UnknownPermission(pub String);

/// A decision as it travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub const fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One permission check, as Deno sends it. Field order is Deno's, so a serialised request is
/// byte-for-byte what Deno would write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    /// Absent from Deno 2.5.3 and 2.5.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub id: u32,
    pub datetime: String,
    pub permission: Permission,
    /// `None` is JSON `null`: the whole permission.
    pub value: Option<String>,
}

/// A request whose strings borrow from the line it was parsed from (they are owned only where
/// the JSON escapes them). What the daemon's hot path uses: no allocation for a typical frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRef<'a> {
    pub v: u32,
    pub pid: Option<u32>,
    pub id: u32,
    pub datetime: Cow<'a, str>,
    pub permission: Permission,
    pub value: Option<Cow<'a, str>>,
}

impl RequestRef<'_> {
    pub fn into_owned(self) -> Request {
        Request {
            v: self.v,
            pid: self.pid,
            id: self.id,
            datetime: self.datetime.into_owned(),
            permission: self.permission,
            value: self.value.map(Cow::into_owned),
        }
    }
}

/// Parses and validates one request line (without its `\n`). See [`parse_request_ref`].
pub fn parse_request(line: &[u8]) -> Result<Request, FrameError> {
    parse_request_ref(line).map(RequestRef::into_owned)
}

/// Parses and validates one request line (without its `\n`) in one pass, borrowing its strings.
///
/// A line is accepted exactly when [`parse_request_by_schema`] accepts it (the differential tests
/// and the `frame` fuzz target hold the two to that): UTF-8, JSON without duplicate keys, the
/// strict v1 schema (its `date-time` format checked by the schema's own validator), and integers
/// written as integers. A rejected line goes through [`parse_request_by_schema`] again, only to
/// name the first violation the way the schema does.
pub fn parse_request_ref(line: &[u8]) -> Result<RequestRef<'_>, FrameError> {
    match wire::parse(line) {
        Some(request) => Ok(request),
        None => Err(match parse_request_by_schema(line) {
            Err(error) => error,
            // Unreachable while the two agree; if they ever disagree, the stricter one wins.
            Ok(_) => FrameError::Schema {
                kind: "request",
                path: String::new(),
                message: "frame refused by the typed parser".to_owned(),
            },
        }),
    }
}

/// The reference validation, in layers: UTF-8, then JSON without duplicate keys (into a
/// `serde_json::Value`), then the strict v1 schema with `jsonschema`, then the typed conversion
/// (which additionally refuses numbers that JSON Schema counts as integers but are written as
/// floats, such as `1.0`). Slower than [`parse_request_ref`], with the schema's error messages.
pub fn parse_request_by_schema(line: &[u8]) -> Result<Request, FrameError> {
    let value = parse_json(line)?;
    schema::request_schema().validate(&value)?;
    Request::deserialize(&value).map_err(|e| FrameError::Schema {
        kind: "request",
        path: String::new(),
        message: e.to_string(),
    })
}

/// The one-pass request parser: serde's derived field matching refuses unknown and duplicate
/// fields; the custom field readers refuse what serde would otherwise let through (`null` for
/// `pid`, a missing `value`, `{"read":null}` for a permission).
mod wire {
    use super::{Permission, RequestRef};
    use serde::Deserialize;
    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Deserializer, Error, MapAccess, Visitor};
    use std::borrow::Cow;
    use std::fmt;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire<'a> {
        v: u32,
        #[serde(default, deserialize_with = "some_u32")]
        pid: Option<u32>,
        id: u32,
        #[serde(borrow, deserialize_with = "string")]
        datetime: Cow<'a, str>,
        #[serde(deserialize_with = "permission")]
        permission: Permission,
        #[serde(borrow, deserialize_with = "string_or_null")]
        value: Option<Cow<'a, str>>,
    }

    pub(super) fn parse(line: &[u8]) -> Option<RequestRef<'_>> {
        let text = std::str::from_utf8(line).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let wire = de.deserialize_map(ObjectOnly).ok()?;
        de.end().ok()?;
        let valid = wire.v == 1
            && wire.pid != Some(0)
            && crate::schema::request_datetime_is_valid(&wire.datetime);
        valid.then_some(RequestRef {
            v: wire.v,
            pid: wire.pid,
            id: wire.id,
            datetime: wire.datetime,
            permission: wire.permission,
            value: wire.value,
        })
    }

    /// Reads a [`Wire`] from a JSON object and from nothing else.
    ///
    /// serde's derived `Deserialize` for a struct also accepts a sequence of its fields in
    /// declaration order, and serde_json's `deserialize_struct` hands it one for a JSON array, so
    /// `[1,42,1,"…","read","/x"]` would be read as a request while the schema refuses it. Asking
    /// serde_json for a map refuses every other top (array, string, number, bool, null) before any
    /// field is read; the object's entries are then given to the derived reader unchanged, so
    /// unknown and duplicate fields are still refused and strings still borrow from the line.
    struct ObjectOnly;

    impl<'de> Visitor<'de> for ObjectOnly {
        type Value = Wire<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Wire::deserialize(MapAccessDeserializer::new(map))
        }
    }

    fn some_u32<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
        u32::deserialize(de).map(Some)
    }

    fn string<'de, D: Deserializer<'de>>(de: D) -> Result<Cow<'de, str>, D::Error> {
        string_or_null(de)?.ok_or_else(|| D::Error::custom("expected a string"))
    }

    fn string_or_null<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Cow<'de, str>>, D::Error> {
        de.deserialize_any(StringOrNull)
    }

    fn permission<'de, D: Deserializer<'de>>(de: D) -> Result<Permission, D::Error> {
        let name = string(de)?;
        name.parse().map_err(D::Error::custom)
    }

    struct StringOrNull;

    impl<'de> Visitor<'de> for StringOrNull {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }

        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }

        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
}

fn parse_json(line: &[u8]) -> Result<serde_json::Value, FrameError> {
    let text = std::str::from_utf8(line).map_err(|e| FrameError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(FrameError::Blank);
    }
    json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))
}

/// A broker's answer. Built only through [`Response::allow`] and [`Response::deny`], so a reason
/// is sanitised by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    id: u32,
    result: Effect,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Response {
    pub fn allow(id: u32) -> Self {
        Response {
            id,
            result: Effect::Allow,
            reason: None,
        }
    }

    /// A deny; the reason is reduced to one printable line (see [`sanitize_reason`]). An empty
    /// reason is omitted, so Deno prints its own message.
    pub fn deny(id: u32, reason: &str) -> Self {
        let reason = sanitize_reason(reason).into_owned();
        Response {
            id,
            result: Effect::Deny,
            reason: (!reason.is_empty()).then_some(reason),
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn result(&self) -> Effect {
        self.result
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Appends the response as one `\n`-terminated line.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        write_answer(
            out,
            self.id,
            self.result,
            self.reason.as_deref().unwrap_or(""),
        );
    }
}

/// Appends an answer as one `\n`-terminated line, exactly as [`Response::write_line`] would write
/// `Response::allow(id)` or `Response::deny(id, reason)`, without building one: the reason is
/// sanitised (borrowed when already clean) and `reason` is ignored for an allow.
pub fn write_answer(out: &mut Vec<u8>, id: u32, result: Effect, reason: &str) {
    out.extend_from_slice(b"{\"id\":");
    // serde_json writes integers without `fmt` (itoa); writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &id);
    out.extend_from_slice(b",\"result\":\"");
    out.extend_from_slice(result.as_str().as_bytes());
    out.push(b'"');
    if result == Effect::Deny {
        let reason = sanitize_reason(reason);
        // Writing into a Vec cannot fail; if serialising the reason somehow did, it is left out.
        if !reason.is_empty() {
            let before = out.len();
            out.extend_from_slice(b",\"reason\":");
            if serde_json::to_writer(&mut *out, reason.as_ref()).is_err() {
                out.truncate(before);
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

/// The fields of a response as a client reads them. Like Deno, unknown fields are ignored and a
/// reason may be missing or null; unlike [`Response`], this is what came off the wire.
#[derive(Debug, Deserialize)]
struct WireResponse {
    id: u32,
    result: Effect,
    #[serde(default)]
    reason: Option<String>,
}

/// Parses a response line the way Deno does: surrounding whitespace (and so CRLF) is ignored,
/// unknown fields are ignored, duplicate keys, a blank line, an id that is not a u32 and any
/// `result` other than exactly `allow` or `deny` are faults.
pub fn parse_response(line: &[u8]) -> Result<Response, FrameError> {
    let value = parse_json(line)?;
    let wire = WireResponse::deserialize(&value).map_err(|e| FrameError::Schema {
        kind: "response",
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok(match wire.result {
        Effect::Allow => Response::allow(wire.id),
        Effect::Deny => Response::deny(wire.id, wire.reason.as_deref().unwrap_or("")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_in_denos_field_order() {
        let line = br#"{"v":1,"pid":6937,"id":2,"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"read","value":"./scratch.txt"}"#;
        let request = parse_request(line).unwrap();
        assert_eq!(request.pid, Some(6937));
        assert_eq!(request.permission, Permission::Read);
        assert_eq!(request.value.as_deref(), Some("./scratch.txt"));
        assert_eq!(serde_json::to_vec(&request).unwrap(), line.to_vec());
    }

    #[test]
    fn null_value_is_the_whole_permission() {
        let line = br#"{"v":1,"id":1,"datetime":"2026-11-23T16:30:45.262660+00:00","permission":"env","value":null}"#;
        let request = parse_request(line).unwrap();
        assert_eq!(request.value, None);
        assert_eq!(request.pid, None, "Deno 2.5.3 frames carry no pid");
        assert!(
            String::from_utf8(serde_json::to_vec(&request).unwrap())
                .unwrap()
                .ends_with(r#""value":null}"#)
        );
    }

    #[test]
    fn deny_reasons_are_sanitised_and_allow_has_none() {
        let mut out = Vec::new();
        Response::allow(7).write_line(&mut out);
        Response::deny(8, "no\n\x1b[31mway\x1b[0m").write_line(&mut out);
        Response::deny(9, "").write_line(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":7,\"result\":\"allow\"}\n{\"id\":8,\"result\":\"deny\",\"reason\":\"no way\"}\n{\"id\":9,\"result\":\"deny\"}\n"
        );
    }

    #[test]
    fn answers_are_written_like_serde_writes_responses() {
        for id in [0, 1, 9, 10, 99, 100, 12345, 4_000_000_000, u32::MAX] {
            for (result, reason) in [
                (Effect::Allow, "ignored"),
                (Effect::Deny, ""),
                (Effect::Deny, "quote \" and \\ and ünï"),
                (Effect::Deny, "\x1b[31mred"),
            ] {
                let mut out = Vec::new();
                write_answer(&mut out, id, result, reason);
                let response = match result {
                    Effect::Allow => Response::allow(id),
                    Effect::Deny => Response::deny(id, reason),
                };
                let mut expected = serde_json::to_vec(&response).unwrap();
                expected.push(b'\n');
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }

    #[test]
    fn responses_are_read_like_deno_reads_them() {
        let r = parse_response(b"  {\"id\":3,\"result\":\"deny\",\"reason\":null,\"extra\":1}\r\n")
            .unwrap();
        assert_eq!((r.id(), r.result(), r.reason()), (3, Effect::Deny, None));
        for bad in [
            &b""[..],
            b"   ",
            b"{\"id\":3,\"result\":\"Allow\"}",
            b"{\"id\":-1,\"result\":\"allow\"}",
            b"{\"id\":4294967296,\"result\":\"allow\"}",
            b"{\"id\":3}",
            b"{\"result\":\"allow\"}",
            b"{\"id\":3,\"id\":3,\"result\":\"allow\"}",
            b"{\"id\":3,\"result\":\"allow\"",
            b"{\"id\":3,\"result\":\"allow\xff\"}",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_one_pass_reader_takes_only_an_object() {
        let object = br#"{"v":1,"pid":6937,"id":1,"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"read","value":"/x"}"#;
        let request = wire::parse(object).unwrap();
        // Still one pass over the line: unescaped strings borrow from it.
        assert!(matches!(request.datetime, Cow::Borrowed(_)));
        assert!(matches!(request.value, Some(Cow::Borrowed(_))));
        for top in [
            &br#"[1,6937,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]"#[..],
            br#"[1,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]"#,
            br#"[[1,6937,1,"2026-11-23T16:30:45.262660275+00:00","read","/x"]]"#,
            br#"[{"v":1,"pid":6937,"id":1,"datetime":"2026-11-23T16:30:45.262660275+00:00","permission":"read","value":"/x"}]"#,
            b"[]",
            b"\"read\"",
            b"1",
            b"true",
            b"false",
            b"null",
        ] {
            let shown = String::from_utf8_lossy(top);
            assert!(wire::parse(top).is_none(), "{shown}");
            assert!(
                matches!(parse_request_ref(top), Err(FrameError::Schema { .. })),
                "{shown}"
            );
        }
    }

    #[test]
    fn permissions_parse_and_print() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
            assert_eq!(Permission::ALL[p.index()], p);
        }
        assert!("Read".parse::<Permission>().is_err());
    }
}
