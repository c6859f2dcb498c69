//! Unit tests of the registry's state machine.

use std::sync::Mutex;

use super::*;
use crate::core::model::{Address, InstanceSpec};
use crate::core::{AskerClass, VersionSelector};

fn reg(now: Instant) -> Registry {
    super::test_registry(now)
}

fn key(s: &str) -> ServiceKey {
    ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        ServiceName::new(s).unwrap(),
    )
}

fn spec(ip: &str, version: &str, ttl: u64) -> InstanceSpec {
    let mut s = InstanceSpec::new(Address::parse(ip).unwrap(), 8080);
    s.version = version.into();
    s.ttl = Duration::from_secs(ttl);
    s
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

/// A heartbeat for `name` of "pay": moves the deadline, or revives it
/// through the local sequence as the API does.
fn beat(r: &Registry, name: &str, now: Instant) {
    match r.heartbeat(&key("pay"), &id(name), now).unwrap() {
        Heartbeat::Alive(_) => {}
        Heartbeat::Revive(change) => {
            let applied = r
                .apply_next(vec![*change], &Context::system(), now)
                .unwrap();
            assert!(matches!(applied.outcomes[0].1, Outcome::Applied(Some(_))));
        }
    }
}

struct Recorder(Mutex<Vec<(u64, EventKind)>>);
impl Observer for Recorder {
    fn applied(&self, b: &Batch<'_>) {
        self.0
            .lock()
            .unwrap()
            .extend(b.events.iter().map(|e| (e.index, e.kind)));
    }
}

#[test]
fn selectors_matching_several_versions_answer_in_id_order() {
    let t0 = Instant::now();
    let r = reg(t0);
    for (n, v) in [
        ("a", "2.2.0"),
        ("b", "2.1.0"),
        ("c", "v2.1.0-rc1"),
        ("d", ""),
    ] {
        r.register(key("pay"), id(n), spec("10.0.0.1", v, 30), t0)
            .unwrap();
    }
    r.register(key("pay"), id("e"), spec("10.0.0.1", "2.2.0", 30), t0)
        .unwrap();
    let snap = r.service(&key("pay")).unwrap();
    let ids = |v: &str| -> Vec<String> {
        let sel = VersionSelector::parse(v).unwrap();
        let picked = snap.select(Some(&sel), false);
        picked.iter().map(|i| i.id.to_string()).collect()
    };
    assert_eq!(ids("v2"), ["a", "b", "c", "e"]);
    assert_eq!(ids("v2-1"), ["b", "c"]);
    assert_eq!(
        ids("v2-1-0"),
        ["b", "c"],
        "a suffix is the same version number"
    );
    assert_eq!(ids("v2-2-0"), ["a", "e"]);
    assert!(ids("v3").is_empty());
    let mut sels: Vec<String> = snap.selectors().map(|s| s.to_string()).collect();
    sels.sort();
    assert_eq!(sels, ["v2", "v2-1", "v2-1-0", "v2-2", "v2-2-0"]);
    assert_eq!(snap.select(None, false).len(), 5);
    // Instances of one service that run one version share its string.
    let (a, e) = (&snap.instances[&id("a")], &snap.instances[&id("e")]);
    assert_eq!(a.version.as_ptr(), e.version.as_ptr());
}

#[test]
fn instances_apply_a_batch_of_changes_in_one_pass_the_later_of_two_winning() {
    let k = key("pay");
    let inst = |n: &str, index: u64| {
        let v = Version::from("1.0.0");
        let spec = spec("10.0.0.1", "1.0.0", 30);
        Arc::new(Instance::from_spec(
            &k,
            id(n),
            spec,
            v,
            Health::Passing,
            index,
            0,
        ))
    };
    let (base, gone, added) = Instances::default().with_changes(vec![
        (id("c"), Some(inst("c", 1))),
        (id("a"), Some(inst("a", 2))),
        (id("e"), Some(inst("e", 3))),
    ]);
    assert!(gone.is_empty() && added.len() == 3);
    let (next, gone, added) = base.with_changes(vec![
        (id("e"), None),
        (id("b"), Some(inst("b", 4))),
        (id("a"), Some(inst("a", 5))),
        (id("b"), Some(inst("b", 6))),
        (id("x"), None),
    ]);
    let seen: Vec<_> = next
        .iter()
        .map(|(id, i)| (id.to_string(), i.index))
        .collect();
    assert_eq!(seen, [("a".into(), 5), ("b".into(), 6), ("c".into(), 1)]);
    let indexes = |v: &[Arc<Instance>]| v.iter().map(|i| i.index).collect::<Vec<_>>();
    assert_eq!(indexes(&gone), [2, 3], "a replaced, e removed");
    assert_eq!(indexes(&added), [5, 6], "b's first value never took effect");
    assert!(next.contains_key(&id("c")) && !next.contains_key(&id("e")));
    assert_eq!(next[&id("b")].index, 6);
}

#[test]
fn the_timer_map_holds_exactly_the_current_values() {
    let t0 = Instant::now();
    let r = reg(t0);
    let timers = || r.lock().timers.len();
    for round in 0..50 {
        let at = t0 + Duration::from_millis(round);
        r.register(key("pay"), id("a"), spec("10.0.0.1", "", 10), at)
            .unwrap();
        r.register(key("pay"), id("b"), spec("10.0.0.2", "", 10), at)
            .unwrap();
    }
    assert_eq!(timers(), 2, "replaced values left the map");
    r.deregister(&key("pay"), &id("b")).unwrap();
    assert_eq!(timers(), 1);
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(r.expire(at(11)), 1, "a turns critical");
    assert_eq!(timers(), 1, "its critical value waits for the reap time");
    beat(&r, "a", at(12));
    assert_eq!(timers(), 1, "the revived value replaced it");
    beat(&r, "a", at(20));
    assert_eq!(r.expire(at(22)), 0, "the heartbeat moved the deadline");
    assert_eq!(timers(), 1);
    assert_eq!(r.next_deadline(), Some(at(30)));
    assert_eq!(r.expire(at(30)), 1);
    assert_eq!(r.expire(at(30 + 60)), 1, "reaped");
    assert_eq!(timers(), 0);
    assert!(r.service(&key("pay")).is_none());
}

#[test]
fn restored_values_with_one_index_still_each_expire() {
    let t0 = Instant::now();
    let r = reg(t0);
    let report = r
        .restore(
            vec![
                restored("pay", "a", 7, Health::Passing),
                restored("web", "b", 7, Health::Passing),
            ],
            7,
            t0,
        )
        .unwrap();
    assert_eq!(report.loaded, 2);
    assert_eq!(r.lock().timers.len(), 2);
    assert_eq!(r.expire(t0 + Duration::from_secs(11)), 2);
}

/// A shared log gives every value of one transaction its revision: a bulk
/// write or a reload puts thousands of values at one index, restored or
/// mirrored. Each keeps its own deadline (none is moved to make room for
/// another) and each expires.
#[test]
fn thousands_of_values_at_one_index_keep_their_deadlines() {
    let t0 = Instant::now();
    let r = reg(t0);
    let n = 2000;
    let items = (0..n)
        .map(|i| restored("pay", &format!("r{i}"), 7, Health::Passing))
        .collect();
    r.restore(items, 7, t0).unwrap();
    let mirrored = (0..n)
        .map(|i| Mirrored::Instance {
            key: key("web"),
            id: id(&format!("m{i}")),
            value: Some(restored("web", &format!("m{i}"), 0, Health::Passing)),
        })
        .collect();
    r.apply_mirrored(8, mirrored, t0).unwrap();
    assert_eq!(r.lock().timers.len(), 2 * n);
    let ttl = Duration::from_secs(10);
    assert_eq!(r.expire(t0 + ttl - Duration::from_millis(1)), 0);
    assert_eq!(
        r.expire(t0 + ttl + Duration::from_millis(1)),
        2 * n,
        "every value at its own deadline"
    );
}

#[test]
fn ttl_expiry_turns_critical_then_reaps_and_heartbeats_postpone_it() {
    let t0 = Instant::now();
    let r = reg(t0);
    let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
    r.subscribe(rec.clone());
    r.register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
        .unwrap();
    r.register(key("pay"), id("b"), spec("10.0.0.2", "", 10), t0)
        .unwrap();
    let at = |s: u64| t0 + Duration::from_secs(s);
    beat(&r, "a", at(8));
    assert_eq!(r.expire(at(11)), 1, "only b expired");
    let snap = r.service(&key("pay")).unwrap();
    assert!(snap.instances[&id("a")].is_passing());
    assert_eq!(snap.instances[&id("b")].health, Health::Critical);
    // a heartbeat revives b; a expires at 18.
    beat(&r, "b", at(12));
    assert_eq!(r.expire(at(19)), 1);
    assert_eq!(
        r.expire(at(19 + 61)),
        2,
        "b expired, a reaped after reap_after"
    );
    assert!(
        !r.service(&key("pay"))
            .unwrap()
            .instances
            .contains_key(&id("a"))
    );
    let kinds: Vec<_> = rec.0.lock().unwrap().iter().map(|e| e.1).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [
            Registered, Registered, Critical, Passing, Critical, Critical, Reaped
        ]
    );
    let idx: Vec<_> = rec.0.lock().unwrap().iter().map(|e| e.0).collect();
    assert_eq!(
        idx,
        (1..=7).collect::<Vec<_>>(),
        "indexes are gap-free and ordered"
    );
}

