//! Raw bytes against the real daemon: every protocol fault closes only the offending connection,
//! without an answer, and is logged; other connections keep being answered.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{Daemon, RawConn, read_frame};
use std::time::Duration;

const POLICY: &str = r#"
version = 1
[defaults]
reason = "nope"
[[rule]]
id = "tmp"
effect = "allow"
permissions = ["read"]
paths = ["/tmp"]
"#;

/// The frame with the `x` of its value replaced by the byte 0xff, which is never valid UTF-8.
fn invalid_utf8(frame: String) -> Vec<u8> {
    let mut bytes = frame.into_bytes();
    let at = bytes.len() - 4; // `x"}\n`
    assert_eq!(bytes[at], b'x');
    bytes[at] = 0xff;
    bytes
}

/// Asks about reading `value` with `id`, as this process.
fn ask(conn: &mut RawConn, id: u32, value: &str) -> String {
    conn.send(read_frame(id, Some(std::process::id()), value).as_bytes());
    conn.answer()
}

#[test]
fn answers_in_order_with_reasons() {
    let daemon = Daemon::start(POLICY, &[]);
    let mut conn = RawConn::open(&daemon);
    assert_eq!(
        ask(&mut conn, 1, "/tmp/x"),
        "{\"id\":1,\"result\":\"allow\"}\n"
    );
    assert_eq!(
        ask(&mut conn, 2, "/etc/passwd"),
        "{\"id\":2,\"result\":\"deny\",\"reason\":\"read /etc/passwd: nope (rule default)\"}\n"
    );
    assert_eq!(
        ask(&mut conn, 7, "/tmp/../etc"),
        "{\"id\":7,\"result\":\"deny\",\"reason\":\"read /etc: nope (rule default)\"}\n"
    );
    // A frame without pid (Deno 2.5.3/2.5.4) is answered.
    conn.send(read_frame(8, None, "/tmp").as_bytes());
    assert_eq!(conn.answer(), "{\"id\":8,\"result\":\"allow\"}\n");
    // Several frames in one write are answered one by one, in order.
    let pid = Some(std::process::id());
    conn.send(
        format!(
            "{}{}",
            read_frame(9, pid, "/tmp/a"),
            read_frame(10, pid, "/etc")
        )
        .as_bytes(),
    );
    assert_eq!(conn.answer(), "{\"id\":9,\"result\":\"allow\"}\n");
    assert_eq!(
        conn.answer(),
        "{\"id\":10,\"result\":\"deny\",\"reason\":\"read /etc: nope (rule default)\"}\n"
    );
    // A frame split across writes is one frame.
    let f = read_frame(11, pid, "/tmp/b");
    conn.send(&f.as_bytes()[..20]);
    std::thread::sleep(Duration::from_millis(50));
    conn.send(&f.as_bytes()[20..]);
    assert_eq!(conn.answer(), "{\"id\":11,\"result\":\"allow\"}\n");
    // Frames longer than the daemon's 2 KiB read buffer, up to the 64 KiB bound, whole or in
    // pieces; and a short frame right behind a long one in the same write. A path past PATH_MAX
    // (4,096 bytes) is denied as one no system call takes: the frame is still read whole.
    for (id, len, pieces) in [
        (12u32, 3_000usize, false),
        (14, 20_000, true),
        (15, 60_000, false),
    ] {
        let long = format!("/tmp/{}", "ab/".repeat(len / 3));
        let f = read_frame(id, pid, &long);
        let expected = if long.len() < 4096 {
            format!("{{\"id\":{id},\"result\":\"allow\"}}\n")
        } else {
            // The value shortened in its middle, so that the reason fits the 512 characters.
            let reason = format!(
                ": denied: a path of {} bytes is longer than the system allows (4095 bytes) (rule unresolvable)",
                long.len()
            );
            let room = 512 - "read ".len() - reason.len();
            let (head, tail) = (room - (room - 1) / 2 - 1, (room - 1) / 2);
            format!(
                "{{\"id\":{id},\"result\":\"deny\",\"reason\":\"read {}…{}{reason}\"}}\n",
                &long[..head],
                &long[long.len() - tail..]
            )
        };
        if pieces {
            for piece in f.as_bytes().chunks(4_096) {
                conn.send(piece);
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(conn.answer(), expected);
        } else {
            // Ids increase, so the short frame behind takes the next one (15 -> 16).
            conn.send(format!("{f}{}", read_frame(id + 1, pid, "/etc")).as_bytes());
            assert_eq!(conn.answer(), expected);
            assert!(conn.answer().starts_with(&format!("{{\"id\":{},", id + 1)));
        }
    }
}

#[test]
fn each_fault_closes_only_its_own_connection() {
    let daemon = Daemon::start(POLICY, &["--max-frame-bytes", "4096"]);
    let me = Some(std::process::id());
    let mut bystander = RawConn::open(&daemon);
    let oversize = format!("{}\n", "x".repeat(5000));
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "non-increasing id",
            vec![
                read_frame(5, me, "/tmp").into_bytes(),
                read_frame(5, me, "/tmp").into_bytes(),
            ],
            "request id 5 is not greater than the previous id 5",
        ),
        (
            "decreasing id",
            vec![
                read_frame(5, me, "/tmp").into_bytes(),
                read_frame(4, me, "/tmp").into_bytes(),
            ],
            "request id 4 is not greater",
        ),
        (
            "schema-invalid frame",
            vec![b"{\"v\":1}\n".to_vec()],
            "does not match the v1 request schema",
        ),
        (
            "v = 2",
            vec![
                read_frame(1, me, "/tmp")
                    .replace("\"v\":1", "\"v\":2")
                    .into_bytes(),
            ],
            "at `/v`",
        ),
        (
            "pid mismatch",
            vec![read_frame(1, Some(std::process::id() + 1), "/tmp").into_bytes()],
            "pid mismatch",
        ),
        (
            "oversize line",
            vec![oversize.into_bytes()],
            "frame exceeds 4096 bytes",
        ),
        (
            "non-UTF-8",
            vec![invalid_utf8(read_frame(1, me, "/tmp/x"))],
            "not valid UTF-8",
        ),
        ("not JSON", vec![b"hello\n".to_vec()], "not valid JSON"),
        ("blank line", vec![b"\n".to_vec()], "frame is blank"),
    ];
    for (bystander_id, (what, frames, logged)) in (1..).zip(cases) {
        let mut conn = RawConn::open(&daemon);
        let (last, first) = frames.split_last().unwrap();
        for f in first {
            conn.send(f);
            assert!(
                conn.answer().contains("\"result\""),
                "{what}: setup frame answered"
            );
        }
        conn.send(last);
        conn.assert_closed_unanswered(what);
        daemon.wait_for_log(&["protocol fault", logged]);
        // The connection that behaves is still answered, and new ones are accepted.
        assert!(
            ask(&mut bystander, bystander_id, "/tmp/ok").contains("allow"),
            "{what}: bystander"
        );
        assert!(
            ask(&mut RawConn::open(&daemon), 1, "/tmp").contains("allow"),
            "{what}: new connection"
        );
    }
    let faults = daemon
        .log()
        .iter()
        .filter(|l| l.contains("protocol fault"))
        .count();
    assert_eq!(faults, 9, "one logged fault per bad connection");
}

