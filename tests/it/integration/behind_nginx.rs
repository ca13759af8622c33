//! Forward authentication through a real nginx configured by `deploy/nginx/keepalive.conf`:
//! keepalive (in this process, on a manual clock) decides with `/api/v1/auth` whether a request
//! reaches the application, a small echo server here, which reports the `X-Keepalive-User` it
//! received.
//!
//! Needs nginx (Debian's `nginx`, which `scripts/test.sh` installs); see `tests/it/harness/nginx.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

// ---- the application behind nginx -------------------------------------------------------------

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

// ---- keepalive + application + nginx -----------------------------------------------------------

struct Stack {
    server: TestServer,
    app: App,
    nginx: Nginx,
}

impl Stack {
    async fn start() -> Self {
        let server = TestServer::start(&[("KEEPALIVE_BACKEND_TOKEN", TOKEN)]).await;
        let app = App::start().await;
        let nginx = Nginx::start(port_of(&server.base), app.port);
        Self { server, app, nginx }
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

    /// `GET` through nginx with this cookie.
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = client().get(self.nginx.url(path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request through nginx")
    }

    /// The status of a `GET` through nginx.
    async fn status(&self, path: &str, cookie: Option<&str>) -> u16 {
        self.get(path, cookie).await.status().as_u16()
    }

    /// nginx first: its upstream connections must be closed for keepalive to drain.
    async fn stop(self) {
        let Self { server, app, nginx } = self;
        drop(nginx);
        app.task.abort();
        server.stop().await;
    }
}

/// A request with the backend API's token to `url` (keepalive's own port, or nginx's to show
/// the API is not published there).
fn with_token(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    client()
        .request(method, url)
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
}

/// Whether an answer is nginx's own HTML error page (not a JSON answer of keepalive).
async fn from_nginx(response: reqwest::Response) -> bool {
    let html = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let body = response.text().await.expect("body");
    html && body.contains("<center>nginx")
}

// ---- tests -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_signed_in_user_reaches_the_app_which_sees_the_user() {
    let stack = Stack::start().await;
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

#[tokio::test]
async fn without_a_valid_cookie_nginx_answers_401_and_the_app_sees_nothing() {
    let stack = Stack::start().await;
    for cookie in [
        None,
        Some("keepalive_sid=AAAAAAAAAAAAAAAAAAAAAA"),
        Some("keepalive_sid=not-a-session"),
        Some("other=1"),
    ] {
        let response = stack.get("/dashboard", cookie).await;
        assert_eq!(response.status(), 401, "cookie {cookie:?}");
        assert!(from_nginx(response).await, "nginx's 401 page");
    }
    // The check's location is internal: clients cannot call it themselves.
    assert_eq!(stack.status("/_keepalive_auth", None).await, 404);
    assert_eq!(stack.app.hits(), 0, "no request reached the app");
    stack.stop().await;
}

#[tokio::test]
async fn an_idle_session_expires_and_then_gets_401() {
    let stack = Stack::start().await;
    let (_, cookie) = stack.login("alice").await;
    assert_eq!(stack.status("/", Some(&cookie)).await, 200);
    // The check above extended the session to now + IDLE.
    stack.server.clock.advance(IDLE);
    assert_eq!(stack.status("/", Some(&cookie)).await, 401);
    assert_eq!(stack.app.hits(), 1, "only the request before expiry");
    stack.stop().await;
}

#[tokio::test]
async fn a_session_ended_by_the_backend_gets_401() {
    let stack = Stack::start().await;
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
    assert_eq!(stack.status("/", Some(&cookie)).await, 401);
    assert_eq!(stack.app.hits(), 1);
    stack.stop().await;
}

#[tokio::test]
async fn an_anonymous_browser_session_keeps_alive_but_is_not_signed_in() {
    let stack = Stack::start().await;
    let response = client()
        .post(stack.nginx.url("/api/v1/session"))
        .send()
        .await
        .expect("create through nginx");
    assert_eq!(response.status(), 201, "the browser API is published");
    let cookie = cookie_pair(&response);
    assert_eq!(
        stack.status("/dashboard", Some(&cookie)).await,
        401,
        "a session without a user is not signed in"
    );
    let response = stack.get("/api/v1/keepalive/", Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("keepalive json");
    assert!(body["session"]["expiresAt"].is_string(), "{body}");
    for script in ["/keepalive.js", "/keepalive.mjs"] {
        let response = stack.get(script, None).await;
        assert_eq!(response.status(), 200, "{script}");
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            content_type.contains("javascript"),
            "{script}: {content_type}"
        );
    }
    assert_eq!(stack.app.hits(), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_forged_user_header_never_reaches_the_app() {
    let stack = Stack::start().await;
    let (_, cookie) = stack.login("alice").await;
    let response = client()
        .get(stack.nginx.url("/admin"))
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
        "nginx drops the underscore spelling, which CGI-style apps would read as the user: {body}"
    );
    // Without a session a forged header gets nowhere.
    let response = client()
        .get(stack.nginx.url("/admin"))
        .header("X-Keepalive-User", "mallory")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(stack.app.hits(), 1, "only alice's request");
    stack.stop().await;
}

#[tokio::test]
async fn the_backend_api_is_not_published_through_nginx() {
    let stack = Stack::start().await;
    let (token, cookie) = stack.login("alice").await;
    // With the right token, keepalive itself would create the session (201).
    for path in [
        "/api/v1/backend/sessions",
        "/api/v1//backend/sessions",
        "/api/v1/%62ackend/sessions",
    ] {
        let response = with_token(reqwest::Method::POST, stack.nginx.url(path))
            .json(&json!({ "user": "mallory" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 404, "{path}");
        assert!(from_nginx(response).await, "{path}: answered by nginx");
    }
    let listing = with_token(
        reqwest::Method::GET,
        stack.nginx.url("/api/v1/backend/users/alice/sessions"),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(listing.status(), 404);
    let logout = with_token(
        reqwest::Method::DELETE,
        stack
            .nginx
            .url(&format!("/api/v1/backend/sessions/{token}")),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(logout.status(), 404);
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

#[tokio::test]
async fn forward_auth_extends_the_session() {
    let stack = Stack::start().await;
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

#[tokio::test]
async fn a_request_body_reaches_the_app_and_not_the_check() {
    let stack = Stack::start().await;
    let (_, cookie) = stack.login("alice").await;
    // Larger than nginx's in-memory body buffer: nginx's worker writes it to its temporary
    // directory, and the check must not wait for a body it is never sent.
    let payload = vec![b'x'; 64 * 1024];
    let response = client()
        .post(stack.nginx.url("/upload"))
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
        .post(stack.nginx.url("/upload"))
        .body(payload)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 401);
    assert_eq!(stack.app.hits(), 1);
    stack.stop().await;
}
