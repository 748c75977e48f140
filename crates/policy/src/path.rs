//! Paths: lexical normalisation and the subtree trie.
//!
//! A policy path grants (or denies) itself and everything below it, like Deno's own
//! `--allow-read=/srv/app`. A trie over path components answers "which rule paths are prefixes of
//! this request path" in one walk of the request's components, whatever the number of rules.

use crate::FastMap as HashMap;
use crate::compile::RuleIndex;
use std::borrow::Cow;

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

/// Compiles a normalised absolute glob: `*`, `?` and `[...]` (a character class) never match
/// `/`, `**` does, `{a,b}` alternates. See [`classes_without_separator`].
pub(crate) fn compile_glob(path: &str) -> Result<globset::Glob, String> {
    let pattern = classes_without_separator(path)?;
    globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid glob `{path}`: {}", e.kind()))
}

/// `glob` with every character class that could match `/` rewritten so that it cannot, or an
/// error for a class that names `/` itself.
///
/// globset's `literal_separator` keeps `*` and `?` inside one component, but compiles a class as
/// written: `[!_]`, `[^_]` and `[.-0]` (0x2E-0x30 in ASCII) all matched `/`, so an allow of
/// `/srv/report[!_]final` allowed `/srv/report/final/...`. The language says only `**` crosses `/`.
///
/// - A negated class also excludes `/`, and a range that spans `/` is split around it. Classes
///   like `[!.]` or `[ -~]` are ordinary in honest policies and mean one character of a name; the
///   rewrite keeps every other character, so those policies keep loading and now mean what the
///   documentation says, in allow and deny rules alike. An allow can only match less than before.
/// - A class that names `/` (`[/]`, `[!/]`, `[a/b]`, `[--/]`) is refused rather than rewritten:
///   no class can match `/`, so it is a mistake whose intent cannot be guessed, and the path
///   normaliser splits the text at that `/` (dropping a `.` or `..` inside it), so it would not
///   even mean what it looks like. Refusing fails closed: a policy that does not load never
///   replaces the running one, and the error names the class.
///
/// The glob is read the way globset reads it: outside a class `\x` is the literal `x`; inside,
/// nothing is escaped, `!` or `^` first negates, then a `]` first and a `-` first or last are
/// literal, and `a-z` is a range. A class globset refuses (unclosed, `z-a`) is left for globset
/// to report.
pub(crate) fn classes_without_separator(glob: &str) -> Result<Cow<'_, str>, String> {
    let mut out = String::new();
    let mut copied = None;
    let mut chars = glob.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' => {
                let Some((class, end)) = Class::read(&mut chars) else {
                    return Ok(Cow::Borrowed(glob));
                };
                let text = &glob[at..end];
                if text.contains('/') {
                    return Err(format!(
                        "invalid glob `{glob}`: character class `{text}` names `/`, which no class \
                         matches (only `**` crosses `/`)"
                    ));
                }
                if class.matches('/') {
                    let safe = class.without_separator().ok_or_else(|| {
                        format!(
                            "invalid glob `{glob}`: cannot keep character class `{text}` from \
                             matching `/`"
                        )
                    })?;
                    out.push_str(&glob[copied.unwrap_or(0)..at]);
                    out.push_str(&safe);
                    copied = Some(end);
                }
            }
            _ => {}
        }
    }
    Ok(match copied {
        None => Cow::Borrowed(glob),
        Some(end) => {
            out.push_str(&glob[end..]);
            Cow::Owned(out)
        }
    })
}