#[test]
fn service_named_like_a_datacenter_is_rejected() {
    let t0 = Instant::now();
    let r = reg(t0);
    let err = r
        .register(key("dc1"), id("a"), spec("10.0.0.1", "", 10), t0)
        .unwrap_err();
    assert!(matches!(err, RegistryError::NameIsDatacenter(_)));
    assert!(r.services().is_empty());
}

#[test]
fn datacenter_named_like_a_local_service_is_rejected() {
    let t0 = Instant::now();
    let r = reg(t0);
    r.register(key("eu"), id("a"), spec("10.0.0.1", "", 10), t0)
        .unwrap();
    let remote = ServiceKey::new(
        Datacenter::new("eu").unwrap(),
        ServiceName::new("x").unwrap(),
    );
    assert!(matches!(
        r.register(remote, id("a"), spec("10.0.0.2", "", 10), t0),
        Err(RegistryError::Conflict(_))
    ));
    assert!(r.add_datacenter(Datacenter::new("eu").unwrap()).is_err());
    assert!(!r.is_datacenter("eu"));
    r.reserve_service_names(["ns".to_string()]);
    assert!(matches!(
        r.register(key("ns"), id("a"), spec("10.0.0.1", "", 10), t0),
        Err(RegistryError::Conflict(_))
    ));
}

