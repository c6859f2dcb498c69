//! HTTP helpers shared by the API tests (`api_native.rs`, `api_maxine.rs`):
//! one decoded reply, request shorthands, the two error formats, and the
//! table of refused requests, each of which must leave the registry as it
//! was.

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::Value;

use super::TestServer;

/// One answer, decoded.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `X-Maxine-Index`, if the answer carries it.
    pub index: Option<u64>,
    pub location: Option<String>,
    /// `WWW-Authenticate`, which every 401 must carry.
    pub www_authenticate: Option<String>,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    };
    let index = header("x-maxine-index").map(|v| v.parse().expect("numeric index"));
    let location = header(LOCATION.as_str());
    let www_authenticate = header("www-authenticate");
    if header(CONTENT_TYPE.as_str()).as_deref() == Some("text/event-stream") {
        // An event stream never ends: its head is the answer.
        return Reply {
            status,
            index,
            location,
            www_authenticate,
            body: Value::Null,
        };
    }
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        index,
        location,
        www_authenticate,
        body,
    }
}

pub fn url(s: &TestServer, path: &str) -> String {
    format!("{}{path}", s.http_base())
}

pub async fn get(s: &TestServer, path: &str) -> Reply {
    send(s.http.get(url(s, path))).await
}

pub async fn put(s: &TestServer, path: &str, body: Value) -> Reply {
    send(s.http.put(url(s, path)).json(&body)).await
}

pub async fn post(s: &TestServer, path: &str, body: Value) -> Reply {
    send(s.http.post(url(s, path)).json(&body)).await
}

pub async fn delete(s: &TestServer, path: &str) -> Reply {
    send(s.http.delete(url(s, path))).await
}

/// Everything the registry holds, as the registry and as the listing route
/// show it, to check that a refused request changed nothing: the index, every
/// service with every instance field (its heartbeat deadline too), and the
/// body of `GET /v1/services`.
pub async fn registry_state(s: &TestServer) -> (u64, Vec<String>, Value) {
    let (index, services) = s.registry.snapshot();
    let services = services.iter().map(|snap| format!("{snap:?}")).collect();
    let listing = get(s, "/v1/services").await;
    assert_eq!(listing.status, 200, "{listing:?}");
    (index, services, listing.body)
}

/// Asserts a native error (`{"error", "kind"}` and nothing else) with
/// `status` and `kind` whose text contains `needle` (ignoring case).
pub fn assert_error(r: &Reply, status: u16, kind: &str, needle: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {r:?}"));
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["error", "kind"],
        "native errors are {{error, kind}}: {r:?}"
    );
    assert_eq!(r.body["kind"], kind, "{r:?}");
    let text = r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {r:?}"));
    assert!(
        text.to_lowercase().contains(&needle.to_lowercase()),
        "{text:?} does not mention {needle:?}"
    );
}

/// Asserts a Maxine error (`{"message"}` and nothing else) with `status`
/// whose message contains `needle`.
pub fn assert_message(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {r:?}"));
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["message"],
        "Maxine errors are {{\"message\"}} only: {r:?}"
    );
    let text = r.body["message"].as_str().expect("message is a string");
    assert!(
        text.contains(needle),
        "{text:?} does not mention {needle:?}"
    );
}

/// The body of a request in a table.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    /// Serialized, with `Content-Type: application/json`.
    Json(Value),
    /// Sent as is, with this content type (or none).
    Raw {
        content_type: Option<&'static str>,
        text: String,
    },
}

/// What a refused request must answer.
#[derive(Debug, Clone)]
pub enum Says {
    /// A native error of this kind whose text contains the fragment (ignoring case).
    Error {
        kind: &'static str,
        fragment: String,
    },
    /// A Maxine error whose message contains the fragment.
    Message(String),
    /// A Maxine error with exactly this message.
    ExactMessage(&'static str),
}

/// One row of a table of refused requests.
#[derive(Debug, Clone)]
pub struct Refused {
    /// What the case is about (for failure messages).
    pub case: &'static str,
    pub method: Method,
    pub path: String,
    pub body: Body,
    pub status: u16,
    pub says: Says,
}

impl Refused {
    /// A row without its expectation yet: [`Refused::error`],
    /// [`Refused::message`] or [`Refused::exact_message`] completes it.
    pub fn new(case: &'static str, method: Method, path: impl Into<String>, body: Body) -> Self {
        Self {
            case,
            method,
            path: path.into(),
            body,
            status: 0,
            says: Says::Message(String::new()),
        }
    }

