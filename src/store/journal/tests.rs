//! Unit tests of the journal: durability, group commit, roll-back.

use std::time::Duration;

use super::*;
use crate::core::{Address, Datacenter, Health, InstanceSpec, ServiceName};
use crate::store::codec::{self, Decoder};
use crate::store::{MemoryStore, Op, WriteBatch};

fn registry() -> Registry {
    crate::core::registry::test_registry(std::time::Instant::now())
}

fn key() -> ServiceKey {
    ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        ServiceName::new("pay").unwrap(),
    )
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

fn spec(port: u16) -> InstanceSpec {
    InstanceSpec::new(Address::parse("10.0.0.1").unwrap(), port)
}

fn start(store: &MemoryStore) -> (Registry, Journal) {
    let r = registry();
    let (j, _) =
        Journal::start(Box::new(store.clone()), &r, std::time::Instant::now(), None).unwrap();
    (r, j)
}

async fn register(
    r: &Registry,
    j: &Journal,
    name: &str,
    port: u16,
) -> Result<u64, crate::store::NotSaved> {
    let inst = r
        .register(key(), id(name), spec(port), std::time::Instant::now())
        .unwrap();
    j.durable().wait(inst.index).await.map(|()| inst.index)
}

/// Instances the store holds: (id, port, index), by decoding every record.
fn stored(store: &MemoryStore) -> Vec<(String, u16, u64)> {
    let mut d = Decoder::default();
    store
        .records()
        .iter()
        .filter_map(|(i, v)| {
            let Ok(r) = d.decode(*i, v) else {
                return None; // an access-control object
            };
            Some((r.id.to_string(), r.spec.port, r.index))
        })
        .collect()
}

fn port_of(r: &Registry, name: &str) -> Option<u16> {
    r.service(&key())
        .and_then(|s| s.instances.get(&id(name)).map(|i| i.port))
}

/// Waits for the writer to settle everything the registry has done.
async fn quiet(r: &Registry, j: &Journal) {
    let _ = j.durable().wait(r.index()).await;
}

#[tokio::test]
async fn acknowledged_changes_are_stored_under_their_index_and_replaced_values_deleted() {
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    let a1 = register(&r, &j, "a", 80).await.unwrap();
    assert_eq!(stored(&store), [("a".into(), 80, a1)]);
    let a2 = register(&r, &j, "a", 81).await.unwrap();
    register(&r, &j, "b", 90).await.unwrap();
    assert_eq!(
        stored(&store)[0],
        ("a".into(), 81, a2),
        "the old value is gone"
    );
    let del = r.deregister(&key(), &id("b")).unwrap();
    j.durable().wait(del).await.unwrap();
    assert_eq!(stored(&store), [("a".into(), 81, a2)]);

    // A restart loads it back with its index, and indexes go on from the last.
    drop(j);
    let (r2, _j2) = start(&store);
    assert_eq!(port_of(&r2, "a"), Some(81));
    assert_eq!(r2.service(&key()).unwrap().instances[&id("a")].index, a2);
    assert_eq!(r2.index(), del, "the deregistration's index is not reused");
}

#[tokio::test]
async fn a_failed_registration_is_rolled_back_and_answered_with_the_reason() {
    for land in [false, true] {
        let store = MemoryStore::new();
        let (r, j) = start(&store);
        let kept = register(&r, &j, "a", 80).await.unwrap();
        store.fail_next(1, land);
        let err = register(&r, &j, "b", 90).await.unwrap_err();
        assert!(err.contains("Input/output error"), "{err}");
        assert_eq!(port_of(&r, "b"), None, "rolled back from the registry");
        // The store is reopened and goes on.
        register(&r, &j, "c", 70).await.unwrap();
        quiet(&r, &j).await;
        assert!(store.reopens() >= 1);
        let ids: Vec<_> = stored(&store).into_iter().map(|s| s.0).collect();
        assert_eq!(ids, ["a", "c"], "land={land}: b never stays on disk");
        assert_eq!(stored(&store)[0].2, kept);
    }
}

