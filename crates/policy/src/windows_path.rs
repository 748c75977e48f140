//! Windows paths as data: the one canonical form in which a policy's Windows paths and Deno's
//! Windows values are compared, so that the policy's path machinery (components, the subtree
//! trie, globs) works on them unchanged, on any host (the tests run on Linux).
//!
//! `C:\Srv\App\x.txt`, `c:/srv/app/X.TXT` and `\\?\C:\srv\app\x.txt` are all `/C:/SRV/APP/X.TXT`:
//!
//! - `\` and `/` are both separators; `.`, `..` and empty components are resolved lexically
//!   (`..` at a drive's root stays there); a different drive is a different tree (`/D:/...`).
//! - Names are compared as NTFS compares them, case-insensitively: each character is folded to its
//!   simple uppercase (one character for one; a character whose uppercase is longer is kept).
//! - What Win32 strips, is stripped: trailing dots and spaces of a name (`secret.txt.` opens
//!   `secret.txt`), and an alternate data stream (`secret.txt:hidden`, `secret.txt::$DATA` are
//!   that file's streams): so a deny of a file covers all of them.
//! - `\\server\share\...` is `/UNC/SERVER/SHARE/...`, a tree of its own; `\\?\C:\...` and
//!   `\\?\UNC\...` are read without their prefix.
//!
//! Refused, with the reason (a policy does not load; a request is denied):
//! - anything not absolute: `x`, `.\x`, a drive-relative `C:x`, and `\x` (rooted on the current
//!   drive, whichever that is);
//! - the device namespace `\\.\...` and `\\?\` forms other than a drive or UNC (`\\?\Volume{...}`,
//!   `\\?\GLOBALROOT\...`): other names for files a rule may name by their drive path;
//! - 8.3 short names (`PROGRA~1`): another name for a long one, which only the file system knows;
//! - a name of dots and spaces only (`...`), and a NUL.
//!
//! Not wired in yet (issue 20): the compiler still reads every policy path as a POSIX path, and
//! `Resolved::Path` borrows its components from the request's value, which a canonical Windows
//! form (a new string) cannot. Next: a path flavour on `Policy` (data, so Linux tests cover it),
//! policy paths and request values of the Windows flavour through [`canonical`], and owned
//! components where the value was rewritten.

/// `path` in canonical form, or why it cannot be one.
pub fn canonical(path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err("a Windows path cannot contain a NUL".to_owned());
    }
    let sep = |c: char| c == '\\' || c == '/';
    let (root, rest) = root_of(path, sep)?;
    let mut parts: Vec<String> = Vec::new();
    for part in rest.split(sep) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => {
                let name = name_of(name)?;
                if !name.is_empty() {
                    parts.push(name);
                }
            }
        }
    }
    let mut out = root;
    for part in parts {
        out.push('/');
        out.push_str(&part);
    }
    Ok(out)
}

/// The canonical root of `path` (`/C:` or `/UNC/SERVER/SHARE`) and what follows it.
fn root_of(path: &str, sep: impl Fn(char) -> bool + Copy) -> Result<(String, &str), String> {
    let shown = path.escape_debug();
    let starts_two = {
        let mut chars = path.chars();
        matches!((chars.next(), chars.next()), (Some(a), Some(b)) if sep(a) && sep(b))
    };
    if starts_two {
        let rest = &path[2..];
        if let Some(local) = rest.strip_prefix("?\\").or_else(|| rest.strip_prefix("?/")) {
            // The Win32 file namespace: a drive path or UNC path, read as written.
            if let Some(unc) = strip_prefix_ci(local, "UNC")
                && unc.starts_with(sep)
            {
                return unc_root(&unc[1..], sep, path);
            }
            if drive_absolute(local, sep).is_some() {
                return root_of(local, sep);
            }
            return Err(format!(
                "`{shown}`: `\\\\?\\` paths other than a drive (`\\\\?\\C:\\...`) or UNC (`\\\\?\\UNC\\...`) name files by another name (a volume, the object namespace) and are refused"
            ));
        }
        if rest.starts_with(['.']) && rest[1..].starts_with(sep) {
            return Err(format!(
                "`{shown}`: device paths (`\\\\.\\...`) are refused"
            ));
        }
        return unc_root(rest, sep, path);
    }
    if let Some(rest) = drive_absolute(path, sep) {
        let drive = path[..1].to_ascii_uppercase();
        return Ok((format!("/{drive}:"), rest));
    }
    let relative = match path.chars().next() {
        Some(c) if sep(c) => "rooted on the current drive (whichever that is); give the drive",
        _ if path.len() >= 2 && path.as_bytes()[1] == b':' => {
            "relative to the drive's current directory; write `C:\\...`"
        }
        _ => "relative",
    };
    Err(format!(
        "`{shown}` is {relative}: Windows paths must be absolute, such as `C:\\srv\\app`"
    ))
}

