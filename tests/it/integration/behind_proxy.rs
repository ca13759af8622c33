//! Forward authentication through a real reverse proxy configured by the file operators copy:
//! nginx with `deploy/nginx/keepalive.conf`, Caddy with `deploy/caddy/Caddyfile`. keepalive (in
//! this process, on a manual clock) decides with `/api/v1/auth` whether a request reaches the
//! application, a small echo server here, which reports the `X-Keepalive-User` it received.
//!
//! Every test runs once per proxy (`nginx::NAME`, `caddy::NAME`): the same promises hold
//! through both. Needs Debian's `nginx` and `caddy`, which `scripts/test.sh` installs; see
//! `tests/it/harness/nginx.rs` and `tests/it/harness/caddy.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::caddy::{self as caddy_harness, CADDYFILE, Caddy};
use crate::harness::nginx::{Nginx, port_of};
use crate::harness::{START, TestServer, client, cookie_pair, millis};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The backend API's bearer token (at least 32 characters).
const TOKEN: &str = "forward-auth-test-backend-token-0123456789";
/// keepalive's default idle timeout (`idle_timeout` in src/config/raw.rs); checked against the
/// sessions the tests create.
const IDLE: Duration = Duration::from_secs(10 * 60);

// ---- the application behind the proxy ---------------------------------------------------------

/// An application that answers every request with what it received.
struct App {
    port: u16,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the app");
        let port = listener.local_addr().expect("app addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new()
            .fallback(echo)
            .with_state(Arc::clone(&hits));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("app serves");
        });
        Self { port, hits, task }
    }

    /// Requests the application received so far.
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// `{"method", "path", "user": [every X-Keepalive-User value], "headers": [names], "bodyLength"}`.
async fn echo(
    State(hits): State<Arc<AtomicUsize>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    let users: Vec<String> = headers
        .get_all("x-keepalive-user")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let names: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "user": users,
        "headers": names,
        "bodyLength": body.len(),
    }))
}

// ---- the proxies -------------------------------------------------------------------------------

/// The reverse proxy in front of keepalive and the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    /// Debian's nginx with `deploy/nginx/keepalive.conf` (`auth_request`).
    Nginx,
    /// Debian's Caddy with `deploy/caddy/Caddyfile` (`forward_auth`).
    Caddy,
}

/// A running proxy of either kind.
enum Running {
    Nginx(Nginx),
    Caddy(Caddy),
}

impl Running {
    fn url(&self, path: &str) -> String {
        match self {
            Self::Nginx(nginx) => nginx.url(path),
            Self::Caddy(caddy) => caddy.url(path),
        }
    }
}

/// Runs each listed `async fn(Proxy)` as two tests, `nginx::NAME` and `caddy::NAME`.
macro_rules! on_every_proxy {
    ($($test:ident),+ $(,)?) => {
        mod nginx {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Proxy::Nginx).await;
                }
            )+
        }
        mod caddy {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Proxy::Caddy).await;
                }
            )+
        }
    };
}

// ---- keepalive + application + proxy -----------------------------------------------------------

struct Stack {
    proxy: Proxy,
    server: TestServer,
    app: App,
    front: Running,
}

impl Stack {
    async fn start(proxy: Proxy) -> Self {
        let server = TestServer::start(&[("KEEPALIVE_BACKEND_TOKEN", TOKEN)]).await;
        let app = App::start().await;
        let keepalive = port_of(&server.base);
        let front = match proxy {
            Proxy::Nginx => Running::Nginx(Nginx::start(keepalive, app.port)),
            Proxy::Caddy => Running::Caddy(Caddy::start(keepalive, app.port)),
        };
        Self {
            proxy,
            server,
            app,
            front,
        }
    }

    /// The URL of `path` through the proxy.
    fn url(&self, path: &str) -> String {
        self.front.url(path)
    }

