//! What the daemon counts for Prometheus, and how a scrape reads it.
//!
//! **The hot path shares nothing.** A decision is counted in its thread's own counters (a
//! thread-local block that only that thread writes: a plain load and store, no atomic
//! read-modify-write, no lock), and a scrape adds the blocks of every thread up; a thread that
//! ends hands its totals to the retired sum first. The rare events (a fault, an accept, a reload)
//! are counted in shared atomics: each costs a connection or a reload, never a decision.
//!
//! **Every label set is bounded**: permissions, decisions, modes, fault kinds and refusal reasons
//! are enums; rule ids are the policy's, given a label each in the order first served, up to
//! [`MAX_RULE_LABELS`] over the daemon's life; the rules past that are counted as `other`.
//!
//! Nothing is counted until [`enable`] is called: a daemon without a metrics endpoint pays one
//! relaxed load per decision.

use super::server::Shared;
use permission_broker_policy::{DecidedBy, Mode, Policy};
use permission_broker_protocol::{Effect, Permission};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Instant, SystemTime};

/// Rule ids given a label of their own over the daemon's life; later ones count as `other`.
pub const MAX_RULE_LABELS: usize = 256;

/// The rule labels that are not a policy's rule ids: what decided when no rule did, and where
/// the rules past [`MAX_RULE_LABELS`] are counted.
const BROKER_RULES: [&str; 4] = ["default", "unresolvable", "broker-files", "other"];
const SLOT_DEFAULT: u16 = 0;
const SLOT_UNRESOLVABLE: u16 = 1;
const SLOT_BROKER_FILES: u16 = 2;
const SLOT_OTHER: u16 = 3;
const RULE_SLOTS: usize = BROKER_RULES.len() + MAX_RULE_LABELS;

/// Upper bounds of the decision-duration histogram's buckets, in seconds (then `+Inf`): from a
/// cached in-memory decision (tens of microseconds) to the request deadline's range.
pub const DURATION_BUCKETS: [f64; 18] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BUCKETS: usize = DURATION_BUCKETS.len() + 1;
/// The same bounds in nanoseconds, for the hot path's comparison.
const BUCKET_NANOS: [u64; DURATION_BUCKETS.len()] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// A decision's outcome: the verdict, what was answered, the mode (`2 x 2 x 2`).
const OUTCOMES: usize = 8;
const PERMISSIONS: usize = Permission::ALL.len();

fn outcome_index(decision: Effect, answered: Effect, mode: Mode) -> usize {
    let bit = |effect: Effect| usize::from(effect == Effect::Deny);
    bit(decision) | (bit(answered) << 1) | (usize::from(mode == Mode::Audit) << 2)
}

fn permission_index(permission: Permission) -> usize {
    Permission::ALL
        .iter()
        .position(|p| *p == permission)
        .unwrap_or(0)
}

/// The outcomes a decision can have, as labels: (decision, answered, mode). Enforce answers
/// what it decides; audit answers allow, except for the broker's own files (denied in every
/// mode). These are exported even at zero, so that a rate over them starts at the first scrape.
const POSSIBLE_OUTCOMES: [(Effect, Effect, Mode); 5] = [
    (Effect::Allow, Effect::Allow, Mode::Enforce),
    (Effect::Deny, Effect::Deny, Mode::Enforce),
    (Effect::Allow, Effect::Allow, Mode::Audit),
    (Effect::Deny, Effect::Allow, Mode::Audit),
    (Effect::Deny, Effect::Deny, Mode::Audit),
];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Starts counting decisions (the daemon calls it when it serves metrics).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// One thread's decision counters: written only by that thread, read by scrapes.
#[derive(Debug)]
struct ThreadCounters {
    decisions: [AtomicU64; PERMISSIONS * OUTCOMES],
    rules: [AtomicU64; RULE_SLOTS],
    buckets: [AtomicU64; BUCKETS],
    nanos: AtomicU64,
}

