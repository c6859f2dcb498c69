//! The web console (`/ui`): one HTML page, its style sheet and its script,
//! embedded in the binary and served as they are. The page reads the same
//! API as every client (`/v1/services`, `/v1/services/{service}`,
//! `/v1/datacenters`, the `/v1/events` stream) with the token the user
//! signs in with; the assets themselves hold nothing secret and are served
//! to anyone (docs/console.md).
//!
//! Every answer carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline code, no framing) and an ETag;
//! a client revalidates (`no-cache`) and gets 304 while the binary is the
//! same.
//!
//! These routes are not part of the API ([`super::ROUTES`], the OpenAPI
//! document): they serve no JSON and touch no registry state.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::HttpState;

/// The page's one policy: nothing but this origin's own script, style
/// sheet and API; no inline code, no plugins, no framing, no forms posted
/// elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: LazyLock<HeaderValue>,
}

macro_rules! asset {
    ($file:literal, $type:literal) => {
        Asset {
            body: include_bytes!(concat!("console/", $file)),
            content_type: $type,
            etag: LazyLock::new(|| etag_of(include_bytes!(concat!("console/", $file)))),
        }
    };
}

static PAGE: Asset = asset!("index.html", "text/html; charset=utf-8");
static STYLE: Asset = asset!("console.css", "text/css; charset=utf-8");
static SCRIPT: Asset = asset!("console.js", "text/javascript; charset=utf-8");

/// A strong ETag: the first 16 bytes of the content's SHA-256, in hex.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = (*asset.etag).clone();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

async fn style(headers: HeaderMap) -> Response {
    serve(&STYLE, &headers)
}

async fn script(headers: HeaderMap) -> Response {
    serve(&SCRIPT, &headers)
}

/// The console's routes: the page at `/ui` (and `/ui/`), its assets below.
pub fn routes() -> axum::Router<HttpState> {
    axum::Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/console.css", get(style))
        .route("/ui/console.js", get(script))
}
