//! The application-integration API over a real port: the backend API (bearer token), the
//! browser's read of its own session, forward authentication (`/api/v1/auth`), the refusal of
//! cross-site requests on the state-changing browser routes, and the backend API over Redis:
//! shared by two instances, during an outage, and a logout that must survive a later outage or
//! a restart of Redis.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{
    START, TestServer, client, command, cookie_pair, create_session, keepalive, metrics, millis,
    within,
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

// ---- helpers -----------------------------------------------------------------------------------

async fn start() -> TestServer {
    TestServer::start(&[("KEEPALIVE_BACKEND_TOKEN", TOKEN)]).await
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

// ---- creating sessions -------------------------------------------------------------------------

#[tokio::test]
async fn create_answers_the_token_the_exact_cookie_and_the_session() {
    let server = start().await;
    let response = backend(&server, Method::POST, "/api/v1/backend/sessions")
        .json(&json!({ "user": "alice", "data": { "role": "editor", "tenant": 7 } }))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    assert!(
        response.headers().get(SET_COOKIE).is_none(),
        "the application, not keepalive, sets the cookie on its own answer"
    );
    let (_, body) = answer(response).await;
    let alice = issued(&body);
    let session = &alice.session;
    assert_eq!(session["user"], "alice", "{body}");
    assert_eq!(session["data"], json!({ "role": "editor", "tenant": 7 }));
    assert_eq!(millis(&session["createdAt"]), START);
    assert_eq!(millis(&session["lastSeenAt"]), START);
    assert_eq!(millis(&session["expiresAt"]), at(IDLE));
    assert_eq!(millis(&session["absoluteExpiresAt"]), at(12 * 60 * MIN));

    // The same cookie, attribute for attribute, as the browser route sets.
    let response = client()
        .post(server.url("/api/v1/session"))
        .send()
        .await
        .expect("browser create");
    let browser_set = response.headers()[SET_COOKIE].to_str().expect("ascii");
    let attributes = |set: &str| -> Vec<String> {
        let mut attrs: Vec<String> = set
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_owned())
            .collect();
        attrs.sort();
        attrs
    };
    assert_eq!(attributes(&alice.set_cookie), attributes(browser_set));

    // The cookie works in the browser API.
    let (status, body) = keepalive(&server.base, Some(&alice.cookie)).await;
    assert_eq!(status, 200, "{body}");
    let response = own_session(&server, Some(&alice.cookie)).await;
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["user"], "alice");

    // Without `data` the session carries an empty object.
    let bob = login(&server, "bob", Value::Null).await;
    assert_eq!(bob.session["data"], json!({}));
    assert_eq!(bob.session["user"], "bob");
    assert_ne!(bob.token, alice.token);
    server.stop().await;
}

