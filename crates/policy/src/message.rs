//! What a deny says. Deno prints the broker's reason *instead of* its own message
//! (`NotCapable: <reason>`), so the reason alone would leave a user with no word of what was
//! asked. The message names the permission and the value, then the policy's reason and rule, in
//! a shape the policy may change (`defaults.deny_message`), within the reason's one-line,
//! [`MAX_REASON_CHARS`] bound: the value is shortened to fit, never the reason's start.

use permission_broker_protocol::{MAX_REASON_CHARS, escape_unprintable, one_line, sanitize_reason};

/// The most a template's own text may take of the message, so that the reason always fits.
const MAX_TEMPLATE_TEXT: usize = 200;

/// The shape of a deny when the policy does not set `defaults.deny_message`.
pub const DEFAULT_DENY_MESSAGE: &str = "{permission} {value}: {reason} (rule {rule})";

/// The placeholders a template may use.
const PLACEHOLDERS: &str = "{permission}, {value}, {reason}, {rule}";

/// The value shown for a request of the whole permission (Deno sends `null`).
const WHOLE_PERMISSION: &str = "(all)";

/// A value shortened to fewer characters than this is shown as `…` alone.
const SHORTEST_VALUE: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Permission,
    Value,
    Reason,
    Rule,
}

/// A parsed `deny_message` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyMessage {
    pieces: Vec<Piece>,
}

impl Default for DenyMessage {
    fn default() -> Self {
        match DenyMessage::parse(DEFAULT_DENY_MESSAGE) {
            Ok(message) => message,
            // The default is a constant that parses (a unit test holds it).
            Err(_) => DenyMessage {
                pieces: vec![Piece::Reason],
            },
        }
    }
}

