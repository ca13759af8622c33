//! How applications use keepalive's sessions, over a real port: the backend API (bearer
//! token), the browser's read of its own session, forward authentication (`/api/v1/auth`, in
//! this process and behind a real nginx and a real Caddy), the refusal of cross-site requests
//! on the state-changing browser routes, and the backend API over Redis.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{
    START, Store, TestServer, client, command, cookie_pair, create_session, keepalive, metrics,
    millis, on_every_store, within,
};
use keepalive_testkit::redis::RedisServer;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

/// The backend API's bearer token (at least 32 characters).
const TOKEN: &str = "backend-api-test-token-0123456789abcdef";
/// keepalive's default idle timeout (`idle_timeout` in src/config/raw.rs).
const IDLE: Duration = Duration::from_secs(10 * 60);
const MIN: Duration = Duration::from_secs(60);
/// A well-formed token no session has.
const UNKNOWN: &str = "AAAAAAAAAAAAAAAAAAAAAA";
/// Path segments that are no token at all: too short, too long, a character outside base64url
/// (`%21` is `!`), and 22 characters whose last one carries bits past the 128 of an id.
const MALFORMED: &[&str] = &[
    "not-a-token",
    "AAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAA%21",
    "AAAAAAAAAAAAAAAAAAAAAB",
];

mod backend_create;
mod backend_session;
mod backend_token;
mod backend_users;
mod behind_proxy;
mod cross_site;
mod forward_auth;
mod own_session;
mod shared;

/// A server with the backend API on, its sessions in `store`.
async fn start(store: Store) -> TestServer {
    store.start(&[("KEEPALIVE_BACKEND_TOKEN", TOKEN)]).await
}

/// The instant `after` past the test clock's start, in milliseconds.
fn at(after: Duration) -> i64 {
    START + after.as_millis() as i64
}

/// A request to the backend API with the right token.
fn backend(server: &TestServer, method: Method, path: &str) -> RequestBuilder {
    client()
        .request(method, server.url(path))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
}

fn session_path(token: &str) -> String {
    format!("/api/v1/backend/sessions/{token}")
}

/// The path of a user's sessions; `segment` is the user id as written in the URL.
fn user_path(segment: &str) -> String {
    format!("/api/v1/backend/users/{segment}/sessions")
}

/// Status and JSON body (`Null` for an empty body).
async fn answer(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: JSON body {text}"));
    (status, body)
}

async fn send(request: RequestBuilder) -> (u16, Value) {
    answer(request.send().await.expect("request")).await
}

/// Checks a JSON error answer.
fn assert_error((status, body): &(u16, Value), want: u16, code: &str, what: &str) {
    assert_eq!(*status, want, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
}

/// A session the backend API handed over: its token, the exact `Set-Cookie` value, and the
/// `name=value` pair a browser then sends.
struct Issued {
    token: String,
    set_cookie: String,
    cookie: String,
    session: Value,
}

/// Reads the answer of create or rotate, checking the cookie carries the token safely.
fn issued(body: &Value) -> Issued {
    let token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 22, "128 bits in base64url: {body}");
    let set_cookie = body["cookie"].as_str().expect("cookie").to_owned();
    let mut parts = set_cookie.split(';').map(str::trim);
    let cookie = parts.next().expect("name=value").to_owned();
    assert_eq!(cookie, format!("keepalive_sid={token}"), "{set_cookie}");
    let attributes: Vec<&str> = parts.collect();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(&attr), "{attr} in {set_cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "development serves plain HTTP: {set_cookie}"
    );
    assert_eq!(body["session"]["token"], token.as_str(), "{body}");
    Issued {
        token,
        set_cookie,
        cookie,
        session: body["session"].clone(),
    }
}

/// Creates a session for `user` carrying `data` (none when `Null`).
async fn login(server: &TestServer, user: &str, data: Value) -> Issued {
    let mut request = json!({ "user": user });
    if !data.is_null() {
        request["data"] = data;
    }
    let (status, body) =
        send(backend(server, Method::POST, "/api/v1/backend/sessions").json(&request)).await;
    assert_eq!(status, 201, "create for {user}: {body}");
    issued(&body)
}

/// `POST /api/v1/backend/sessions` with a raw body and content type.
async fn create_raw(server: &TestServer, content_type: Option<&str>, body: String) -> (u16, Value) {
    let mut request = backend(server, Method::POST, "/api/v1/backend/sessions").body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    send(request).await
}

async fn read(server: &TestServer, token: &str) -> (u16, Value) {
    send(backend(server, Method::GET, &session_path(token))).await
}

/// The tokens of a user's sessions, in the order listed; `segment` as written in the URL.
async fn listed(server: &TestServer, segment: &str) -> Vec<String> {
    let (status, body) = send(backend(server, Method::GET, &user_path(segment))).await;
    assert_eq!(status, 200, "list {segment}: {body}");
    body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["token"].as_str().expect("token").to_owned())
        .collect()
}

/// A browser request with this cookie and these extra headers.
fn browser(
    server: &TestServer,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> RequestBuilder {
    let mut request = client().request(method, server.url(path));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

/// `GET /api/v1/session`: what the browser may read of its session.
async fn own_session(server: &TestServer, cookie: Option<&str>) -> Response {
    browser(server, Method::GET, "/api/v1/session", cookie, &[])
        .send()
        .await
        .expect("read own session")
}

/// A forward-authentication check with this method and cookie.
async fn auth(server: &TestServer, method: Method, cookie: Option<&str>) -> Response {
    browser(server, method, "/api/v1/auth", cookie, &[])
        .send()
        .await
        .expect("forward auth")
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

/// The Redis check a keepalive answer reports (without a session: the 401 carries it too).
async fn redis_check(server: &TestServer) -> Value {
    let (status, body) = keepalive(&server.base, None).await;
    assert_eq!(status, 401, "{body}");
    body["serverHealth"]["checks"]["redis"].clone()
}

async fn start_with_redis(url: &str) -> TestServer {
    TestServer::start(&[("REDIS_URL", url), ("KEEPALIVE_BACKEND_TOKEN", TOKEN)]).await
}