    /// Creates a session for `user` through the backend API, straight to keepalive (as the
    /// application's servers do); returns the token and the cookie pair for the browser.
    async fn login(&self, user: &str) -> (String, String) {
        let response = with_token(
            reqwest::Method::POST,
            self.server.url("/api/v1/backend/sessions"),
        )
        .json(&json!({ "user": user }))
        .send()
        .await
        .expect("create a session");
        assert_eq!(response.status(), 201, "backend session for {user}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["session"]["user"], user, "{body}");
        let idle = millis(&body["session"]["expiresAt"]) - millis(&body["session"]["createdAt"]);
        assert_eq!(
            idle,
            IDLE.as_millis() as i64,
            "the tests assume keepalive's default idle timeout: {body}"
        );
        let token = body["token"].as_str().expect("token").to_owned();
        let cookie = body["cookie"].as_str().expect("cookie");
        let pair = cookie
            .split(';')
            .next()
            .expect("name=value")
            .trim()
            .to_owned();
        assert!(
            pair.ends_with(&format!("={token}")),
            "the cookie carries the token: {cookie}"
        );
        (token, pair)
    }

    /// `GET` through the proxy with this cookie.
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = client().get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request through the proxy")
    }

    /// The status of a `GET` through the proxy.
    async fn status(&self, path: &str, cookie: Option<&str>) -> u16 {
        self.get(path, cookie).await.status().as_u16()
    }

    /// Checks the 401 the proxy answers when keepalive refuses a request, with `code` the
    /// error keepalive gave. nginx answers its own HTML page (auth_request keeps only the
    /// status); Caddy passes keepalive's JSON answer on (forward_auth copies back every
    /// answer but a 2xx).
    async fn assert_refused(&self, response: reqwest::Response, code: &str, what: &str) {
        assert_eq!(response.status(), 401, "{what}");
        let content_type = header_text(&response, CONTENT_TYPE.as_str());
        let body = response.text().await.expect("body");
        match self.proxy {
            Proxy::Nginx => assert!(
                content_type.starts_with("text/html") && body.contains("<center>nginx"),
                "{what}: nginx's 401 page, got {content_type} {body}"
            ),
            Proxy::Caddy => {
                let json: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{what}: keepalive's JSON 401 ({e}): {body}"));
                assert_eq!(json["error"], code, "{what}: {body}");
            }
        }
    }

    /// Checks that an answer is the proxy's own 404, not one of keepalive (which answers
    /// JSON): nginx's HTML page, or Caddy's empty `respond 404`.
    async fn assert_proxy_404(&self, response: reqwest::Response, what: &str) {
        assert_eq!(response.status(), 404, "{what}");
        let content_type = header_text(&response, CONTENT_TYPE.as_str());
        let server = header_text(&response, "server");
        let body = response.text().await.expect("body");
        match self.proxy {
            Proxy::Nginx => assert!(
                content_type.starts_with("text/html") && body.contains("<center>nginx"),
                "{what}: answered by nginx, got {content_type} {body}"
            ),
            Proxy::Caddy => assert!(
                server == "Caddy" && content_type.is_empty() && body.is_empty(),
                "{what}: answered by Caddy's `respond 404`, got server {server:?}, \
                 content type {content_type:?}, body {body:?}"
            ),
        }
    }

    /// The proxy first: its upstream connections must be closed for keepalive to drain.
    async fn stop(self) {
        let Self {
            server, app, front, ..
        } = self;
        drop(front);
        app.task.abort();
        server.stop().await;
    }
}

/// A request with the backend API's token to `url` (keepalive's own port, or the proxy's to
/// show the API is not published there).
fn with_token(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    client()
        .request(method, url)
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
}

/// A header's value as text, empty when absent.
fn header_text(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
        .unwrap_or_default()
}

// ---- tests -------------------------------------------------------------------------------------

on_every_proxy!(
    a_signed_in_user_reaches_the_app_which_sees_the_user,
    without_a_valid_cookie_the_proxy_answers_401_and_the_app_sees_nothing,
    an_idle_session_expires_and_then_gets_401,
    a_session_ended_by_the_backend_gets_401,
    an_anonymous_browser_session_keeps_alive_but_is_not_signed_in,
    a_forged_user_header_never_reaches_the_app,
    the_backend_api_is_not_published_through_the_proxy,
    forward_auth_extends_the_session,
    a_request_body_reaches_the_app_and_not_the_check,
);

