//! Unit tests of the resolver driver: its state with time as a parameter,
//! and the running driver against a fake resolver on paused time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::core::{Address, Datacenter, Health, InstanceSpec, Registry, ServiceName};
use crate::events::ChangeFeed;
use crate::store::{Durable, LocalLog};

const S: Duration = Duration::from_secs(1);

fn settings() -> Settings {
    Settings {
        min_ttl: 5 * S,
        max_ttl: 300 * S,
        concurrency: 2,
    }
}

fn registry() -> Registry {
    crate::core::registry::test_registry(Instant::now().into_std())
}

fn key(service: &str) -> ServiceKey {
    ServiceKey::new(
        Datacenter::new("dc1").unwrap(),
        ServiceName::new(service).unwrap(),
    )
}

fn register(r: &Registry, service: &str, id: &str, address: &str) -> Arc<Instance> {
    let mut spec = InstanceSpec::new(Address::parse(address).unwrap(), 80);
    spec.ttl = 3600 * S;
    r.register(
        key(service),
        InstanceId::new(id).unwrap(),
        spec,
        Instant::now().into_std(),
    )
    .unwrap()
}

fn instance(r: &Registry, service: &str, id: &str) -> Arc<Instance> {
    r.service(&key(service)).unwrap().instances[&InstanceId::new(id).unwrap()].clone()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|i| i.parse().unwrap()).collect()
}

/// Feeds every instance of `r` to `st` (as the snapshot at start does).
fn follow(st: &mut State, r: &Registry, now: Instant) -> Vec<Change> {
    st.reset(&r.snapshot().1, now)
}

fn apply(r: &Registry, changes: Vec<Change>) -> usize {
    let applied = r
        .apply_next(changes, &Context::system(), Instant::now().into_std())
        .unwrap();
    applied.outcomes.iter().filter(|(_, o)| o.is_made()).count()
}

#[test]
fn one_lookup_per_name_is_shared_by_its_instances() {
    let r = registry();
    register(&r, "orders", "a", "web.internal");
    register(&r, "orders", "b", "web.internal");
    register(&r, "billing", "c", "web.internal");
    register(&r, "billing", "d", "10.0.0.4");
    let mut st = State::new(settings());
    let t0 = Instant::now();
    assert!(follow(&mut st, &r, t0).is_empty(), "nothing resolved yet");
    assert_eq!(st.take_due(t0), [Arc::<str>::from("web.internal")]);
    assert!(st.take_due(t0).is_empty(), "in flight");
    let name = Arc::from("web.internal");
    let answer = Answer::Addresses(ips(&["10.1.0.2", "10.1.0.1"]), 60 * S);
    let changes = st.finished(&name, answer, t0, 1_000);
    assert_eq!(changes.len(), 3, "one change per instance of the name");
    assert_eq!(apply(&r, changes), 3);
    let (a, c) = (instance(&r, "orders", "a"), instance(&r, "billing", "c"));
    assert_eq!(a.addresses(), ips(&["10.1.0.1", "10.1.0.2"]));
    assert!(a.address.host().unwrap().ptr_eq(c.address.host().unwrap()));
    assert_eq!(
        a.address.host().unwrap().resolution().unwrap().since_ms,
        1_000
    );
}

#[test]
fn answers_are_refreshed_before_their_bounded_ttl_runs_out() {
    let r = registry();
    register(&r, "orders", "a", "web.internal");
    let mut st = State::new(settings());
    let t0 = Instant::now();
    follow(&mut st, &r, t0);
    let name: Arc<str> = Arc::from("web.internal");
    let mut at = t0;
    st.take_due(t0);
    for (ttl, again) in [(S, 4500), (60 * S, 54_000), (86_400 * S, 270_000)] {
        st.finished(&name, Answer::Addresses(ips(&["10.1.0.1"]), ttl), at, 0);
        let due = st.next_due().unwrap();
        assert_eq!(due - at, Duration::from_millis(again), "ttl {ttl:?}");
        assert!(st.take_due(due - Duration::from_millis(1)).is_empty());
        assert_eq!(st.take_due(due).len(), 1);
        at = due;
    }
}