impl ThreadCounters {
    const fn new() -> ThreadCounters {
        ThreadCounters {
            decisions: [const { AtomicU64::new(0) }; PERMISSIONS * OUTCOMES],
            rules: [const { AtomicU64::new(0) }; RULE_SLOTS],
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            nanos: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter only this thread writes: no atomic read-modify-write needed.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Sums of decision counters: every live thread's plus those of threads that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    decisions: [u64; PERMISSIONS * OUTCOMES],
    rules: [u64; RULE_SLOTS],
    buckets: [u64; BUCKETS],
    nanos: u64,
}

impl Totals {
    const ZERO: Totals = Totals {
        decisions: [0; PERMISSIONS * OUTCOMES],
        rules: [0; RULE_SLOTS],
        buckets: [0; BUCKETS],
        nanos: 0,
    };

    fn add(&mut self, counters: &ThreadCounters) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (total, c) in self.decisions.iter_mut().zip(&counters.decisions) {
            *total = total.wrapping_add(read(c));
        }
        for (total, c) in self.rules.iter_mut().zip(&counters.rules) {
            *total = total.wrapping_add(read(c));
        }
        for (total, c) in self.buckets.iter_mut().zip(&counters.buckets) {
            *total = total.wrapping_add(read(c));
        }
        self.nanos = self.nanos.wrapping_add(read(&counters.nanos));
    }

    /// Decisions with this permission and outcome.
    pub fn decisions(
        &self,
        permission: Permission,
        decision: Effect,
        answered: Effect,
        mode: Mode,
    ) -> u64 {
        self.decisions
            [permission_index(permission) * OUTCOMES + outcome_index(decision, answered, mode)]
    }

    /// Decisions counted: the histogram's count.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Every thread's counters, and the sums of those that ended. Locked when a thread first
/// counts, when it ends, and by a scrape: never per decision.
#[derive(Debug)]
struct Threads {
    live: Vec<Arc<ThreadCounters>>,
    retired: Totals,
}

static THREADS: Mutex<Threads> = Mutex::new(Threads {
    live: Vec::new(),
    retired: Totals::ZERO,
});

/// A thread's counters, registered on its first decision; folded into the retired sums when
/// the thread ends.
struct Registered(Arc<ThreadCounters>);

impl Registered {
    fn new() -> Registered {
        let counters = Arc::new(ThreadCounters::new());
        THREADS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .push(counters.clone());
        Registered(counters)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut threads = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
        threads.retired.add(&self.0);
        threads.live.retain(|c| !Arc::ptr_eq(c, &self.0));
    }
}

thread_local! {
    static COUNTERS: Registered = Registered::new();
}

/// Counts one answered decision: its permission and outcome, what decided it, and how long it
/// took from its frame read to its answer written. Never inlined: a profile shows its cost on
/// its own (BENCHMARKS.md, "What metrics cost").
#[inline(never)]
pub fn decided(
    permission: Permission,
    decision: Effect,
    answered: Effect,
    mode: Mode,
    rule: RuleSlot,
    started: Instant,
) {
    if !enabled() {
        return;
    }
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let bucket = BUCKET_NANOS
        .iter()
        .position(|bound| nanos <= *bound)
        .unwrap_or(BUCKETS - 1);
    // A thread past its thread-locals' destruction (never one that serves) counts nothing.
    let _ = COUNTERS.try_with(|c| {
        let c = &c.0;
        bump(
            &c.decisions
                [permission_index(permission) * OUTCOMES + outcome_index(decision, answered, mode)],
            1,
        );
        bump(&c.rules[usize::from(rule.0).min(RULE_SLOTS - 1)], 1);
        bump(&c.buckets[bucket], 1);
        bump(&c.nanos, nanos);
    });
}

/// The sums of every thread's decision counters, now.
pub fn totals() -> Totals {
    let threads = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut totals = threads.retired.clone();
    for counters in &threads.live {
        totals.add(counters);
    }
    totals
}

/// A rule's label among the decision counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSlot(u16);

impl RuleSlot {
    pub const BROKER_FILES: RuleSlot = RuleSlot(SLOT_BROKER_FILES);

    /// What decided, as a label: the rule's own (through the policy's `slots`), `default` or
    /// `unresolvable`.
    pub fn of(decided_by: DecidedBy, slots: &[RuleSlot]) -> RuleSlot {
        match decided_by {
            DecidedBy::Rule(i) => slots
                .get(i.0 as usize)
                .copied()
                .unwrap_or(RuleSlot(SLOT_OTHER)),
            DecidedBy::Default => RuleSlot(SLOT_DEFAULT),
            DecidedBy::Unresolvable => RuleSlot(SLOT_UNRESOLVABLE),
        }
    }
}

/// The rule ids given a label, in the order first served (slot = index + the broker's four).
static RULE_LABELS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Each of `policy`'s rules' label, by rule index: a rule id keeps its label across reloads; a
/// new one gets the next while there is room, then `other`. Called once per policy loaded.
pub fn rule_slots(policy: &Policy) -> Box<[RuleSlot]> {
    let mut labels = RULE_LABELS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut known: HashMap<String, u16> = labels
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), slot_at(i)))
        .collect();
    policy
        .rules()
        .iter()
        .map(|rule| {
            if let Some(slot) = known.get(&rule.id) {
                return RuleSlot(*slot);
            }
            if labels.len() >= MAX_RULE_LABELS {
                return RuleSlot(SLOT_OTHER);
            }
            let slot = slot_at(labels.len());
            labels.push(rule.id.clone());
            known.insert(rule.id.clone(), slot);
            RuleSlot(slot)
        })
        .collect()
}