async fn a_signed_in_user_reaches_the_app_which_sees_the_user(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (_, cookie) = stack.login("alice").await;
    let response = stack.get("/dashboard/reports?page=2", Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("the app's json");
    assert_eq!(body["user"], json!(["alice"]), "{body}");
    assert_eq!(body["path"], "/dashboard/reports", "{body}");
    assert_eq!(body["method"], "GET");
    assert_eq!(stack.app.hits(), 1);
    stack.stop().await;
}

async fn without_a_valid_cookie_the_proxy_answers_401_and_the_app_sees_nothing(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    for cookie in [
        None,
        Some("keepalive_sid=AAAAAAAAAAAAAAAAAAAAAA"),
        Some("keepalive_sid=not-a-session"),
        Some("other=1"),
    ] {
        let response = stack.get("/dashboard", cookie).await;
        stack
            .assert_refused(response, "session_expired", &format!("cookie {cookie:?}"))
            .await;
    }
    if proxy == Proxy::Nginx {
        // The check's location is internal: clients cannot call it themselves. (Caddy's check
        // has no path of its own.)
        assert_eq!(stack.status("/_keepalive_auth", None).await, 404);
    }
    assert_eq!(stack.app.hits(), 0, "no request reached the app");
    stack.stop().await;
}

async fn an_idle_session_expires_and_then_gets_401(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (_, cookie) = stack.login("alice").await;
    assert_eq!(stack.status("/", Some(&cookie)).await, 200);
    // The check above extended the session to now + IDLE.
    stack.server.clock.advance(IDLE);
    let response = stack.get("/", Some(&cookie)).await;
    stack
        .assert_refused(response, "session_expired", "expired")
        .await;
    assert_eq!(stack.app.hits(), 1, "only the request before expiry");
    stack.stop().await;
}

async fn a_session_ended_by_the_backend_gets_401(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (token, cookie) = stack.login("alice").await;
    assert_eq!(stack.status("/", Some(&cookie)).await, 200);
    let response = with_token(
        reqwest::Method::DELETE,
        stack
            .server
            .url(&format!("/api/v1/backend/sessions/{token}")),
    )
    .send()
    .await
    .expect("delete");
    assert_eq!(response.status(), 204);
    let response = stack.get("/", Some(&cookie)).await;
    stack
        .assert_refused(response, "session_expired", "ended")
        .await;
    assert_eq!(stack.app.hits(), 1);
    stack.stop().await;
}

async fn an_anonymous_browser_session_keeps_alive_but_is_not_signed_in(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let response = client()
        .post(stack.url("/api/v1/session"))
        .send()
        .await
        .expect("create through the proxy");
    assert_eq!(response.status(), 201, "the browser API is published");
    let cookie = cookie_pair(&response);
    // A session without a user is not signed in.
    let response = stack.get("/dashboard", Some(&cookie)).await;
    stack
        .assert_refused(response, "anonymous_session", "anonymous")
        .await;
    let response = stack.get("/api/v1/keepalive/", Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("keepalive json");
    assert!(body["session"]["expiresAt"].is_string(), "{body}");
    for (script, extension) in [("/keepalive.js", "js"), ("/keepalive.mjs", "mjs")] {
        let response = stack.get(script, None).await;
        assert_eq!(response.status(), 200, "{script}");
        let content_type = header_text(&response, CONTENT_TYPE.as_str());
        assert!(
            content_type.contains("javascript"),
            "{script}: {content_type}"
        );
        // The versioned name the demo page loads, cached for a year, passes the proxy too: its
        // hash is the entity tag's.
        let etag = header_text(&response, "etag");
        let hash = etag.trim_matches('"').split('-').next().unwrap_or_default();
        let versioned = format!("/keepalive.{hash}.{extension}");
        let response = stack.get(&versioned, None).await;
        assert_eq!(response.status(), 200, "{versioned}");
        assert!(
            header_text(&response, "cache-control").contains("immutable"),
            "{versioned}"
        );
    }
    assert_eq!(stack.app.hits(), 0);
    stack.stop().await;
}

async fn a_forged_user_header_never_reaches_the_app(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (_, cookie) = stack.login("alice").await;
    let response = client()
        .get(stack.url("/admin"))
        .header(COOKIE, &cookie)
        .header("X-Keepalive-User", "mallory")
        .header("x-keepalive-user", "root")
        .header("X_Keepalive_User", "mallory")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["user"],
        json!(["alice"]),
        "only keepalive's answer: {body}"
    );
    let names = body["headers"].as_array().expect("header names");
    assert!(
        !names.iter().any(|n| n == "x_keepalive_user"),
        "the underscore spelling, which CGI-style apps would read as the user, is dropped \
         (nginx by default, Caddy by the Caddyfile): {body}"
    );
    // Without a session a forged header gets nowhere.
    let response = client()
        .get(stack.url("/admin"))
        .header("X-Keepalive-User", "mallory")
        .header("X_Keepalive_User", "mallory")
        .send()
        .await
        .expect("request");
    stack
        .assert_refused(response, "session_expired", "forged, no session")
        .await;
    // Nor with an anonymous session, which keepalive refuses without naming a user.
    let anonymous = client()
        .post(stack.url("/api/v1/session"))
        .send()
        .await
        .expect("create through the proxy");
    assert_eq!(anonymous.status(), 201);
    let response = client()
        .get(stack.url("/admin"))
        .header(COOKIE, cookie_pair(&anonymous))
        .header("X-Keepalive-User", "mallory")
        .send()
        .await
        .expect("request");
    stack
        .assert_refused(response, "anonymous_session", "forged, anonymous session")
        .await;
    assert_eq!(stack.app.hits(), 1, "only alice's request");
    stack.stop().await;
}

async fn the_backend_api_is_not_published_through_the_proxy(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (token, cookie) = stack.login("alice").await;
    // With the right token, keepalive itself would create the session (201).
    for path in [
        "/api/v1/backend/sessions",
        "/api/v1//backend/sessions",
        "/api/v1/%62ackend/sessions",
    ] {
        let response = with_token(reqwest::Method::POST, stack.url(path))
            .json(&json!({ "user": "mallory" }))
            .send()
            .await
            .expect("request");
        stack.assert_proxy_404(response, path).await;
    }
    let listing = with_token(
        reqwest::Method::GET,
        stack.url("/api/v1/backend/users/alice/sessions"),
    )
    .send()
    .await
    .expect("request");
    stack
        .assert_proxy_404(listing, "list alice's sessions")
        .await;
    let logout = with_token(
        reqwest::Method::DELETE,
        stack.url(&format!("/api/v1/backend/sessions/{token}")),
    )
    .send()
    .await
    .expect("request");
    stack.assert_proxy_404(logout, "end alice's session").await;
    // Nothing happened at keepalive: no session for mallory, alice still signed in.
    let response = with_token(
        reqwest::Method::GET,
        stack.server.url("/api/v1/backend/users/mallory/sessions"),
    )
    .send()
    .await
    .expect("list directly");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["sessions"], json!([]), "{body}");
    assert_eq!(stack.status("/", Some(&cookie)).await, 200);
    stack.stop().await;
}