#[test]
fn deregister_unknown_is_not_found_and_last_removal_drops_the_service() {
    let t0 = Instant::now();
    let r = reg(t0);
    assert!(matches!(
        r.deregister(&key("pay"), &id("a")),
        Err(RegistryError::NotFound { .. })
    ));
    r.register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
        .unwrap();
    r.deregister(&key("pay"), &id("a")).unwrap();
    assert!(r.service(&key("pay")).is_none());
}

struct Batches(Mutex<Vec<(usize, usize)>>);
impl Observer for Batches {
    fn applied(&self, b: &Batch<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((b.events.len(), b.services.len()));
    }
}

fn restored(service: &str, name: &str, index: u64, health: Health) -> Restored {
    Restored {
        key: key(service),
        id: id(name),
        spec: spec("10.0.0.1", "", 10),
        health,
        index,
    }
}

#[test]
fn restore_builds_each_service_once_keeps_indexes_and_continues_after_the_last() {
    let t0 = Instant::now();
    let r = reg(t0);
    let seen = Arc::new(Batches(Mutex::new(Vec::new())));
    r.subscribe(seen.clone());
    let report = r
        .restore(
            vec![
                restored("pay", "a", 7, Health::Passing),
                restored("pay", "b", 9, Health::Critical),
                restored("web", "c", 3, Health::Passing),
                restored("pay", "a", 5, Health::Passing), // older value of a
                restored("web", "c", 3, Health::Passing), // listed twice
            ],
            20,
            t0,
        )
        .unwrap();
    assert_eq!(report.loaded, 3);
    assert_eq!(report.superseded, [5]);
    assert_eq!(
        seen.0.lock().unwrap().last(),
        Some(&(0, 2)),
        "one batch, no events"
    );
    let pay = r.service(&key("pay")).unwrap();
    assert_eq!(pay.instances[&id("a")].index, 7);
    assert_eq!(pay.instances[&id("b")].health, Health::Critical);
    assert_eq!(r.index(), 20);
    let next = r
        .register(key("web"), id("d"), spec("10.0.0.2", "", 10), t0)
        .unwrap();
    assert_eq!(next.index, 21);
    // One full TTL from start-up, then critical; the critical one is
    // reaped after its TTL plus the reap time.
    assert_eq!(
        r.expire(t0 + Duration::from_secs(11)),
        3,
        "a, c, d turn critical"
    );
    assert_eq!(r.expire(t0 + Duration::from_secs(69)), 0);
    assert_eq!(
        r.expire(t0 + Duration::from_secs(71)),
        4,
        "b, a, c, d reaped"
    );
}

