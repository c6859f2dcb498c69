//! The MQTT publisher against a real mosquitto broker on loopback: each
//! change on `maxine/<dc>/services/<service>`, the healthy set retained on
//! `.../healthy`, and nothing lost while the broker is away.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TestServer;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long the test waits for anything before it fails.
const BOUND: Duration = Duration::from_secs(30);

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}

/// A mosquitto on `127.0.0.1:port`, keeping its sessions and retained
/// messages in `dir` across a restart.
struct Broker {
    child: Child,
}

impl Broker {
    async fn start(dir: &Path, port: u16) -> Self {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nlog_dest file {}/mosquitto.log\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        let deadline = tokio::time::Instant::now() + BOUND;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child }
    }

    /// SIGTERM (mosquitto saves its sessions and retained messages), then
    /// waits for it to exit.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = tokio::time::Instant::now() + BOUND;
        while self.child.try_wait().unwrap().is_none() {
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Maxine's way to the broker: a TCP relay whose gate the test closes
/// while the broker restarts, so that the watcher is subscribed again
/// before Maxine reconnects and publishes what it missed.
struct Gate {
    open: Arc<AtomicBool>,
    port: u16,
}

impl Gate {
    async fn start(broker: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let gate = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if !gate.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", broker)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Self { open, port }
    }

    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

/// One message received: topic, retained flag, payload (`Null`: empty).
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    retain: bool,
    payload: Value,
}

/// A subscriber that reconnects on its own; `persistent`: a session the
/// broker keeps (and queues for) while it is away.
struct Subscriber {
    rx: mpsc::UnboundedReceiver<Got>,
    subscribed: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(port: u16, id: &str, persistent: bool, topics: &[&str]) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subscribed) = mpsc::unbounded_channel();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(c))) => {
                        if !c.session_present {
                            // One SUBSCRIBE per filter, in order: the broker
                            // sends each filter's retained messages in turn.
                            for t in &topics {
                                client.subscribe(t.clone(), QoS::AtLeastOnce).await.unwrap();
                            }
                        } else {
                            let _ = sub_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = if p.payload.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&p.payload).unwrap()
                        };
                        let _ = tx.send(Got {
                            topic: p.topic.clone(),
                            retain: p.retain,
                            payload,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut s = Self {
            rx,
            subscribed,
            task,
        };
        tokio::time::timeout(BOUND, s.subscribed.recv())
            .await
            .expect("the subscriber subscribed");
        s
    }

    async fn next(&mut self) -> Got {
        tokio::time::timeout(BOUND, self.rx.recv())
            .await
            .expect("a message within the bound")
            .unwrap()
    }

    /// Messages until one on `topic` satisfies `done`; returns them all.
    async fn until(&mut self, topic: &str, done: impl Fn(&Got) -> bool) -> Vec<Got> {
        let mut all = Vec::new();
        loop {
            let g = self.next().await;
            let stop = g.topic == topic && done(&g);
            all.push(g);
            if stop {
                return all;
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ids(healthy: &Value) -> Vec<String> {
    let mut ids: Vec<String> = healthy["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn register(s: &TestServer, service: &str, id: &str) -> u64 {
    let r = s
        .register(
            service,
            id,
            json!({"address": "10.0.0.1", "port": 80, "ttl": "10m"}),
        )
        .await;
    r["index"]
        .as_u64()
        .unwrap_or_else(|| panic!("an index in {r}"))
}

async fn deregister(s: &TestServer, service: &str, id: &str) {
    let r = common::api::delete(s, &format!("/v1/services/{service}/instances/{id}")).await;
    assert!(r.status < 300, "deregister {service}/{id}: {r:?}");
}

/// The indexes of the change events in `got`, first occurrences only
/// (QoS 1 may deliver a message twice).
fn change_indexes(got: &[Got]) -> Vec<u64> {
    let mut seen = Vec::new();
    for g in got.iter().filter(|g| !g.topic.ends_with("/healthy")) {
        let i = g.payload["index"].as_u64().unwrap();
        if !seen.contains(&i) {
            seen.push(i);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_healthy_sets_reach_the_broker_and_survive_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let broker = Broker::start(dir.path(), port).await;
    let mut watcher = Subscriber::start(port, "watcher", true, &["maxine/dc1/services/#"]).await;
    let gate = Gate::start(port).await;
    let s =
        TestServer::start_with(|f| f.mqtt.url = Some(format!("mqtt://127.0.0.1:{}", gate.port)))
            .await;

    // A registration: its event, then the service's healthy set, retained.
    let first = register(&s, "pay", "a").await;
    let got = watcher
        .until("maxine/dc1/services/pay/healthy", |_| true)
        .await;
    let change = got
        .iter()
        .find(|g| g.topic == "maxine/dc1/services/pay")
        .expect("the change event before the healthy set");
    assert_eq!(change.payload["kind"], "registered");
    assert_eq!(change.payload["index"], first);
    assert_eq!(change.payload["service"], "pay");
    assert_eq!(change.payload["datacenter"], "dc1");
    assert_eq!(change.payload["id"], "a");
    assert_eq!(change.payload["instance"]["address"], "10.0.0.1");
    let healthy = &got.last().unwrap().payload;
    assert_eq!(ids(healthy), ["a"]);
    assert_eq!(healthy["service"], "pay");

    // A subscriber that comes later is given the retained healthy set.
    let mut late =
        Subscriber::start(port, "late", false, &["maxine/dc1/services/pay/healthy"]).await;
    let g = late.next().await;
    assert!(g.retain, "{g:?}");
    assert_eq!(ids(&g.payload), ["a"]);
    drop(late);

    // The broker goes away; changes go on.
    gate.set(false);
    broker.stop().await;
    while watcher.subscribed.try_recv().is_ok() {}
    register(&s, "pay", "b").await;
    register(&s, "pay", "c").await;
    deregister(&s, "pay", "a").await;
    register(&s, "web", "x").await;
    let last = register(&s, "web", "y").await;
    deregister(&s, "web", "x").await;
    deregister(&s, "web", "y").await;
    let last = last + 2;
    assert_eq!(s.registry.index(), last);

    // It comes back on the same port: every change reaches the watcher,
    // in order (a message sent again may come twice: QoS 1).
    let _broker = Broker::start(dir.path(), port).await;
    tokio::time::timeout(BOUND, watcher.subscribed.recv())
        .await
        .expect("the watcher is back");
    gate.set(true);
    let mut all = got;
    let mut rest = watcher
        .until("maxine/dc1/services/web/healthy", |g| g.payload.is_null())
        .await;
    all.append(&mut rest);
    let wanted: Vec<u64> = (first..=last).collect();
    assert_eq!(change_indexes(&all), wanted, "every change once, in order");

    // The retained sets are current: pay has b and c, web none at all
    // (its set was cleared when its last instance went). The filters are
    // subscribed in turn, so web's retained message would come first.
    let mut later = Subscriber::start(
        port,
        "later",
        false,
        &[
            "maxine/dc1/services/web/healthy",
            "maxine/dc1/services/pay/healthy",
        ],
    )
    .await;
    let g = later.next().await;
    assert_eq!(
        g.topic, "maxine/dc1/services/pay/healthy",
        "no retained set of web: {g:?}"
    );
    assert!(g.retain);
    assert_eq!(ids(&g.payload), ["b", "c"]);
    s.stop().await;
}

/// A burst of changes to one service: every change is published, but the
/// healthy set goes out at most once per `mqtt.healthy_interval`, with the
/// state as it is then (the last set holds every instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_publishes_each_change_and_few_healthy_sets() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let _broker = Broker::start(dir.path(), port).await;
    let mut watcher = Subscriber::start(port, "burst", false, &["maxine/dc1/services/#"]).await;
    let s = TestServer::start_with(|f| {
        f.mqtt.url = Some(format!("mqtt://127.0.0.1:{port}"));
        f.mqtt.healthy_interval = maxine::config::DurationValue(Duration::from_secs(3));
    })
    .await;
    const N: usize = 20;
    let ids_wanted: Vec<String> = (0..N).map(|n| format!("i{n:02}")).collect();
    let started = tokio::time::Instant::now();
    let mut last = 0;
    for id in &ids_wanted {
        last = register(&s, "burst", id).await;
    }
    let registering = started.elapsed();
    let got = watcher
        .until("maxine/dc1/services/burst/healthy", |g| {
            g.payload["instances"]
                .as_array()
                .is_some_and(|a| a.len() == N)
        })
        .await;
    assert_eq!(
        change_indexes(&got),
        ((last - N as u64 + 1)..=last).collect::<Vec<_>>(),
        "every change, in order"
    );
    let sets: Vec<&Got> = got
        .iter()
        .filter(|g| g.topic.ends_with("/healthy"))
        .collect();
    // The registrations took `registering`; a set per 3 s of them, at most.
    let most = 1 + (registering.as_secs_f64() / 3.0).ceil() as usize;
    assert!(
        sets.len() <= most,
        "{} healthy sets for {N} changes in {registering:?}",
        sets.len()
    );
    assert_eq!(ids(&sets.last().unwrap().payload), ids_wanted);
    s.stop().await;
}

/// The service's instances as `GET /v1/services/{service}` lists them.
async fn listed(s: &TestServer, service: &str) -> Value {
    let r = common::api::get(s, &format!("/v1/services/{service}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["instances"].clone()
}

/// A retained set copies unchanged instances from its last payload: after
/// one instance changes and one is added, the next set must show each
/// instance exactly as the API shows it now, not as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_healthy_set_shows_each_instance_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let _broker = Broker::start(dir.path(), port).await;
    let topic = "maxine/dc1/services/sets/healthy";
    let mut watcher = Subscriber::start(port, "sets", false, &[topic]).await;
    let s = TestServer::start_with(|f| {
        f.mqtt.url = Some(format!("mqtt://127.0.0.1:{port}"));
        f.mqtt.healthy_interval = maxine::config::DurationValue(Duration::from_millis(100));
    })
    .await;
    let index_of = |v: Value| v["index"].as_u64().unwrap();
    for id in ["a", "b", "c"] {
        register(&s, "sets", id).await;
    }
    let want = listed(&s, "sets").await;
    // Waits for a set equal to the listing (fails at the bound if none is).
    watcher
        .until(topic, |g| g.payload["instances"] == want)
        .await;

    // b gets a new value (another port), d is added; a and c are unchanged.
    let changed = s
        .register(
            "sets",
            "b",
            json!({"address": "10.0.0.1", "port": 81, "ttl": "10m"}),
        )
        .await;
    let last = index_of(changed);
    register(&s, "sets", "d").await;
    let want = listed(&s, "sets").await;
    assert_eq!(want[1]["port"], 81, "{want}");
    assert!(index_of(want[1].clone()) >= last);
    let got = watcher
        .until(topic, |g| {
            g.payload["instances"]
                .as_array()
                .is_some_and(|a| a.len() == 4)
        })
        .await;
    assert_eq!(
        got.last().unwrap().payload["instances"],
        want,
        "the set as the API lists the service"
    );
    s.stop().await;
}