#[tokio::test]
async fn a_failed_replacement_or_removal_restores_the_durable_value() {
    for land in [false, true] {
        let store = MemoryStore::new();
        let (r, j) = start(&store);
        register(&r, &j, "a", 80).await.unwrap();
        store.fail_next(1, land);
        register(&r, &j, "a", 81).await.unwrap_err();
        assert_eq!(port_of(&r, "a"), Some(80));
        quiet(&r, &j).await;
        assert_eq!(
            stored(&store)
                .iter()
                .map(|s| (s.0.as_str(), s.1))
                .collect::<Vec<_>>(),
            [("a", 80)],
            "land={land}"
        );

        store.fail_next(1, land);
        let del = r.deregister(&key(), &id("a")).unwrap();
        j.durable().wait(del).await.unwrap_err();
        assert_eq!(port_of(&r, "a"), Some(80), "the removal was undone");
        quiet(&r, &j).await;
        let now = stored(&store);
        assert_eq!(now.len(), 1, "land={land}: {now:?}");
        assert_eq!(
            now[0].2,
            r.service(&key()).unwrap().instances[&id("a")].index,
            "the store holds the registry's value"
        );
    }
}

#[tokio::test]
async fn changes_queued_behind_a_slow_commit_share_the_next_one() {
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    let j = Arc::new(j);
    let gate = store.hold_commits();
    let mut tasks = Vec::new();
    for n in 0..200u16 {
        let (r, j) = (r.clone(), j.clone());
        tasks.push(tokio::spawn(async move {
            register(&r, &j, &format!("i{n:03}"), 1000 + n).await
        }));
    }
    // Every change is applied (and queued) before its request waits; the
    // writer is held inside its first commit meanwhile.
    for _ in 0..1000 {
        if r.index() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(r.index(), 200, "all 200 changes applied");
    drop(gate);
    for t in tasks {
        t.await.unwrap().expect("durable");
    }
    // The first commit took what was queued when the writer woke; the
    // rest waited behind it and went in one more (two, should the first
    // request's commit have started before the others were queued).
    assert!(
        store.commits() <= 3,
        "{} commits for 200 changes",
        store.commits()
    );
    let mut got: Vec<(String, u16)> = stored(&store).into_iter().map(|s| (s.0, s.1)).collect();
    got.sort();
    let want: Vec<(String, u16)> = (0..200u16)
        .map(|n| (format!("i{n:03}"), 1000 + n))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn expiry_changes_are_written_again_after_a_failure_not_undone() {
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    let t0 = std::time::Instant::now();
    let mut s = spec(80);
    s.ttl = Duration::from_secs(1);
    let inst = r.register(key(), id("a"), s, t0).unwrap();
    j.durable().wait(inst.index).await.unwrap();
    store.fail_next(1, false);
    assert_eq!(r.expire(t0 + Duration::from_secs(2)), 1);
    let critical = r.index();
    j.durable()
        .wait(critical)
        .await
        .expect_err("the commit of the expiry failed");
    // Memory keeps the truth; the writer retries after its backoff.
    let snap = r.service(&key()).unwrap();
    assert_eq!(snap.instances[&id("a")].health, Health::Critical);
    for _ in 0..100 {
        if store.records().contains_key(&critical) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored(&store), [("a".into(), 80, critical)]);
}

#[tokio::test]
async fn older_values_left_by_a_failure_lose_to_the_newer_at_start_up() {
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    register(&r, &j, "a", 80).await.unwrap();
    let newer = register(&r, &j, "a", 81).await.unwrap();
    drop(j);
    // Put the old value back, as a failed batch that landed could leave it.
    let old = codec::encode(&r.service(&key()).unwrap().instances[&id("a")]);
    let mut raw = store.clone();
    raw.commit(&WriteBatch {
        ops: vec![Op::Put(1, old.clone())],
        clear: false,
        last_index: 0,
    })
    .unwrap();
    let (r2, j2) = start(&store);
    assert_eq!(r2.service(&key()).unwrap().instances[&id("a")].index, newer);
    quiet(&r2, &j2).await;
    for _ in 0..100 {
        if !store.records().contains_key(&1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.records().keys().copied().collect::<Vec<_>>(), [newer]);
}

#[tokio::test]
async fn a_damaged_index_near_the_end_of_u64_never_hands_out_a_live_key_again() {
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    let kept = register(&r, &j, "a", 80).await.unwrap();
    drop(j);
    // Damage: the store's index jumps to the end of u64, and a record
    // claims an index beyond what Maxine accepts.
    let mut raw = store.clone();
    let value = codec::encode(&r.service(&key()).unwrap().instances[&id("a")]);
    raw.commit(&WriteBatch {
        ops: vec![Op::Put(u64::MAX - 1, value)],
        clear: false,
        last_index: u64::MAX - 1,
    })
    .unwrap();
    let (r2, j2) = start(&store);
    assert_eq!(
        r2.index(),
        kept,
        "indexes go on after the highest valid record"
    );
    assert_eq!(r2.service(&key()).unwrap().instances[&id("a")].index, kept);
    let next = register(&r2, &j2, "b", 90).await.unwrap();
    assert_eq!(next, kept + 1);
    quiet(&r2, &j2).await;
    let ids: Vec<_> = stored(&store)
        .into_iter()
        .filter(|(_, _, i)| *i <= crate::core::MAX_INDEX)
        .collect();
    assert_eq!(ids, [("a".into(), 80, kept), ("b".into(), 90, kept + 1)]);
}

#[tokio::test]
async fn tokens_and_policies_are_stored_and_load_back_with_their_indexes() {
    use crate::core::{AclChange, AclKey, AclObject, Change, Context, Policy, Rules, Token};
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    let policy = Policy {
        name: "ops".into(),
        description: "d".into(),
        rules: serde_json::from_str(r#"{"service_prefix":{"":"write"},"audit":"read"}"#).unwrap(),
        index: 0,
    };
    let mut token = Token::anonymous();
    token.accessor = "t1".into();
    token.secret_hash = [9; 32];
    token.policies = vec!["ops".into()];
    token.max_instances = Some(3);
    let now = std::time::Instant::now();
    let changes = vec![
        Change::Acl(AclChange::Put(AclObject::Policy(Arc::new(policy)))),
        Change::Acl(AclChange::Put(AclObject::Token(Arc::new(token)))),
    ];
    r.apply_next(changes, &Context::system(), now).unwrap();
    register(&r, &j, "a", 80).await.unwrap();
    // Replacing the policy deletes the record of its old value.
    let replaced = Policy {
        name: "ops".into(),
        description: "new".into(),
        rules: Rules::default(),
        index: 0,
    };
    r.apply_next(
        vec![Change::Acl(AclChange::Put(AclObject::Policy(Arc::new(
            replaced,
        ))))],
        &Context::system(),
        now,
    )
    .unwrap();
    quiet(&r, &j).await;
    assert_eq!(store.records().len(), 3, "one record per live value");
    drop(j);
    let (back, _j) = start(&store);
    assert_eq!(back.index(), r.index());
    assert_eq!(back.policy("ops").unwrap().description, "new");
    let t = back.token_by_secret_hash(&[9; 32]).unwrap();
    assert_eq!((t.accessor.as_str(), t.max_instances), ("t1", Some(3)));
    assert_eq!(
        back.acl_object(&AclKey::Token("t1".into()))
            .unwrap()
            .index(),
        t.index
    );
}

#[tokio::test]
async fn a_token_change_the_store_refuses_is_undone() {
    use crate::core::{AclChange, AclObject, Change, Context, Token};
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    store.fail_next(1, false);
    let mut token = Token::anonymous();
    token.accessor = "t1".into();
    token.secret_hash = [9; 32];
    let applied = r
        .apply_next(
            vec![Change::Acl(AclChange::Put(AclObject::Token(Arc::new(
                token,
            ))))],
            &Context::anonymous(None),
            std::time::Instant::now(),
        )
        .unwrap();
    assert!(j.durable().wait(applied.last_index).await.is_err());
    assert!(r.token("t1").is_none(), "rolled back");
    assert!(r.token_by_secret_hash(&[9; 32]).is_none());
}

#[tokio::test]
async fn a_resolution_is_settled_and_its_index_kept_but_its_addresses_are_not_stored() {
    use crate::core::{Change, Context, Resolution, Resolved};
    let store = MemoryStore::new();
    let (r, j) = start(&store);
    let mut s = spec(80);
    s.address = Address::parse("api.internal").unwrap();
    let inst = r
        .register(key(), id("a"), s, std::time::Instant::now())
        .unwrap();
    j.durable().wait(inst.index).await.unwrap();
    let before = store.records();
    let host = inst.address.host().unwrap().resolved(Resolution {
        outcome: Resolved::from_addresses(["10.0.0.7".parse().unwrap()]),
        since_ms: 1,
    });
    let change = Change::Resolve {
        key: key(),
        id: id("a"),
        host,
        of: inst.index,
    };
    let applied = r
        .apply_next(vec![change], &Context::system(), std::time::Instant::now())
        .unwrap();
    // Settled (a snapshot of everything up to it can be sent), nothing written.
    j.durable().wait(applied.last_index).await.unwrap();
    assert_eq!(store.records(), before, "the record is the registration's");
    // After a restart the name is unresolved again and the index goes on.
    drop(j);
    let (r2, _j2) = start(&store);
    let back = r2.service(&key()).unwrap().instances[&id("a")].clone();
    assert_eq!((back.index, back.has_addresses()), (inst.index, false));
    assert_eq!(
        r2.index(),
        applied.last_index,
        "the resolution's index is not reused"
    );
}
