//! The web console (`/ui`) in a real browser: headless Chromium driven
//! through ChromeDriver's WebDriver HTTP protocol (plain JSON over HTTP
//! with reqwest), against a real Maxine. The page must show a registration
//! without a reload, show a service's instances (user-supplied metadata as
//! text, never as HTML), and sign in with a token when ACLs are on.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them).
//! `MAXINE_UPDATE_SCREENSHOT=1` rewrites `docs/console.png`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// One ChromeDriver process with one browser session; both end on drop.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: apt-get install chromium chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(started.elapsed() < PATIENCE, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1360,900",
                    "--no-first-run", "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Self {
            driver,
            http,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        match self.try_call(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("webdriver {path}: {e}"),
        }
    }

    /// One WebDriver command; its error object when it failed.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let r: Value = req
            .send()
            .await
            .expect("webdriver request")
            .json()
            .await
            .expect("webdriver answer");
        if r["value"]["error"].is_string() {
            return Err(r["value"].clone());
        }
        Ok(r["value"].clone())
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits until `script` returns something other than null/false.
    async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let v = self.run(script, args.clone()).await;
            if !v.is_null() && v != false {
                return v;
            }
            if started.elapsed() > PATIENCE {
                let page = self.run("return document.body.innerText;", json!([])).await;
                panic!(
                    "the page never showed {what}; it shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clicks the element `css` selects. The console redraws a table when
    /// the registry changes (a check result, say), which can replace the
    /// element between finding and clicking it: then it is found again.
    async fn click(&self, css: &str) {
        for _ in 0..20 {
            let e = self.element(css).await;
            match self
                .try_call(
                    reqwest::Method::POST,
                    &format!("/element/{e}/click"),
                    json!({}),
                )
                .await
            {
                Ok(_) => return,
                Err(err) if err["error"] == "stale element reference" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("webdriver click {css}: {err}"),
            }
        }
        panic!("{css} was replaced at every one of 20 clicks");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// A PNG of the window.
    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("a PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser too (ChromeDriver quits its session's browser
        // when it stops); the session's DELETE is best-effort.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const HAS_SERVICE: &str = "return document.querySelector('#services tr[data-service=\"' + arguments[0] + '\"]') !== null;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_registrations_and_shows_a_service_in_a_real_browser() {
    let s = TestServer::start().await;
    s.register(
        "payments",
        "p1",
        json!({"address": "10.0.0.5", "port": 8443, "version": "3.1.0", "tags": ["blue"]}),
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui", s.http_base())).await;
    browser
        .wait_for("the registered service", HAS_SERVICE, json!(["payments"]))
        .await;
    browser
        .wait_for(
            "the live stream",
            "return document.getElementById('status').textContent === 'live';",
            json!([]),
        )
        .await;

    // A registration after the page loaded appears without a reload.
    browser
        .run("window.__sameDocument = true; return true;", json!([]))
        .await;
    s.register(
        "web",
        "w1",
        json!({
            "address": "10.0.0.7", "port": 8080, "version": "2.4.1",
            "metadata": {"owner": "<b>team-web</b>", "zone": "eu-1"},
            "checks": [{"name": "ready", "http": "http://127.0.0.1:9/ready", "interval": "30s"}],
        }),
    )
    .await;
    browser
        .wait_for("the new service", HAS_SERVICE, json!(["web"]))
        .await;
    browser
        .wait_for(
            "the registration in the change feed",
            "return Array.from(document.querySelectorAll('#feed li'))\
               .some(li => li.textContent.includes('web/w1'));",
            json!([]),
        )
        .await;
    assert_eq!(
        browser
            .run("return window.__sameDocument === true;", json!([]))
            .await,
        true,
        "the page was reloaded"
    );

    // The service's detail view: its instance with address, port, version,
    // checks and metadata; the metadata as text, not markup.
    browser.click("#services tr[data-service=\"web\"]").await;
    let row = browser
        .wait_for(
            "the instance of web",
            "const tr = document.querySelector('#instances tr[data-instance=\"w1\"]');\
             return tr ? tr.innerText : null;",
            json!([]),
        )
        .await;
    let row = row.as_str().unwrap();
    for needle in [
        "w1",
        "10.0.0.7",
        "8080",
        "2.4.1",
        "ready",
        "<b>team-web</b>",
        "zone",
        "eu-1",
    ] {
        assert!(row.contains(needle), "{needle:?} is not in the row: {row}");
    }
    assert_eq!(
        browser
            .run(
                "return document.querySelectorAll('#instances b').length;",
                json!([])
            )
            .await,
        0,
        "instance metadata was rendered as HTML"
    );
    let location = browser.run("return location.hash;", json!([])).await;
    assert_eq!(location, "#service=web&dc=dc1");

    if std::env::var("MAXINE_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let png = browser.screenshot().await;
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console.png"),
            png,
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_on_the_console_asks_for_a_token_and_keeps_it_out_of_urls() {
    const ADMIN: &str = "11111111-2222-4333-8444-555555555555";
    let s = TestServer::start_with(|f| {
        f.acl.default_policy = Some("deny".into());
        f.acl.bootstrap_token = Some(ADMIN.into());
    })
    .await;
    s.http
        .put(format!("{}/v1/services/orders/instances/o1", s.http_base()))
        .bearer_auth(ADMIN)
        .json(&json!({"address": "10.0.0.9", "port": 80}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui", s.http_base())).await;
    browser
        .wait_for(
            "the sign-in form",
            "return !document.getElementById('signin').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(
        browser.run(HAS_SERVICE, json!(["orders"])).await,
        false,
        "services shown before signing in"
    );
    browser.type_into("#token", ADMIN).await;
    browser.click("#signin-form button[type=submit]").await;
    browser
        .wait_for(
            "the services after signing in",
            HAS_SERVICE,
            json!(["orders"]),
        )
        .await;
    browser
        .wait_for(
            "the live stream",
            "return document.getElementById('status').textContent === 'live';",
            json!([]),
        )
        .await;
    // Followed live with the token, which is in no URL the page used.
    s.http
        .put(format!("{}/v1/services/orders/instances/o2", s.http_base()))
        .bearer_auth(ADMIN)
        .json(&json!({"address": "10.0.0.10", "port": 80}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    browser
        .wait_for(
            "the second instance in the feed",
            "return Array.from(document.querySelectorAll('#feed li'))\
               .some(li => li.textContent.includes('orders/o2'));",
            json!([]),
        )
        .await;
    let urls = browser
        .run(
            "return performance.getEntriesByType('resource').map(e => e.name)\
               .concat([location.href]).join('\\n');",
            json!([]),
        )
        .await;
    assert!(
        !urls.as_str().unwrap().contains(ADMIN),
        "the token is in a URL: {urls}"
    );
    assert_eq!(
        browser
            .run("return sessionStorage.getItem('maxine.token');", json!([]))
            .await,
        ADMIN
    );
}

/// The assets' headers, without a browser: content types, the policy,
/// revalidation with the ETag.
#[tokio::test]
async fn console_assets_have_their_types_a_strict_policy_and_revalidate() {
    let s = TestServer::start().await;
    for (path, ty) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/console.css", "text/css"),
        ("/ui/console.js", "text/javascript"),
    ] {
        let r = s
            .http
            .get(format!("{}{path}", s.http_base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ty),
            "{path}: {:?}",
            h["content-type"]
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        let etag = h["etag"].clone();
        let body = r.bytes().await.unwrap();
        assert!(!body.is_empty());
        let again = s
            .http
            .get(format!("{}{path}", s.http_base()))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    // The page carries no inline script or style.
    let page = s
        .http
        .get(format!("{}/ui", s.http_base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script>"), "inline script in the page");
    assert!(!page.contains("style="), "inline style in the page");
    assert!(!page.contains("onclick"), "inline handler in the page");
}