    pub fn get(case: &'static str, path: impl Into<String>) -> Self {
        Self::new(case, Method::GET, path, Body::None)
    }

    pub fn put(case: &'static str, path: impl Into<String>, body: Value) -> Self {
        Self::new(case, Method::PUT, path, Body::Json(body))
    }

    pub fn post(case: &'static str, path: impl Into<String>, body: Value) -> Self {
        Self::new(case, Method::POST, path, Body::Json(body))
    }

    /// A request with a body sent as is, with `content_type` (or none).
    pub fn raw(
        case: &'static str,
        method: Method,
        path: impl Into<String>,
        content_type: Option<&'static str>,
        text: &str,
    ) -> Self {
        let body = Body::Raw {
            content_type,
            text: text.into(),
        };
        Self::new(case, method, path, body)
    }

    /// Expects a native error.
    pub fn error(mut self, status: u16, kind: &'static str, fragment: impl Into<String>) -> Self {
        self.status = status;
        self.says = Says::Error {
            kind,
            fragment: fragment.into(),
        };
        self
    }

    /// Expects a Maxine error whose message contains `fragment`.
    pub fn message(mut self, status: u16, fragment: impl Into<String>) -> Self {
        self.status = status;
        self.says = Says::Message(fragment.into());
        self
    }

    /// Expects a Maxine error with exactly `message`.
    pub fn exact_message(mut self, status: u16, message: &'static str) -> Self {
        self.status = status;
        self.says = Says::ExactMessage(message);
        self
    }
}

/// Whether `method path` is a route that reads or writes the registry (its
/// answers, refusals too, carry `X-Maxine-Index`), by the route table.
fn is_registry_route(method: &Method, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<_> = path.split('/').collect();
    maxine::http::ROUTES.iter().any(|r| {
        let pattern: Vec<_> = r.path.split('/').collect();
        r.registry
            && r.method == method.as_str()
            && pattern.len() == parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(p, a)| p == a || (p.starts_with('{') && !a.is_empty()))
    })
}

/// Sends every row to `s` in turn; each must be answered with its status and
/// error, carry the index header exactly when its route is a registry route
/// (the unchanged index), and leave the registry and the listing as they were.
pub async fn assert_all_refused(s: &TestServer, rows: Vec<Refused>) {
    for row in rows {
        let what = format!("{} ({} {})", row.case, row.method, row.path);
        assert_ne!(
            row.status, 0,
            "{what}: the row says nothing about the answer"
        );
        // Shown with the failure of an assertion below.
        println!("refused request: {what}");
        let before = registry_state(s).await;
        let mut req = s.http.request(row.method.clone(), url(s, &row.path));
        req = match &row.body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Raw { content_type, text } => {
                let req = match content_type {
                    Some(ct) => req.header(CONTENT_TYPE, *ct),
                    None => req,
                };
                req.body(text.clone())
            }
        };
        let r = send(req).await;
        let reply = format!("{what}: {r:?}");
        match &row.says {
            Says::Error { kind, fragment } => assert_error(&r, row.status, kind, fragment),
            Says::Message(fragment) => assert_message(&r, row.status, fragment),
            Says::ExactMessage(m) => {
                assert_eq!(r.status, row.status, "{reply}");
                assert_eq!(r.body, serde_json::json!({ "message": m }), "{reply}");
            }
        }
        let expected_index = is_registry_route(&row.method, &row.path).then_some(before.0);
        assert_eq!(r.index, expected_index, "index header of {reply}");
        assert_eq!(
            registry_state(s).await,
            before,
            "{what} was refused but changed the registry"
        );
    }
}
