//! Attack: `..` and symlinks in a command path.
//!
//! With `names = ["<root>/bin/*"]`, Deno 2.9.6 ran `new Deno.Command("<root>/bin/../evil.sh")`:
//! the value matched the prefix as written. Expected: a command that contains `/` is a path,
//! normalised and, with `symlinks = "resolve"`, followed, before it is matched; a relative one
//! is refused (Deno runs it from the spawn's `cwd` option, which it does not send: the red team
//! ran `../../../usr/bin/evil` from a `cwd` of its choosing); a bare name stays a name. Fix:
//! `Resolved::Command` in `crates/policy/src/decide.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use permission_broker_tests as common;

use common::world::{World, assert_success, stdout_lines};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn policy(app: &Path) -> String {
    let root = app.parent().unwrap().display();
    format!(
        r#"
version = 1
[[rule]]
id = "app"
effect = "allow"
permissions = ["read"]
paths = ["{root}"]

[[rule]]
id = "tools"
effect = "allow"
permissions = ["run"]
names = ["{root}/bin/*"]
"#
    )
}

fn script_file(path: &Path) {
    std::fs::write(path, "#!/bin/sh\necho ran $0\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const RUN: &str = r#"
for (const arg of Deno.args) {
  const [cmd, cwd] = arg.startsWith("CWD:") ? [arg.slice(4), Deno.cwd() + "/../bin"] : [arg, undefined];
  try {
    const out = new Deno.Command(cmd, cwd ? { cwd } : {}).outputSync();
    console.log("ran " + new TextDecoder().decode(out.stdout).trim());
  } catch (e) { console.log("refused " + e.message); }
}
"#;

#[test]
fn dot_dot_and_symlinks_in_a_command_path_do_not_escape_its_directory() {
    let world = World::with_policy(policy, &[]);
    let bin = world.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    script_file(&bin.join("tool"));
    script_file(&world.root.join("evil.sh"));
    std::os::unix::fs::symlink(world.root.join("evil.sh"), bin.join("link")).unwrap();
    let root = world.root.display().to_string();
    let mut cmd = world.deno("2.9.6", "run.ts", RUN);
    cmd.args([
        format!("{root}/bin/tool"),
        format!("{root}/bin/../evil.sh"),
        format!("{root}/bin/link"),
        "../bin/../evil.sh".to_owned(),
        "../bin/tool".to_owned(),
        // The spawn's own `cwd` decides where a relative command is found.
        "CWD:../evil.sh".to_owned(),
    ]);
    let output =
        common::world::wait_with_timeout(cmd.spawn().unwrap(), std::time::Duration::from_secs(60));
    assert_success(&output, "run names");
    let lines = stdout_lines(&output);
    assert!(
        lines[0].starts_with("ran ran"),
        "the honest tool runs: {lines:?}"
    );
    assert!(lines[1].starts_with("refused"), "`..` escape: {lines:?}");
    assert!(lines[2].starts_with("refused"), "symlink escape: {lines:?}");
    assert!(
        lines[3].starts_with("refused"),
        "relative `..` escape: {lines:?}"
    );
    // Deno runs a relative command from the spawn's `cwd` option, which it does not send: refused,
    // even the honest one, with a reason that says to use the absolute path.
    assert!(
        lines[4].contains("relative command `../bin/tool`") && lines[4].contains("absolute path"),
        "relative path to the tool: {lines:?}"
    );
    assert!(
        lines[5].starts_with("refused run ../evil.sh: denied: relative command"),
        "relative command from a chosen cwd: {lines:?}"
    );
}

/// Attack: a bare command name is whatever the script's PATH finds. With `names = ["git"]`,
/// `new Deno.Command("git", { env: { PATH: dir } })` ran the script's own `git`. Expected: a bare
/// name in an allow rule is a load error unless the rule says `trusts_path = true` (a warning
/// each time); named by absolute path, the script's PATH game is refused.
#[test]
fn a_bare_command_name_is_refused_unless_the_rule_trusts_path() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(
        &bare,
        "version = 1\n[[rule]]\nid = \"tools\"\neffect = \"allow\"\npermissions = [\"run\"]\nnames = [\"ls\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(&*common::BROKER)
        .arg("check")
        .arg(&bare)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`ls` is a bare command name"), "{stderr}");
    std::fs::write(
        &bare,
        "version = 1\n[[rule]]\nid = \"tools\"\neffect = \"allow\"\npermissions = [\"run\"]\nnames = [\"ls\"]\ntrusts_path = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(&*common::BROKER)
        .arg("check")
        .arg(&bare)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("trusts the script's PATH for `ls`"),
        "{stderr}"
    );

    // By absolute path, real Deno: the script's own `ls` on its own PATH is refused.
    let world = World::with_policy(
        |app| {
            format!(
                "version = 1\n[[rule]]\nid = \"app\"\neffect = \"allow\"\npermissions = [\"read\", \"write\"]\npaths = [\"{}\"]\n[[rule]]\nid = \"tools\"\neffect = \"allow\"\npermissions = [\"run\"]\nnames = [\"/bin/ls\", \"/usr/bin/ls\"]\n",
                app.display()
            )
        },
        &[],
    );
    let evil = world.app.join("evil-bin");
    std::fs::create_dir_all(&evil).unwrap();
    script_file(&evil.join("ls"));
    let script = format!(
        r#"
for (const [cmd, opts] of [["ls", {{ env: {{ PATH: "{evil}" }} }}], ["/bin/ls", {{}}]]) {{
  try {{ new Deno.Command(cmd, opts).outputSync(); console.log("ran " + cmd); }}
  catch (e) {{ console.log("refused " + cmd); }}
}}
"#,
        evil = evil.display()
    );
    let output = world.run("2.9.6", "path.ts", &script);
    assert_success(&output, "PATH game");
    assert_eq!(stdout_lines(&output), ["refused ls", "ran /bin/ls"]);
}
