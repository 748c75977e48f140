//! A daemon killed with SIGKILL while real Deno processes are connected, under socket activation:
//! the connected processes stop with exit 87 (never continue unbrokered), and a Deno that connects
//! while no daemon runs waits on the socket the socket unit holds until the restarted daemon
//! answers it.
//!
//! Its own test binary, with one test: the test holds the listening socket the way systemd's
//! socket unit does and hands a copy to each daemon it starts, and nothing else here spawns
//! processes meanwhile that could inherit that copy.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{SECRET_REASON, World, assert_success, stdout_lines, wait_with_timeout};
use common::{DENO_VERSIONS, Launch};
use std::io::{BufRead, BufReader};
use std::time::Duration;

#[test]
fn a_sigkilled_daemon_stops_its_deno_processes_and_socket_activation_serves_the_next() {
    let mut world = World::with_launch(
        World::default_policy,
        Launch {
            socket_activated: true,
            ..Launch::default()
        },
    );
    let looping = r#"
while (true) {
  Deno.readTextFileSync("./data/x.txt");
  console.log("tick");
  await new Promise((resolve) => setTimeout(resolve, 20));
}
"#;
    // One long-running Deno of each pinned release, connected and brokered. Their stdout stays
    // open until they end: a closed pipe would fail them for another reason.
    let running: Vec<_> = DENO_VERSIONS
        .iter()
        .map(|version| {
            let mut child = world
                .deno(version, &format!("loop-{version}.ts"), looping)
                .spawn()
                .unwrap();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            stdout.read_line(&mut first).unwrap();
            assert_eq!(first, "tick\n", "Deno {version} is brokered and running");
            (version, child, stdout)
        })
        .collect();

    world.daemon.kill();
    for (version, child, _stdout) in running {
        let output = wait_with_timeout(child, Duration::from_secs(30));
        assert_eq!(
            output.status.code(),
            Some(87),
            "Deno {version} must stop, not continue unbrokered; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // No daemon runs now. The next Deno connects to the socket the unit still holds and waits.
    let mut next = world
        .deno(
            DENO_VERSIONS[0],
            "next.ts",
            r#"
console.log(Deno.readTextFileSync("./data/x.txt").trim());
try {
  Deno.readTextFileSync("./secret.txt");
  console.log("secret read");
} catch (e) {
  console.log(`secret ${e.name}: ${e.message}`);
}
"#,
        )
        .spawn()
        .unwrap();
    assert!(
        world.daemon.wait_for_connection(Duration::from_secs(30)),
        "Deno connected to the held socket"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        next.try_wait().unwrap().is_none(),
        "Deno waits for its answer rather than running unbrokered"
    );

    // What systemd does when a connection arrives: start the service on the same socket.
    world.daemon.restart();
    let output = wait_with_timeout(next, Duration::from_secs(60));
    assert_success(&output, "the Deno that waited for the restart");
    assert_eq!(
        stdout_lines(&output),
        [
            "inside".to_owned(),
            format!(
                "secret NotCapable: read {}/secret.txt: {SECRET_REASON} (rule secret)",
                world.app.display()
            )
        ]
    );
    world
        .daemon
        .wait_for_log(&["using the socket passed by the service manager"]);
}