async fn forward_auth_extends_the_session(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (token, cookie) = stack.login("alice").await;
    // Created at the same instant and never used: the control.
    let (_, idle_cookie) = stack.login("bob").await;
    let step = IDLE * 2 / 3;
    stack.server.clock.advance(step);
    assert_eq!(stack.status("/", Some(&cookie)).await, 200);
    stack.server.clock.advance(step);
    // 4/3 of the idle timeout after creation: alive only because the check extended it.
    assert_eq!(stack.status("/", Some(&cookie)).await, 200);
    assert_eq!(
        stack.status("/", Some(&idle_cookie)).await,
        401,
        "without activity the same session would have expired"
    );
    let response = with_token(
        reqwest::Method::GET,
        stack
            .server
            .url(&format!("/api/v1/backend/sessions/{token}")),
    )
    .send()
    .await
    .expect("read the session");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let now = START + (2 * step).as_millis() as i64;
    assert_eq!(
        millis(&body["session"]["expiresAt"]),
        now + IDLE.as_millis() as i64,
        "extended from the last check: {body}"
    );
    stack.stop().await;
}

async fn a_request_body_reaches_the_app_and_not_the_check(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let (_, cookie) = stack.login("alice").await;
    // Larger than nginx's in-memory body buffer: nginx's worker writes it to its temporary
    // directory. The check must not wait for a body it is never sent (nginx drops it and its
    // Content-Length; Caddy turns the check into a GET without a body), and must not consume
    // the body the application needs.
    let payload = vec![b'x'; 64 * 1024];
    let response = client()
        .post(stack.url("/upload"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["bodyLength"], payload.len(), "{body}");
    assert_eq!(body["user"], json!(["alice"]));
    // Refused uploads never reach the app.
    let response = client()
        .post(stack.url("/upload"))
        .body(payload)
        .send()
        .await
        .expect("upload");
    stack
        .assert_refused(response, "session_expired", "upload without a session")
        .await;
    assert_eq!(stack.app.hits(), 1);
    stack.stop().await;
}

// ---- the Caddyfile itself ----------------------------------------------------------------------

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// docs/integration.md shows the parts of the Caddyfile that matter: each line it shows is a
/// line of the file, in the file's order, so the excerpt cannot drift from the tested file.
#[test]
fn the_docs_excerpt_is_taken_from_the_caddyfile() {
    let guide = read("docs/integration.md");
    assert!(
        guide.contains(&format!("(../{CADDYFILE})")),
        "docs/integration.md links {CADDYFILE}"
    );
    let excerpt = guide
        .split("```caddyfile\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/integration.md has a ```caddyfile block");
    let file = read(CADDYFILE);
    let mut lines = file.lines().map(str::trim);
    for shown in excerpt.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            lines.any(|line| line == shown),
            "docs/integration.md shows `{shown}`, which is not a line of {CADDYFILE} (after \
             the excerpt's previous line)"
        );
    }
}

