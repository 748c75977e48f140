//! Paths: lexical normalisation and the subtree trie.
//!
//! A policy path grants (or denies) itself and everything below it, like Deno's own
//! `--allow-read=/srv/app`. A trie over path components answers "which rule paths are prefixes of
//! this request path" in one walk of the request's components, whatever the number of rules.

use crate::FastMap as HashMap;
use crate::compile::RuleIndex;

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

/// Whether a path component is a glob pattern rather than a literal name.
pub(crate) fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// Compiles a normalised absolute glob: `*` and `?` do not cross `/`, `**` does, `{a,b}`
/// alternates, `[...]` is a character class.
pub(crate) fn compile_glob(path: &str) -> Result<globset::Glob, String> {
    globset::GlobBuilder::new(path)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid glob `{path}`: {}", e.kind()))
}

/// A trie of rule paths by component. Node 0 is `/`. A literal path sits at its own node; a glob
/// sits at the node of its literal prefix (`/srv/app/**/*.pem` at `/srv/app`) and is only tried
/// on requests below that node.
#[derive(Debug, Clone)]
pub(crate) struct PathIndex {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: HashMap<Box<str>, u32>,
    rules: Vec<RuleIndex>,
    pending_globs: Vec<(globset::Glob, RuleIndex)>,
    globs: Option<(globset::GlobSet, Vec<RuleIndex>)>,
}

impl Default for PathIndex {
    fn default() -> Self {
        PathIndex {
            nodes: vec![Node::default()],
        }
    }
}

impl PathIndex {
    /// Adds a rule at `parts` (the literal prefix, for a glob).
    pub(crate) fn insert(&mut self, parts: &[&str], rule: RuleIndex, glob: Option<globset::Glob>) {
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
        match glob {
            None => self.nodes[at].rules.push(rule),
            Some(glob) => self.nodes[at].pending_globs.push((glob, rule)),
        }
    }

    /// Builds the glob sets; call once after every insert.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        for node in &mut self.nodes {
            if node.pending_globs.is_empty() {
                continue;
            }
            let mut builder = globset::GlobSetBuilder::new();
            let mut rules = Vec::with_capacity(node.pending_globs.len());
            for (glob, rule) in node.pending_globs.drain(..) {
                builder.add(glob);
                rules.push(rule);
            }
            let set = builder.build().map_err(|e| e.to_string())?;
            node.globs = Some((set, rules));
        }
        Ok(())
    }

    /// Calls `f` for every rule whose path is `parts` or one of its ancestors, or whose glob
    /// matches `parts` or one of its ancestors (a rule covers a whole subtree either way).
    pub(crate) fn for_each_match(&self, parts: &[&str], f: &mut dyn FnMut(RuleIndex)) {
        let mut full: Option<(String, Vec<usize>)> = None;
        let mut at = 0usize;
        for depth in 0..=parts.len() {
            let node = &self.nodes[at];
            node.rules.iter().copied().for_each(&mut *f);
            if let Some((set, rules)) = &node.globs {
                // The node's own path and every deeper prefix of the request: a glob covers what
                // it matches and everything below.
                let (path, ends) = full.get_or_insert_with(|| joined_with_ends(parts));
                for &end in &ends[depth..] {
                    let candidate = if end == 0 { "/" } else { &path[..end] };
                    for i in set.matches(candidate) {
                        f(rules[i]);
                    }
                }
            }
            let Some(part) = parts.get(depth) else { break };
            match node.children.get(*part) {
                Some(&next) => at = next as usize,
                None => break,
            }
        }
    }
}

/// `/a/b/c` and the end offsets of `/` (0, read as `/`), `/a`, `/a/b`, `/a/b/c`: entry `d` is the
/// prefix of `d` components.
fn joined_with_ends(parts: &[&str]) -> (String, Vec<usize>) {
    let mut path = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    let mut ends = Vec::with_capacity(parts.len() + 1);
    ends.push(0);
    for part in parts {
        path.push('/');
        path.push_str(part);
        ends.push(path.len());
    }
    (path, ends)
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

    fn index(entries: &[&str]) -> PathIndex {
        let mut index = PathIndex::default();
        for (i, entry) in entries.iter().enumerate() {
            let parts = components(entry).unwrap();
            let literal = parts.iter().take_while(|p| !is_glob(p)).count();
            let glob = (literal < parts.len()).then(|| compile_glob(&join(&parts)).unwrap());
            index.insert(&parts[..literal], RuleIndex(i as u32), glob);
        }
        index.finish().unwrap();
        index
    }

    fn matches(index: &PathIndex, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.for_each_match(&components(path).unwrap(), &mut |r| out.push(r.0));
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn a_path_covers_itself_and_its_subtree_only() {
        let index = index(&["/srv/app", "/srv/app/.env", "/"]);
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

    #[test]
    fn globs() {
        let index = index(&[
            "/srv/app/**/*.pem",
            "/home/*/public",
            "/data/{a,b}/x?",
            "/srv/*",
            "/**/.env",
        ]);
        assert_eq!(matches(&index, "/srv/app/keys/a.pem"), [0, 3]);
        assert_eq!(
            matches(&index, "/srv/app/a.pem"),
            [0, 3],
            "`**/` matches no directory too"
        );
        assert_eq!(matches(&index, "/srv/app/a.pem.bak"), [3]);
        assert_eq!(
            matches(&index, "/srv/app/x.pem/inner"),
            [0, 3],
            "subtree of a match"
        );
        assert_eq!(matches(&index, "/home/ann/public/index.html"), [1]);
        assert!(
            matches(&index, "/home/ann/private/public").is_empty(),
            "`*` does not cross `/`"
        );
        assert!(matches(&index, "/home/public").is_empty());
        assert_eq!(matches(&index, "/data/a/x1"), [2]);
        assert_eq!(matches(&index, "/data/b/xy/z"), [2]);
        assert!(matches(&index, "/data/c/x1").is_empty());
        assert!(
            matches(&index, "/data/a/x12").is_empty(),
            "`?` is one character"
        );
        assert_eq!(matches(&index, "/srv"), Vec::<u32>::new());
        assert_eq!(matches(&index, "/var/lib/app/.env"), [4]);
        assert!(compile_glob("/srv/[").is_err());
    }
}
