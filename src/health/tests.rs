//! The schedule and its thresholds against a real registry, with paused
//! time: results are handed in, the changes they come to are applied, and
//! the registry's values are fed back as the change feed would.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::scheduler::{Schedule, Spread};
use crate::core::{
    Address, Change, CheckKind, CheckName, CheckResult, CheckSpec, Context, Datacenter, EventKind,
    Health, Instance, InstanceId, InstanceSpec, Outcome, Registry, ServiceKey, ServiceName,
};

fn registry() -> Registry {
    crate::core::registry::test_registry(std::time::Instant::now())
}

fn key() -> ServiceKey {
    ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        ServiceName::new("web").unwrap(),
    )
}

fn spec(tweak: impl FnOnce(&mut CheckSpec)) -> CheckSpec {
    let mut c = CheckSpec::new(
        CheckName::new("http").unwrap(),
        CheckKind::Tcp {
            target: "127.0.0.1:8080".parse().unwrap(),
        },
    );
    c.interval = Duration::from_secs(10);
    tweak(&mut c);
    c
}

fn register(r: &Registry, check: CheckSpec) -> Arc<Instance> {
    let mut s = InstanceSpec::new(Address::parse("127.0.0.1").unwrap(), 8080);
    s.ttl = Duration::from_secs(3600);
    s.checks = vec![check];
    r.register(
        key(),
        InstanceId::new("a").unwrap(),
        s,
        std::time::Instant::now(),
    )
    .unwrap()
}

fn current(r: &Registry) -> Option<Arc<Instance>> {
    r.service(&key())?
        .instances
        .get(&InstanceId::new("a").unwrap())
        .cloned()
}

fn result(status: Health) -> CheckResult {
    CheckResult::new(status, "out", 0)
}

/// Applies `changes` and feeds the instance's new value back.
fn apply(r: &Registry, s: &mut Schedule, changes: Vec<Change>) -> Vec<(u64, Outcome)> {
    let applied = r
        .apply_next(changes, &Context::system(), std::time::Instant::now())
        .unwrap();
    s.observe(
        &key(),
        &InstanceId::new("a").unwrap(),
        current(r).as_ref(),
        Instant::now(),
        Spread::Soon,
    );
    applied.outcomes
}