/// `X:` followed by a separator (or nothing after the separator): what follows the drive.
fn drive_absolute(path: &str, sep: impl Fn(char) -> bool) -> Option<&str> {
    let bytes = path.as_bytes();
    let lettered = bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    (lettered && sep(char::from(bytes[2]))).then(|| &path[3..])
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `server\share\rest` as `/UNC/SERVER/SHARE` and `rest`.
fn unc_root<'a>(
    rest: &'a str,
    sep: impl Fn(char) -> bool + Copy,
    whole: &str,
) -> Result<(String, &'a str), String> {
    let mut pieces = rest.splitn(3, sep);
    let server = pieces.next().unwrap_or("");
    let share = pieces.next().unwrap_or("");
    let after = pieces.next().unwrap_or("");
    if server.is_empty()
        || share.is_empty()
        || matches!(server, "." | "..")
        || matches!(share, "." | "..")
    {
        return Err(format!(
            "`{}`: a UNC path names a server and a share (`\\\\server\\share\\...`)",
            whole.escape_debug()
        ));
    }
    Ok((
        format!("/UNC/{}/{}", name_of(server)?, name_of(share)?),
        after,
    ))
}

/// A name as NTFS compares it: without a stream, without trailing dots and spaces, folded.
fn name_of(name: &str) -> Result<String, String> {
    // `name:stream` and `name:stream:$DATA` are streams of `name`; `:stream` alone is one of
    // the directory's (its name is then empty: the directory itself).
    let name = name.split(':').next().unwrap_or("");
    let stripped = name.trim_end_matches(['.', ' ']);
    if stripped.is_empty() && !name.is_empty() {
        return Err(format!(
            "`{}`: a name of dots and spaces only is refused (Windows reads it as another)",
            name.escape_debug()
        ));
    }
    if is_short_name(stripped) {
        return Err(format!(
            "`{}` looks like an 8.3 short name (another name for a long one, which only the file system knows); use the long name",
            stripped.escape_debug()
        ));
    }
    Ok(stripped.chars().map(fold).collect())
}

/// NTFS's comparison: a character's simple uppercase, where that is one character.
fn fold(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// `BASE~N` or `BASE~N.EXT` as Windows generates short names: up to six characters, `~`, digits,
/// an extension of up to three.
fn is_short_name(name: &str) -> bool {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let Some((base, number)) = stem.rsplit_once('~') else {
        return false;
    };
    (1..=6).contains(&base.chars().count())
        && !number.is_empty()
        && number.len() <= 6
        && number.bytes().all(|b| b.is_ascii_digit())
        && ext.chars().count() <= 3
        && !base.contains('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        canonical(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn one_form_for_every_spelling_of_a_path() {
        for (path, expected) in [
            (r"C:\srv\app", "/C:/SRV/APP"),
            ("c:/srv/app/", "/C:/SRV/APP"),
            (r"C:\Srv\App\X.txt", "/C:/SRV/APP/X.TXT"),
            (r"C:/srv\app//x", "/C:/SRV/APP/X"),
            (r"C:\", "/C:"),
            (r"C:\a\.\b\..\c", "/C:/A/C"),
            (r"C:\..\..\windows", "/C:/WINDOWS"),
            (r"\\?\C:\srv\app", "/C:/SRV/APP"),
            (r"\\server\share\dir\f", "/UNC/SERVER/SHARE/DIR/F"),
            (r"\\?\UNC\Server\Share\f", "/UNC/SERVER/SHARE/F"),
            (r"D:\srv\app", "/D:/SRV/APP"),
            // Unicode case, as NTFS folds it.
            (r"C:\Ärger\ß", "/C:/ÄRGER/ß"),
            (r"c:\ärger", "/C:/ÄRGER"),
        ] {
            assert_eq!(ok(path), expected, "{path}");
        }
    }

    #[test]
    fn what_windows_strips_is_stripped_so_a_deny_covers_it() {
        for path in [
            r"C:\app\secret.txt",
            r"C:\app\secret.txt.",
            r"C:\app\secret.txt ",
            r"C:\app\secret.txt. . ",
            r"C:\app\secret.txt:hidden",
            r"C:\app\secret.txt::$DATA",
            r"C:\app\SECRET.TXT:x:$DATA",
            r"C:\app.\secret.txt",
            r"c:/APP/Secret.Txt",
        ] {
            assert_eq!(ok(path), "/C:/APP/SECRET.TXT", "{path}");
        }
        // A stream of a directory is the directory.
        assert_eq!(ok(r"C:\app\:stream"), "/C:/APP");
    }

    #[test]
    fn what_is_not_absolute_or_has_another_name_is_refused() {
        for (path, says) in [
            ("x", "is relative"),
            (r".\x", "is relative"),
            (r"..\x", "is relative"),
            ("C:x", "relative to the drive's current directory"),
            ("C:", "relative to the drive's current directory"),
            (r"\srv\app", "rooted on the current drive"),
            ("/srv/app", "rooted on the current drive"),
            (r"\\.\C:\x", "device paths"),
            (r"\\.\pipe\permission-broker", "device paths"),
            (r"\\?\Volume{0d0e}\secret", "by another name"),
            (
                r"\\?\GLOBALROOT\Device\HarddiskVolume1\x",
                "by another name",
            ),
            (r"\\server", "names a server and a share"),
            (r"\\server\\x", "names a server and a share"),
            (r"C:\PROGRA~1\secret", "8.3 short name"),
            (r"C:\app\SECRET~1.TXT", "8.3 short name"),
            (r"C:\app\...\x", "dots and spaces only"),
            ("C:\\app\0x", "NUL"),
            ("", "is relative"),
        ] {
            let err = canonical(path).expect_err(path);
            assert!(err.contains(says), "{path}: {err}");
        }
        // Names that only look near a short name are names.
        assert_eq!(ok(r"C:\a~b\c~\~1"), "/C:/A~B/C~/~1");
        assert_eq!(ok(r"C:\backup~2024-11"), "/C:/BACKUP~2024-11");
    }
}
