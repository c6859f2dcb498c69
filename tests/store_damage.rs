//! A damaged store file never stops Maxine and loses only what is damaged.
//!
//! A real data directory with thousands of registrations made through the
//! API (then a clean stop, which writes a snapshot, or a `kill -9`), then
//! one kind of damage to `registry.redb` per case: zeroed pages (header and
//! commit slots, middle, last), a truncated tail, a damaged commit slot,
//! flipped bytes inside records, an empty file, random bytes. For each, the
//! real `maxine serve` starts, answers DNS, holds what was not damaged (with
//! snapshots covering everything: all of it), reports the recovery on
//! `/v1/ready` and `/v1/services` until acknowledged, and exits 0.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::process::ServerProcess;
use serde_json::json;

const INSTANCES: usize = 3000;
const SERVICES: usize = 20;
/// Records one 4 KiB leaf page holds at most, with these registrations.
const PER_PAGE: usize = 100;
const PAGE: usize = 4096;

type Model = BTreeMap<String, String>;

fn id(n: usize) -> String {
    format!("i{n:05}")
}

fn service_of(id: &str) -> String {
    let n: usize = id[1..].parse().unwrap();
    format!("s{}", n % SERVICES)
}

/// Registers `ids` with addresses from `second` (0: first, 1: re-registered).
async fn register(p: &ServerProcess, ids: std::ops::Range<usize>, second: u8, model: &mut Model) {
    let http = reqwest::Client::new();
    let ids: Vec<usize> = ids.collect();
    for chunk in ids.chunks(16) {
        let mut tasks = Vec::new();
        for &n in chunk {
            let (id, http, base) = (id(n), http.clone(), p.base());
            let address = format!("10.{second}.{}.{}", n / 256, n % 256);
            model.insert(id.clone(), address.clone());
            tasks.push(tokio::spawn(async move {
                let r = http
                    .put(format!(
                        "{base}/v1/services/{}/instances/{id}",
                        service_of(&id)
                    ))
                    .json(&json!({"address": address, "port": 80, "ttl": "1h"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{id}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

async fn listed(p: &ServerProcess) -> Model {
    let mut all = Model::new();
    for s in 0..SERVICES {
        all.extend(p.instances(&format!("s{s}")).await);
    }
    all
}

async fn get_json(p: &ServerProcess, path: &str) -> serde_json::Value {
    let r = reqwest::get(format!("{}{path}", p.base())).await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The data directories the cases start from, built once.
struct Bases {
    /// INSTANCES registered, then a clean stop: the shutdown snapshot covers all.
    clean: tempfile::TempDir,
    clean_model: Model,
    /// `clean`, then 100 re-registered with new addresses and 100 new ones,
    /// then `kill -9`: the snapshot is older than the file.
    newer: tempfile::TempDir,
    newer_model: Model,
}

async fn bases() -> Bases {
    let clean = tempfile::tempdir().unwrap();
    let mut clean_model = Model::new();
    let p = ServerProcess::start(clean.path(), "fill.log", &[]).await;
    register(&p, 0..INSTANCES, 0, &mut clean_model).await;
    p.stop().await;
    let newer = tempfile::tempdir().unwrap();
    copy_dir(clean.path(), newer.path());
    let mut newer_model = clean_model.clone();
    let p = ServerProcess::start(newer.path(), "more.log", &[]).await;
    register(&p, 0..100, 1, &mut newer_model).await;
    register(&p, INSTANCES..INSTANCES + 100, 1, &mut newer_model).await;
    p.kill9().await;
    Bases {
        clean,
        clean_model,
        newer,
        newer_model,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else if !e.file_name().to_string_lossy().ends_with(".log") {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// What is done to `registry.redb`.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Zero 4 KiB: the first page, the pages holding the middle instance,
    /// or the last page.
    ZeroPage(Where),
    /// Cut the last 4 KiB off.
    TruncateTail,
    /// Overwrite the primary commit slot with garbage.
    CommitSlot,
    /// Make one instance id inside its records invalid (every copy of it).
    FlipInRecord,
    /// An empty file.
    Empty,
    /// As many random bytes as the file had.
    Random,
}

#[derive(Clone, Copy, Debug)]
enum Where {
    First,
    Middle,
    Last,
}

fn damage(path: &Path, d: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    let pages = bytes.len() / PAGE;
    match d {
        Damage::ZeroPage(Where::First) => bytes[..PAGE].fill(0),
        Damage::ZeroPage(Where::Last) => bytes[(pages - 1) * PAGE..].fill(0),
        Damage::ZeroPage(Where::Middle) => {
            // Every page holding the middle instance: its live leaf among
            // them (the others are older copies that redb freed).
            let needle = id(INSTANCES / 2);
            let hit: Vec<usize> = (0..pages)
                .filter(|p| find(&bytes[p * PAGE..(p + 1) * PAGE], needle.as_bytes()).is_some())
                .collect();
            assert!(!hit.is_empty(), "the record is in the file");
            for p in hit {
                bytes[p * PAGE..(p + 1) * PAGE].fill(0);
            }
        }
        Damage::TruncateTail => bytes.truncate(bytes.len() - PAGE),
        Damage::CommitSlot => {
            // redb's god byte (offset 9, bit 0: the primary slot), then two
            // 128-byte commit slots from offset 64.
            let slot = (bytes[9] & 1) as usize;
            bytes[64 + 128 * slot..64 + 128 * (slot + 1)].fill(0xa5);
        }
        Damage::FlipInRecord => {
            let needle = id(1234);
            let mut hits = 0;
            let mut at = 0;
            while let Some(i) = find(&bytes[at..], needle.as_bytes()) {
                bytes[at + i + 1] = b'!';
                at += i + needle.len();
                hits += 1;
            }
            assert!(hits > 0, "the record is in the file");
        }
        Damage::Empty => bytes.clear(),
        Damage::Random => {
            use rand::RngCore;
            rand::rng().fill_bytes(&mut bytes);
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What the start must hold afterwards.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly the base's registrations (newer values won).
    All,
    /// Exactly the registrations of the clean base (what the snapshot holds).
    Snapshot,
    /// The base's registrations but at most this many lost (in damaged pages).
    AtMostLost(usize),
    /// Exactly the base's registrations less the one damaged record.
    AllBut1234,
    /// Nothing (nothing readable and no snapshot).
    Nothing,
}

struct Case {
    name: &'static str,
    /// Start from `newer` (a kill -9 after the snapshot) instead of `clean`.
    newer: bool,
    /// Keep the snapshots of the base.
    snapshots: bool,
    damage: Damage,
    expect: Expect,
}

const fn case(
    name: &'static str,
    newer: bool,
    snapshots: bool,
    damage: Damage,
    expect: Expect,
) -> Case {
    Case {
        name,
        newer,
        snapshots,
        damage,
        expect,
    }
}

use Damage::*;
use Expect::*;

const CASES: &[Case] = &[
    case(
        "header page zeroed",
        false,
        true,
        ZeroPage(Where::First),
        All,
    ),
    case(
        "header page zeroed, no snapshot",
        false,
        false,
        ZeroPage(Where::First),
        All,
    ),
    case(
        "pages of a middle record zeroed",
        false,
        true,
        ZeroPage(Where::Middle),
        All,
    ),
    case(
        "pages of a middle record zeroed, no snapshot",
        false,
        false,
        ZeroPage(Where::Middle),
        AtMostLost(PER_PAGE),
    ),
    case("last page zeroed", false, true, ZeroPage(Where::Last), All),
    case(
        "last page zeroed, no snapshot",
        false,
        false,
        ZeroPage(Where::Last),
        AtMostLost(PER_PAGE),
    ),
    case("last 4 KiB cut off", false, true, TruncateTail, All),
    case(
        "last 4 KiB cut off, no snapshot",
        false,
        false,
        TruncateTail,
        AtMostLost(PER_PAGE),
    ),
    case("commit slot damaged", false, true, CommitSlot, All),
    case(
        "commit slot damaged, no snapshot",
        false,
        false,
        CommitSlot,
        All,
    ),
    case(
        "bytes flipped inside records",
        false,
        true,
        FlipInRecord,
        AllBut1234,
    ),
    case("empty file", false, true, Empty, All),
    case("empty file, no snapshot", false, false, Empty, Nothing),
    case("random bytes", false, true, Random, All),
    case("random bytes, no snapshot", false, false, Random, Nothing),
    // After kill -9, with changes newer than the snapshot.
    case(
        "kill -9, header zeroed: newer values win",
        true,
        true,
        ZeroPage(Where::First),
        All,
    ),
    case(
        "kill -9, pages of a middle record zeroed",
        true,
        true,
        ZeroPage(Where::Middle),
        AtMostLost(PER_PAGE),
    ),
    case(
        "kill -9, random bytes: the snapshot",
        true,
        true,
        Random,
        Snapshot,
    ),
];

async fn run(case: &Case, b: &Bases) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (base, model) = if case.newer {
        (&b.newer, &b.newer_model)
    } else {
        (&b.clean, &b.clean_model)
    };
    copy_dir(base.path(), dir.path());
    if !case.snapshots {
        std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    }
    let file = dir.path().join(maxine::store::FileStore::FILE_NAME);
    damage(&file, case.damage);
    let damaged = std::fs::read(&file).unwrap();

    // It starts (ServerProcess::start fails the test if maxine exits first).
    let p = ServerProcess::start(dir.path(), "damaged.log", &[]).await;
    let log = p.log_text();
    let name = case.name;
    let now = listed(&p).await;
    for (id, addr) in &now {
        let expected = match case.expect {
            Snapshot => b.clean_model.get(id),
            _ => model.get(id),
        };
        // A change after the snapshot that was in a damaged page is lost:
        // the instance then has its value of the snapshot.
        let older = matches!(case.expect, AtMostLost(_)) && b.clean_model.get(id) == Some(addr);
        assert!(
            expected == Some(addr) || older,
            "{name}: {id} with {addr} was never registered so\n{log}"
        );
    }
    let lost = model
        .iter()
        .filter(|(id, a)| now.get(*id) != Some(a))
        .count();
    match case.expect {
        All => assert_eq!(&now, model, "{name}: everything is back\n{log}"),
        Snapshot => assert_eq!(now, b.clean_model, "{name}: the snapshot is back\n{log}"),
        AtMostLost(n) => assert!(lost <= n, "{name}: {lost} lost, more than {n}\n{log}"),
        AllBut1234 => {
            let mut m = model.clone();
            m.remove(&id(1234));
            assert_eq!(now, m, "{name}\n{log}");
        }
        Nothing => assert!(now.is_empty(), "{name}: {} instances", now.len()),
    }
    // DNS answers what is registered.
    for (id, addr) in now.iter().step_by(499).chain(now.iter().last()) {
        let got = p
            .resolve_a(&format!("{id}.{}.dc1.maxine.", service_of(id)))
            .await;
        assert_eq!(got, std::slice::from_ref(addr), "{name}: DNS for {id}");
    }
    // It says so, until acknowledged.
    let ready = get_json(&p, "/v1/ready").await;
    assert_eq!(ready["status"], "ready");
    if matches!(case.damage, ZeroPage(Where::Last)) && lost == 0 && ready.get("degraded").is_none()
    {
        // The last page was free (redb keeps room at the end): nothing was damaged.
        p.stop().await;
        return format!("{name}: the page was free, nothing damaged");
    }
    let degraded = &ready["degraded"]["recovery"];
    assert!(
        degraded.is_object(),
        "{name}: /v1/ready is degraded: {ready}\n{log}"
    );
    assert!(
        get_json(&p, "/v1/services").await["recovery"].is_object(),
        "{name}"
    );
    let recovered = degraded["records"].as_u64().unwrap() as usize;
    if !matches!(case.expect, AllBut1234) {
        // With newer values, the older ones are among the records recovered.
        let older = if case.newer { 100 } else { 0 };
        assert!(
            (now.len()..=now.len() + older).contains(&recovered),
            "{name}: the report counts what is there: {degraded}"
        );
        assert!(
            log.contains("moved aside") && log.contains("recovered"),
            "{name}: the log says what was recovered\n{log}"
        );
    }
    // The damaged file is kept for inspection (as redb left it); records
    // that do not decode stay where they are.
    if !matches!(case.expect, AllBut1234) {
        let aside = std::path::PathBuf::from(degraded["moved_to"].as_str().unwrap());
        let kept = std::fs::read(&aside).unwrap_or_else(|e| panic!("{name}: {e}: {degraded}"));
        if matches!(case.damage, Empty | Random) {
            assert!(
                kept == damaged,
                "{name}: {} kept unchanged",
                aside.display()
            );
        }
    }
    let ack: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/recovery/ack", p.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ack["acknowledged"].is_object(), "{name}: {ack}");
    assert!(
        get_json(&p, "/v1/ready").await.get("degraded").is_none(),
        "{name}"
    );
    assert!(
        get_json(&p, "/v1/services").await.get("recovery").is_none(),
        "{name}"
    );
    p.stop().await; // exit 0

    // The fresh file starts clean, with the same registrations.
    let p = ServerProcess::start(dir.path(), "again.log", &[]).await;
    assert_eq!(listed(&p).await, now, "{name}: the next start has the same");
    let again = get_json(&p, "/v1/ready").await;
    if matches!(case.expect, AllBut1234) {
        // Records that do not decode stay in the file, for inspection: each
        // start reports them.
        assert_eq!(
            again["degraded"]["recovery"]["damaged_records"], 1,
            "{name}: {again}"
        );
    } else {
        assert!(again.get("degraded").is_none(), "{name}: clean: {again}");
    }
    p.stop().await;
    format!(
        "{name}: {} of {} instances ({} lost)",
        now.len(),
        model.len(),
        lost
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_damage_starts_and_keeps_what_was_not_damaged() {
    let b = bases().await;
    assert_eq!(b.clean_model.len(), INSTANCES);
    assert!(
        std::fs::read_dir(b.clean.path().join("snapshots"))
            .unwrap()
            .count()
            >= 1,
        "a clean stop writes a snapshot"
    );
    let mut report = Vec::new();
    for c in CASES {
        report.push(run(c, &b).await);
    }
    println!("{}", report.join("\n"));
}

/// Periodic snapshots: written once the registry changed and what it holds
/// is durable, at most `snapshot.keep` of them kept.
#[tokio::test]
async fn snapshots_are_written_periodically_and_rotated() {
    let s = common::TestServer::start_with(|f| {
        f.snapshot.interval = maxine::config::DurationValue(std::time::Duration::from_secs(1));
        f.snapshot.keep = 2;
    })
    .await;
    let dir = s.data_dir().join("snapshots");
    let newest = || {
        let path = maxine::store::snapshot::list(&dir).into_iter().next()?;
        let bytes = std::fs::read(path).ok()?;
        maxine::store::snapshot::decode(&bytes)
            .ok()
            .map(|snap| (snap.last_index, snap.records.len()))
    };
    for round in 0..3u16 {
        let inst = s
            .register(
                "pay",
                &format!("p{round}"),
                json!({"address": "10.0.0.1", "port": 80 + round, "ttl": "1h"}),
            )
            .await;
        let index = inst["index"].as_u64().unwrap();
        assert_eventually!(
            newest() == Some((index, round as usize + 1)),
            "round {round}: a snapshot at index {index}: {:?}",
            newest()
        );
    }
    // The oldest is removed right after the newest is renamed into place.
    assert_eventually!(
        maxine::store::snapshot::list(&dir).len() == 2,
        "two generations kept: {:?}",
        maxine::store::snapshot::list(&dir)
    );
    s.stop().await;
}