#[test]
fn revert_undoes_a_change_only_while_it_is_the_latest() {
    let t0 = Instant::now();
    let r = reg(t0);
    let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
    r.subscribe(rec.clone());
    let v1 = r
        .register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
        .unwrap();
    r.register(key("pay"), id("a"), spec("10.0.0.2", "", 10), t0)
        .unwrap();
    let undo = || {
        vec![Revert {
            key: key("pay"),
            id: id("a"),
            to: Some(v1.clone()),
        }]
    };
    assert_eq!(r.revert(undo(), &|_, _| false), 0, "a later change is kept");
    assert_eq!(r.revert(undo(), &|_, _| true), 1);
    let now = r.service(&key("pay")).unwrap().instances[&id("a")].clone();
    assert_eq!(now.address, v1.address);
    assert_eq!(
        (now.index, r.index()),
        (3, 3),
        "an undo is a change of its own"
    );
    assert_eq!(
        rec.0.lock().unwrap().last(),
        Some(&(3, EventKind::Reverted))
    );
    // Undoing a registration removes the instance.
    r.register(key("pay"), id("b"), spec("10.0.0.3", "", 10), t0)
        .unwrap();
    let gone = vec![Revert {
        key: key("pay"),
        id: id("b"),
        to: None,
    }];
    assert_eq!(r.revert(gone, &|_, _| true), 1);
    assert!(
        !r.service(&key("pay"))
            .unwrap()
            .instances
            .contains_key(&id("b"))
    );
}