fn slot_at(label_index: usize) -> u16 {
    // At most MAX_RULE_LABELS + 4, far below u16::MAX.
    u16::try_from(BROKER_RULES.len() + label_index).unwrap_or(SLOT_OTHER)
}

/// Each label and its slot: the broker's own, then the rule ids.
fn rule_labels() -> Vec<(String, usize)> {
    let labels = RULE_LABELS.lock().unwrap_or_else(PoisonError::into_inner);
    BROKER_RULES
        .iter()
        .map(|s| (*s).to_owned())
        .chain(labels.iter().cloned())
        .enumerate()
        .map(|(slot, label)| (label, slot))
        .collect()
}

/// Protocol faults, by kind (a connection has at most one: it is closed for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    NotUtf8,
    Blank,
    Json,
    Schema,
    Oversize,
    FrameTimeout,
    WriteTimeout,
    Truncated,
    IdOrder,
    PidMismatch,
    Io,
    LogOverloaded,
}

impl FaultKind {
    const ALL: [FaultKind; 12] = [
        FaultKind::NotUtf8,
        FaultKind::Blank,
        FaultKind::Json,
        FaultKind::Schema,
        FaultKind::Oversize,
        FaultKind::FrameTimeout,
        FaultKind::WriteTimeout,
        FaultKind::Truncated,
        FaultKind::IdOrder,
        FaultKind::PidMismatch,
        FaultKind::Io,
        FaultKind::LogOverloaded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::NotUtf8 => "not_utf8",
            FaultKind::Blank => "blank",
            FaultKind::Json => "json",
            FaultKind::Schema => "schema",
            FaultKind::Oversize => "oversize",
            FaultKind::FrameTimeout => "frame_timeout",
            FaultKind::WriteTimeout => "write_timeout",
            FaultKind::Truncated => "truncated",
            FaultKind::IdOrder => "id_order",
            FaultKind::PidMismatch => "pid_mismatch",
            FaultKind::Io => "io",
            FaultKind::LogOverloaded => "log_overloaded",
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached (a handed-over connection the new process has no room for;
    /// new ones wait in the accept queue instead).
    Limit,
    /// The uid holds its share (`max_connections_per_uid`).
    PerUidShare,
    /// The uid is not in `allowed_uids`.
    AllowedUids,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::Limit, Refusal::PerUidShare, Refusal::AllowedUids];

    const fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::PerUidShare => "per_uid_share",
            Refusal::AllowedUids => "allowed_uids",
        }
    }
}

/// The daemon's event counters: each counts a connection's or a reload's event, never a
/// decision's.
#[derive(Debug)]
struct Events {
    faults: [AtomicU64; FaultKind::ALL.len()],
    refused: [AtomicU64; Refusal::ALL.len()],
    accepted: AtomicU64,
    adopted: AtomicU64,
    open: AtomicI64,
}

static EVENTS: Events = Events {
    faults: [const { AtomicU64::new(0) }; FaultKind::ALL.len()],
    refused: [const { AtomicU64::new(0) }; Refusal::ALL.len()],
    accepted: AtomicU64::new(0),
    adopted: AtomicU64::new(0),
    open: AtomicI64::new(0),
};

pub fn fault(kind: FaultKind) {
    EVENTS.faults[kind as usize].fetch_add(1, Ordering::Relaxed);
}

pub fn refused(why: Refusal) {
    EVENTS.refused[why as usize].fetch_add(1, Ordering::Relaxed);
}

/// A connection taken from the listening socket.
pub fn accepted() {
    EVENTS.accepted.fetch_add(1, Ordering::Relaxed);
}

