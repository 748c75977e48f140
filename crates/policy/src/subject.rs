//! Who asks: the facts the daemon establishes about a peer, and `when` conditions on them.
//!
//! A fact the daemon could not read is `None`. Matching is three-valued so that an unknown fact
//! fails closed both ways: an allow rule that needs it does not apply, a deny rule that needs it
//! does.

/// The process asking, as the kernel reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub pid: u32,
    pub uid: Option<u32>,
    /// Primary group id.
    pub gid: Option<u32>,
    /// Supplementary group ids.
    pub groups: Option<&'a [u32]>,
    /// The name of `uid` on the host that decides (`Some("")`: known to have none), for `users`.
    pub user: Option<&'a str>,
    /// The name of the primary group (`gid`) on the host that decides, for `groups`.
    pub group: Option<&'a str>,
    /// The names of the supplementary groups (`groups`) on the host that decides, for `groups`.
    pub group_names: Option<&'a [String]>,
    /// Absolute path of the executable.
    pub exe: Option<&'a str>,
    /// The systemd unit the process runs in (`Some("")`: known to be in none).
    pub unit: Option<&'a str>,
    /// Working directory, for relative paths.
    pub cwd: Option<&'a str>,
}

/// User and group names on some host: the serving host's databases for the daemon, or a
/// fleet's `passwd`/`group` files for `check` and `test`. A policy keeps `users` and `groups` as
/// names, matched against the asking process's names when it asks; a directory only tells the
/// tools which names a host does not know (a warning) and what ids a test case's names have.
pub trait Directory {
    fn user(&self, name: &str) -> Option<u32>;
    fn group(&self, name: &str) -> Option<u32>;
    /// The name of `uid`, if the directory has one.
    fn user_name(&self, _uid: u32) -> Option<String> {
        None
    }
    /// The name of `gid`, if the directory has one.
    fn group_name(&self, _gid: u32) -> Option<String> {
        None
    }
}

/// A directory that knows no names: every `users`/`groups` name is warned about.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDirectory;

impl Directory for NoDirectory {
    fn user(&self, _: &str) -> Option<u32> {
        None
    }

    fn group(&self, _: &str) -> Option<u32> {
        None
    }
}

/// A fixed table of names, for tests and `permission-broker test`.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    pub users: Vec<(String, u32)>,
    pub groups: Vec<(String, u32)>,
}

impl Directory for StaticDirectory {
    fn user(&self, name: &str) -> Option<u32> {
        self.users
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        self.users
            .iter()
            .find(|(_, id)| *id == uid)
            .map(|(n, _)| n.clone())
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        self.groups
            .iter()
            .find(|(_, id)| *id == gid)
            .map(|(n, _)| n.clone())
    }
}

impl StaticDirectory {
    /// Reads `passwd(5)` and `group(5)` text (name, password, id, ...; `#` comments and blank
    /// lines skipped). A line that does not have a name and a numeric id is an error naming it.
    pub fn from_files(
        passwd: Option<&str>,
        group: Option<&str>,
    ) -> Result<StaticDirectory, String> {
        fn entries(text: &str, what: &str) -> Result<Vec<(String, u32)>, String> {
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut fields = line.split(':');
                let name = fields.next().unwrap_or_default();
                let id = fields.nth(1).and_then(|id| id.parse::<u32>().ok());
                match id {
                    Some(id) if !name.is_empty() => out.push((name.to_owned(), id)),
                    _ => {
                        return Err(format!(
                            "{what}:{}: not a `name:password:id:...` line",
                            n + 1
                        ));
                    }
                }
            }
            Ok(out)
        }
        Ok(StaticDirectory {
            users: passwd
                .map(|t| entries(t, "passwd"))
                .transpose()?
                .unwrap_or_default(),
            groups: group
                .map(|t| entries(t, "group"))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tri {
    Yes,
    No,
    Unknown,
}

impl Tri {
    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::Yes,
        }
    }
}

/// A compiled `when`: every key given must match (AND); each list is a set (OR).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    pub uids: Option<Vec<u32>>,
    /// `users`: names, matched against the asking process's user name when it asks, on the host
    /// that decides (so a fleet policy can name accounts that this host, or CI, does not have).
    pub users: Option<Vec<String>>,
    pub gids: Option<Vec<u32>>,
    /// `groups`: names, matched against the names of the asking process's groups.
    pub groups: Option<Vec<String>>,
    pub executables: Option<Vec<String>>,
    pub units: Option<Vec<String>>,
}

