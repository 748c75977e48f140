//! Deny reasons reach the user's terminal raw: Deno prints `NotCapable: <reason>` without
//! escaping. A reason must therefore be one line of printable text.

use std::borrow::Cow;

/// Longest reason sent, in characters (`…` included); longer ones are cut and end in `…`.
pub const MAX_REASON_CHARS: usize = 512;

/// Reduces `reason` to one printable line: ANSI escape sequences (CSI, OSC and two-byte escapes)
/// are removed, line breaks and tabs become spaces, every other control character and the Unicode
/// bidirectional overrides (which can reorder what a terminal shows) are dropped, and the result
/// is trimmed and bounded to [`MAX_REASON_CHARS`]. A reason that is already clean (every rule's
/// reason is, once the policy is compiled) is returned as it is, without copying.
pub fn sanitize_reason(reason: &str) -> Cow<'_, str> {
    if is_clean(reason) {
        Cow::Borrowed(reason)
    } else {
        Cow::Owned(rewrite(reason))
    }
}

/// Whether [`rewrite`] would return `reason` unchanged.
fn is_clean(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    if bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
        // Printable ASCII: one byte per character, and only the space can need trimming.
        return bytes.len() <= MAX_REASON_CHARS
            && bytes.first() != Some(&b' ')
            && bytes.last() != Some(&b' ');
    }
    reason.len() == reason.trim().len()
        && reason.chars().count() <= MAX_REASON_CHARS
        && !reason
            .chars()
            .any(|c| c.is_control() || is_bidi_control(c) || is_line_separator(c))
}

/// U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: not control characters, but line
/// breaks to a terminal or a log viewer, so a reason could forge a second line.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` as one printable line, cleaned as [`sanitize_reason`] cleans (escapes removed, line
/// breaks made spaces, controls and bidirectional overrides dropped) but not bounded or trimmed:
/// for a requested value that is shown inside a reason and shortened there.
pub fn one_line(text: &str) -> Cow<'_, str> {
    let odd = |c: char| c.is_control() || is_bidi_control(c) || is_line_separator(c);
    if !text.chars().any(odd) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\u{9b}' => skip_csi(&mut chars),
            '\n' | '\r' | '\t' => out.push(' '),
            c if is_line_separator(c) => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is invisible or changes how the text around it is shown: a control character, a
/// line or paragraph separator, a bidirectional control, or a format character that draws
/// nothing (zero-width spaces and joiners, the word joiner and invisible operators, the byte
/// order mark, the soft hyphen, the Mongolian vowel separator, interlinear annotation marks,
/// tags) or a filler that looks like a space (Hangul fillers, the combining grapheme joiner).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || is_bidi_control(c)
        || is_line_separator(c)
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200d}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `text` with every [`is_unprintable`] character written as an escape (`\u{1b}`), and
/// everything else as it is: for text a person reads that came from someone else (a requested
/// value, a file's bytes quoted in an error), so that it can neither draw on a terminal, forge a
/// line, nor pass for other text by hiding characters.
pub fn escape_unprintable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn rewrite(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_CHARS));
    let mut chars = reason.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        let kept = match c {
            '\u{1b}' => {
                skip_escape(&mut chars);
                None
            }
            // C1 CSI introducer: the same as ESC [.
            '\u{9b}' => {
                skip_csi(&mut chars);
                None
            }
            '\n' | '\r' | '\t' => Some(' '),
            c if is_line_separator(c) => Some(' '),
            c if c.is_control() || is_bidi_control(c) => None,
            c => Some(c),
        };
        if let Some(c) = kept {
            out.push(c);
            count += 1;
            // One past the bound is enough to know it must be cut.
            if count > MAX_REASON_CHARS {
                break;
            }
        }
    }
    let trimmed = out.trim();
    if trimmed.chars().count() <= MAX_REASON_CHARS {
        return trimmed.to_owned();
    }
    // Cut so that the result, `…` included, is within the bound: sanitising it again changes
    // nothing.
    let cut: String = trimmed.chars().take(MAX_REASON_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        // OSC, DCS, SOS, PM, APC: a string terminated by BEL or ESC \.
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    chars.next_if_eq(&'\\');
                    break;
                }
            }
        }
        _ => {}
    }
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // Parameter and intermediate bytes, then one final byte in @..~.
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let cases: &[(&str, &str)] = &[
            ("plain reason", "plain reason"),
            ("two\nlines", "two lines"),
            ("crlf\r\nend\t!", "crlf  end !"),
            ("\x1b[31mred\x1b[0m text", "red text"),
            ("\x1b]0;title\x07after", "after"),
            ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("bell\x07 nul\0 del\x7f", "bell nul del"),
            ("\u{9b}2Jcleared", "cleared"),
            ("abc\u{202e}fed", "abcfed"),
            ("  padded  ", "padded"),
            ("ünïcödé ✓", "ünïcödé ✓"),
            // Line and paragraph separators break lines in terminals and log viewers.
            ("one\u{2028}decision:   allow", "one decision:   allow"),
            ("para\u{2029}graph", "para graph"),
        ];
        for (input, expected) in cases {
            assert_eq!(sanitize_reason(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn clean_reasons_are_borrowed_and_the_shortcut_changes_nothing() {
        let long = "y".repeat(MAX_REASON_CHARS + 1);
        let exact = "z".repeat(MAX_REASON_CHARS);
        for input in [
            "plain",
            "two\nlines",
            " padded",
            "padded ",
            "\u{a0}nbsp",
            "\x1b[1m",
            "a\u{202e}b",
            "\u{9b}x",
            "ünï ✓",
            "",
            long.as_str(),
            exact.as_str(),
            "tab\tin",
            "del\x7f",
        ] {
            let out = sanitize_reason(input);
            assert_eq!(out, rewrite(input), "input {input:?}");
            assert_eq!(
                matches!(out, Cow::Borrowed(_)),
                out == input,
                "input {input:?}"
            );
            // Sanitising is idempotent: what it returns is clean.
            assert!(matches!(sanitize_reason(&out), Cow::Borrowed(_)), "{out:?}");
        }
    }

    #[test]
    fn long_reasons_are_bounded() {
        let long = "x".repeat(10_000);
        let out = sanitize_reason(&long);
        assert_eq!(out.chars().count(), MAX_REASON_CHARS);
        assert!(out.ends_with('…'));
    }
}