/// A connection taken over from the previous process (an upgrade or a restart).
pub fn adopted() {
    EVENTS.adopted.fetch_add(1, Ordering::Relaxed);
}

/// Held while a connection is served: counted open from its creation to its drop.
#[derive(Debug)]
pub struct Open(());

impl Open {
    pub fn new() -> Open {
        EVENTS.open.fetch_add(1, Ordering::Relaxed);
        Open(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        EVENTS.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a scrape reads: the counters above, and the daemon's own state once it serves.
#[derive(Debug, Default)]
pub struct Exporter {
    shared: OnceLock<Weak<Shared>>,
}

/// What `/healthz` answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    /// The revision serving, and a line to show.
    Serving(String),
    /// Not serving (yet, or any more), and why.
    NotServing(&'static str),
}

impl Exporter {
    /// The daemon serves from here on: its policy, log and pools are read by every scrape.
    pub fn serving(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.get().and_then(Weak::upgrade)
    }

    pub fn health(&self) -> Health {
        if self.shared.get().is_none() {
            return Health::NotServing("starting: no policy is loaded yet\n");
        }
        let Some(shared) = self.shared() else {
            return Health::NotServing("stopping\n");
        };
        let status = shared.store.status();
        Health::Serving(format!("serving {}\n", status.line()))
    }
}

/// Writes one metric family's header, and `samples` (label set, value) under it.
fn family<S, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (S, M)>,
) -> Result<(), std::fmt::Error>
where
    S: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter without labels.
fn count(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    family(
        e,
        name,
        help,
        None,
        MetricType::Counter,
        [([("", ""); 0], ConstCounter::new(v))],
    )
}

/// A gauge without labels.
fn level(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: usize,
) -> Result<(), std::fmt::Error> {
    let v = i64::try_from(v).unwrap_or(i64::MAX);
    family(
        e,
        name,
        help,
        None,
        MetricType::Gauge,
        [([("", ""); 0], ConstGauge::new(v))],
    )
}

/// A counter with one label, a sample for each of its values.
fn counts_by(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'static str, u64)>,
) -> Result<(), std::fmt::Error> {
    let samples = values
        .into_iter()
        .map(|(value, n)| ([(label, value)], ConstCounter::new(n)));
    family(e, name, help, None, MetricType::Counter, samples)
}

/// A gauge of 1 that carries what it describes in its labels.
fn info<const N: usize>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: [(&str, &str); N],
) -> Result<(), std::fmt::Error> {
    family(
        e,
        name,
        help,
        None,
        MetricType::Gauge,
        [(labels, ConstGauge::new(1_i64))],
    )
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        info(
            e,
            "build_info",
            "The broker's version (always 1)",
            [("version", env!("CARGO_PKG_VERSION"))],
        )?;
        let totals = totals();
        let decisions = Permission::ALL.iter().flat_map(|p| {
            POSSIBLE_OUTCOMES.iter().map(|(decision, answered, mode)| {
                (
                    [
                        ("permission", p.as_str()),
                        ("decision", decision.as_str()),
                        ("answered", answered.as_str()),
                        ("mode", mode.as_str()),
                    ],
                    ConstCounter::new(totals.decisions(*p, *decision, *answered, *mode)),
                )
            })
        });
        family(
            e,
            "decisions",
            "Requests answered, by permission, the policy's verdict (decision), what was answered and the mode (audit answers would-be denies with allow)",
            None,
            MetricType::Counter,
            decisions,
        )?;
        let rules: Vec<_> = rule_labels()
            .into_iter()
            .map(|(label, slot)| ([("rule", label)], ConstCounter::new(totals.rules[slot])))
            .collect();
        family(
            e,
            "rule_decisions",
            &format!(
                "Requests answered, by what decided them: a rule id, or default, unresolvable, broker-files; the first {MAX_RULE_LABELS} rule ids served get a label, later ones count as other"
            ),
            None,
            MetricType::Counter,
            rules,
        )?;
        let mut histogram = e.encode_descriptor(
            "decision_duration",
            "Time from a request's frame read to its answer written",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(totals.buckets.iter().copied())
            .collect();
        histogram.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            totals.nanos as f64 / 1e9,
            totals.count(),
            &buckets,
            None,
        )?;
        counts_by(
            e,
            "protocol_faults",
            "Connections closed without an answer for a protocol fault, by kind (the peer, a Deno, exits 87)",
            "kind",
            FaultKind::ALL
                .iter()
                .map(|kind| (kind.as_str(), read(&EVENTS.faults[*kind as usize]))),
        )?;
        level(
            e,
            "connections_open",
            "Connections being served",
            usize::try_from(EVENTS.open.load(Ordering::Relaxed)).unwrap_or(0),
        )?;
        count(
            e,
            "connections_accepted",
            "Connections taken from the listening socket",
            read(&EVENTS.accepted),
        )?;
        count(
            e,
            "connections_adopted",
            "Connections taken over from the previous process (an upgrade in place or a restart)",
            read(&EVENTS.adopted),
        )?;
        counts_by(
            e,
            "connections_refused",
            "Connections closed at accept, by reason: limit (max_connections, for handed-over connections), per_uid_share (max_connections_per_uid), allowed_uids",
            "reason",
            Refusal::ALL
                .iter()
                .map(|why| (why.as_str(), read(&EVENTS.refused[*why as usize]))),
        )?;
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        self.encode_serving(e, &shared)
    }
}

