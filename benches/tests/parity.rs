//! The Cedar rule sets the benchmark compares against must decide exactly as ours do, or the
//! comparison measures different work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request, RestrictedExpression,
};
use permission_broker_bench::realistic;
use permission_broker_policy::{Effect, NoDirectory, Policy, Source, Subject, lexical_only};
use std::str::FromStr;

#[test]
fn cedar_and_the_broker_agree_on_the_benchmark_workload() {
    for n in [10, 1_000] {
        let set = realistic(n);
        let (ours, _) =
            Policy::compile(&[Source::new("bench.toml", set.toml.clone())], &NoDirectory).unwrap();
        let cedar = PolicySet::from_str(&set.cedar).unwrap();
        let principal = EntityUid::from_str(r#"User::"deno""#).unwrap();
        let resource = EntityUid::from_str(r#"Target::"value""#).unwrap();
        let (mut allows, mut denies) = (0, 0);
        for (permission, value) in &set.requests {
            let mine = ours
                .decide(
                    *permission,
                    Some(value),
                    &Subject::default(),
                    &mut lexical_only,
                )
                .effect;
            let action = EntityUid::from_str(&format!(r#"Action::"{permission}""#)).unwrap();
            let context = Context::from_pairs([(
                "value".to_owned(),
                RestrictedExpression::new_string(value.clone()),
            )])
            .unwrap();
            let request =
                Request::new(principal.clone(), action, resource.clone(), context, None).unwrap();
            let theirs = Authorizer::new()
                .is_authorized(&request, &cedar, &Entities::empty())
                .decision();
            let expected = if mine == Effect::Allow {
                Decision::Allow
            } else {
                Decision::Deny
            };
            assert_eq!(theirs, expected, "n={n}: {permission} {value}");
            if mine == Effect::Allow {
                allows += 1
            } else {
                denies += 1
            }
        }
        assert!(
            allows > 100 && denies > 100,
            "n={n}: the workload exercises both outcomes ({allows} allow, {denies} deny)"
        );
    }
}