/// Runs the one check once at its due time with `status`.
async fn run(r: &Registry, s: &mut Schedule, status: Health) -> Vec<Change> {
    let due = s.next_due().expect("a check is scheduled");
    let now = Instant::now();
    if due > now {
        tokio::time::advance(due - now).await;
    }
    let sid = s.pop_due(Instant::now()).expect("due");
    let changes = s.finished(sid, result(status), Instant::now());
    let _ = r;
    changes
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_when_a_status_moves_and_a_repeat_is_no_change() {
    let r = registry();
    let inst = register(
        &r,
        spec(|c| {
            c.failures_before_critical = 2;
            c.success_before_passing = 3;
        }),
    );
    let mut s = Schedule::new(7);
    s.observe(
        &key(),
        &inst.id,
        Some(&inst),
        Instant::now(),
        Spread::Interval,
    );
    assert_eq!(s.len(), 1);
    // The first of two failures is no change; the second is.
    assert!(run(&r, &mut s, Health::Critical).await.is_empty());
    let changes = run(&r, &mut s, Health::Critical).await;
    assert!(matches!(
        &changes[..],
        [Change::CheckStatus {
            status: Health::Critical,
            ..
        }]
    ));
    let before = r.index();
    let outcomes = apply(&r, &mut s, changes);
    assert!(matches!(outcomes[0].1, Outcome::Applied(_)));
    let now = current(&r).unwrap();
    assert_eq!(
        (now.status(), now.health),
        (Health::Critical, Health::Passing)
    );
    // The value keeps its index (the change took one of its own).
    assert_eq!(now.index, inst.index);
    assert_eq!(r.index(), before + 1);
    // More failures change nothing.
    assert!(run(&r, &mut s, Health::Critical).await.is_empty());
    // Three passes in a row bring it back; a failure in between resets them.
    assert!(run(&r, &mut s, Health::Passing).await.is_empty());
    assert!(run(&r, &mut s, Health::Critical).await.is_empty());
    assert!(run(&r, &mut s, Health::Passing).await.is_empty());
    assert!(run(&r, &mut s, Health::Passing).await.is_empty());
    let changes = run(&r, &mut s, Health::Passing).await;
    assert!(matches!(
        &changes[..],
        [Change::CheckStatus {
            status: Health::Passing,
            ..
        }]
    ));
    apply(&r, &mut s, changes);
    assert_eq!(current(&r).unwrap().status(), Health::Passing);
}

#[tokio::test(start_paused = true)]
async fn a_warning_moves_after_the_failure_threshold_and_is_served_unless_only_passing() {
    let r = registry();
    let inst = register(&r, spec(|_| {}));
    let mut s = Schedule::new(7);
    s.observe(
        &key(),
        &inst.id,
        Some(&inst),
        Instant::now(),
        Spread::Interval,
    );
    let changes = run(&r, &mut s, Health::Warning).await;
    apply(&r, &mut s, changes);
    let now = current(&r).unwrap();
    assert_eq!(now.status(), Health::Warning);
    assert!(now.serves(false) && !now.serves(true));
    let snap = r.service(&key()).unwrap();
    assert_eq!(
        snap.address_plan(None, crate::core::AskerClass::ANYONE)
            .members()
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn deregister_critical_after_removes_the_instance_once_and_only_when_critical_that_long() {
    let r = registry();
    let inst = register(
        &r,
        spec(|c| c.deregister_critical_after = Some(Duration::from_secs(30))),
    );
    let mut s = Schedule::new(7);
    s.observe(
        &key(),
        &inst.id,
        Some(&inst),
        Instant::now(),
        Spread::Interval,
    );
    let changes = run(&r, &mut s, Health::Critical).await;
    apply(&r, &mut s, changes);
    // Critical for 10 s, 20 s: still there.
    assert!(run(&r, &mut s, Health::Critical).await.is_empty());
    assert!(run(&r, &mut s, Health::Critical).await.is_empty());
    // Back to passing resets the clock.
    let changes = run(&r, &mut s, Health::Passing).await;
    apply(&r, &mut s, changes);
    let changes = run(&r, &mut s, Health::Critical).await;
    apply(&r, &mut s, changes);
    for _ in 0..2 {
        assert!(run(&r, &mut s, Health::Critical).await.is_empty());
    }
    // 30 s critical: removed, by a deregistration of the system.
    let changes = run(&r, &mut s, Health::Critical).await;
    assert!(matches!(&changes[..], [Change::Reap { .. }]), "{changes:?}");
    let mut sub_events = Vec::new();
    let applied = r
        .apply_next(changes, &Context::system(), std::time::Instant::now())
        .unwrap();
    sub_events.extend(applied.outcomes);
    assert!(matches!(sub_events[0].1, Outcome::Applied(None)));
    assert!(current(&r).is_none());
    s.observe(&key(), &inst.id, None, Instant::now(), Spread::Soon);
    assert_eq!(s.len(), 0);
    assert!(s.next_due().is_none(), "a removed check is never run");
}

#[tokio::test(start_paused = true)]
async fn runs_keep_their_cadence_start_spread_and_stale_results_are_dropped() {
    let r = registry();
    let inst = register(&r, spec(|_| {}));
    let t0 = Instant::now();
    let mut s = Schedule::new(42);
    s.observe(&key(), &inst.id, Some(&inst), t0, Spread::Interval);
    let first = s.next_due().unwrap();
    assert!(
        first >= t0 && first < t0 + Duration::from_secs(10),
        "spread over the interval"
    );
    // A run that starts late does not shift the next one.
    tokio::time::advance(first - t0 + Duration::from_secs(3)).await;
    let sid = s.pop_due(Instant::now()).unwrap();
    assert!(
        s.pop_due(Instant::now()).is_none(),
        "a running check is not started twice"
    );
    assert!(
        s.finished(sid, result(Health::Passing), Instant::now())
            .is_empty()
    );
    assert_eq!(s.next_due(), Some(first + Duration::from_secs(10)));
    // A redefinition replaces the slot: the old definition's change is
    // skipped by the registry.
    let old_check = current(&r).unwrap().checks[0].check.clone();
    let redefined = r
        .apply_next(
            vec![Change::SetCheck {
                key: key(),
                id: inst.id.clone(),
                name: CheckName::new("http").unwrap(),
                spec: Some(Box::new(spec(|c| c.interval = Duration::from_secs(20)))),
            }],
            &Context::system(),
            std::time::Instant::now(),
        )
        .unwrap();
    let value = current(&r).unwrap();
    assert!(!Arc::ptr_eq(&value.checks[0].check, &old_check));
    assert!(redefined.outcomes[0].0 > inst.index);
    let stale = Change::CheckStatus {
        key: key(),
        id: inst.id.clone(),
        check: old_check,
        status: Health::Critical,
        of: value.index,
    };
    let applied = r
        .apply_next(vec![stale], &Context::system(), std::time::Instant::now())
        .unwrap();
    assert!(matches!(applied.outcomes[0].1, Outcome::Skipped));
    s.observe(&key(), &inst.id, Some(&value), Instant::now(), Spread::Soon);
    assert_eq!(s.len(), 1);
    let due = s.next_due().unwrap();
    assert!(
        due <= Instant::now() + Duration::from_secs(1),
        "a new definition runs soon"
    );
}

#[test]
fn check_status_events_are_not_stored_and_definitions_are() {
    assert!(!EventKind::Checked.is_stored());
    assert!(EventKind::ChecksChanged.is_stored());
    assert!(EventKind::Reaped.is_stored());
}
