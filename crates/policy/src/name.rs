//! Names (env variables, sys API kinds, run commands): exact entries and `PREFIX*` entries.
//!
//! Exact names are one hash lookup. Prefixes are looked up once per distinct prefix length in the
//! policy (a handful in practice), so the cost does not grow with the number of rules.

use crate::FastMap as HashMap;
use crate::compile::RuleIndex;

#[derive(Debug, Clone, Default)]
pub(crate) struct NameIndex {
    exact: HashMap<Box<str>, Vec<RuleIndex>>,
    prefixes: HashMap<Box<str>, Vec<RuleIndex>>,
    /// Distinct prefix lengths in bytes, ascending. `*` alone is the empty prefix, length 0.
    prefix_lens: Vec<usize>,
}

/// A validated `names` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NamePattern<'a> {
    Exact(&'a str),
    Prefix(&'a str),
}

/// Checks one `names` entry: not empty, no control characters, `*` only at the end.
pub(crate) fn parse_name(entry: &str) -> Result<NamePattern<'_>, String> {
    if entry.is_empty() {
        return Err("empty name".to_owned());
    }
    if entry.chars().any(char::is_control) {
        return Err(format!(
            "name `{}` contains a control character",
            entry.escape_debug()
        ));
    }
    match entry.strip_suffix('*') {
        Some(prefix) if prefix.contains('*') => Err(format!(
            "`*` may only end a name (`PREFIX*`), not stand inside it: `{entry}`"
        )),
        Some(prefix) => Ok(NamePattern::Prefix(prefix)),
        None if entry.contains('*') => Err(format!(
            "`*` may only end a name (`PREFIX*`), not stand inside it: `{entry}`"
        )),
        None => Ok(NamePattern::Exact(entry)),
    }
}

impl NameIndex {
    pub(crate) fn insert(&mut self, pattern: &NamePattern<'_>, rule: RuleIndex) {
        match pattern {
            NamePattern::Exact(name) => self.exact.entry((*name).into()).or_default().push(rule),
            NamePattern::Prefix(prefix) => {
                self.prefixes
                    .entry((*prefix).into())
                    .or_default()
                    .push(rule);
                if let Err(at) = self.prefix_lens.binary_search(&prefix.len()) {
                    self.prefix_lens.insert(at, prefix.len());
                }
            }
        }
    }

    pub(crate) fn for_each_match(&self, name: &str, f: &mut dyn FnMut(RuleIndex)) {
        if let Some(rules) = self.exact.get(name) {
            rules.iter().copied().for_each(&mut *f);
        }
        for &len in &self.prefix_lens {
            if len > name.len() {
                break;
            }
            let Some(prefix) = name.get(..len) else {
                continue;
            };
            if let Some(rules) = self.prefixes.get(prefix) {
                rules.iter().copied().for_each(&mut *f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[&str]) -> NameIndex {
        let mut index = NameIndex::default();
        for (i, e) in entries.iter().enumerate() {
            index.insert(&parse_name(e).unwrap(), RuleIndex(i as u32));
        }
        index
    }

    fn matches(index: &NameIndex, name: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.for_each_match(name, &mut |r| out.push(r.0));
        out.sort();
        out
    }

    #[test]
    fn exact_prefix_and_star() {
        let index = index(&["HOME", "AWS_*", "*", "A*"]);
        assert_eq!(matches(&index, "HOME"), [0, 2]);
        assert_eq!(matches(&index, "home"), [2], "env names are case-sensitive");
        assert_eq!(matches(&index, "HOMEDIR"), [2]);
        assert_eq!(matches(&index, "AWS_REGION"), [1, 2, 3]);
        assert_eq!(matches(&index, "AWS_"), [1, 2, 3]);
        assert_eq!(matches(&index, "AWS"), [2, 3]);
        assert_eq!(matches(&index, "é"), [2]);
    }

    #[test]
    fn bad_entries() {
        assert!(parse_name("").is_err());
        assert!(parse_name("A*B").is_err());
        assert!(parse_name("*A").is_err());
        assert!(parse_name("A**").is_err());
        assert!(parse_name("A\nB").is_err());
        assert_eq!(parse_name("git").unwrap(), NamePattern::Exact("git"));
    }
}
