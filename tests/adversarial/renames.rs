//! Attack: rename or remove a directory above a denied tree, then read the tree where it moved.
//!
//! With the app directory allowed and `app/data/secrets/**` denied, Deno 2.9.6 renamed
//! `app/data` (and `app/data/secrets` itself: `/**` did not cover its base) and read
//! `app/data2/secrets/key`; removing the directory destroyed the secret. Expected: a trailing
//! `/**` covers its base, and a write at or above a tree that a read or write deny rule protects
//! (Deno asks write for both paths of a rename, and for a removal) is denied by that rule. Fix:
//! `TreeIndex` in `crates/policy/src/path.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{World, assert_success, stdout_lines};
use std::path::Path;

fn policy(app: &Path) -> String {
    format!(
        r#"
version = 1
[[rule]]
id = "app"
effect = "allow"
permissions = ["read", "write"]
paths = ["{app}"]

[[rule]]
id = "secrets"
effect = "deny"
permissions = ["read", "write"]
paths = ["{app}/data/secrets/**"]
reason = "the secrets stay where they are"
"#,
        app = app.display()
    )
}

const SCRIPT: &str = r#"
const tries = [
  () => Deno.renameSync("data", "data2"),
  () => Deno.renameSync("data/secrets", "moved"),
  () => Deno.removeSync("data", { recursive: true }),
  () => Deno.readDirSync("data/secrets").next(),
  () => Deno.readTextFileSync("data2/secrets/key"),
  () => Deno.readTextFileSync("moved/key"),
];
for (const t of tries) {
  try { t(); console.log("done"); } catch (e) { console.log("refused " + e.message); }
}
console.log(Deno.readTextFileSync("data/x.txt").trim());
"#;

#[test]
fn a_denied_tree_cannot_be_moved_or_removed_from_under_its_rule() {
    let world = World::with_policy(policy, &[]);
    std::fs::create_dir_all(world.app.join("data/secrets")).unwrap();
    std::fs::write(world.app.join("data/secrets/key"), "TOPSECRET").unwrap();
    let output = world.run("2.9.6", "renames.ts", SCRIPT);
    assert_success(&output, "renames");
    let lines = stdout_lines(&output);
    for (i, what) in [
        "rename the parent",
        "rename the tree",
        "remove the parent",
        "list the tree",
        "read after a rename",
        "read after a rename",
    ]
    .iter()
    .enumerate()
    {
        assert!(lines[i].starts_with("refused"), "{what}: {lines:?}");
    }
    assert!(
        lines[0].contains("the secrets stay where they are"),
        "{lines:?}"
    );
    assert_eq!(lines[6], "inside", "the rest of the app still works");
    assert_eq!(
        std::fs::read_to_string(world.app.join("data/secrets/key")).unwrap(),
        "TOPSECRET"
    );
}
