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
    /// Absolute path of the executable.
    pub exe: Option<&'a str>,
    /// The systemd unit the process runs in (`Some("")`: known to be in none).
    pub unit: Option<&'a str>,
    /// Working directory, for relative paths.
    pub cwd: Option<&'a str>,
}

/// Resolves user and group names when a policy loads. The daemon reads the system's databases;
/// tests use a fixed table. An unknown name is a load error.
pub trait Directory {
    fn user(&self, name: &str) -> Option<u32>;
    fn group(&self, name: &str) -> Option<u32>;
}

/// A directory that knows no names: `users`/`groups` in a policy are then load errors.
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
    /// `users`, resolved to uids when the policy loaded.
    pub users: Option<Vec<u32>>,
    pub gids: Option<Vec<u32>>,
    /// `groups`, resolved to gids when the policy loaded.
    pub groups: Option<Vec<u32>>,
    pub executables: Option<Vec<String>>,
    pub units: Option<Vec<String>>,
}

impl When {
    pub(crate) fn matches(&self, s: &Subject<'_>) -> Tri {
        let mut result = Tri::Yes;
        for uids in [&self.uids, &self.users].into_iter().flatten() {
            result = result.and(match s.uid {
                None => Tri::Unknown,
                Some(uid) => yes_if(uids.contains(&uid)),
            });
        }
        for gids in [&self.gids, &self.groups].into_iter().flatten() {
            result = result.and(group_member(gids, s));
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
            users: Some(vec![1000]),
            groups: Some(vec![50]),
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
        assert_eq!(
            when.matches(&Subject {
                uid: Some(1),
                unit: None,
                ..full
            }),
            Tri::No,
            "a known mismatch outweighs an unknown"
        );
        assert_eq!(When::default().matches(&Subject::default()), Tri::Yes);
    }
}