impl Exporter {
    /// The metrics of a daemon that serves: its policy, reloads, decision log and pools.
    fn encode_serving(
        &self,
        e: &mut DescriptorEncoder,
        shared: &Shared,
    ) -> Result<(), std::fmt::Error> {
        let status = shared.store.status();
        let rules = status.rules.to_string();
        let mode = if status.audit { "audit" } else { "enforce" };
        info(
            e,
            "policy_info",
            "The policy serving: its revision, rule count and mode (always 1)",
            [
                ("revision", status.revision.as_str()),
                ("rules", rules.as_str()),
                ("mode", mode),
            ],
        )?;
        counts_by(
            e,
            "reloads",
            "Policy reloads, by outcome: swapped (a new revision serves), unchanged, failed (the last good policy still serves)",
            "outcome",
            [
                ("swapped", status.outcomes.swapped),
                ("unchanged", status.outcomes.unchanged),
                ("failed", status.outcomes.failed),
            ],
        )?;
        level(
            e,
            "reload_failing",
            "1 while the last reload failed: the files on disk do not load, and an older revision serves",
            usize::from(status.last_error.is_some()),
        )?;
        family(
            e,
            "last_good_load_timestamp",
            "When a policy last loaded (at start, or a reload that swapped or found it unchanged), in seconds since the epoch",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            [(
                [("", ""); 0],
                ConstGauge::new(seconds_since_epoch(status.last_good)),
            )],
        )?;
        if let Some(log) = &shared.log {
            let stats = &log.stats;
            count(
                e,
                "decision_log_records_written",
                "Records written to the decision log",
                read(&stats.written),
            )?;
            count(
                e,
                "decision_log_waits",
                "Records that found the decision log's queue full and waited for room",
                read(&stats.waited),
            )?;
            count(
                e,
                "decision_log_overloaded",
                "Connections closed unanswered because their record was not written within decision_log_max_wait (fail closed)",
                read(&stats.overloaded),
            )?;
            count(
                e,
                "decision_log_write_errors",
                "Failed writes to the decision log (each retried; nothing is lost or torn)",
                read(&stats.write_errors),
            )?;
            level(
                e,
                "decision_log_queue_depth",
                "Records queued for the decision log's writer",
                log.queued(),
            )?;
            level(
                e,
                "decision_log_queue_capacity",
                "Records the decision log's queue holds before decisions wait",
                log.capacity(),
            )?;
        }
        let pool = &shared.blocking;
        level(
            e,
            "blocking_workers",
            "Slots for decisions that may wait on a file system or account database (blocking_threads)",
            pool.size,
        )?;
        level(
            e,
            "blocking_busy",
            "Lookups running on a file system or account database, abandoned ones included",
            pool.busy(),
        )?;
        level(
            e,
            "blocking_abandoned",
            "Lookups abandoned at the request deadline and still stuck (a mount that does not answer)",
            pool.abandoned(),
        )?;
        count(
            e,
            "deadline_denials",
            "Requests denied because their decision outlived request_deadline",
            read(&pool.deadline_denials),
        )?;
        counts_by(
            e,
            "blocking_denials",
            "Requests denied without a lookup slot: share (the uid's abandoned lookups hold its quarter), exhausted (every slot busy past the deadline)",
            "reason",
            [
                ("share", read(&pool.no_slot_denials[0])),
                ("exhausted", read(&pool.no_slot_denials[1])),
            ],
        )?;
        level(
            e,
            "connection_threads",
            "Threads that may serve busy connections",
            shared.threads.size(),
        )?;
        level(
            e,
            "connection_threads_busy",
            "Connections being served by a thread of their own now",
            shared.threads.busy(),
        )?;
        Ok(())
    }
}