impl When {
    pub(crate) fn matches(&self, s: &Subject<'_>) -> Tri {
        let mut result = Tri::Yes;
        if let Some(uids) = &self.uids {
            result = result.and(match s.uid {
                None => Tri::Unknown,
                Some(uid) => yes_if(uids.contains(&uid)),
            });
        }
        if let Some(users) = &self.users {
            result = result.and(match s.user {
                None => Tri::Unknown,
                Some(name) => yes_if(users.iter().any(|u| u == name)),
            });
        }
        if let Some(gids) = &self.gids {
            result = result.and(group_member(gids, s));
        }
        if let Some(groups) = &self.groups {
            result = result.and(if s.group.is_some_and(|g| groups.iter().any(|n| n == g)) {
                Tri::Yes
            } else {
                match s.group_names {
                    None => Tri::Unknown,
                    Some(names) => yes_if(names.iter().any(|n| groups.contains(n))),
                }
            });
        }
        if let Some(exes) = &self.executables {
            result = result.and(match s.exe {
                None => Tri::Unknown,
                Some(exe) => yes_if(exes.iter().any(|e| e == exe)),
            });
        }
        if let Some(units) = &self.units {
            result = result.and(match s.unit {
                None => Tri::Unknown,
                Some(unit) => yes_if(units.iter().any(|u| u == unit)),
            });
        }
        result
    }
}

fn yes_if(b: bool) -> Tri {
    if b { Tri::Yes } else { Tri::No }
}

/// In a group: as primary group, or as a supplementary one.
fn group_member(gids: &[u32], s: &Subject<'_>) -> Tri {
    if s.gid.is_some_and(|g| gids.contains(&g)) {
        return Tri::Yes;
    }
    match s.groups {
        Some(groups) => yes_if(groups.iter().any(|g| gids.contains(g))),
        None => Tri::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_matching() {
        let when = When {
            uids: Some(vec![1000]),
            gids: Some(vec![50]),
            units: Some(vec!["reports.service".into()]),
            ..When::default()
        };
        let full = Subject {
            uid: Some(1000),
            gid: Some(1000),
            groups: Some(&[50]),
            unit: Some("reports.service"),
            ..Subject::default()
        };
        assert_eq!(when.matches(&full), Tri::Yes);
        assert_eq!(
            when.matches(&Subject {
                uid: Some(1001),
                ..full
            }),
            Tri::No
        );
        assert_eq!(
            when.matches(&Subject {
                groups: Some(&[]),
                ..full
            }),
            Tri::No
        );
        assert_eq!(
            when.matches(&Subject {
                gid: Some(50),
                groups: None,
                ..full
            }),
            Tri::Yes,
            "primary group"
        );
        assert_eq!(
            when.matches(&Subject {
                groups: None,
                ..full
            }),
            Tri::Unknown
        );
        assert_eq!(when.matches(&Subject { unit: None, ..full }), Tri::Unknown);
        assert_eq!(
            when.matches(&Subject {
                unit: Some(""),
                ..full
            }),
            Tri::No
        );
    }

    /// `users` and `groups` are names, matched against the names the deciding host gives the
    /// asking process: unknown there (a lookup that failed) is unknown, a uid without a name is
    /// no user.
    #[test]
    fn names_match_names() {
        let when = When {
            users: Some(vec!["reports".into()]),
            groups: Some(vec!["wheel".into()]),
            ..When::default()
        };
        let names = ["reports-team".to_owned(), "wheel".to_owned()];
        let full = Subject {
            uid: Some(1500),
            user: Some("reports"),
            group: Some("reports"),
            group_names: Some(&names),
            ..Subject::default()
        };
        assert_eq!(when.matches(&full), Tri::Yes);
        assert_eq!(
            when.matches(&Subject {
                user: Some("app"),
                ..full
            }),
            Tri::No
        );
        assert_eq!(
            when.matches(&Subject {
                user: Some(""),
                ..full
            }),
            Tri::No
        );
        assert_eq!(when.matches(&Subject { user: None, ..full }), Tri::Unknown);
        assert_eq!(
            when.matches(&Subject {
                group_names: Some(&names[..1]),
                ..full
            }),
            Tri::No
        );
        assert_eq!(
            when.matches(&Subject {
                group_names: None,
                ..full
            }),
            Tri::Unknown
        );
        assert_eq!(
            when.matches(&Subject {
                group: Some("wheel"),
                group_names: None,
                ..full
            }),
            Tri::Yes,
            "primary group"
        );
    }
}