#[tokio::test]
async fn create_refuses_bad_users_and_bodies_and_creates_nothing() {
    let server = start().await;
    let json = Some("application/json");
    let long = "a".repeat(257);
    let bad_request: Vec<(&str, String)> = vec![
        ("no body", String::new()),
        ("no user", r#"{}"#.to_owned()),
        ("data only", r#"{"data":{}}"#.to_owned()),
        ("a space", r#"{"user":"alice smith"}"#.to_owned()),
        (
            "a control character",
            r#"{"user":"alice\u0007"}"#.to_owned(),
        ),
        ("a tab", r#"{"user":"alice\t"}"#.to_owned()),
        (
            "a newline",
            r#"{"user":"alice\r\nX-Keepalive-User: root"}"#.to_owned(),
        ),
        ("not ASCII", r#"{"user":"alicé"}"#.to_owned()),
        ("empty", r#"{"user":""}"#.to_owned()),
        ("257 characters", format!(r#"{{"user":"{long}"}}"#)),
        ("a number", r#"{"user":42}"#.to_owned()),
        ("null", r#"{"user":null}"#.to_owned()),
        ("an array", r#"{"user":["alice"]}"#.to_owned()),
        ("an object", r#"{"user":{"id":"alice"}}"#.to_owned()),
        (
            "unknown field",
            r#"{"user":"alice","role":"admin"}"#.to_owned(),
        ),
        (
            "data not an object",
            r#"{"user":"alice","data":[1]}"#.to_owned(),
        ),
        ("data a string", r#"{"user":"alice","data":"x"}"#.to_owned()),
        ("a JSON array", r#"["alice"]"#.to_owned()),
        ("invalid JSON", r#"{"user":"alice""#.to_owned()),
    ];
    for (what, body) in bad_request {
        assert_error(
            &create_raw(&server, json, body).await,
            400,
            "bad_request",
            what,
        );
    }
    let valid = r#"{"user":"alice"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        assert_error(
            &create_raw(&server, content_type, valid.to_owned()).await,
            415,
            "unsupported_media_type",
            &format!("content type {content_type:?}"),
        );
    }
    // 4 KiB exactly is accepted, one byte more is not.
    let frame = r#"{"user":"padded","data":{"pad":""}}"#;
    let body = |len: usize| {
        let pad = "x".repeat(len - frame.len());
        format!(r#"{{"user":"padded","data":{{"pad":"{pad}"}}}}"#)
    };
    assert_eq!(body(4096).len(), 4096);
    let (status, created) = create_raw(&server, json, body(4096)).await;
    assert_eq!(status, 201, "{created}");
    let (status, refused) = create_raw(&server, json, body(4097)).await;
    assert_error(&(status, refused), 413, "payload_too_large", "4097 bytes");
    // 256 characters is the longest user id.
    let longest = "b".repeat(256);
    let (status, created) = create_raw(&server, json, format!(r#"{{"user":"{longest}"}}"#)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["session"]["user"], longest.as_str());

    assert!(
        listed(&server, "alice").await.is_empty(),
        "no refused create left a session"
    );
    assert_eq!(
        listed(&server, "padded").await.len(),
        1,
        "only the 4096-byte one"
    );
    server.stop().await;
}

// ---- one session -------------------------------------------------------------------------------

#[tokio::test]
async fn reading_does_not_extend_and_an_idle_session_then_is_404() {
    let server = start().await;
    let alice = login(&server, "alice", json!({ "role": "editor" })).await;
    server.clock.advance(5 * MIN);
    for _ in 0..3 {
        let (status, body) = read(&server, &alice.token).await;
        assert_eq!(status, 200, "{body}");
        let session = &body["session"];
        assert_eq!(session["token"], alice.token.as_str());
        assert_eq!(session["user"], "alice");
        assert_eq!(session["data"], json!({ "role": "editor" }));
        assert_eq!(millis(&session["lastSeenAt"]), START, "{body}");
        assert_eq!(
            millis(&session["expiresAt"]),
            at(IDLE),
            "not extended: {body}"
        );
    }
    // Idle for the whole timeout: expired, although read three times meanwhile.
    server.clock.advance(IDLE - 5 * MIN);
    let token = alice.token.as_str();
    assert_error(
        &read(&server, token).await,
        404,
        "session_not_found",
        "read",
    );
    let patch = backend(&server, Method::PATCH, &session_path(token)).json(&json!({ "data": {} }));
    assert_error(&send(patch).await, 404, "session_not_found", "patch");
    let rotate = backend(
        &server,
        Method::POST,
        &format!("{}/rotate", session_path(token)),
    );
    assert_error(&send(rotate).await, 404, "session_not_found", "rotate");
    let end = backend(&server, Method::DELETE, &session_path(token));
    assert_error(&send(end).await, 404, "session_not_found", "delete");
    assert!(listed(&server, "alice").await.is_empty());
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 401);
    server.stop().await;
}

#[tokio::test]
async fn patch_replaces_the_data_seen_everywhere_without_extending() {
    let server = start().await;
    let alice = login(&server, "alice", json!({ "role": "editor", "tenant": 7 })).await;
    server.clock.advance(3 * MIN);
    let path = session_path(&alice.token);
    let (status, body) =
        send(backend(&server, Method::PATCH, &path).json(&json!({ "data": { "role": "admin" } })))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "replaced, not merged"
    );
    assert_eq!(body["session"]["user"], "alice");
    assert_eq!(
        millis(&body["session"]["expiresAt"]),
        at(IDLE),
        "not extended: {body}"
    );

    let (status, body) = read(&server, &alice.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "{body}"
    );
    let (status, body) = answer(own_session(&server, Some(&alice.cookie)).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "{body}"
    );
    assert_eq!(body["session"]["user"], "alice");

    // Refused updates change nothing.
    let refusals: [(Option<&str>, &str, u16, &str); 7] = [
        (Some("application/json"), "", 400, "bad_request"),
        (Some("application/json"), r#"{}"#, 400, "bad_request"),
        (
            Some("application/json"),
            r#"{"data":[1]}"#,
            400,
            "bad_request",
        ),
        (
            Some("application/json"),
            r#"{"data":null}"#,
            400,
            "bad_request",
        ),
        (
            Some("application/json"),
            r#"{"data":{},"user":"mallory"}"#,
            400,
            "bad_request",
        ),
        (
            Some("text/plain"),
            r#"{"data":{}}"#,
            415,
            "unsupported_media_type",
        ),
        (None, r#"{"data":{}}"#, 415, "unsupported_media_type"),
    ];
    for (content_type, payload, status, code) in refusals {
        let mut request = backend(&server, Method::PATCH, &path).body(payload);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        assert_error(&send(request).await, status, code, payload);
    }
    let big = json!({ "data": { "pad": "x".repeat(5000) } });
    let request = backend(&server, Method::PATCH, &path).json(&big);
    assert_error(&send(request).await, 413, "payload_too_large", "5000 bytes");
    let (_, body) = read(&server, &alice.token).await;
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "{body}"
    );
    assert_eq!(body["session"]["user"], "alice");

    // An empty object clears the data.
    let (status, body) =
        send(backend(&server, Method::PATCH, &path).json(&json!({ "data": {} }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["data"], json!({}));
    server.stop().await;
}

#[tokio::test]
async fn delete_ends_the_session_for_the_browser_too() {
    let server = start().await;
    let alice = login(&server, "alice", Value::Null).await;
    let other = login(&server, "alice", Value::Null).await;
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 200);
    let path = session_path(&alice.token);
    let (status, body) = send(backend(&server, Method::DELETE, &path)).await;
    assert_eq!(status, 204);
    assert_eq!(body, Value::Null, "204 has no body");
    assert_error(
        &send(backend(&server, Method::DELETE, &path)).await,
        404,
        "session_not_found",
        "second delete",
    );
    assert_error(
        &read(&server, &alice.token).await,
        404,
        "session_not_found",
        "read",
    );
    let (status, body) = keepalive(&server.base, Some(&alice.cookie)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "session_expired");
    let (status, body) = answer(auth(&server, Method::GET, Some(&alice.cookie)).await).await;
    assert_error(&(status, body), 401, "session_expired", "forward auth");
    assert_eq!(
        listed(&server, "alice").await,
        vec![other.token.clone()],
        "only the one session ended"
    );
    assert_eq!(keepalive(&server.base, Some(&other.cookie)).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_404_session_not_found() {
    let server = start().await;
    let alice = login(&server, "alice", json!({ "n": 1 })).await;
    for token in std::iter::once(&UNKNOWN).chain(MALFORMED) {
        let path = session_path(token);
        let requests = [
            ("GET", backend(&server, Method::GET, &path)),
            (
                "PATCH",
                backend(&server, Method::PATCH, &path).json(&json!({ "data": {} })),
            ),
            ("DELETE", backend(&server, Method::DELETE, &path)),
            (
                "rotate",
                backend(&server, Method::POST, &format!("{path}/rotate")),
            ),
        ];
        for (what, request) in requests {
            assert_error(
                &send(request).await,
                404,
                "session_not_found",
                &format!("{what} {token}"),
            );
        }
    }
    let (status, body) = read(&server, &alice.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["session"]["data"],
        json!({ "n": 1 }),
        "untouched: {body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn rotate_answers_a_new_token_and_cookie_keeping_user_and_data() {
    let server = start().await;
    let old = login(&server, "alice", json!({ "role": "editor" })).await;
    server.clock.advance(2 * MIN);
    let rotate = format!("{}/rotate", session_path(&old.token));
    let response = backend(&server, Method::POST, &rotate)
        .send()
        .await
        .expect("rotate");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    let new = issued(&body);
    assert_ne!(new.token, old.token);
    assert_eq!(new.session["user"], "alice");
    assert_eq!(new.session["data"], json!({ "role": "editor" }));
    assert_eq!(
        millis(&new.session["createdAt"]),
        START,
        "the same session: {body}"
    );
    assert_eq!(
        millis(&new.session["absoluteExpiresAt"]),
        millis(&old.session["absoluteExpiresAt"])
    );

    assert_error(
        &read(&server, &old.token).await,
        404,
        "session_not_found",
        "old token",
    );
    assert_error(
        &send(backend(&server, Method::POST, &rotate)).await,
        404,
        "session_not_found",
        "rotating the old token again",
    );
    assert_eq!(keepalive(&server.base, Some(&old.cookie)).await.0, 401);
    assert_eq!(keepalive(&server.base, Some(&new.cookie)).await.0, 200);
    let (status, body) = read(&server, &new.token).await;
    assert_eq!(status, 200);
    assert_eq!(body["session"]["user"], "alice");
    assert_eq!(listed(&server, "alice").await, vec![new.token.clone()]);
    server.stop().await;
}

// ---- a user's sessions -------------------------------------------------------------------------

#[tokio::test]
async fn a_users_live_sessions_are_listed_oldest_first() {
    let server = start().await;
    let expired = login(&server, "alice", Value::Null).await;
    server.clock.advance(6 * MIN);
    let first = login(&server, "alice", json!({ "device": "laptop" })).await;
    server.clock.advance(MIN);
    let ended = login(&server, "alice", Value::Null).await;
    server.clock.advance(MIN);
    let second = login(&server, "alice", json!({ "device": "phone" })).await;
    let bob = login(&server, "bob", Value::Null).await;
    // A session the browser created, whose data merely names alice, is not hers.
    let response = client()
        .post(server.url("/api/v1/session"))
        .json(&json!({ "data": { "user": "alice" } }))
        .send()
        .await
        .expect("anonymous create");
    assert_eq!(response.status(), 201);
    let anonymous = cookie_pair(&response);
    let (status, _) = send(backend(
        &server,
        Method::DELETE,
        &session_path(&ended.token),
    ))
    .await;
    assert_eq!(status, 204);
    // `expired` was created 8 minutes ago: 3 more and it is past its idle timeout.
    server.clock.advance(3 * MIN);

    let (status, body) = send(backend(&server, Method::GET, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");
    let sessions = body["sessions"].as_array().expect("sessions");
    let tokens: Vec<&str> = sessions
        .iter()
        .map(|s| s["token"].as_str().expect("token"))
        .collect();
    assert_eq!(
        tokens,
        [first.token.as_str(), second.token.as_str()],
        "{body}"
    );
    assert!(!tokens.contains(&expired.token.as_str()));
    for session in sessions {
        assert_eq!(session["user"], "alice", "{body}");
    }
    assert_eq!(sessions[0]["data"], json!({ "device": "laptop" }));
    assert_eq!(sessions[1]["data"], json!({ "device": "phone" }));
    assert!(millis(&sessions[0]["createdAt"]) < millis(&sessions[1]["createdAt"]));
    assert_eq!(listed(&server, "bob").await, vec![bob.token.clone()]);
    for nobody in ["nobody", "null", "anonymous", "ALICE"] {
        assert!(listed(&server, nobody).await.is_empty(), "{nobody}");
    }
    assert_eq!(
        keepalive(&server.base, Some(&anonymous)).await.0,
        200,
        "the anonymous session lives"
    );

    // A user id keepalive cannot carry is refused, like at creation.
    let long = "a".repeat(257);
    for segment in ["alice%20smith", "alice%09", "alic%C3%A9", long.as_str()] {
        let request = backend(&server, Method::GET, &user_path(segment));
        assert_error(&send(request).await, 400, "bad_request", segment);
        let request = backend(&server, Method::DELETE, &user_path(segment));
        assert_error(&send(request).await, 400, "bad_request", segment);
    }
    server.stop().await;
}

#[tokio::test]
async fn user_ids_with_at_signs_and_percent_encoding_round_trip() {
    let server = start().await;
    let slash = login(&server, "ana@example.com/eu", Value::Null).await;
    let percent = login(&server, "50%2Foff", Value::Null).await;
    let plain = login(&server, "ana@example.com", Value::Null).await;
    for segment in [
        "ana@example.com%2Feu",
        "ana%40example.com%2Feu",
        "ana%40example.com%2feu",
    ] {
        let (status, body) = send(backend(&server, Method::GET, &user_path(segment))).await;
        assert_eq!(status, 200, "{segment}: {body}");
        assert_eq!(body["user"], "ana@example.com/eu", "decoded once: {body}");
        assert_eq!(body["sessions"][0]["token"], slash.token.as_str(), "{body}");
        assert_eq!(body["sessions"][0]["user"], "ana@example.com/eu");
        assert_eq!(body["sessions"].as_array().map(Vec::len), Some(1), "{body}");
    }
    // A literal `%2F` in the id is written `%252F`; decoded only once, `%2F` is another user.
    let (_, body) = send(backend(&server, Method::GET, &user_path("50%252Foff"))).await;
    assert_eq!(body["user"], "50%2Foff", "{body}");
    assert_eq!(
        body["sessions"][0]["token"],
        percent.token.as_str(),
        "{body}"
    );
    assert!(
        listed(&server, "50%2Foff").await.is_empty(),
        "`50/off` is nobody"
    );
    assert_eq!(
        listed(&server, "ana@example.com").await,
        vec![plain.token.clone()]
    );

    let (status, body) = send(backend(
        &server,
        Method::DELETE,
        &user_path("ana%40example.com%2Feu"),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "ana@example.com/eu", "ended": 1 }));
    assert_eq!(keepalive(&server.base, Some(&slash.cookie)).await.0, 401);
    assert_eq!(
        keepalive(&server.base, Some(&plain.cookie)).await.0,
        200,
        "another user"
    );
    assert_eq!(keepalive(&server.base, Some(&percent.cookie)).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn ending_a_users_sessions_logs_them_out_everywhere() {
    let server = start().await;
    let mut alice = Vec::new();
    for device in ["laptop", "phone", "tablet"] {
        alice.push(login(&server, "alice", json!({ "device": device })).await);
        server.clock.advance(Duration::from_secs(1));
    }
    let bob = login(&server, "bob", Value::Null).await;
    let anonymous = create_session(&server.base).await;
    for session in &alice {
        assert_eq!(
            answer(auth(&server, Method::GET, Some(&session.cookie)).await)
                .await
                .0,
            200
        );
    }

    let (status, body) = send(backend(&server, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "alice", "ended": 3 }));
    for session in &alice {
        let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "session_expired");
        let refused = answer(auth(&server, Method::GET, Some(&session.cookie)).await).await;
        assert_error(
            &refused,
            401,
            "session_expired",
            "forward auth after logout",
        );
        assert_error(
            &read(&server, &session.token).await,
            404,
            "session_not_found",
            "read",
        );
    }
    assert!(listed(&server, "alice").await.is_empty());
    assert_eq!(
        keepalive(&server.base, Some(&bob.cookie)).await.0,
        200,
        "bob survives"
    );
    assert_eq!(keepalive(&server.base, Some(&anonymous)).await.0, 200);
    assert_eq!(listed(&server, "bob").await, vec![bob.token.clone()]);

    let (status, body) = send(backend(&server, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "user": "alice", "ended": 0 }),
        "nothing left to end"
    );
    server.stop().await;
}

// ---- the backend token -------------------------------------------------------------------------

/// Every route of the backend API, for `token` and `user`: what, method, path and JSON body.
fn backend_routes(token: &str, user: &str) -> Vec<(&'static str, Method, String, Option<Value>)> {
    vec![
        (
            "create",
            Method::POST,
            "/api/v1/backend/sessions".to_owned(),
            Some(json!({ "user": "mallory" })),
        ),
        ("read", Method::GET, session_path(token), None),
        (
            "update",
            Method::PATCH,
            session_path(token),
            Some(json!({ "data": { "owned": true } })),
        ),
        ("end", Method::DELETE, session_path(token), None),
        (
            "rotate",
            Method::POST,
            format!("{}/rotate", session_path(token)),
            None,
        ),
        ("list", Method::GET, user_path(user), None),
        ("end all", Method::DELETE, user_path(user), None),
    ]
}

#[tokio::test]
async fn every_backend_route_refuses_a_missing_or_wrong_token() {
    let server = start().await;
    let alice = login(&server, "alice", json!({ "n": 1 })).await;
    let mut last_changed = TOKEN.to_owned();
    last_changed.pop();
    last_changed.push('g');
    let wrong: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {last_changed}")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(format!("Basic {TOKEN}")),
        Some("Basic YWRtaW46YWRtaW4=".to_owned()),
        Some(format!("Token {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for (what, method, path, body) in backend_routes(&alice.token, "alice") {
        for authorization in &wrong {
            let mut request = client().request(method.clone(), server.url(&path));
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.expect("request");
            let challenge = header(&response, "www-authenticate").map(str::to_owned);
            let content_type = header(&response, "content-type").map(str::to_owned);
            let refused = answer(response).await;
            let case = format!("{what} with {authorization:?}");
            assert_error(&refused, 401, "unauthorized", &case);
            let challenge = challenge.unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"));
            assert!(challenge.starts_with("Bearer "), "{case}: {challenge}");
            let content_type = content_type.unwrap_or_default();
            assert!(
                content_type.starts_with("application/json"),
                "{case}: {content_type}"
            );
        }
    }
    // Checked before anything else: an oversized body or a malformed token is still a 401.
    let big = json!({ "user": "mallory", "data": { "pad": "x".repeat(5000) } });
    let request = client()
        .post(server.url("/api/v1/backend/sessions"))
        .json(&big);
    assert_error(
        &send(request).await,
        401,
        "unauthorized",
        "oversized, no token",
    );
    let request = client().get(server.url(&session_path("not-a-token")));
    assert_error(
        &send(request).await,
        401,
        "unauthorized",
        "malformed token, no token",
    );

    // Nothing changed: no session for mallory, alice's session alive with its token and data.
    assert!(listed(&server, "mallory").await.is_empty());
    assert_eq!(listed(&server, "alice").await, vec![alice.token.clone()]);
    let (status, body) = read(&server, &alice.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["data"], json!({ "n": 1 }), "{body}");
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_name_is_case_insensitive() {
    let server = start().await;
    let alice = login(&server, "alice", Value::Null).await;
    let lower = format!("bearer {TOKEN}");
    let upper = format!("BEARER {TOKEN}");
    let with = |method: Method, path: &str, value: &str| {
        client()
            .request(method, server.url(path))
            .header(AUTHORIZATION, value)
    };
    let (status, body) = send(
        with(Method::POST, "/api/v1/backend/sessions", &lower).json(&json!({ "user": "carol" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let carol = issued(&body);
    let path = session_path(&carol.token);
    let (status, body) = send(with(Method::GET, &path, &upper)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["user"], "carol");
    let (status, body) =
        send(with(Method::PATCH, &path, &lower).json(&json!({ "data": { "x": 1 } }))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(with(Method::POST, &format!("{path}/rotate"), &lower)).await;
    assert_eq!(status, 200, "{body}");
    let rotated = issued(&body);
    let (status, body) = send(with(Method::GET, &user_path("carol"), &lower)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"][0]["token"], rotated.token.as_str());
    assert_eq!(body["sessions"][0]["data"], json!({ "x": 1 }));
    let (status, _) = send(with(Method::DELETE, &session_path(&rotated.token), &lower)).await;
    assert_eq!(status, 204);
    let (status, body) = send(with(Method::DELETE, &user_path("alice"), &lower)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 1);
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 401);
    server.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_the_backend_api_is_off() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    let token = cookie.split_once('=').expect("pair").1.to_owned();
    for (what, method, path, body) in backend_routes(&token, "alice") {
        for authorization in [
            None,
            Some(format!("Bearer {TOKEN}")),
            Some("Bearer x".to_owned()),
        ] {
            let mut request = client().request(method.clone(), server.url(&path));
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let (status, body) = send(request).await;
            let case = format!("{what} with {authorization:?}");
            assert_error(&(status, body.clone()), 404, "backend_api_disabled", &case);
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("KEEPALIVE_BACKEND_TOKEN"),
                "{case}: says how: {body}"
            );
        }
    }
    assert_eq!(
        keepalive(&server.base, Some(&cookie)).await.0,
        200,
        "the session the calls named lives on"
    );
    server.stop().await;
}

#[test]
fn a_backend_token_under_32_characters_stops_the_binary_with_exit_code_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let short = &TOKEN[..31];
    let mut child = command(&[
        ("KEEPALIVE_BACKEND_TOKEN", short),
        ("KEEPALIVE_DATA_DIR", &data),
        ("KEEPALIVE_BIND", "127.0.0.1"),
        ("PORT", "0"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn keepalive");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepalive kept running with a 31-character backend token");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for needle in [
        "backend_token",
        "KEEPALIVE_BACKEND_TOKEN",
        "at least 32 characters",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    }
    assert!(
        !stderr.contains(short),
        "the secret is not printed: {stderr}"
    );
    assert!(
        !dir.path().join("sessions.redb").exists(),
        "nothing opened before validation"
    );
}

#[tokio::test]
async fn a_backend_token_of_exactly_32_characters_is_accepted() {
    let exact = &TOKEN[..32];
    let server = TestServer::start(&[("KEEPALIVE_BACKEND_TOKEN", exact)]).await;
    let (status, body) = send(
        client()
            .post(server.url("/api/v1/backend/sessions"))
            .bearer_auth(exact)
            .json(&json!({ "user": "alice" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let request = backend(&server, Method::GET, &user_path("alice"));
    assert_error(
        &send(request).await,
        401,
        "unauthorized",
        "the longer token is another one",
    );
    server.stop().await;
}

// ---- the browser's own session -----------------------------------------------------------------

#[tokio::test]
async fn the_browser_reads_its_session_without_extending_it() {
    let server = start().await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .json(&json!({ "data": { "theme": "dark" } }))
        .send()
        .await
        .expect("anonymous create");
    assert_eq!(response.status(), 201);
    let anonymous = cookie_pair(&response);
    let alice = login(&server, "alice", json!({ "role": "editor" })).await;
    server.clock.advance(5 * MIN);

    let cases = [
        (&anonymous, Value::Null, json!({ "theme": "dark" })),
        (&alice.cookie, json!("alice"), json!({ "role": "editor" })),
    ];
    for (cookie, user, data) in cases {
        let response = own_session(&server, Some(cookie)).await;
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let text = response.text().await.expect("body");
        let secret = cookie.split_once('=').expect("pair").1;
        assert!(!text.contains(secret), "no token in the body: {text}");
        let body: Value = serde_json::from_str(&text).expect("json");
        let session = &body["session"];
        assert!(session.get("token").is_none(), "{body}");
        assert_eq!(session["user"], user, "{body}");
        assert_eq!(session["data"], data, "{body}");
        assert_eq!(millis(&session["createdAt"]), START);
        assert_eq!(
            millis(&session["expiresAt"]),
            at(IDLE),
            "not extended: {body}"
        );
        assert_eq!(millis(&session["absoluteExpiresAt"]), at(12 * 60 * MIN));
        assert_eq!(session["idleTimeoutMs"], 600_000);
        assert_eq!(millis(&body["serverTime"]), at(5 * MIN));
    }

    // The reads did not keep the sessions alive.
    server.clock.advance(IDLE - 5 * MIN);
    let unknown = format!("keepalive_sid={UNKNOWN}");
    let cookies = [
        None,
        Some(anonymous.as_str()),
        Some(alice.cookie.as_str()),
        Some("keepalive_sid=garbage"),
        Some(unknown.as_str()),
        Some("other=1"),
    ];
    for cookie in cookies {
        let response = own_session(&server, cookie).await;
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{cookie:?}");
        let (status, body) = answer(response).await;
        assert_error(
            &(status, body.clone()),
            401,
            "session_expired",
            &format!("{cookie:?}"),
        );
        assert!(body["serverHealth"]["status"].is_string(), "{body}");
    }
    server.stop().await;
}

// ---- forward authentication --------------------------------------------------------------------

#[tokio::test]
async fn forward_auth_answers_for_users_and_refuses_everyone_else() {
    let server = start().await;
    let alice = login(&server, "alice", Value::Null).await;
    let anonymous = create_session(&server.base).await;
    let ended = login(&server, "bob", Value::Null).await;
    let (status, _) = send(backend(
        &server,
        Method::DELETE,
        &session_path(&ended.token),
    ))
    .await;
    assert_eq!(status, 204);
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::HEAD,
    ];
    // What Traefik adds when it forwards the check; it must change nothing.
    let forwarded = [
        ("X-Forwarded-Method", "POST"),
        ("X-Forwarded-Uri", "/admin/users?delete=all"),
        ("X-Forwarded-Host", "app.example.com"),
        ("X-Forwarded-Proto", "https"),
        ("X-Keepalive-User", "mallory"),
    ];
    for method in &methods {
        for headers in [&[][..], &forwarded[..]] {
            let case = format!("{method} with {headers:?}");
            let request = browser(
                &server,
                method.clone(),
                "/api/v1/auth",
                Some(&alice.cookie),
                headers,
            );
            let response = request.send().await.expect("auth");
            assert_eq!(response.status(), 200, "{case}");
            assert_eq!(
                header(&response, "x-keepalive-user"),
                Some("alice"),
                "{case}"
            );
            let expires = header(&response, "x-keepalive-expires-at").expect("expiry header");
            assert_eq!(millis(&json!(expires)), at(IDLE), "{case}");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{case}");
            assert!(
                response.text().await.expect("body").is_empty(),
                "{case}: empty body"
            );

            let refusals = [
                (Some(anonymous.as_str()), "anonymous_session"),
                (None, "session_expired"),
                (Some(ended.cookie.as_str()), "session_expired"),
                (Some("keepalive_sid=garbage"), "session_expired"),
            ];
            for (cookie, code) in refusals {
                let case = format!("{case}, cookie {cookie:?}");
                let request = browser(&server, method.clone(), "/api/v1/auth", cookie, headers);
                let response = request.send().await.expect("auth");
                assert!(header(&response, "x-keepalive-user").is_none(), "{case}");
                if method == Method::HEAD {
                    assert_eq!(response.status(), 401, "{case}");
                } else {
                    assert_error(&answer(response).await, 401, code, &case);
                }
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn forward_auth_extends_the_session_by_default() {
    let server = start().await;
    let alice = login(&server, "alice", Value::Null).await;
    let idle = login(&server, "bob", Value::Null).await;
    server.clock.advance(5 * MIN);
    let response = auth(&server, Method::GET, Some(&alice.cookie)).await;
    assert_eq!(response.status(), 200);
    let expires = header(&response, "x-keepalive-expires-at").expect("expiry");
    assert_eq!(
        millis(&json!(expires)),
        at(5 * MIN + IDLE),
        "extended by the check"
    );
    let (_, body) = read(&server, &alice.token).await;
    assert_eq!(
        millis(&body["session"]["expiresAt"]),
        at(5 * MIN + IDLE),
        "{body}"
    );
    assert_eq!(
        millis(&body["session"]["lastSeenAt"]),
        at(5 * MIN),
        "{body}"
    );

    // 13 minutes after creation: alive only because the check extended it.
    server.clock.advance(8 * MIN);
    let response = auth(&server, Method::POST, Some(&alice.cookie)).await;
    assert_eq!(response.status(), 200);
    let refused = answer(auth(&server, Method::GET, Some(&idle.cookie)).await).await;
    assert_error(&refused, 401, "session_expired", "the control expired");
    server.stop().await;
}

#[tokio::test]
async fn forward_auth_does_not_extend_when_configured_not_to() {
    let server = TestServer::start(&[
        ("KEEPALIVE_BACKEND_TOKEN", TOKEN),
        ("KEEPALIVE_FORWARD_AUTH_EXTEND", "false"),
    ])
    .await;
    let alice = login(&server, "alice", Value::Null).await;
    server.clock.advance(5 * MIN);
    for method in [Method::GET, Method::POST, Method::HEAD] {
        let response = auth(&server, method.clone(), Some(&alice.cookie)).await;
        assert_eq!(response.status(), 200, "{method}");
        let expires = header(&response, "x-keepalive-expires-at").expect("expiry");
        assert_eq!(millis(&json!(expires)), at(IDLE), "{method}: not extended");
    }
    let (_, body) = read(&server, &alice.token).await;
    assert_eq!(millis(&body["session"]["expiresAt"]), at(IDLE), "{body}");
    server.clock.advance(IDLE - 5 * MIN);
    let refused = answer(auth(&server, Method::GET, Some(&alice.cookie)).await).await;
    assert_error(
        &refused,
        401,
        "session_expired",
        "expired despite the checks",
    );
    server.stop().await;
}

// ---- cross-site requests -----------------------------------------------------------------------

/// What a refused (or passed) state-changing request does, for each of the three routes.
async fn assert_state_changes(server: &TestServer, headers: &[(&str, &str)], allowed: bool) {
    let case = format!("{headers:?}");
    // Create.
    let response = browser(server, Method::POST, "/api/v1/session", None, headers)
        .send()
        .await
        .expect("create");
    if allowed {
        assert_eq!(response.status(), 201, "create {case}");
    } else {
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "create {case}"
        );
        assert_error(
            &answer(response).await,
            403,
            "cross_site_request",
            &format!("create {case}"),
        );
    }
    // Rotate.
    let cookie = create_session(&server.base).await;
    let response = browser(
        server,
        Method::POST,
        "/api/v1/session/rotate",
        Some(&cookie),
        headers,
    )
    .send()
    .await
    .expect("rotate");
    if allowed {
        assert_eq!(response.status(), 200, "rotate {case}");
        let rotated = cookie_pair(&response);
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            401,
            "rotate {case}"
        );
        assert_eq!(
            keepalive(&server.base, Some(&rotated)).await.0,
            200,
            "rotate {case}"
        );
    } else {
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "rotate {case}"
        );
        assert_error(
            &answer(response).await,
            403,
            "cross_site_request",
            &format!("rotate {case}"),
        );
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            200,
            "rotate {case}"
        );
    }
    // End.
    let response = browser(
        server,
        Method::DELETE,
        "/api/v1/session",
        Some(&cookie),
        headers,
    )
    .send()
    .await
    .expect("end");
    if allowed {
        assert_eq!(response.status(), 204, "end {case}");
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            401,
            "end {case}"
        );
    } else {
        assert_error(
            &answer(response).await,
            403,
            "cross_site_request",
            &format!("end {case}"),
        );
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            200,
            "end {case}: refused, and the session lives"
        );
    }
}

/// Reads never change anything: they pass with any headers.
async fn assert_reads_pass(server: &TestServer, headers: &[(&str, &str)]) {
    let cookie = create_session(&server.base).await;
    for path in ["/api/v1/session", "/api/v1/keepalive/"] {
        let response = browser(server, Method::GET, path, Some(&cookie), headers)
            .send()
            .await
            .expect("read");
        assert_eq!(response.status(), 200, "GET {path} with {headers:?}");
    }
}

#[tokio::test]
async fn cross_site_requests_cannot_change_the_session() {
    let server = start().await;
    let own_origin = server.base.clone();
    let other_port = format!(
        "http://127.0.0.1:{}",
        crate::harness::nginx::port_of(&server.base).wrapping_add(1)
    );
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![
            ("Sec-Fetch-Site", "cross-site"),
            ("Origin", own_origin.as_str()),
        ],
        vec![("Origin", "https://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", other_port.as_str())],
    ];
    for headers in &refused {
        assert_state_changes(&server, headers, false).await;
        assert_reads_pass(&server, headers).await;
    }
    let passed: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("Sec-Fetch-Site", "same-origin")],
        vec![("Sec-Fetch-Site", "none")],
        vec![("Origin", own_origin.as_str())],
        vec![
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", own_origin.as_str()),
        ],
    ];
    for headers in &passed {
        assert_state_changes(&server, headers, true).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn configured_cors_origins_may_change_the_session() {
    let server = TestServer::start(&[
        ("KEEPALIVE_BACKEND_TOKEN", TOKEN),
        (
            "KEEPALIVE_CORS_ORIGINS",
            "https://shop.example.com,https://admin.example.com",
        ),
    ])
    .await;
    for origin in ["https://shop.example.com", "https://admin.example.com"] {
        for headers in [
            vec![("Origin", origin), ("Sec-Fetch-Site", "cross-site")],
            vec![("Origin", origin), ("Sec-Fetch-Site", "same-site")],
            vec![("Origin", origin)],
        ] {
            assert_state_changes(&server, &headers, true).await;
        }
        let response = browser(
            &server,
            Method::POST,
            "/api/v1/session",
            None,
            &[("Origin", origin)],
        )
        .send()
        .await
        .expect("create");
        assert_eq!(response.status(), 201);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(origin)
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true")
        );
    }
    for headers in [
        vec![
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        vec![("Origin", "https://shop.example.com:8443")],
        vec![("Origin", "http://shop.example.com")],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        assert_state_changes(&server, &headers, false).await;
    }
    server.stop().await;
}

// ---- with Redis ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_users_sessions_through_redis() {
    let redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    assert_eq!(redis_check(&one).await, "ok");
    assert_eq!(redis_check(&two).await, "ok");

    let on_one = login(&one, "ana@example.com", json!({ "device": "laptop" })).await;
    two.clock.advance(MIN);
    let on_two = login(&two, "ana@example.com", json!({ "device": "phone" })).await;
    let bob = login(&one, "bob", Value::Null).await;

    // Instance two sees the session instance one created, and lists both, oldest first.
    let (status, body) = read(&two, &on_one.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["user"], "ana@example.com");
    assert_eq!(body["session"]["data"], json!({ "device": "laptop" }));
    assert_eq!(
        listed(&two, "ana%40example.com").await,
        vec![on_one.token.clone(), on_two.token.clone()]
    );
    assert_eq!(keepalive(&one.base, Some(&on_one.cookie)).await.0, 200);

    // Logged out everywhere through instance two.
    let (status, body) = send(backend(&two, Method::DELETE, &user_path("ana@example.com"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "ana@example.com", "ended": 2 }));
    for server in [&one, &two] {
        for session in [&on_one, &on_two] {
            let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
            assert_eq!(status, 401, "{} on {}: {body}", session.token, server.base);
        }
    }
    assert!(listed(&one, "ana@example.com").await.is_empty());
    assert_eq!(
        keepalive(&one.base, Some(&bob.cookie)).await.0,
        200,
        "bob survives"
    );
    assert_eq!(keepalive(&two.base, Some(&bob.cookie)).await.0, 200);
    one.stop().await;
    two.stop().await;
}

/// Both instances see Redis as `state` (`"ok"` again only once their re-sync is done).
async fn both_see_redis(one: &TestServer, two: &TestServer, state: &str) {
    within(
        Duration::from_secs(5),
        &format!("both instances see Redis {state}"),
        || async { redis_check(one).await == state && redis_check(two).await == state },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_a_user_out_while_redis_is_down_answers_503_until_it_is_back() {
    let mut redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    let on_one = [
        login(&one, "alice", Value::Null).await,
        login(&one, "alice", Value::Null).await,
    ];
    let on_two = login(&two, "alice", Value::Null).await;
    let bob = login(&one, "bob", Value::Null).await;

    redis.kill();
    both_see_redis(&one, &two, "offline").await;
    let (status, body) = send(backend(&one, Method::DELETE, &user_path("alice"))).await;
    assert_error(
        &(status, body.clone()),
        503,
        "shared_store_offline",
        "end all offline",
    );
    assert_eq!(body["user"], "alice", "{body}");
    assert_eq!(body["ended"], 2, "the sessions this instance holds: {body}");
    for session in &on_one {
        assert_eq!(keepalive(&one.base, Some(&session.cookie)).await.0, 401);
    }
    assert_eq!(
        keepalive(&one.base, Some(&bob.cookie)).await.0,
        200,
        "bob survives"
    );
    assert!(listed(&one, "alice").await.is_empty());
    assert_eq!(
        keepalive(&two.base, Some(&on_two.cookie)).await.0,
        200,
        "held by the other instance only, out of reach: the reason for the 503"
    );
    // The caller retries: still incomplete while Redis is down, nothing left here.
    let (status, body) = send(backend(&one, Method::DELETE, &user_path("alice"))).await;
    assert_error(
        &(status, body.clone()),
        503,
        "shared_store_offline",
        "retry offline",
    );
    assert_eq!(body["ended"], 0, "{body}");

    // Redis returns (empty); once both instances re-synced, the retry reaches every session.
    redis.start_again();
    both_see_redis(&one, &two, "ok").await;
    let (status, body) = send(backend(&one, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "user": "alice", "ended": 1 }),
        "the other instance's session"
    );
    for server in [&one, &two] {
        for session in on_one.iter().chain([&on_two]) {
            let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
            assert_eq!(status, 401, "{} on {}: {body}", session.token, server.base);
        }
        assert_eq!(
            keepalive(&server.base, Some(&bob.cookie)).await.0,
            200,
            "bob survives"
        );
    }
    one.stop().await;
    two.stop().await;
}

/// "Log out everywhere" answered 200 through instance two. Instance one still holds its copy
/// of the session it created; when Redis then goes down, that copy must not sign the user back
/// in (instance one hears the logout on Redis's logout channel, or finds its marker, and ends
/// its copy). The outage comes once it has: a Redis killed while the message is still on its
/// way cannot deliver it (docs/redis.md, "What can still slip").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_everywhere_holds_on_every_instance_during_a_later_outage() {
    let mut redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    let alice = login(&one, "alice", Value::Null).await;
    let (status, body) = send(backend(&two, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 1, "{body}");
    within(
        Duration::from_secs(3),
        "instance one ends its copy",
        || async {
            metrics(&one.base)
                .await
                .contains("keepalive_redis_remote_logouts_total 1\n")
        },
    )
    .await;

    redis.kill();
    both_see_redis(&one, &two, "offline").await;
    let (status, body) = keepalive(&one.base, Some(&alice.cookie)).await;
    assert_eq!(
        status, 401,
        "a logged-out session revived by the outage: {body}"
    );
    let refused = answer(auth(&one, Method::GET, Some(&alice.cookie)).await).await;
    assert_error(
        &refused,
        401,
        "session_expired",
        "forward auth on instance one",
    );
    assert_error(
        &read(&one, &alice.token).await,
        404,
        "session_not_found",
        "backend read",
    );
    assert!(listed(&one, "alice").await.is_empty());
    one.stop().await;
    two.stop().await;
}

/// "Log out everywhere" answered 200 through instance two, then Redis restarts empty. Instance
/// one, which created the session and still holds its copy, writes every live local session
/// back: the logout must not be undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_everywhere_survives_redis_restarting_empty() {
    let mut redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    let alice = login(&one, "alice", Value::Null).await;
    // Live on instance one: the re-sync after the restart writes it back, which shows it ran.
    let control = login(&one, "bob", Value::Null).await;
    let (status, body) = send(backend(&two, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 1, "{body}");
    assert_eq!(keepalive(&two.base, Some(&alice.cookie)).await.0, 401);

    redis.restart_empty();
    let control_key = format!("keepalive:{{{}}}", control.token);
    within(Duration::from_secs(5), "instance one re-synced", || {
        let written = redis.exists(&control_key);
        let one = &one;
        async move { written && redis_check(one).await == "ok" }
    })
    .await;
    both_see_redis(&one, &two, "ok").await;
    let revived = listed(&two, "alice").await;
    assert!(revived.is_empty(), "alice signed back in: {revived:?}");
    for server in [&one, &two] {
        let (status, body) = keepalive(&server.base, Some(&alice.cookie)).await;
        assert_eq!(status, 401, "revived on {}: {body}", server.base);
    }
    assert_eq!(keepalive(&two.base, Some(&control.cookie)).await.0, 200);
    one.stop().await;
    two.stop().await;
}
