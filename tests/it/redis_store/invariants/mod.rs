//! Session invariants under Redis faults (issue #18), over real HTTP and real `redis-server`
//! processes the harness starts on free ports:
//!
//! - a session live in Redis when an outage begins is live during it on every path, past the
//!   expiry it was created with (which the purge must not go by either);
//! - a session that expired is never revived, neither by the outage nor by the re-sync;
//! - a logout that races a rotation of the same session ends both ids, everywhere;
//! - a Redis that loses its data without restarting (`FLUSHALL`, eviction under `maxmemory`) is
//!   answered like one restarted empty, not with a mass logout;
//! - an instance that crashed serves at once, and what it writes back in the background holds
//!   to the same rules.

mod crash;
mod data_loss;
mod outage;
mod rotation;

use std::path::Path;
use std::time::Duration;

use crate::harness::{
    Process, START, TestServer, client, create_session, keepalive, metrics, within,
};
use keepalive::session::SessionId;
use keepalive::store::redis::value;
use keepalive_testkit::redis::RedisServer;
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

/// The backend API's bearer token.
const TOKEN: &str = "backend-api-test-token-0123456789abcdef";
const MIN: Duration = Duration::from_secs(60);

/// An instance on `url` with the backend API on, and `vars`.
async fn start(url: &str, vars: &[(&str, &str)]) -> TestServer {
    let mut all = vec![("REDIS_URL", url), ("KEEPALIVE_BACKEND_TOKEN", TOKEN)];
    all.extend_from_slice(vars);
    let server = TestServer::start(&all).await;
    sees_redis(&server, "ok").await;
    server
}

/// What a keepalive answer says of Redis (one without a session costs the store nothing).
async fn redis_state(server: &TestServer) -> String {
    let (_, body) = keepalive(&server.base, None).await;
    body["serverHealth"]["checks"]["redis"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `server` reports Redis as `state` (`ok` only once its re-sync is done).
async fn sees_redis(server: &TestServer, state: &str) {
    within(
        Duration::from_secs(5),
        &format!("{} sees redis {state}", server.base),
        || async { redis_state(server).await == state },
    )
    .await;
}

/// Moves the clocks of every instance (they share Redis, so they share the time).
fn advance(servers: &[&TestServer], by: Duration) {
    for server in servers {
        server.clock.advance(by);
    }
}

/// The test clocks' time, `after` past their start.
fn at(after: Duration) -> i64 {
    START + after.as_millis() as i64
}

/// A session handed to a browser: its token and the `name=value` pair it sends.
#[derive(Clone)]
struct Session {
    token: String,
    cookie: String,
}

impl Session {
    fn key(&self) -> String {
        format!("keepalive:{{{}}}", self.token)
    }

    fn marker(&self) -> String {
        format!("{}:ended", self.key())
    }
}

fn backend(server: &TestServer, method: Method, path: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, server.url(path))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
}

async fn status_and_body(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A session from `POST /api/v1/session`, as a browser creates one.
async fn browser_session(server: &TestServer) -> Session {
    session_at(&server.base).await
}

/// A session from `POST /api/v1/session` at `base` (a test server or a process).
async fn session_at(base: &str) -> Session {
    let cookie = create_session(base).await;
    let token = cookie.split_once('=').expect("pair").1.to_owned();
    Session { token, cookie }
}

/// SIGKILLs `process`, starts the binary again on the same data directory, and waits until it
/// sees Redis (its first re-sync done).
async fn crash_and_restart(process: Process, dir: &Path, vars: &[(&str, &str)]) -> Process {
    process.signal(nix::sys::signal::Signal::SIGKILL);
    drop(process);
    let process = Process::start(dir, vars);
    within(
        Duration::from_secs(5),
        "the restarted instance sees Redis",
        || async {
            keepalive(&process.base, None).await.1["serverHealth"]["checks"]["redis"] == "ok"
        },
    )
    .await;
    process
}

/// Waits until every listed key is in Redis.
async fn all_in_redis(
    redis: &RedisServer,
    keys: &[String],
    limit: Duration,
    what: &str,
) -> Duration {
    within(limit, what, || {
        let missing = keys.iter().filter(|k| !redis.exists(k)).count();
        async move { missing == 0 }
    })
    .await
}

fn session_path(session: &Session) -> String {
    format!("/api/v1/backend/sessions/{}", session.token)
}

/// `POST .../rotate` through the backend API: the status, and the new session on 200.
async fn backend_rotate(server: &TestServer, session: &Session) -> (u16, Option<Session>) {
    let path = format!("{}/rotate", session_path(session));
    let (status, body) = status_and_body(backend(server, Method::POST, &path)).await;
    let rotated = body["token"].as_str().map(|token| Session {
        token: token.to_owned(),
        cookie: format!("keepalive_sid={token}"),
    });
    (status, rotated)
}

/// A session the application's login creates for `user` through the backend API.
async fn login(server: &TestServer, user: &str) -> Session {
    let (status, body) = status_and_body(
        backend(server, Method::POST, "/api/v1/backend/sessions").json(&json!({ "user": user })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    Session {
        cookie: format!("keepalive_sid={token}"),
        token,
    }
}

async fn kept_alive(server: &TestServer, session: &Session) -> u16 {
    keepalive(&server.base, Some(&session.cookie)).await.0
}

/// A keepalive of `session` at `base` (a test server or a process): its status.
async fn kept_alive_at(base: &str, session: &Session) -> u16 {
    keepalive(base, Some(&session.cookie)).await.0
}

/// The session as Redis holds it now, if it does.
fn in_redis(redis: &RedisServer, session: &Session) -> Option<value::Stored> {
    let id = SessionId::parse(&session.token).expect("token");
    redis
        .get(&session.key())
        .map(|bytes| value::decode(id, &bytes).expect("a session value"))
}

/// How many local copies `server` ended after another instance's logout.
async fn remote_logouts(server: &TestServer) -> u64 {
    let text = metrics(&server.base).await;
    text.lines()
        .find_map(|l| l.strip_prefix("keepalive_redis_remote_logouts_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("keepalive_redis_remote_logouts_total")
}

/// Every one of `sessions` is gone from Redis and answered 401 by every instance.
async fn ended_everywhere(
    redis: &RedisServer,
    servers: &[&TestServer],
    sessions: &[Session],
    case: &str,
) {
    for session in sessions {
        for server in servers {
            assert_eq!(
                kept_alive(server, session).await,
                401,
                "{case}: {} on {}",
                session.token,
                server.base
            );
        }
        assert!(
            !redis.exists(&session.key()),
            "{case}: {} in redis",
            session.token
        );
    }
}

/// Whether `server` answers the keepalive of `session` as one it cannot judge: 503
/// `shared_store_offline`, which the client retries.
async fn undecided(server: &TestServer, session: &Session) -> bool {
    let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
    status == 503 && body["error"] == "shared_store_offline"
}