#[test]
fn entries_from_a_log_apply_in_their_order_and_refusals_pass_their_index() {
    let t0 = Instant::now();
    let r = reg(t0);
    let ctx = Context::system();
    let entry = |index, change| Entry { index, change };
    let register = |name: &str| Change::Register {
        key: key("pay"),
        id: id(name),
        spec: spec("10.0.0.1", "", 30),
    };
    let applied = r
        .apply(
            vec![
                entry(5, register("a")),
                entry(
                    7,
                    Change::Deregister {
                        key: key("pay"),
                        id: id("nobody"),
                    },
                ),
            ],
            &ctx,
            t0,
        )
        .unwrap();
    assert!(matches!(
        applied.outcomes[0],
        (5, Outcome::Applied(Some(_)))
    ));
    assert!(matches!(
        applied.outcomes[1],
        (7, Outcome::Refused(RegistryError::NotFound { .. }))
    ));
    assert_eq!(r.index(), 7, "a refused entry still passes its index");
    assert_eq!(r.service(&key("pay")).unwrap().instances[&id("a")].index, 5);
    // Not above the last applied index, or beyond the largest: refused whole.
    for (index, want) in [(7, "does not follow"), (MAX_INDEX + 1, "beyond")] {
        let err = r
            .apply(vec![entry(index, register("b"))], &ctx, t0)
            .unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
    assert!(
        !r.service(&key("pay"))
            .unwrap()
            .instances
            .contains_key(&id("b"))
    );
}

#[test]
fn a_health_change_decided_on_an_older_value_is_skipped() {
    let t0 = Instant::now();
    let r = reg(t0);
    let first = r
        .register(key("pay"), id("a"), spec("10.0.0.1", "", 10), t0)
        .unwrap();
    // Re-registered after expiry decided on the first value.
    r.register(key("pay"), id("a"), spec("10.0.0.2", "", 10), t0)
        .unwrap();
    let stale = Change::SetHealth {
        key: key("pay"),
        id: id("a"),
        health: Health::Critical,
        of: first.index,
    };
    let applied = r.apply_next(vec![stale], &Context::system(), t0).unwrap();
    assert!(matches!(applied.outcomes[0], (_, Outcome::Skipped)));
    assert!(r.service(&key("pay")).unwrap().instances[&id("a")].is_passing());
    assert_eq!(
        r.index(),
        2,
        "a skipped change takes no index of the local sequence"
    );
}

#[test]
fn a_check_says_what_apply_would_refuse_and_changes_nothing() {
    let t0 = Instant::now();
    let r = reg(t0);
    let gone = Change::Deregister {
        key: key("pay"),
        id: id("a"),
    };
    assert!(matches!(
        r.check(&gone, &Context::system(), t0),
        Err(RegistryError::NotFound { .. })
    ));
    let register = Change::Register {
        key: key("pay"),
        id: id("a"),
        spec: spec("10.0.0.1", "", 10),
    };
    assert!(r.check(&register, &Context::system(), t0).is_ok());
    assert_eq!(r.index(), 0, "a check applies nothing");
    assert!(r.service(&key("pay")).is_none());
    let mut bad = spec("10.0.0.1", "", 10);
    bad.port = 0;
    let invalid = Change::Register {
        key: key("pay"),
        id: id("a"),
        spec: bad,
    };
    assert!(matches!(
        r.check(&invalid, &Context::system(), t0),
        Err(RegistryError::Invalid(_))
    ));
}

// ---- access-control objects ----

fn token(accessor: &str, secret: u8, policies: &[&str], max: Option<u32>) -> crate::core::Token {
    crate::core::Token {
        accessor: accessor.into(),
        secret_hash: [secret; 32],
        description: String::new(),
        policies: policies.iter().map(|p| p.to_string()).collect(),
        service: None,
        expires_at: None,
        max_instances: max,
        created_at: 0,
        index: 0,
    }
}

fn acl(r: &Registry, change: crate::core::AclChange, ctx: &Context) -> Result<u64, RegistryError> {
    let applied = r.apply_next(vec![Change::Acl(change)], ctx, Instant::now())?;
    match applied.refusal() {
        Some(e) => Err(e.clone()),
        None => Ok(applied.last_index),
    }
}

fn put_token(r: &Registry, t: crate::core::Token) -> Result<u64, RegistryError> {
    use crate::core::{AclChange, AclObject};
    acl(
        r,
        AclChange::Put(AclObject::Token(Arc::new(t))),
        &Context::system(),
    )
}

#[test]
fn tokens_and_policies_take_indexes_in_the_same_sequence_as_instances() {
    use crate::core::{AclChange, AclObject, Policy, Rules};
    let t0 = Instant::now();
    let r = reg(t0);
    let i1 = r
        .register(key("pay"), id("a"), spec("10.0.0.1", "", 30), t0)
        .unwrap()
        .index;
    let policy = Policy {
        name: "pay-writer".into(),
        description: String::new(),
        rules: Rules::default(),
        index: 0,
    };
    let p = acl(
        &r,
        AclChange::Put(AclObject::Policy(Arc::new(policy))),
        &Context::system(),
    )
    .unwrap();
    assert_eq!(p, i1 + 1);
    assert_eq!(r.policy("pay-writer").unwrap().index, p);
    let t = put_token(&r, token("t1", 7, &["pay-writer"], None)).unwrap();
    assert_eq!(t, p + 1);
    assert_eq!(r.token_by_secret_hash(&[7; 32]).unwrap().accessor, "t1");
    assert_eq!(r.acl_index(), t);
    // A token naming a policy that does not exist is refused, and takes no index.
    assert!(matches!(
        put_token(&r, token("t2", 8, &["nope"], None)),
        Err(RegistryError::Acl(crate::core::AclError::UnknownPolicy(_)))
    ));
    assert_eq!(r.index(), t);
    // Deleting the token removes it from the secret index at once.
    acl(
        &r,
        AclChange::Delete(crate::core::AclKey::Token("t1".into())),
        &Context::system(),
    )
    .unwrap();
    assert!(r.token_by_secret_hash(&[7; 32]).is_none());
    // Built-in policies can be neither changed nor deleted.
    assert!(
        acl(
            &r,
            AclChange::Delete(crate::core::AclKey::Policy("viewer".into())),
            &Context::system()
        )
        .is_err()
    );
}

#[test]
fn bootstrap_works_once() {
    use crate::core::AclChange;
    let r = reg(Instant::now());
    let boot = |a: &str, s| AclChange::Bootstrap {
        token: Arc::new(token(a, s, &["global-management"], None)),
        at: 1,
    };
    let i = acl(&r, boot("first", 1), &Context::system()).unwrap();
    assert_eq!(r.bootstrapped().unwrap().accessor, "first");
    // The token and the mark have indexes of their own: each is a record
    // keyed by its index in the file and Redis stores.
    assert_eq!(r.bootstrapped().unwrap().index, i);
    assert_eq!(r.token("first").unwrap().index, i - 1);
    assert!(matches!(
        acl(&r, boot("second", 2), &Context::system()),
        Err(RegistryError::Acl(
            crate::core::AclError::AlreadyBootstrapped(_)
        ))
    ));
    assert!(r.token("second").is_none());
}

#[test]
fn a_token_holds_at_most_its_quota_of_instances_and_replacing_one_is_free() {
    use crate::core::{Actor, Owner};
    let t0 = Instant::now();
    let r = reg(t0);
    put_token(&r, token("small", 3, &[], Some(2))).unwrap();
    let ctx = Context::by(Actor::Token {
        accessor: Owner::new("small"),
        client: None,
    });
    let register = |name: &str| {
        let change = Change::Register {
            key: key("pay"),
            id: id(name),
            spec: spec("10.0.0.1", "", 30),
        };
        let applied = r.apply_next(vec![change], &ctx, t0).unwrap();
        applied.refusal().cloned()
    };
    assert_eq!(register("a"), None);
    assert_eq!(register("b"), None);
    assert_eq!(register("a"), None, "a replacement holds no more");
    assert!(matches!(
        register("c"),
        Some(RegistryError::Quota { limit: 2, .. })
    ));
    assert_eq!(r.holdings(Some("small")), 2);
    r.deregister(&key("pay"), &id("a")).unwrap();
    assert_eq!(register("c"), None);
    // Anonymous requests count against the anonymous token's quota.
    let mut anon = crate::core::Token::anonymous();
    anon.max_instances = Some(0);
    put_token(&r, anon).unwrap();
    let change = Change::Register {
        key: key("pay"),
        id: id("z"),
        spec: spec("10.0.0.1", "", 30),
    };
    let applied = r
        .apply_next(vec![change], &Context::anonymous(None), t0)
        .unwrap();
    assert!(matches!(
        applied.refusal(),
        Some(RegistryError::Quota { limit: 0, .. })
    ));
}

/// `host` resolved to `ips` (a failure when empty), first seen at `since_ms`.
fn resolved(host: &str, ips: &[&str], since_ms: u64) -> crate::core::HostAddress {
    use crate::core::{HostAddress, Resolution, Resolved};
    let outcome = match ips {
        [] => Resolved::Failed("NXDOMAIN".into()),
        _ => Resolved::from_addresses(ips.iter().map(|i| i.parse().unwrap())),
    };
    HostAddress::new(host).resolved(Resolution { outcome, since_ms })
}

fn resolve(r: &Registry, name: &str, host: crate::core::HostAddress, of: u64) -> Outcome {
    let change = Change::Resolve {
        key: key("pay"),
        id: id(name),
        host,
        of,
    };
    let applied = r
        .apply_next(vec![change], &Context::system(), Instant::now())
        .unwrap();
    applied.outcomes.into_iter().next().unwrap().1
}

#[test]
fn a_resolution_gives_a_host_instance_addresses_and_keeps_its_index_and_deadline() {
    let t0 = Instant::now();
    let r = reg(t0);
    let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
    r.subscribe(rec.clone());
    let inst = r
        .register(key("pay"), id("a"), spec("api.internal", "", 30), t0)
        .unwrap();
    assert!(
        !inst.has_addresses(),
        "a host name has no address until resolved"
    );
    assert!(
        r.service(&key("pay"))
            .unwrap()
            .address_plan(None, AskerClass::ANYONE)
            .is_empty()
    );
    beat(&r, "a", t0 + Duration::from_secs(10));

    let host = resolved("api.internal", &["10.0.0.9", "10.0.0.7", "10.0.0.9"], 1);
    let Outcome::Applied(Some(now)) = resolve(&r, "a", host.clone(), inst.index) else {
        panic!("applied");
    };
    assert_eq!(
        now.addresses(),
        &[
            "10.0.0.7".parse::<std::net::IpAddr>().unwrap(),
            "10.0.0.9".parse().unwrap()
        ]
    );
    // The heartbeat moved the deadline (to 40 s); the resolved value keeps it.
    assert_eq!((now.index, now.deadline_ms()), (inst.index, 40_000),);
    let snap = r.service(&key("pay")).unwrap();
    assert_eq!(snap.index, r.index(), "the service's answers changed");
    assert!(snap.index > inst.index);
    assert_eq!(
        snap.address_plan(None, AskerClass::ANYONE)
            .members()
            .count(),
        1
    );
    assert_eq!(
        rec.0.lock().unwrap().last(),
        Some(&(r.index(), EventKind::Resolved))
    );

    // The same outcome again (first seen later) is no change.
    let index = r.index();
    let again = resolved("api.internal", &["10.0.0.7", "10.0.0.9"], 2);
    assert!(matches!(
        resolve(&r, "a", again, inst.index),
        Outcome::Skipped
    ));
    assert_eq!(r.index(), index);

    // Expiry carries the resolution along; a failure then empties it.
    r.expire(t0 + Duration::from_secs(41));
    let critical = r.service(&key("pay")).unwrap().instances[&id("a")].clone();
    assert_eq!(
        (critical.health, critical.addresses().len()),
        (Health::Critical, 2)
    );
    let failed = resolved("api.internal", &[], 3);
    assert!(
        matches!(
            resolve(&r, "a", failed.clone(), inst.index),
            Outcome::Skipped
        ),
        "decided on an older value"
    );
    assert!(
        matches!(resolve(&r, "a", failed, critical.index), Outcome::Applied(Some(ref v)) if !v.has_addresses())
    );
}

#[test]
fn a_resolution_for_another_value_or_name_is_skipped() {
    let t0 = Instant::now();
    let r = reg(t0);
    let first = r
        .register(key("pay"), id("a"), spec("api.internal", "", 30), t0)
        .unwrap();
    // Re-registered under another name: a result for the old one is stale.
    let second = r
        .register(key("pay"), id("a"), spec("db.internal", "", 30), t0)
        .unwrap();
    let old = resolved("api.internal", &["10.0.0.1"], 1);
    assert!(matches!(
        resolve(&r, "a", old.clone(), first.index),
        Outcome::Skipped
    ));
    assert!(matches!(
        resolve(&r, "a", old, second.index),
        Outcome::Skipped
    ));
    // An IP instance has no host name to resolve; an unknown one is skipped too.
    let ip = r
        .register(key("pay"), id("b"), spec("10.0.0.2", "", 30), t0)
        .unwrap();
    let host = resolved("db.internal", &["10.0.0.1"], 1);
    assert!(matches!(
        resolve(&r, "b", host.clone(), ip.index),
        Outcome::Skipped
    ));
    assert!(matches!(
        resolve(&r, "zz", host.clone(), 1),
        Outcome::Skipped
    ));
    assert!(matches!(
        resolve(&r, "a", host, second.index),
        Outcome::Applied(Some(_))
    ));
}

#[test]
fn a_restored_value_that_replaces_an_instance_moves_its_holding() {
    use crate::core::{Actor, Owner};
    let t0 = Instant::now();
    let r = reg(t0);
    put_token(&r, token("t", 4, &[], Some(5))).unwrap();
    let ctx = Context::by(Actor::Token {
        accessor: Owner::new("t"),
        client: None,
    });
    let change = Change::Register {
        key: key("pay"),
        id: id("a"),
        spec: spec("10.0.0.1", "", 30),
    };
    r.apply_next(vec![change], &ctx, t0).unwrap();
    assert_eq!(r.holdings(Some("t")), 1);
    // A stored value of the same instance, registered without a token.
    let restored = Restored {
        key: key("pay"),
        id: id("a"),
        spec: spec("10.0.0.2", "", 30),
        health: crate::core::Health::Passing,
        index: r.index() + 1,
    };
    r.restore(vec![restored], 0, t0).unwrap();
    assert_eq!(
        r.holdings(Some("t")),
        0,
        "the replaced value no longer counts"
    );
    assert_eq!(r.holdings(None), 1);
}

/// A shared log's values, mirrored at its revisions: several keys may share
/// one, what happened is read from the values, and the order is checked.
#[test]
fn mirrored_values_apply_at_the_stores_revision_and_name_what_happened() {
    let now = Instant::now();
    let r = reg(now);
    let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
    r.subscribe(rec.clone());
    let value = |name: &str, health: Health| Mirrored::Instance {
        key: key("pay"),
        id: id(name),
        value: Some(Restored {
            key: key("pay"),
            id: id(name),
            spec: spec("10.0.0.1", "1", 10),
            health,
            index: 0,
        }),
    };
    let gone = |name: &str| Mirrored::Instance {
        key: key("pay"),
        id: id(name),
        value: None,
    };
    // Two registrations in one revision: both take its index.
    r.apply_mirrored(
        7,
        vec![value("a", Health::Passing), value("b", Health::Passing)],
        now,
    )
    .unwrap();
    assert_eq!(r.index(), 7);
    let snap = r.service(&key("pay")).unwrap();
    assert!(snap.instances.values().all(|i| i.index == 7));
    r.apply_mirrored(9, vec![value("a", Health::Critical)], now)
        .unwrap();
    r.apply_mirrored(10, vec![value("a", Health::Passing)], now)
        .unwrap();
    r.apply_mirrored(11, vec![value("b", Health::Critical)], now)
        .unwrap();
    r.apply_mirrored(12, vec![gone("b"), gone("a"), gone("nope")], now)
        .unwrap();
    assert!(r.service(&key("pay")).is_none());
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![
            (7, EventKind::Registered),
            (7, EventKind::Registered),
            (9, EventKind::Critical),
            (10, EventKind::Passing),
            (11, EventKind::Critical),
            (12, EventKind::Reaped),
            (12, EventKind::Deregistered),
        ]
    );
    // A revision at or below the last applied is refused, changing nothing.
    assert!(matches!(
        r.apply_mirrored(12, vec![value("c", Health::Passing)], now),
        Err(RegistryError::IndexOrder {
            index: 12,
            last: 12
        })
    ));
    assert!(r.service(&key("pay")).is_none());
}

