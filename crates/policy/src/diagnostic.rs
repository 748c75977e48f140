//! Load errors and warnings, located in the file the security team edits.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

/// One policy file's name (as it should appear in messages) and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
    /// Byte offsets where lines start, built on first use: locating every rule of a
    /// 100,000-rule file must not rescan the file each time.
    line_starts: OnceLock<Vec<usize>>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
            line_starts: OnceLock::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line = starts.partition_point(|&start| start <= offset);
        let line_start = starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// The text a span covers, cut to one line and a readable length, for quoting in messages.
    pub fn excerpt(&self, span: &Range<usize>) -> &str {
        let start = floor_char_boundary(&self.text, span.start.min(self.text.len()));
        let end = floor_char_boundary(&self.text, span.end.min(self.text.len())).max(start);
        let text = &self.text[start..end];
        let text = text.split('\n').next().unwrap_or("");
        match text.char_indices().nth(80) {
            Some((cut, _)) => &text[..cut],
            None => text,
        }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// `file:line:column: message`, the form compilers and editors understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn at(source: &Source, span: &Range<usize>, severity: Severity, message: String) -> Self {
        let (line, column) = source.line_column(span.start);
        // A message quotes what a file holds: escaped, it cannot forge a line of the log or of
        // `STATUS=`, or draw on the terminal of whoever runs `check`.
        let escaped = |text: String| match permission_broker_protocol::escape_unprintable(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(clean) => clean,
        };
        Diagnostic {
            severity,
            file: escaped(source.name.clone()),
            line,
            column,
            message: escaped(message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        write!(
            f,
            "{}:{}:{}: {severity}{}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one load, errors and warnings in file and line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// File, line and column order (files are given in lexical order, so this is reading order).
    pub(crate) fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let s = Source::new("p.toml", "a = 1\nbé = 2\n\nc");
        assert_eq!(s.line_column(0), (1, 1));
        assert_eq!(s.line_column(4), (1, 5));
        assert_eq!(s.line_column(6), (2, 1));
        assert_eq!(
            s.line_column(9),
            (2, 3),
            "columns count characters, not bytes"
        );
        assert_eq!(s.line_column(15), (4, 1));
        assert_eq!(s.line_column(1000), (4, 2));
        assert_eq!(s.excerpt(&(6..20)), "bé = 2");
    }
}
