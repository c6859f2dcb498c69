//! Every change gets the next index and is published, in order, on the
//! event stream that later features subscribe to.

mod common;

use common::TestServer;
use maxine::core::EventKind;
use maxine::events::Delivery;
use serde_json::json;

#[tokio::test]
async fn changes_are_published_in_index_order_and_heartbeats_are_not_changes() {
    let mut s = TestServer::start().await;
    let a = s
        .register("payments", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register("billing", "b", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    let beat = s
        .http
        .put(format!(
            "{}/v1/services/payments/instances/a/heartbeat",
            s.http_base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 200);
    let del = s
        .http
        .delete(format!(
            "{}/v1/services/payments/instances/a",
            s.http_base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);

    let mut got = Vec::new();
    while got.len() < 3 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(2), s.events.next())
            .await
            .expect("an event");
        let Delivery::Changes { events, coalesced } = d else {
            panic!("the feed resynchronised: {d:?}");
        };
        assert!(!coalesced, "three events are not a backlog");
        got.extend(
            events
                .iter()
                .map(|e| (e.index, e.kind, e.key.service.to_string(), e.id.to_string())),
        );
    }
    let first = a["index"].as_u64().expect("register answers its index");
    assert_eq!(
        got,
        [
            (first, EventKind::Registered, "payments".into(), "a".into()),
            (
                first + 1,
                EventKind::Registered,
                "billing".into(),
                "b".into()
            ),
            (
                first + 2,
                EventKind::Deregistered,
                "payments".into(),
                "a".into()
            ),
        ],
        "gap-free indexes; the heartbeat made no event"
    );
    assert_eq!(s.registry.index(), first + 2);
    assert!(
        s.events.try_next().is_none(),
        "nothing else happened (no event, none lost)"
    );
    assert_eq!(s.events.position(), first + 2);
}