/// A character class as globset reads it.
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    /// Reads a class after its `[`, up to and including its `]`. Returns it with the byte offset
    /// just after the `]`, or `None` where globset reports an error (unclosed, a range `z-a`).
    fn read(chars: &mut std::str::CharIndices<'_>) -> Option<(Class, usize)> {
        let negated = matches!(chars.clone().next(), Some((_, '!' | '^')));
        if negated {
            chars.next();
        }
        let mut ranges: Vec<(char, char)> = Vec::new();
        let mut first = true;
        let mut in_range = false;
        loop {
            let (at, c) = chars.next()?;
            match c {
                ']' if !first => {
                    if in_range {
                        ranges.push(('-', '-'));
                    }
                    return Some((Class { negated, ranges }, at + c.len_utf8()));
                }
                '-' if !first && !in_range => in_range = true,
                c if in_range => {
                    let last = ranges.last_mut()?;
                    if c < last.0 {
                        return None;
                    }
                    last.1 = c;
                    in_range = false;
                }
                c => ranges.push((c, c)),
            }
            first = false;
        }
    }

    fn matches(&self, c: char) -> bool {
        contains(&self.ranges, c) != self.negated
    }

    /// The class's text once it cannot match `/`: a negated class also excludes `/`, a plain
    /// one loses `/` from its ranges. `None` if no text says that (not for any class that parses
    /// without naming `/`).
    fn without_separator(&self) -> Option<String> {
        let ranges = if self.negated {
            let mut ranges = self.ranges.clone();
            ranges.push(('/', '/'));
            ranges
        } else {
            remove(self.ranges.clone(), '/', '.', '0')
        };
        class_text(self.negated, normalise(ranges))
    }
}

fn contains(ranges: &[(char, char)], c: char) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// Sorted, with overlapping and adjacent ranges merged.
fn normalise(mut ranges: Vec<(char, char)>) -> Vec<(char, char)> {
    ranges.sort_unstable();
    let mut out: Vec<(char, char)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1).saturating_add(1) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `ranges` without `c`, whose neighbours are `below` and `above`.
fn remove(ranges: Vec<(char, char)>, c: char, below: char, above: char) -> Vec<(char, char)> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for (lo, hi) in ranges {
        if hi < c || c < lo {
            out.push((lo, hi));
            continue;
        }
        if lo < c {
            out.push((lo, below));
        }
        if c < hi {
            out.push((above, hi));
        }
    }
    out
}

