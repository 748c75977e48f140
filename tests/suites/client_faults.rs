//! The client crate terminates its process with exit code 87 on every protocol fault. Each case
//! runs `permission-broker ask` (which uses the crate) in a subprocess against a scripted peer.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::{BROKER, Daemon};
use permission_broker_protocol::parse_request;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::thread::JoinHandle;

/// What the scripted broker does after reading one request.
enum Script {
    Reply(&'static [u8]),
    /// Reply with the request's own id and this result/reason JSON tail.
    ReplySameId(&'static str),
    CloseWithoutAnswer,
}

/// A one-connection broker that follows `script`; returns the request line it received and the
/// pid the kernel reported for the client.
fn scripted_broker(path: &Path, script: Script) -> JoinHandle<(String, u32)> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let kernel_pid =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .unwrap()
                .pid() as u32;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let stream = reader.get_mut();
        match script {
            Script::Reply(bytes) => stream.write_all(bytes).unwrap(),
            Script::ReplySameId(tail) => {
                let id = parse_request(line.trim_end().as_bytes()).unwrap().id;
                // CRLF, which Deno accepts.
                stream
                    .write_all(format!("{{\"id\":{id},{tail}}}\r\n").as_bytes())
                    .unwrap();
            }
            Script::CloseWithoutAnswer => {}
        }
        (line, kernel_pid)
    })
}

fn ask(socket: &Path, args: &[&str]) -> Output {
    Command::new(&*BROKER)
        .arg("ask")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn assert_fault(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(87), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "no decision printed");
    assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr}");
    assert!(stderr.contains(expected), "{expected:?} not in {stderr:?}");
}

#[test]
fn fault_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    assert_fault(
        &ask(&dir.path().join("absent.sock"), &["read", "/x"]),
        "cannot connect",
    );
}

/// Runs `ask` against a broker following `script` and asserts it faults with `expected`.
fn assert_client_faults(script: Script, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("b.sock");
    let broker = scripted_broker(&socket, script);
    assert_fault(&ask(&socket, &["read", "/x"]), expected);
    broker.join().unwrap();
}

#[test]
fn fault_wrong_id() {
    assert_client_faults(
        Script::Reply(b"{\"id\":99,\"result\":\"allow\"}\n"),
        "answer carries id 99 but request 1 is outstanding",
    );
}

#[test]
fn fault_unknown_result() {
    assert_client_faults(
        Script::ReplySameId("\"result\":\"Allow\""),
        "invalid answer to request 1",
    );
}

#[test]
fn fault_malformed_json() {
    assert_client_faults(Script::Reply(b"{\"id\":1,\"result\":\n"), "not valid JSON");
}

#[test]
fn fault_non_utf8() {
    assert_client_faults(
        Script::Reply(b"{\"id\":1,\"result\":\"deny\",\"reason\":\"\xff\"}\n"),
        "not valid UTF-8",
    );
}

#[test]
fn fault_closed_mid_request() {
    assert_client_faults(
        Script::CloseWithoutAnswer,
        "closed the connection before answering request 1",
    );
}

#[test]
fn fault_duplicate_keys_and_blank_line() {
    assert_client_faults(
        Script::Reply(b"{\"id\":1,\"id\":1,\"result\":\"allow\"}\n"),
        "duplicate key `id`",
    );
    assert_client_faults(Script::Reply(b"\n"), "frame is blank");
}

#[test]
fn sends_denos_frame_and_reads_like_deno() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("b.sock");
    // Deno ignores unknown fields and accepts CRLF and a null reason; so does the client.
    let broker = scripted_broker(
        &socket,
        Script::ReplySameId("\"result\":\"deny\",\"reason\":\"no\\u001b[31m way\",\"extra\":1"),
    );
    let output = ask(&socket, &["env", "HOME"]);
    let (line, kernel_pid) = broker.join().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "deny: no way\n",
        "reason sanitised"
    );
    let request =
        parse_request(line.trim_end().as_bytes()).expect("the client's frame is valid v1");
    assert_eq!(
        request.pid,
        Some(kernel_pid),
        "pid is the client's own, as the kernel sees it"
    );
    assert_eq!((request.id, request.value.as_deref()), (1, Some("HOME")));
    assert!(request.datetime.ends_with("+00:00"), "{}", request.datetime);
}

#[test]
fn asks_the_real_daemon() {
    let daemon = Daemon::start(
        "version = 1\n[[rule]]\nid = \"tmp\"\neffect = \"allow\"\npermissions = [\"read\"]\npaths = [\"/tmp\"]\n",
        &[],
    );
    let allow = ask(&daemon.socket, &["read", "/tmp/x"]);
    assert_eq!(
        (allow.status.code(), &allow.stdout[..]),
        (Some(0), &b"allow\n"[..])
    );
    let deny = ask(&daemon.socket, &["read"]);
    assert_eq!(deny.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&deny.stdout),
        format!(
            "deny: read (all): {} (rule default)\n",
            permission_broker_policy::DEFAULT_REASON
        )
    );
}

#[test]
fn a_broker_running_as_another_uid_is_refused_before_anything_is_sent() {
    // The scripted broker runs as this test's uid; requiring another one is a fault, and the
    // squatter never sees the check.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("squatter.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let other = me.wrapping_add(4242);
    let output = ask(
        &socket,
        &["--require-uid", &other.to_string(), "read", "/x"],
    );
    assert_fault(
        &output,
        &format!("runs as uid {me}, not the required uid {other}"),
    );
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut sent = String::new();
    BufReader::new(stream).read_line(&mut sent).unwrap();
    assert_eq!(sent, "", "nothing was sent to the squatter");
}

#[test]
fn the_real_daemon_passes_the_uid_check() {
    let daemon = Daemon::start("version = 1\n[defaults]\ndecision = \"allow\"\n", &[]);
    let me = nix::unistd::geteuid().as_raw().to_string();
    let output = ask(&daemon.socket, &["--require-uid", &me, "env", "HOME"]);
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim()
        ),
        (Some(0), "allow"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