#[test]
fn a_started_frame_must_finish_but_idle_is_fine() {
    let mut daemon = Daemon::start(POLICY, &["--frame-timeout", "0.3"]);
    let mut idle = RawConn::open(&daemon);
    let mut slow = RawConn::open(&daemon);
    slow.send(b"{\"v\":1,");
    std::thread::sleep(Duration::from_millis(800));
    slow.assert_closed_unanswered("slowloris");
    daemon.wait_for_log(&["protocol fault", "frame not finished within 300ms"]);
    // The idle connection waited just as long and is still served.
    assert!(ask(&mut idle, 1, "/tmp").contains("allow"));
    // A peer that hangs up mid-frame is a fault of its own kind.
    let mut half = RawConn::open(&daemon);
    half.send(b"{\"v\":1,\"id\":1");
    half.0
        .get_mut()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    half.assert_closed_unanswered("closed mid-frame");
    daemon.wait_for_log(&[
        "protocol fault",
        "connection closed in the middle of a frame",
    ]);
    assert!(daemon.is_running());
}

#[test]
fn stops_on_sigterm_and_removes_its_socket() {
    let mut daemon = Daemon::start(POLICY, &[]);
    let mut conn = RawConn::open(&daemon);
    assert!(ask(&mut conn, 1, "/tmp").contains("allow"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    conn.assert_closed_unanswered("connection after stop");
    assert!(!daemon.socket.exists(), "socket file removed on stop");
}