/// Class text for `ranges` (normalised) that globset reads back as exactly those characters:
/// `]` goes first (where it is literal), `-` last (likewise), and a plain class does not start
/// with `!` or `^` (which would negate it). `None` only for a plain class of nothing but `!`
/// and `^`, which no class text can say.
fn class_text(negated: bool, ranges: Vec<(char, char)>) -> Option<String> {
    let bracket = contains(&ranges, ']');
    let mut dash = contains(&ranges, '-');
    let mut plain = remove(remove(ranges, ']', '\\', '^'), '-', ',', '.');
    let mut text = String::from(if negated { "[!" } else { "[" });
    let mut lead_dash = false;
    if bracket {
        text.push(']');
    } else if !negated {
        let negates = |r: &(char, char)| matches!(r.0, '!' | '^');
        if plain.first().is_some_and(negates) {
            if let Some(lead) = plain.iter().position(|r| !negates(r)) {
                let range = plain.remove(lead);
                plain.insert(0, range);
            } else if dash {
                // A leading `-` is literal too.
                text.push('-');
                (lead_dash, dash) = (true, false);
            } else {
                // Lead with the rest of a range that starts with `!` (`"`...) or `^` (`_`...).
                let at = plain.iter().position(|&(lo, hi)| lo != hi)?;
                let (lo, hi) = plain[at];
                let next = char::from_u32(u32::from(lo) + 1)?;
                plain[at] = (lo, lo);
                plain.insert(0, (next, hi));
            }
        }
    }
    if !bracket && !lead_dash && !dash && plain.is_empty() {
        return None;
    }
    for (lo, hi) in plain {
        text.push(lo);
        if hi != lo {
            text.push('-');
            text.push(hi);
        }
    }
    if dash {
        text.push('-');
    }
    text.push(']');
    Some(text)
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
    globs: Option<(regex::RegexSet, Vec<RuleIndex>)>,
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
            // One automaton per node, each glob followed by `(/.*)?` for everything below what
            // it matches: a request is matched once, whole, in time linear in the path (trying
            // every prefix was quadratic), character by character (globset's `?` and classes
            // took one byte, so `?.pem` missed `é.pem`).
            let mut patterns = Vec::with_capacity(node.pending_globs.len());
            let mut rules = Vec::with_capacity(node.pending_globs.len());
            for (glob, rule) in node.pending_globs.drain(..) {
                patterns.push(format!("^{}(?:/.*)?$", glob_regex(glob.glob())?));
                rules.push(rule);
            }
            let set = regex::RegexSetBuilder::new(&patterns)
                .dot_matches_new_line(true)
                .size_limit(64 << 20)
                .build()
                .map_err(|e| e.to_string())?;
            node.globs = Some((set, rules));
        }
        Ok(())
    }

    /// Calls `f` for every rule whose path is `parts` or one of its ancestors, or whose glob
    /// matches `parts` or one of its ancestors (a rule covers a whole subtree either way).
    pub(crate) fn for_each_match(&self, parts: &[&str], f: &mut dyn FnMut(RuleIndex)) {
        let mut full: Option<String> = None;
        let mut at = 0usize;
        for depth in 0..=parts.len() {
            let node = &self.nodes[at];
            node.rules.iter().copied().for_each(&mut *f);
            if let Some((set, rules)) = &node.globs {
                // A glob hangs at its literal prefix, so only what is at or below this node can
                // match it; its `/**` twin covers everything below a match.
                let path = full.get_or_insert_with(|| join(parts));
                for i in set.matches(path.as_str()) {
                    f(rules[i]);
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

/// A normalised absolute glob (as globset has checked it, classes already kept from `/`) as a
/// Unicode regular expression body, matched by character: `*` is `[^/]*`, `?` one character but
/// `/`, a class one character of it (never `/`), `**` as a whole component any number of
/// components, `{a,b}` either, `\x` the character `x`. The same reading as globset's with
/// `literal_separator` and `backslash_escape`, which the tests compare on ASCII.
pub(crate) fn glob_regex(glob: &str) -> Result<String, String> {
    let mut out = String::with_capacity(glob.len() * 2);
    let mut chars = glob.char_indices().peekable();
    let mut depth = 0usize;
    let mut prev: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    push_literal(&mut out, next);
                    prev = Some(next);
                }
                continue;
            }
            '*' if chars.peek().is_some_and(|(_, n)| *n == '*') => {
                chars.next();
                let whole_start = prev == Some('/');
                match chars.peek().map(|(_, n)| *n) {
                    // `/**/`: any number of components between the slashes.
                    Some('/') if whole_start => {
                        chars.next();
                        out.push_str("(?:.*/)?");
                        prev = Some('/');
                        continue;
                    }
                    None if whole_start => out.push_str(".*"),
                    _ => out.push_str("[^/]*"),
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                let mut rest = glob[at + 1..].char_indices();
                let (class, end) = Class::read(&mut rest)
                    .ok_or_else(|| format!("invalid glob `{glob}`: unclosed character class"))?;
                out.push_str(if class.negated { "[^/" } else { "[" });
                for (lo, hi) in &class.ranges {
                    push_class_char(&mut out, *lo);
                    if hi != lo {
                        out.push('-');
                        push_class_char(&mut out, *hi);
                    }
                }
                if class.ranges.is_empty() && !class.negated {
                    return Err(format!("invalid glob `{glob}`: empty character class"));
                }
                out.push(']');
                // Skip what the class took.
                let consumed = at + 1 + end;
                while chars.peek().is_some_and(|(i, _)| *i < consumed) {
                    chars.next();
                }
                prev = Some(']');
                continue;
            }
            '{' => {
                depth += 1;
                out.push_str("(?:");
            }
            '}' if depth > 0 => {
                depth -= 1;
                out.push(')');
            }
            ',' if depth > 0 => out.push('|'),
            c => push_literal(&mut out, c),
        }
        prev = Some(c);
    }
    if depth > 0 {
        return Err(format!("invalid glob `{glob}`: unclosed alternation"));
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
}

/// A character inside a regex class, written so that nothing in it is special.
fn push_class_char(out: &mut String, c: char) {
    use std::fmt::Write;
    let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
}

/// The trees that deny rules on `read` or `write` protect, by the literal part of their paths
/// (`/srv/secrets` for `/srv/secrets`, `/srv` for `/srv/**/*.pem`): renaming or removing a
/// directory at or above one moves or destroys what the rule denies (Deno asks `write` for both
/// paths of a rename and for a removal), so a write there is denied by that rule.
///
/// Each node keeps every rule at or below it, so a lookup is one walk down the request's path.
#[derive(Debug, Clone, Default)]
pub(crate) struct TreeIndex {
    nodes: Vec<TreeNode>,
}

#[derive(Debug, Clone, Default)]
struct TreeNode {
    children: HashMap<Box<str>, u32>,
    /// Rules whose literal path is exactly this node (before `finish`), then every rule at or
    /// below it (after).
    rules: Vec<RuleIndex>,
}

impl TreeIndex {
    pub(crate) fn insert(&mut self, parts: &[&str], rule: RuleIndex) {
        if self.nodes.is_empty() {
            self.nodes.push(TreeNode::default());
        }
        let mut at = 0usize;
        for part in parts {
            at = match self.nodes[at].children.get(*part) {
                Some(&next) => next as usize,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(TreeNode::default());
                    self.nodes[at].children.insert((*part).into(), next as u32);
                    next
                }
            };
        }
        self.nodes[at].rules.push(rule);
    }

    /// Gathers every node's subtree; call once after every insert.
    pub(crate) fn finish(&mut self) {
        // Children always have higher indices than their parent: fold from the back.
        for at in (0..self.nodes.len()).rev() {
            let children: Vec<u32> = self.nodes[at].children.values().copied().collect();
            let mut below: Vec<RuleIndex> = Vec::new();
            for child in children {
                below.extend_from_slice(&self.nodes[child as usize].rules);
            }
            let rules = &mut self.nodes[at].rules;
            rules.extend(below);
            rules.sort_unstable();
            rules.dedup();
        }
    }

    /// Calls `f` for every rule whose tree is at or below `parts`.
    pub(crate) fn for_each_at_or_below(&self, parts: &[&str], f: &mut dyn FnMut(RuleIndex)) {
        if self.nodes.is_empty() {
            return;
        }
        let mut at = 0usize;
        for part in parts {
            match self.nodes[at].children.get(*part) {
                Some(&next) => at = next as usize,
                None => return,
            }
        }
        self.nodes[at].rules.iter().copied().for_each(f);
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

    fn glob_matches(glob: &str, path: &str) -> bool {
        compile_glob(glob).unwrap().compile_matcher().is_match(path)
    }

    #[test]
    fn no_token_but_double_star_matches_a_separator() {
        for glob in [
            "/srv/a[!_]b",
            "/srv/a[^_]b",
            "/srv/a[.-0]b",
            "/srv/a[ -~]b",
            "/srv/a[!-0]b",
            "/srv/a[!]]b",
            "/srv/a[!a-]b",
            "/srv/a[]!-0]b",
            "/srv/a[!\\]b",
            "/srv/a[--0]b",
            "/srv/a?b",
            "/srv/a*b",
            "/srv/{a[!_]b,x}",
        ] {
            assert!(!glob_matches(glob, "/srv/a/b"), "{glob} matched `/srv/a/b`");
        }
        assert!(glob_matches("/srv/**/b", "/srv/a/b"), "`**` still crosses");
    }

    #[test]
    fn rewritten_classes_keep_every_other_character() {
        // (glob, characters it matches between `a` and `b`, characters it does not)
        let cases: &[(&str, &str, &str)] = &[
            ("/x/a[!_]b", "-.0]!^\\ ~", "_/"),
            ("/x/a[^_]b", "-.0]!^", "_/"),
            ("/x/a[.-0]b", ".0", "/-1"),
            ("/x/a[ -~]b", " !-.0]^~\\[", "/é"),
            ("/x/a[]!-0]b", "]!.0-", "/1"),
            ("/x/a[--0]b", "-.0", "/,1"),
            ("/x/a[!]]b", "x-", "]/"),
            ("/x/a[!a-]b", "x_", "a-/"),
            ("/x/a[!-0]b", "x.", "-0/"),
            ("/x/a[!.-0]b", "x", ".0/"),
            ("/x/a[]a]b", "]a", "b/"),
            ("/x/a[a-]b", "a-", "b/"),
            ("/x/a[!!]b", "x^", "!/"),
            ("/x/a[!^]b", "x!", "^/"),
        ];
        for (glob, yes, no) in cases {
            for c in yes.chars().filter(|&c| c != '/') {
                assert!(glob_matches(glob, &format!("/x/a{c}b")), "{glob} on {c:?}");
            }
            for c in no.chars() {
                assert!(!glob_matches(glob, &format!("/x/a{c}b")), "{glob} on {c:?}");
            }
        }
    }

    #[test]
    fn only_classes_that_need_it_are_rewritten() {
        for glob in [
            "/srv/a[abc]b",
            "/srv/a[0-9]b",
            "/srv/a[!.-0]b",
            "/srv/\\[!x]",
            "/srv/*",
        ] {
            assert_eq!(classes_without_separator(glob).unwrap(), *glob);
        }
        assert_eq!(
            classes_without_separator("/srv/a[!_]b").unwrap(),
            "/srv/a[!/_]b"
        );
        assert_eq!(
            classes_without_separator("/srv/a[.-0]b").unwrap(),
            "/srv/a[.0]b"
        );
        assert_eq!(
            classes_without_separator("/srv/a[!]]b").unwrap(),
            "/srv/a[!]/]b"
        );
        assert_eq!(
            classes_without_separator("/srv/a[!a-]b").unwrap(),
            "/srv/a[!/a-]b"
        );
        assert_eq!(
            classes_without_separator("/srv/a[ -~]b").unwrap(),
            "/srv/a[] -,.0-\\^-~-]b"
        );
        // Left for globset to report.
        assert_eq!(classes_without_separator("/srv/[a").unwrap(), "/srv/[a");
        assert!(compile_glob("/srv/[b-a]").is_err());
    }

    fn class_matcher(text: &str) -> globset::GlobMatcher {
        globset::GlobBuilder::new(&format!("a{text}b"))
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .unwrap()
            .compile_matcher()
    }

    proptest::proptest! {
        /// What [`class_text`] writes, globset reads back as exactly the same characters,
        /// whatever `]`, `-`, `!`, `^`, `/` or `\\` the set holds and wherever they fall; and a
        /// class without `/` ([`Class::without_separator`]) keeps every other character.
        #[test]
        fn class_text_round_trips_through_globset(
            negated in proptest::bool::ANY,
            ranges in proptest::collection::vec((0x20u8..0x7f, 0u8..6), 1..5),
        ) {
            let ranges: Vec<(char, char)> = ranges
                .into_iter()
                .map(|(lo, len)| (char::from(lo), char::from(lo.saturating_add(len).min(0x7e))))
                .collect();
            let class = Class { negated, ranges: normalise(ranges) };
            let Some(exact) = class_text(negated, class.ranges.clone()) else {
                // No class text says "only `!`" or "only `!` and `^`": the first would negate.
                // `without_separator` never asks: what it writes holds `/` or a range from `0`.
                let only = |c: char| c == '!' || c == '^';
                proptest::prop_assert!(!negated && class.ranges.iter().all(|&(lo, hi)| only(lo) && only(hi)));
                return Ok(());
            };
            let exact = class_matcher(&exact);
            // Text that does not name `/` reaches `/` in a plain class only through a range
            // from `.` or below to `0` or above; other sets are refused before a rewrite.
            let reachable = negated || !contains(&class.ranges, '/')
                || (contains(&class.ranges, '.') && contains(&class.ranges, '0'));
            let safe = class.without_separator();
            proptest::prop_assert!(safe.is_some() || !reachable);
            let safe = class_matcher(safe.as_deref().unwrap_or("[!/]"));
            for c in (0x20u8..0x7f).map(char::from) {
                let name = format!("a{c}b");
                proptest::prop_assert_eq!(exact.is_match(&name), class.matches(c), "{:?}", c);
                if reachable {
                    proptest::prop_assert_eq!(safe.is_match(&name), class.matches(c) && c != '/', "{:?}", c);
                }
            }
        }
    }

    #[test]
    fn a_class_naming_a_separator_is_an_error() {
        for (glob, class) in [
            ("/srv/a[/]b", "[/]"),
            ("/srv/a[!/]b", "[!/]"),
            ("/srv/a[x/y]b", "[x/y]"),
            ("/srv/a[--/]b", "[--/]"),
            ("/srv/{a,[/]}", "[/]"),
        ] {
            let e = compile_glob(glob).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "invalid glob `{glob}`: character class `{class}` names `/`"
                )),
                "{e}"
            );
        }
    }
}
