//! `GET /metrics`: what it shows after DNS queries, API requests and store
//! commits, scraped by a real Prometheus (Debian's `prometheus`, started on
//! a free loopback port) and read back through Prometheus' HTTP API.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use common::client::{ClientProcess, program};
use common::process::free_port;
use hickory_proto::rr::RecordType;
use serde_json::json;

async fn scrape(s: &TestServer) -> String {
    let r = s
        .http
        .get(format!("{}/metrics", s.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers()
    );
    r.text().await.unwrap()
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_dns_responses_api_requests_store_commits_and_the_registry() {
    let s = TestServer::start().await;
    s.register(
        "pay",
        "a",
        json!({"address": "10.0.0.1", "port": 80, "ttl": "1m"}),
    )
    .await;
    for _ in 0..3 {
        s.ask("pay.maxine.", RecordType::A).await;
    }
    s.ask("nothing.maxine.", RecordType::SRV).await;
    let text = scrape(&s).await;
    let expect = [
        (
            r#"maxine_dns_responses_total{type="A",rcode="NOERROR",transport="udp"}"#,
            3.0,
        ),
        (
            r#"maxine_dns_responses_total{type="SRV",rcode="NXDOMAIN",transport="udp"}"#,
            1.0,
        ),
        (
            r#"maxine_dns_response_size_bytes_count{transport="udp"}"#,
            4.0,
        ),
        (r#"maxine_registry_instances{health="passing"}"#, 1.0),
        ("maxine_registry_services", 1.0),
        ("maxine_store_batch_changes_count", 1.0),
        (
            r#"maxine_http_requests_total{route="/v1/services/{service}/instances/{id}",method="PUT",status="200"}"#,
            1.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(sample(&text, "maxine_registry_index").unwrap() >= 1.0);
    assert!(sample(&text, "maxine_dns_answer_rebuilds_total").unwrap() >= 1.0);
    assert!(
        text.contains("# HELP maxine_dns_responses_total "),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test]
async fn with_metrics_off_the_dns_front_end_counts_nothing() {
    let s = TestServer::start_with(|f| f.metrics.enabled = false).await;
    s.ask("pay.maxine.", RecordType::A).await;
    let text = scrape(&s).await;
    assert!(!text.contains("maxine_dns_responses_total{"), "{text}");
    assert!(text.contains("maxine_registry_index"), "{text}");
    s.stop().await;
}

/// Prometheus' instant query for `query`: the value of the first series.
async fn prometheus_value(http: &reqwest::Client, api: SocketAddr, query: &str) -> Option<f64> {
    let r = http
        .get(format!("http://{api}/api/v1/query"))
        .query(&[("query", query)])
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    body["data"]["result"].as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_maxine_metrics() {
    let bin = program("prometheus", "prometheus");
    let maxine = TestServer::start().await;
    maxine
        .register(
            "pay",
            "a",
            json!({"address": "10.0.0.1", "port": 80, "ttl": "10m"}),
        )
        .await;
    maxine.ask("pay.maxine.", RecordType::A).await;
    let dir = tempfile::tempdir().unwrap();
    let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: maxine\n    static_configs:\n      - targets: ['{}']\n",
            maxine.http_addr
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={api}"));
    let prometheus = ClientProcess::spawn("prometheus", cmd, dir);
    let http = reqwest::Client::new();
    prometheus
        .wait_for("Prometheus has scraped Maxine's registry size", || {
            let http = http.clone();
            async move {
                prometheus_value(&http, api, r#"maxine_registry_instances{health="passing"}"#).await
                    == Some(1.0)
            }
        })
        .await;
    prometheus
        .wait_for("Prometheus has Maxine's DNS counters", || {
            let http = http.clone();
            async move {
                prometheus_value(
                    &http,
                    api,
                    r#"sum(maxine_dns_responses_total{type="A",rcode="NOERROR"})"#,
                )
                .await
                .is_some_and(|v| v >= 1.0)
            }
        })
        .await;
    maxine.stop().await;
}
