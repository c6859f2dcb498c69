//! The Maxine-compatible sign-in, with the exact bodies and status codes of
//! the Node.js Maxine: `POST /api/maxine/signin`, the accessToken on
//! `GET /api/maxine/serviceops/servers`, and
//! `PUT /api/maxine/change-password`.

mod common;

use std::collections::BTreeMap;

use common::TestServer;
use common::acl::{Cred, call, users_file};
use common::api::Reply;
use maxine::config::{Config, Sources};
use reqwest::Method;
use serde_json::{Value, json};

const SIGNIN: &str = "/api/maxine/signin";
const SERVERS: &str = "/api/maxine/serviceops/servers";
const CHANGE: &str = "/api/maxine/change-password";
const MISSING: &str = "Please provide both of these -> userName and password.";

async fn req(
    s: &TestServer,
    method: Method,
    path: &str,
    cred: &Cred,
    body: Option<Value>,
) -> Reply {
    let url = format!("{}{path}", s.http_base());
    call(&s.http, method, &url, cred, body.as_ref()).await
}

async fn signin(s: &TestServer, body: Value) -> Reply {
    req(s, Method::POST, SIGNIN, &Cred::None, Some(body)).await
}

fn bearer(r: &Reply) -> Cred {
    Cred::Bearer(
        r.body["accessToken"]
            .as_str()
            .expect("an accessToken")
            .into(),
    )
}

async fn with_users() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = users_file(
        dir.path(),
        &[
            ("admin", "admin", "admin-password"),
            ("olga", "operator", "olga-password"),
        ],
    );
    let s = TestServer::start_with(|f| f.acl.users_file = Some(file)).await;
    (s, dir)
}

#[tokio::test]
async fn signin_without_both_fields_is_400_with_maxines_message() {
    let (s, _dir) = with_users().await;
    for body in [
        json!({}),
        json!({"userName": "admin"}),
        json!({"password": "admin-password"}),
        json!({"userName": "", "password": "admin-password"}),
        json!({"userName": "admin", "password": ""}),
    ] {
        let r = signin(&s, body.clone()).await;
        assert_eq!(
            (r.status, &r.body),
            (400, &json!({ "message": MISSING })),
            "{body}"
        );
    }
    // No body, or one that is not JSON, is the same missing data.
    let url = format!("{}{SIGNIN}", s.http_base());
    for req in [
        s.http.post(&url),
        s.http
            .post(&url)
            .header("content-type", "application/json")
            .body("{not json"),
    ] {
        let r = common::api::send(req).await;
        assert_eq!((r.status, r.body), (400, json!({ "message": MISSING })));
    }
}