/// The Caddyfile is written as `caddy fmt` writes it: `caddy run` warns about any other
/// layout, in the operator's log.
#[test]
fn the_caddyfile_is_as_caddy_fmt_writes_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CADDYFILE);
    let output = std::process::Command::new(caddy_harness::binary())
        .arg("fmt")
        .arg(&path)
        .output()
        .expect("run caddy fmt");
    assert!(output.status.success(), "caddy fmt: {output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        read(CADDYFILE),
        "run `caddy fmt --overwrite {CADDYFILE}`"
    );
}

/// The harness changes the three addresses and nothing else, and refuses a Caddyfile that
/// would send the test anywhere but 127.0.0.1.
#[test]
fn the_harness_rewrites_only_the_caddyfiles_addresses() {
    let original = read(CADDYFILE);
    let rewritten = caddy_harness::rewrite_caddyfile(&original, 1001, 1002, 1003);
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(rewritten.lines())
        .filter(|(before, after)| before != after)
        .collect();
    assert_eq!(
        changed,
        [
            ("\tto 127.0.0.1:8080", "\tto 127.0.0.1:1001"),
            ("example.com {", "http://127.0.0.1:1003 {"),
            (
                "\t\t\treverse_proxy 127.0.0.1:3000",
                "\t\t\treverse_proxy 127.0.0.1:1002"
            ),
        ],
        "{rewritten}"
    );
    assert_eq!(original.lines().count(), rewritten.lines().count());
    for (what, variant) in [
        (
            "another upstream",
            original.replace("respond 404", "reverse_proxy 10.0.0.1:80"),
        ),
        (
            "another site",
            format!("{original}\nhttp://0.0.0.0:80 {{\n\trespond 200\n}}\n"),
        ),
        (
            "a bind of its own",
            original.replace("respond 404", "bind 0.0.0.0"),
        ),
        (
            "the app's address twice",
            original.replace("respond 404", "reverse_proxy 127.0.0.1:3000"),
        ),
    ] {
        let refused = std::panic::catch_unwind(|| {
            caddy_harness::rewrite_caddyfile(&variant, 1001, 1002, 1003)
        });
        assert!(refused.is_err(), "{what} is refused");
    }
}