#[test]
fn failures_back_off_keep_valid_addresses_then_report_the_name_unresolved() {
    let r = registry();
    let a = register(&r, "orders", "a", "web.internal");
    let mut st = State::new(settings());
    let t0 = Instant::now();
    follow(&mut st, &r, t0);
    let name: Arc<str> = Arc::from("web.internal");
    let lookup = |st: &mut State, answer: Answer, now: Instant| {
        st.take_due(now);
        st.finished(
            &name,
            answer,
            now,
            now.duration_since(t0).as_millis() as u64,
        )
    };
    apply(
        &r,
        lookup(&mut st, Answer::Addresses(ips(&["10.1.0.1"]), 20 * S), t0),
    );
    // Refreshed at 18 s; valid until 20 s: a failed lookup keeps the
    // addresses and is retried when they expire, before its 5 s backoff.
    let fail = || Answer::Failed("timed out".into());
    let at = st.next_due().unwrap();
    assert_eq!(at - t0, 18 * S);
    assert!(lookup(&mut st, fail(), at).is_empty(), "kept");
    assert_eq!(st.next_due().unwrap() - at, 2 * S);
    assert!(instance(&r, "orders", "a").has_addresses());
    // Expired and failed again: unresolved, retried after a doubled backoff.
    let at = st.next_due().unwrap();
    assert_eq!(apply(&r, lookup(&mut st, fail(), at)), 1);
    assert_eq!(st.next_due().unwrap() - at, 10 * S);
    let now = instance(&r, "orders", "a");
    assert!(!now.has_addresses());
    let res = now.address.host().unwrap().resolution().unwrap().clone();
    assert!(matches!(&res.outcome, Resolved::Failed(why) if why.contains("timed out")));
    assert_eq!(res.since_ms, 20_000);
    // Another reason later keeps the time it became unresolved.
    let at = st.next_due().unwrap();
    let nx = Answer::NoAddresses {
        why: "NXDOMAIN".into(),
        ttl: Some(S),
    };
    apply(&r, lookup(&mut st, nx, at));
    let later = instance(&r, "orders", "a");
    let later = later.address.host().unwrap().resolution().unwrap();
    assert_eq!(later.since_ms, res.since_ms);
    assert!(matches!(&later.outcome, Resolved::Failed(w) if &**w == "NXDOMAIN"));
    // A negative answer is tried again after its TTL, at least min_ttl.
    assert_eq!(st.next_due().unwrap() - at, 5 * S);
    assert_eq!(a.health, Health::Passing);
}

#[test]
fn a_new_instance_of_a_resolved_name_gets_the_result_without_a_lookup() {
    let r = registry();
    register(&r, "orders", "a", "web.internal");
    let mut st = State::new(settings());
    let t0 = Instant::now();
    follow(&mut st, &r, t0);
    let name: Arc<str> = Arc::from("web.internal");
    st.take_due(t0);
    apply(
        &r,
        st.finished(&name, Answer::Addresses(ips(&["10.1.0.1"]), 60 * S), t0, 0),
    );
    let b = register(&r, "orders", "b", "web.internal");
    let mut out = Vec::new();
    st.observe(&key("orders"), &b.id, Some(&b), t0, &mut out);
    assert_eq!(apply(&r, out), 1);
    assert!(instance(&r, "orders", "b").has_addresses());
    assert!(st.take_due(t0 + S).is_empty(), "no second lookup");
    // Its own resolved value asks for nothing more.
    let mut out = Vec::new();
    let b = instance(&r, "orders", "b");
    st.observe(&key("orders"), &b.id, Some(&b), t0, &mut out);
    assert!(out.is_empty());
    // Re-registered by IP, then removed: the name is forgotten with its
    // last user.
    st.observe(&key("orders"), &b.id, None, t0, &mut out);
    let a = register(&r, "orders", "a", "10.0.0.1");
    st.observe(&key("orders"), &a.id, Some(&a), t0, &mut out);
    assert!(st.hosts.is_empty() && st.by_instance.is_empty() && out.is_empty());
}