impl DenyMessage {
    /// Parses a template: text with `{permission}`, `{value}`, `{reason}` and `{rule}`, and `{{`
    /// / `}}` for literal braces. It must show `{reason}`: the policy's words always reach the
    /// user.
    pub fn parse(template: &str) -> Result<DenyMessage, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("{{") {
                text.push('{');
                rest = after;
                continue;
            }
            if let Some(after) = tail.strip_prefix("}}") {
                text.push('}');
                rest = after;
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "a `}}` with no `{{` before it (write `}}}}` for a brace; placeholders are {PLACEHOLDERS})"
                ));
            }
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "a `{{` that is not closed (write `{{{{` for a brace; placeholders are {PLACEHOLDERS})"
                ));
            };
            let piece = match &tail[1..end] {
                "permission" => Piece::Permission,
                "value" => Piece::Value,
                "reason" => Piece::Reason,
                "rule" => Piece::Rule,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` (expected one of {PLACEHOLDERS})"
                    ));
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
            rest = &tail[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !pieces.contains(&Piece::Reason) {
            return Err(
                "the message must show `{reason}`: the policy's reason always reaches the user"
                    .to_owned(),
            );
        }
        if let Some(Piece::Text(t)) = pieces.iter().find(|p| match p {
            Piece::Text(t) => one_line(t) != t.as_str(),
            _ => false,
        }) {
            return Err(format!(
                "the message must be one line of printable text, not {t:?}"
            ));
        }
        if let Some(Piece::Text(t)) = pieces.iter().find(|p| match p {
            Piece::Text(t) => t.chars().any(permission_broker_protocol::is_unprintable),
            _ => false,
        }) {
            return Err(format!(
                "the message must be printable text, not {}",
                escape_unprintable(t)
            ));
        }
        let text: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.chars().count(),
                _ => 0,
            })
            .sum();
        if text > MAX_TEMPLATE_TEXT {
            return Err(format!(
                "the message's own text is {text} characters; at most {MAX_TEMPLATE_TEXT}, so that the reason fits the {MAX_REASON_CHARS} characters sent"
            ));
        }
        Ok(DenyMessage { pieces })
    }

    /// The message for a deny of `permission` for `value` (`None`: the whole permission),
    /// decided by `rule` with `reason`: one printable line of at most [`MAX_REASON_CHARS`]
    /// characters, the value shortened in its middle to fit.
    pub fn render(
        &self,
        permission: &str,
        value: Option<&str>,
        reason: &str,
        rule: &str,
    ) -> String {
        // Escaped, not stripped: a value that hides characters must not read as another value.
        let value = value.map_or(WHOLE_PERMISSION.into(), escape_unprintable);
        let reason = one_line(reason);
        let rule = one_line(rule);
        let values = self.pieces.iter().filter(|p| **p == Piece::Value).count();
        let fixed: usize = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.chars().count(),
                Piece::Permission => permission.chars().count(),
                Piece::Value => 0,
                Piece::Reason => reason.chars().count(),
                Piece::Rule => rule.chars().count(),
            })
            .sum();
        let room = match values {
            0 => 0,
            n => MAX_REASON_CHARS.saturating_sub(fixed) / n,
        };
        let value = shorten(&value, room);
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Permission => out.push_str(permission),
                Piece::Value => out.push_str(&value),
                Piece::Reason => out.push_str(&reason),
                Piece::Rule => out.push_str(&rule),
            }
        }
        // Bounded, and cut at its end if the fixed parts alone are longer than the bound.
        sanitize_reason(&out).into_owned()
    }
}

/// `value` in at most `room` characters: its start and its end (where a path's file name is)
/// around a `…`.
fn shorten(value: &str, room: usize) -> std::borrow::Cow<'_, str> {
    let count = value.chars().count();
    if count <= room {
        return value.into();
    }
    if room < SHORTEST_VALUE {
        return "…".into();
    }
    let tail = (room - 1) / 2;
    let head = room - 1 - tail;
    let start: String = value.chars().take(head).collect();
    let end: String = value.chars().skip(count - tail).collect();
    format!("{start}…{end}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_names_permission_value_reason_and_rule() {
        let message = DenyMessage::default();
        assert_eq!(
            message.render("read", Some("/home/u/.ssh/id_rsa"), "keys stay home", "ssh"),
            "read /home/u/.ssh/id_rsa: keys stay home (rule ssh)"
        );
        assert_eq!(
            message.render("env", None, "no", "default"),
            "env (all): no (rule default)"
        );
    }

    #[test]
    fn a_template_changes_the_shape() {
        let message = DenyMessage::parse("{{{permission}}} {value} -- {reason}").unwrap();
        assert_eq!(
            message.render("net", Some("example.com:443"), "no egress", "r"),
            "{net} example.com:443 -- no egress"
        );
        let wordy = format!("{}{{reason}}", "a".repeat(600));
        let error = DenyMessage::parse(&wordy).unwrap_err();
        assert!(error.contains("own text is 600 characters"), "{error}");
        for (bad, said) in [
            ("{permission} {value}", "must show `{reason}`"),
            ("{reason} {who}", "unknown placeholder `{who}`"),
            ("{reason", "not closed"),
            ("{reason} }", "no `{` before it"),
            ("{reason}\n{value}", "one line"),
            ("{reason}\u{200b}", "printable"),
        ] {
            let error = DenyMessage::parse(bad).unwrap_err();
            assert!(error.contains(said), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_long_value_is_shortened_in_its_middle_never_the_reason() {
        let message = DenyMessage::default();
        let reason = "secrets are managed by the platform team: ask #security";
        let value = format!("/data/{}/secret.key", "x".repeat(2000));
        let shown = message.render("read", Some(&value), reason, "secrets");
        assert_eq!(shown.chars().count(), MAX_REASON_CHARS, "{shown}");
        assert!(shown.starts_with("read /data/xxx"), "{shown}");
        assert!(
            shown.ends_with(&format!("x/secret.key: {reason} (rule secrets)")),
            "{shown}"
        );
        assert_eq!(shown.matches('…').count(), 1);
        // A reason as long as the bound: the value gives way first, and only the end is cut.
        let long_reason = "r".repeat(600);
        let shown = message.render("read", Some(&value), &long_reason, "secrets");
        assert!(shown.starts_with("read …: rrr"), "{shown}");
        assert_eq!(shown.chars().count(), MAX_REASON_CHARS);
    }

    #[test]
    fn a_hostile_value_cannot_draw_on_the_terminal() {
        let message = DenyMessage::default();
        let shown = message.render(
            "read",
            Some("/tmp/\x1b[2J\x1b]0;owned\x07x\nNotCapable: allowed\u{202e}"),
            "no",
            "r",
        );
        assert_eq!(
            shown,
            "read /tmp/\\u{1b}[2J\\u{1b}]0;owned\\u{7}x\\u{a}NotCapable: allowed\\u{202e}: no (rule r)"
        );
        // Characters that draw nothing are shown, so that `HO<zero width>ME` is not `HOME`.
        for hidden in [
            "HO\u{200b}ME",
            "HO\u{1b}[0mME",
            "HO\u{61c}ME",
            "HO\u{feff}ME",
        ] {
            let shown = message.render("env", Some(hidden), "no", "r");
            assert!(!shown.starts_with("env HOME:"), "{shown}");
            assert!(shown.contains("\\u{"), "{shown}");
        }
    }
}
