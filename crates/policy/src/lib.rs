//! The policy language (shared/design/policy-v1.md): what the security team writes, compiled into
//! indexed matchers, and a pure [`Policy::decide`].
//!
//! This crate does no IO. The daemon reads files and facts about the peer from the kernel and
//! hands them in as [`Source`]s, a [`Subject`], a [`Directory`] for user and group names and a
//! [`Resolver`] for symlinks; everything here is a function of its inputs, which is what lets
//! `check`, `explain`, `test` and the daemon agree exactly.
//!
//! Flow: [`Policy::compile`] parses each source (with spans), validates it, and either returns a
//! [`Policy`] plus warnings or every error it found as [`Diagnostic`]s (`file:line:column: message`).
//! [`Policy::decide`] looks the request's value up in per-permission indexes (a path trie with
//! anchored globs, host maps by name, parent domain and CIDR prefix, name maps), never scanning
//! rules, and applies deny-overrides.

mod cases;
mod compile;
mod decide;
mod diagnostic;
mod host;
mod lint;
mod message;
mod model;
mod name;
mod path;
mod subject;
pub mod windows_path;

pub use cases::{CaseOutcome, CaseReport, run_cases};
pub use compile::{Mode, Policy, RESERVED_RULE_IDS, Rule, RuleIndex, Symlinks};
pub use decide::{DecidedBy, Decision, Explanation, Resolved, Resolver, lexical_only, needs_cwd};
pub use diagnostic::{Diagnostic, Diagnostics, Severity, Source};
pub use host::{HostPattern, HostPort, NetTarget, Ports, parse_host, parse_host_pattern};
pub use message::{DEFAULT_DENY_MESSAGE, DenyMessage};
pub use path::normalize_absolute;
pub use permission_broker_protocol::{Effect, Permission};
pub use subject::{Directory, NoDirectory, StaticDirectory, Subject, When};

/// The maps behind the indexes. Lookups hash request values against a key set fixed when the
/// policy compiled, so a fast non-cryptographic hasher is safe here (no attacker-chosen inserts).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The broker version this crate is part of (one workspace version): what a policy's
/// `requires` is checked against.
pub const BROKER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reason sent on a default deny when the policy does not set `defaults.reason`.
pub const DEFAULT_REASON: &str = "not permitted by the permission broker policy";