/// A resolver whose answers the test sets, counting its lookups.
#[derive(Default)]
struct Fake {
    answers: Mutex<HashMap<String, Answer>>,
    calls: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Fake {
    fn set(&self, name: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(name.into(), answer);
    }

    fn calls(&self, name: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == name)
            .count()
    }
}

impl HostLookup for Arc<Fake> {
    fn lookup(&self, name: Arc<str>) -> LookupFuture {
        let me = self.clone();
        Box::pin(async move {
            me.calls.lock().unwrap().push(name.to_string());
            let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            me.most_in_flight.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
            let answer = me.answers.lock().unwrap().get(&*name).cloned();
            answer.unwrap_or(Answer::NoAddresses {
                why: "NXDOMAIN".into(),
                ttl: None,
            })
        })
    }
}

/// Waits (on paused time) until `cond` holds, at most `limit` of virtual time.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_driver_follows_the_registry_and_upstream_changes_with_bounded_concurrency() {
    let r = registry();
    let feed = ChangeFeed::new(r.clone());
    r.subscribe(Arc::new(feed.clone()));
    let log = Arc::new(LocalLog::new(r.clone(), Durable::default(), feed.clone()));
    let fake = Arc::new(Fake::default());
    for n in 0..5 {
        fake.set(
            &format!("h{n}.internal"),
            Answer::Addresses(ips(&[&format!("10.2.0.{n}")]), 10 * S),
        );
        register(&r, "orders", &format!("i{n}"), &format!("h{n}.internal"));
    }
    let shutdown = CancellationToken::new();
    let driver = Driver::new(
        settings(),
        Arc::new(fake.clone()),
        log,
        feed.subscribe_from(0),
    );
    let task = tokio::spawn(driver.run(shutdown.clone()));
    let resolved = |id: &str| instance(&r, "orders", id).addresses().to_vec();
    until(5 * S, || {
        (0..5).all(|n| !resolved(&format!("i{n}")).is_empty())
    })
    .await;
    assert_eq!(
        fake.most_in_flight.load(Ordering::SeqCst),
        2,
        "at most concurrency"
    );

    // Upstream moves h0: seen once its answer is due again (90% of 10 s).
    fake.set("h0.internal", Answer::Addresses(ips(&["10.3.0.1"]), 10 * S));
    let t = Instant::now();
    until(15 * S, || resolved("i0") == ips(&["10.3.0.1"])).await;
    assert!(Instant::now() - t <= 10 * S, "within its TTL");
    // Unchanged answers change nothing: one lookup per TTL, no new index.
    let index = r.index();
    tokio::time::sleep(30 * S).await;
    assert_eq!(
        r.index(),
        index,
        "re-resolving the same addresses is no change"
    );
    assert!(
        (3..=6).contains(&fake.calls("h1.internal")),
        "{}",
        fake.calls("h1.internal")
    );

    // A name that does not exist is reported, and out of DNS.
    register(&r, "orders", "x", "nothing.internal");
    until(5 * S, || {
        let x = instance(&r, "orders", "x");
        let res = x.address.host().unwrap().resolution().cloned();
        matches!(res.map(|r| r.outcome), Some(Resolved::Failed(_)))
    })
    .await;
    let snap = r.service(&key("orders")).unwrap();
    let members = snap.address_plan(None, crate::core::AskerClass::ANYONE);
    assert_eq!(members.members().count(), 5, "x is not answered");
    shutdown.cancel();
    task.await.unwrap();
}