#[tokio::test]
async fn signin_flow_wrong_password_success_servers_and_change_password() {
    let (s, _dir) = with_users().await;
    // A wrong password and an unknown user look the same.
    for (user, password) in [("admin", "wrong-password"), ("nobody", "admin-password")] {
        let r = signin(&s, json!({"userName": user, "password": password})).await;
        assert_eq!(
            (r.status, &r.body),
            (401, &json!({"message": "Unauthorized"})),
            "{user}"
        );
    }

    let ok = signin(
        &s,
        json!({"userName": "admin", "password": "admin-password"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let keys: Vec<_> = ok.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["accessToken", "role"], "{ok:?}");
    assert_eq!(ok.body["role"], "admin");
    let old = bearer(&ok);

    // servers needs a credential: without one, Maxine's 401.
    let r = req(&s, Method::GET, SERVERS, &Cred::None, None).await;
    assert_eq!(
        (r.status, &r.body),
        (401, &json!({"message": "Unauthorized"}))
    );
    assert!(r.www_authenticate.is_some_and(|v| v.starts_with("Bearer")));
    let r = req(&s, Method::GET, SERVERS, &old, None).await;
    assert_eq!((r.status, &r.body), (200, &json!({})));
    let r = req(&s, Method::GET, "/v1/acl/token/self", &old, None).await;
    assert_eq!(r.body["user"], "admin", "{r:?}");

    // A wrong current password or a short new one changes nothing.
    for (body, status) in [
        (
            json!({"password": "wrong", "newPassword": "new-admin-password"}),
            400,
        ),
        (
            json!({"password": "admin-password", "newPassword": "short"}),
            400,
        ),
        (json!({"newPassword": "new-admin-password"}), 400),
    ] {
        let r = req(&s, Method::PUT, CHANGE, &old, Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {r:?}");
    }
    // Without a sign-in there is no user to change.
    let body = json!({"password": "admin-password", "newPassword": "new-admin-password"});
    let r = req(&s, Method::PUT, CHANGE, &Cred::None, Some(body.clone())).await;
    assert_eq!(
        (r.status, &r.body),
        (401, &json!({"message": "Unauthorized"}))
    );
    assert_eq!(req(&s, Method::GET, SERVERS, &old, None).await.status, 200);

    let r = req(&s, Method::PUT, CHANGE, &old, Some(body)).await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"message": "successfully updated password"}))
    );
    // The old accessToken stops working at once; so does the old password.
    let r = req(&s, Method::GET, SERVERS, &old, None).await;
    assert_eq!(
        (r.status, &r.body),
        (401, &json!({"message": "Unauthorized"}))
    );
    let r = signin(
        &s,
        json!({"userName": "admin", "password": "admin-password"}),
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (401, &json!({"message": "Unauthorized"}))
    );
    let new = signin(
        &s,
        json!({"userName": "admin", "password": "new-admin-password"}),
    )
    .await;
    assert_eq!(new.status, 200, "{new:?}");
    assert_eq!(
        req(&s, Method::GET, SERVERS, &bearer(&new), None)
            .await
            .status,
        200
    );
    // Another user's tokens are not affected.
    let olga = signin(&s, json!({"userName": "olga", "password": "olga-password"})).await;
    assert_eq!(olga.body["role"], "operator");

    // The change is kept: after a restart the new password still works.
    let s = s.restart().await;
    let r = signin(
        &s,
        json!({"userName": "admin", "password": "admin-password"}),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = signin(
        &s,
        json!({"userName": "admin", "password": "new-admin-password"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = req(&s, Method::GET, SERVERS, &old, None).await;
    assert_eq!(
        r.status, 401,
        "the old token stays refused after a restart: {r:?}"
    );
}

#[tokio::test]
async fn the_admin_from_maxine_admin_username_and_password_cannot_change_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = [
        ("MAXINE_HTTP_ADDR", "127.0.0.1:0".to_string()),
        ("MAXINE_DNS_ADDR", "127.0.0.1:0".to_string()),
        ("MAXINE_DATA_DIR", dir.path().display().to_string()),
        (
            "MAXINE_ZONE_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/zones").to_string(),
        ),
        ("MAXINE_ADMIN_USERNAME", "root".to_string()),
        (
            "MAXINE_ADMIN_PASSWORD",
            "root-password-from-env".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Config::load(Sources {
        env,
        ..Default::default()
    })
    .expect("valid configuration");
    let s = TestServer::start_config(config, dir).await;
    let ok = signin(
        &s,
        json!({"userName": "root", "password": "root-password-from-env"}),
    )
    .await;
    assert_eq!(
        (ok.status, &ok.body["role"]),
        (200, &json!("admin")),
        "{ok:?}"
    );
    let body = json!({"password": "root-password-from-env", "newPassword": "another-password"});
    let r = req(&s, Method::PUT, CHANGE, &bearer(&ok), Some(body)).await;
    assert_eq!(r.status, 409, "{r:?}");
    let message = r.body["message"].as_str().unwrap();
    assert!(message.contains("MAXINE_ADMIN_USERNAME"), "{message}");
    // Nothing changed: the same password still signs in.
    let r = signin(
        &s,
        json!({"userName": "root", "password": "root-password-from-env"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}
