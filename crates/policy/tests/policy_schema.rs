//! `schemas/policy.v1.json` describes the files the compiler accepts: every shipped example
//! validates, and the schema rejects what it can see is wrong.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

const SCHEMA: &str = include_str!("../../../schemas/policy.v1.json");

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .build(&serde_json::from_str(SCHEMA).unwrap())
        .unwrap()
}

fn as_json(text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

/// Every policy file under config/ (case files in config/tests excepted).
fn shipped_policies() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "tests") {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        &mut out,
    );
    out.sort();
    out
}

#[test]
fn every_shipped_policy_validates_and_points_at_the_schema() {
    let validator = validator();
    let files = shipped_policies();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&text))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        // The `#:schema` line editors follow resolves to this schema.
        let first = text.lines().next().unwrap();
        let relative = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{}: no #:schema line", file.display()));
        let target = file
            .parent()
            .unwrap()
            .join(relative)
            .canonicalize()
            .unwrap();
        assert!(
            target.ends_with("schemas/policy.v1.json"),
            "{}",
            file.display()
        );
    }
}

#[test]
fn the_schema_rejects_what_it_can_see() {
    let validator = validator();
    let rule =
        |body: &str| format!("version = 1\n[[rule]]\nid = \"a\"\neffect = \"allow\"\n{body}\n");
    let bad = [
        "version = 2\n".to_owned(),
        "[defaults]\n".to_owned(),
        "version = 1\nverison = 1\n".to_owned(),
        "version = 1\n[defaults]\nmode = \"observe\"\n".to_owned(),
        rule("permissions = [\"reed\"]"),
        rule("permissions = []"),
        rule("permissions = [\"*\", \"read\"]"),
        rule("permissions = [\"read\"]\npaths = [\"relative\"]"),
        rule("permissions = [\"env\"]\nnames = [\"A*B\"]"),
        rule("permissions = [\"env\"]\nwhen = {}"),
        rule("permissions = [\"env\"]\nwhen = { uids = [-1] }"),
        rule("permissions = [\"env\"]\nwhen = { executables = [\"deno\"] }"),
        rule("permissions = [\"env\"]\nextra = 1"),
    ];
    for text in bad {
        assert!(!validator.is_valid(&as_json(&text)), "accepted:\n{text}");
    }
    let good =
        rule("permissions = [\"*\"]\nwhen = { users = [\"app\"], units = [\"app.service\"] }");
    assert!(validator.is_valid(&as_json(&good)));
}
