//! `decide` and compilation at 10, 1,000 and 100,000 rules, with the same rule sets in Cedar in
//! the same run. `cargo bench -p permission-broker-bench --bench policy`; see BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicySet, Request, RestrictedExpression,
};
use divan::Bencher;
use permission_broker_bench::realistic;
use permission_broker_policy::{NoDirectory, Policy, Source, Subject, lexical_only};
use std::str::FromStr;

const SIZES: [usize; 3] = [10, 1_000, 100_000];

fn main() {
    divan::main();
}

#[divan::bench(args = SIZES, sample_count = 100, sample_size = 1024)]
fn decide(bencher: Bencher, n: usize) {
    decide_over(bencher, permission_broker_bench::realistic(n));
}

/// Requests about 64 distinct targets spread over the rule set, as one process asks about its
/// own few paths: the index cost without the cost of missing every cache level.
#[divan::bench(args = SIZES, sample_count = 100, sample_size = 1024)]
fn decide_hot(bencher: Bencher, n: usize) {
    decide_over(bencher, permission_broker_bench::realistic_with(n, 64));
}

/// Times one decision per iteration, cycling through the set's requests.
fn decide_over(bencher: Bencher, set: permission_broker_bench::RuleSet) {
    let (policy, _) =
        Policy::compile(&[Source::new("bench.toml", set.toml)], &NoDirectory).unwrap();
    let subject = Subject {
        pid: 1,
        uid: Some(1000),
        gid: Some(1000),
        ..Subject::default()
    };
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % set.requests.len();
        let (permission, value) = &set.requests[i];
        policy
            .decide(*permission, Some(value), &subject, &mut lexical_only)
            .effect
    });
}

/// The worst case for glob matching: a path just under PATH_MAX (4,094 bytes, 2,047 components)
/// against `/**/secrets/**` and `/**/*.pem` in a 1,000-rule policy. Matching each glob once over
/// the whole path keeps this linear in the path (it was quadratic: BENCHMARKS.md).
#[divan::bench(sample_count = 50, sample_size = 10)]
fn decide_longest_path(bencher: Bencher) {
    let mut set = realistic(1_000);
    set.toml.push_str(
        "\n[[rule]]\nid = \"deep-secrets\"\neffect = \"deny\"\npermissions = [\"read\"]\npaths = [\"/**/secrets/**\", \"/**/*.pem\"]\n",
    );
    let (policy, _) =
        Policy::compile(&[Source::new("bench.toml", set.toml)], &NoDirectory).unwrap();
    let path = "/a".repeat(2047);
    let subject = Subject::default();
    bencher.bench_local(|| {
        policy
            .decide(
                permission_broker_policy::Permission::Read,
                Some(&path),
                &subject,
                &mut lexical_only,
            )
            .effect
    });
}

#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn compile(bencher: Bencher, n: usize) {
    let set = realistic(n);
    let sources = [Source::new("bench.toml", set.toml)];
    bencher.bench_local(|| Policy::compile(&sources, &NoDirectory).unwrap());
}

fn cedar_requests(requests: &[(permission_broker_policy::Permission, String)]) -> Vec<Request> {
    let principal = EntityUid::from_str(r#"User::"deno""#).unwrap();
    let resource = EntityUid::from_str(r#"Target::"value""#).unwrap();
    requests
        .iter()
        .map(|(permission, value)| {
            let action = EntityUid::from_str(&format!(r#"Action::"{permission}""#)).unwrap();
            let context = Context::from_pairs([(
                "value".to_owned(),
                RestrictedExpression::new_string(value.clone()),
            )])
            .unwrap();
            Request::new(principal.clone(), action, resource.clone(), context, None).unwrap()
        })
        .collect()
}

#[divan::bench(args = SIZES, sample_count = 20)]
fn cedar_decide(bencher: Bencher, n: usize) {
    let set = realistic(n);
    let policies = PolicySet::from_str(&set.cedar).unwrap();
    let requests = cedar_requests(&set.requests);
    let authorizer = Authorizer::new();
    let entities = Entities::empty();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % requests.len();
        authorizer
            .is_authorized(&requests[i], &policies, &entities)
            .decision()
    });
}

#[divan::bench(args = SIZES, sample_count = 3, sample_size = 1)]
fn cedar_compile(bencher: Bencher, n: usize) {
    let set = realistic(n);
    bencher.bench_local(|| PolicySet::from_str(&set.cedar).unwrap());
}
