//! Paths: lexical normalisation and the subtree trie.
//!
//! A policy path grants (or denies) itself and everything below it, like Deno's own
//! `--allow-read=/srv/app`. A trie over path components answers "which rule paths are prefixes of
//! this request path" in one walk of the request's components, whatever the number of rules.

use crate::compile::RuleIndex;
use std::collections::HashMap;

/// The components of an absolute path after removing `.`, empty components (`//`) and resolving
/// `..` lexically (`..` at the root stays at the root). `None` if `path` is not absolute.
pub(crate) fn components(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let mut out = Vec::with_capacity(8);
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    Some(out)
}

/// `path` normalised lexically (see [`components`]), or `None` if it is not absolute.
pub fn normalize_absolute(path: &str) -> Option<String> {
    components(path).map(|parts| join(&parts))
}

pub(crate) fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        out.push('/');
        out.push_str(part);
    }
    out
}

/// A trie of rule paths by component. Node 0 is `/`.
#[derive(Debug, Clone)]
pub(crate) struct PathIndex {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: HashMap<Box<str>, u32>,
    rules: Vec<RuleIndex>,
}

impl Default for PathIndex {
    fn default() -> Self {
        PathIndex {
            nodes: vec![Node::default()],
        }
    }
}

impl PathIndex {
    pub(crate) fn insert(&mut self, parts: &[&str], rule: RuleIndex) {
        let mut at = 0usize;
        for part in parts {
            at = match self.nodes[at].children.get(*part) {
                Some(&next) => next as usize,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at].children.insert((*part).into(), next as u32);
                    next
                }
            };
        }
        self.nodes[at].rules.push(rule);
    }

    /// Calls `f` for every rule whose path is `parts` or one of its ancestors.
    pub(crate) fn for_each_match(&self, parts: &[&str], f: &mut dyn FnMut(RuleIndex)) {
        let mut at = 0usize;
        self.nodes[at].rules.iter().copied().for_each(&mut *f);
        for part in parts {
            match self.nodes[at].children.get(*part) {
                Some(&next) => at = next as usize,
                None => return,
            }
            self.nodes[at].rules.iter().copied().for_each(&mut *f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalisation() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/srv/app", Some("/srv/app")),
            (
                "/srv//app/work/scratch.txt",
                Some("/srv/app/work/scratch.txt"),
            ),
            ("/srv/app/./x", Some("/srv/app/x")),
            ("/srv/app/sub/../a", Some("/srv/app/a")),
            ("/srv/app/..", Some("/srv")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/", Some("/")),
            ("//", Some("/")),
            ("/srv/app/", Some("/srv/app")),
            ("./x", None),
            ("x", None),
            ("~/foo", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_absolute(input).as_deref(), *expected, "{input}");
        }
    }

    fn matches(index: &PathIndex, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.for_each_match(&components(path).unwrap(), &mut |r| out.push(r.0));
        out.sort();
        out
    }

    #[test]
    fn a_path_covers_itself_and_its_subtree_only() {
        let mut index = PathIndex::default();
        index.insert(&components("/srv/app").unwrap(), RuleIndex(0));
        index.insert(&components("/srv/app/.env").unwrap(), RuleIndex(1));
        index.insert(&components("/").unwrap(), RuleIndex(2));
        assert_eq!(matches(&index, "/srv/app"), [0, 2]);
        assert_eq!(matches(&index, "/srv/app/data/x.txt"), [0, 2]);
        assert_eq!(matches(&index, "/srv/app/.env"), [0, 1, 2]);
        assert_eq!(matches(&index, "/srv/app/.env/inner"), [0, 1, 2]);
        assert_eq!(
            matches(&index, "/srv/application"),
            [2],
            "prefix of a name is not a parent"
        );
        assert_eq!(matches(&index, "/srv"), [2]);
        assert_eq!(matches(&index, "/etc/passwd"), [2]);
    }
}
