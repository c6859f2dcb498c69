//! Traces: `maxine serve --otlp-endpoint` exports a span per API request,
//! child of the caller's W3C `traceparent`, and a registry write span
//! under it. The collector is a small OTLP/HTTP receiver in this test that
//! decodes the protobuf export requests.

mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(tx): State<mpsc::UnboundedSender<Vec<Span>>>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
    let spans = req
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let _ = tx.send(spans);
    // An empty ExportTraceServiceResponse.
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_span_continues_the_callers_trace_and_the_write_is_its_child() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(tx);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{collector}");
    let maxine = common::process::ServerProcess::start_with_env(
        dir.path(),
        "maxine.log",
        &[],
        &[
            ("MAXINE_OTLP_ENDPOINT", &endpoint),
            // Batches go out often, so the test does not wait long.
            ("MAXINE_OTLP_EXPORT_INTERVAL", "200ms"),
        ],
    )
    .await;

    let res = reqwest::Client::new()
        .put(format!("{}/v1/services/pay/instances/a", maxine.base()))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&serde_json::json!({"address": "10.0.0.1", "port": 80}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let back = res.headers()["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = back.split('-').collect();
    assert_eq!(parts.len(), 4, "{back}");
    assert_eq!(
        parts[1], TRACE_ID,
        "the response continues the caller's trace"
    );
    assert_ne!(parts[2], PARENT_ID, "with a span of its own");

    // Spans until both the request's and the write's have come.
    let mut spans: Vec<Span> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (request, write) = loop {
        let request = spans
            .iter()
            .find(|s| hex(&s.trace_id) == TRACE_ID && hex(&s.parent_span_id) == PARENT_ID)
            .cloned();
        if let Some(r) = &request
            && let Some(w) = spans
                .iter()
                .find(|s| s.name == "registry.write" && s.parent_span_id == r.span_id)
        {
            break (r.clone(), w.clone());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(more)) => spans.extend(more),
            _ => panic!(
                "no request span with its write span in {:?}\n{}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
                maxine.log_text()
            ),
        }
    };
    assert_eq!(request.name, "PUT /v1/services/{service}/instances/{id}");
    assert_eq!(
        hex(&request.span_id),
        parts[2],
        "the response names the request span"
    );
    let attr = |s: &Span, key: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    };
    assert!(
        attr(&request, "http.response.status_code").contains("200"),
        "{request:?}"
    );
    assert!(
        attr(&request, "http.request.method").contains("PUT"),
        "{request:?}"
    );
    assert!(attr(&request, "http.route").contains("/v1/services/{service}/instances/{id}"));
    assert_eq!(hex(&write.trace_id), TRACE_ID);
    assert!(attr(&write, "index").contains('1'), "{write:?}");
    maxine.stop().await;
}