/// The exposition formats a scrape may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what Prometheus asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for everything else (curl, `promtool check metrics`,
    /// agents that predate OpenMetrics).
    PrometheusText,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The exposition of `exporter` in `format`.
pub fn render(exporter: &Arc<Exporter>, format: Format) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("permission_broker");
    registry.register_collector(Box::new(exporter.clone()));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
        Format::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        }
    };
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_str(text: &str) -> Policy {
        let source =
            permission_broker_policy::Source::new("test.toml", format!("version = 1\n{text}"));
        Policy::compile(&[source], &permission_broker_policy::NoDirectory)
            .unwrap()
            .0
    }

    #[test]
    fn each_outcome_has_its_own_index() {
        let mut seen = std::collections::HashSet::new();
        for decision in [Effect::Allow, Effect::Deny] {
            for answered in [Effect::Allow, Effect::Deny] {
                for mode in [Mode::Enforce, Mode::Audit] {
                    let i = outcome_index(decision, answered, mode);
                    assert!(i < OUTCOMES);
                    assert!(seen.insert(i));
                }
            }
        }
    }

    #[test]
    fn the_bucket_bounds_agree_in_both_units() {
        for (seconds, nanos) in DURATION_BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
        assert!(BUCKET_NANOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_thread_that_ends_keeps_its_counts_and_every_thread_is_summed() {
        // A slot of its own, so that other tests counting meanwhile do not disturb it.
        let policy = compile_str(
            "[[rule]]\nid = \"metrics-unit-test-rule\"\neffect = \"allow\"\npermissions = [\"env\"]\n",
        );
        let slot = rule_slots(&policy)[0];
        enable();
        let before = totals().rules[usize::from(slot.0)];
        let record = move |n: usize, started: Instant| {
            for _ in 0..n {
                decided(
                    Permission::Env,
                    Effect::Allow,
                    Effect::Allow,
                    Mode::Enforce,
                    slot,
                    started,
                );
            }
        };
        // Two threads that end, and this one that goes on.
        let ended: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || record(5, Instant::now())))
            .collect();
        for thread in ended {
            thread.join().unwrap();
        }
        let long_ago = Instant::now()
            .checked_sub(std::time::Duration::from_secs(60))
            .unwrap();
        record(3, long_ago);
        let after = totals();
        assert_eq!(after.rules[usize::from(slot.0)] - before, 13);
        // The same rule id keeps its label in the next policy; the slow ones are in +Inf.
        assert_eq!(rule_slots(&policy)[0], slot);
        assert!(after.buckets[BUCKETS - 1] >= 3);
    }

    #[test]
    fn no_rule_can_be_called_like_a_label_of_the_brokers_own() {
        // Else its counter and the broker's would be two series with the same labels.
        for label in BROKER_RULES {
            assert!(
                permission_broker_policy::RESERVED_RULE_IDS.contains(&label),
                "{label}"
            );
        }
    }

    #[test]
    fn rule_ids_past_the_cap_are_counted_as_other() {
        let rules: String = (0..MAX_RULE_LABELS + 10)
            .map(|i| {
                format!(
                    "[[rule]]\nid = \"cap-test-{i}\"\neffect = \"allow\"\npermissions = [\"env\"]\n"
                )
            })
            .collect();
        let policy = compile_str(&rules);
        let slots = rule_slots(&policy);
        // However many labels other tests took, the last ten are past the cap.
        assert!(
            slots[MAX_RULE_LABELS..]
                .iter()
                .all(|s| *s == RuleSlot(SLOT_OTHER))
        );
        assert!(rule_labels().len() <= BROKER_RULES.len() + MAX_RULE_LABELS);
        assert_eq!(
            RuleSlot::of(DecidedBy::Default, &slots),
            RuleSlot(SLOT_DEFAULT)
        );
        assert_eq!(
            RuleSlot::of(DecidedBy::Unresolvable, &slots),
            RuleSlot(SLOT_UNRESOLVABLE)
        );
    }
}
