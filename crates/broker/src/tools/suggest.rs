//! `permission-broker suggest DECISION_LOG`: turn what a fleet did under an audit policy into a
//! reviewable enforce-mode policy — the observe-then-enforce rollout.
//!
//! Every decision record becomes part of an allow rule for its permission. Paths are collapsed
//! to their directory when more than one entry of that directory was used; hosts and names are
//! kept exact. Every entry carries a comment with how often it was asked for. Requests for a whole
//! permission (null) are never granted: granting `run` null lets a script run anything, including
//! a Deno without a broker. They are listed as comments for a human to decide.

use permission_broker_policy::{Permission, normalize_absolute};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Default)]
struct Observed {
    /// value -> hits
    values: BTreeMap<String, u64>,
    nulls: u64,
}

/// Builds the suggested policy from decision-log lines. Lines that are not decision records are
/// skipped and counted.
pub fn suggest(log: &str, source_name: &str) -> Result<String, String> {
    let mut by_permission: BTreeMap<Permission, Observed> = BTreeMap::new();
    let (mut decisions, mut skipped) = (0u64, 0u64);
    for (n, line) in log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{source_name}:{}: not a decision-log record: {e}", n + 1))?;
        if record["kind"] != "decision" {
            skipped += 1;
            continue;
        }
        let Some(permission) = record["permission"]
            .as_str()
            .and_then(|p| p.parse::<Permission>().ok())
        else {
            skipped += 1;
            continue;
        };
        decisions += 1;
        let observed = by_permission.entry(permission).or_default();
        // The normalised value where the daemon recorded one (relative paths made absolute).
        let value = record["resolved"].as_str().or(record["value"].as_str());
        match value {
            None => observed.nulls += 1,
            Some(v) => *observed.values.entry(v.to_owned()).or_default() += 1,
        }
    }
    if decisions == 0 {
        return Err(format!("{source_name}: no decision records to learn from"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `permission-broker suggest` from {decisions} decisions in {source_name}\n\
         # ({skipped} other records skipped). Review every entry before enforcing it.\nversion = 1\n\n\
         [defaults]\ndecision = \"deny\"\nmode = \"enforce\"\nreason = \"not observed during the audit; not permitted\"\n"
    );
    for (permission, observed) in &by_permission {
        let (key, entries) = match permission {
            Permission::Read | Permission::Write | Permission::Ffi => {
                ("paths", collapse_paths(&observed.values))
            }
            Permission::Net | Permission::Import => ("hosts", exact(&observed.values)),
            Permission::Env | Permission::Sys | Permission::Run => {
                ("names", exact(&observed.values))
            }
        };
        if observed.nulls > 0 {
            let _ = writeln!(
                out,
                "# {permission}: {} request(s) for the whole permission (null) were observed and are NOT granted.",
                observed.nulls
            );
        }
        if entries.is_empty() {
            continue;
        }
        let total: u64 = entries.iter().map(|(_, hits, _)| hits).sum();
        let _ = writeln!(
            out,
            "[[rule]]\nid = \"observed-{permission}\"\neffect = \"allow\"\npermissions = [\"{permission}\"]  # {total} request(s)"
        );
        // A bare command name runs whatever the script's PATH finds: the policy language wants
        // that said, and so does the reviewer.
        if *permission == Permission::Run
            && entries.iter().any(|(e, _, _)| !e.contains('/') && e != "*")
        {
            let _ = writeln!(
                out,
                "trusts_path = true  # REVIEW: bare names run whatever the script's PATH finds; prefer absolute paths"
            );
        }
        let _ = writeln!(out, "{key} = [");
        for (entry, hits, covers) in entries {
            let detail = if covers > 1 {
                format!(", {covers} distinct values")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {},  # {hits} request(s){detail}",
                toml_string(&entry)
            );
        }
        let _ = writeln!(out, "]\n");
    }
    Ok(out)
}

/// (entry, hits, distinct values it covers), exact.
fn exact(values: &BTreeMap<String, u64>) -> Vec<(String, u64, usize)> {
    values
        .iter()
        .map(|(v, hits)| (v.clone(), *hits, 1))
        .collect()
}

/// Absolute paths grouped by directory: a directory from which more than one entry was used is
/// suggested whole (it covers its subtree); a lone file stays a file. Values that are not
/// absolute paths (such as `<TMP>`) are left out: no path rule can grant them.
fn collapse_paths(values: &BTreeMap<String, u64>) -> Vec<(String, u64, usize)> {
    let mut by_parent: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (value, hits) in values {
        let Some(path) = normalize_absolute(value) else {
            continue;
        };
        let parent = match path.rfind('/') {
            Some(0) | None => "/".to_owned(),
            Some(i) => path[..i].to_owned(),
        };
        by_parent.entry(parent).or_default().push((path, *hits));
    }
    let mut out = Vec::new();
    for (parent, paths) in by_parent {
        let hits = paths.iter().map(|(_, h)| h).sum();
        if paths.len() > 1 && parent != "/" {
            out.push((parent, hits, paths.len()));
        } else {
            out.extend(paths.into_iter().map(|(p, h)| (p, h, 1)));
        }
    }
    out
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

#[allow(clippy::print_stdout)]
pub fn run(log: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot read the decision log: {e}", log.display());
            return ExitCode::from(crate::exit::EXIT_CONFIG);
        }
    };
    match suggest(&text, &log.display().to_string()) {
        Ok(policy) => {
            print!("{policy}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_collapses_and_never_grants_null() {
        let log = [
            r#"{"kind":"decision","permission":"read","value":"./a.txt","resolved":"/srv/app/a.txt"}"#,
            r#"{"kind":"decision","permission":"read","value":"/srv/app/b.txt"}"#,
            r#"{"kind":"decision","permission":"read","value":"/srv/app/b.txt"}"#,
            r#"{"kind":"decision","permission":"read","value":"/etc/hosts"}"#,
            r#"{"kind":"decision","permission":"run","value":null}"#,
            r#"{"kind":"decision","permission":"run","value":"ls"}"#,
            r#"{"kind":"decision","permission":"net","value":"api.example.com:443"}"#,
            r#"{"kind":"fault","fault":"x"}"#,
        ]
        .join("\n");
        let policy = suggest(&log, "log.jsonl").unwrap();
        assert!(
            policy.contains("\"/srv/app\",  # 3 request(s), 2 distinct values"),
            "{policy}"
        );
        assert!(
            policy.contains("\"/etc/hosts\",  # 1 request(s)"),
            "{policy}"
        );
        assert!(policy.contains(
            "# run: 1 request(s) for the whole permission (null) were observed and are NOT granted."
        ));
        assert!(
            policy.contains("names = [\n  \"ls\",  # 1 request(s)"),
            "{policy}"
        );
        assert!(policy.contains("\"api.example.com:443\""));
        assert!(policy.contains("(1 other records skipped)"));
        assert!(suggest("", "empty").is_err());
        assert!(
            suggest("not json", "bad")
                .unwrap_err()
                .starts_with("bad:1: not a decision-log record")
        );
    }
}