#[test]
fn an_ejection_on_a_shared_log_holds_only_its_instance_and_takes_no_index() {
    let now = Instant::now();
    let r = reg(now);
    r.set_heartbeat_sink(Arc::new(|_: &Arc<Instance>| {}));
    assert!(r.follows_shared_log());
    let value = |name: &str| Mirrored::Instance {
        key: key("pay"),
        id: id(name),
        value: Some(Restored {
            key: key("pay"),
            id: id(name),
            spec: spec("10.0.0.1", "1", 10),
            health: Health::Passing,
            index: 0,
        }),
    };
    // One revision, two values of one service: they share its index.
    r.apply_mirrored(7, vec![value("a"), value("b")], now)
        .unwrap();
    let eject = Change::Eject {
        key: key("pay"),
        id: id("a"),
        ejected: true,
        of: 7,
    };
    r.apply_derived(vec![eject], &Context::system(), now)
        .unwrap();
    assert_eq!(r.index(), 7, "an ejection takes no index on a shared log");
    let snap = r.service(&key("pay")).unwrap();
    let ejected: Vec<&str> = snap
        .instances
        .values()
        .filter(|i| snap.is_ejected(i))
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ejected, vec!["a"]);
    // The next revision still applies.
    r.apply_mirrored(8, vec![value("c")], now).unwrap();
    let snap = r.service(&key("pay")).unwrap();
    assert_eq!(snap.ejected_count(), 1);
}

/// Heartbeats another node heard move deadlines without reaching this
/// node's own heartbeat sink (summaries never echo).
#[test]
fn touched_instances_live_on_and_only_local_heartbeats_reach_the_sink() {
    let now = Instant::now();
    let r = reg(now);
    let heard = Arc::new(Mutex::new(0usize));
    let h = heard.clone();
    r.set_heartbeat_sink(Arc::new(move |_| *h.lock().unwrap() += 1));
    r.register(key("pay"), id("a"), spec("10.0.0.1", "1", 10), now)
        .unwrap();
    assert!(r.touch(&key("pay"), &id("a"), now + Duration::from_secs(8)));
    assert!(!r.touch(&key("pay"), &id("nope"), now));
    assert!(
        r.due(now + Duration::from_secs(12)).is_empty(),
        "touched: alive"
    );
    assert_eq!(*heard.lock().unwrap(), 0);
    beat(&r, "a", now + Duration::from_secs(15));
    assert_eq!(*heard.lock().unwrap(), 1);
}
