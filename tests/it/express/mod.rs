//! The drop-in for an Express application: keepalive serving the sessions of a real Express
//! application (`tests/express/app.mjs`: express, express-session, connect-redis and node-redis
//! from the npm registry, pinned in its package.json, installed by `scripts/test.sh`) over a
//! real `redis-server`, as the real binary, on the application's own signed cookie.

mod behind_nginx;
mod drop_in;
mod outage;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keepalive_testkit::process::spawn_tied_to_process;
use keepalive_testkit::redis::RedisServer;
use nix::sys::signal::Signal;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::harness::{Process, client};

/// The application's secret before a rotation, and the one after.
pub const OLD_SECRET: &str = "the-old-secret-of-the-express-app";
pub const NEW_SECRET: &str = "the-new-secret-of-the-express-app";
/// The sessions' `maxAge`: an hour, as the application configures it.
pub const MAX_AGE_MS: i64 = 3_600_000;

/// The Express application, as a child process on a free port of 127.0.0.1.
pub struct ExpressApp {
    child: Child,
    pub base: String,
    /// Kept while it runs: threads drain its output into them.
    _output: (mpsc::Receiver<String>, mpsc::Receiver<String>),
}

fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl ExpressApp {
    /// The application over `redis`, signing with `secrets` (the first signs), with `extra`
    /// settings (`ROLLING`, `KEEPALIVE_URL`, ...). Returns once it listens.
    pub fn start(redis: &RedisServer, secrets: &[&str], extra: &[(&str, &str)]) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/express");
        assert!(
            std::path::Path::new(dir).join("node_modules").exists(),
            "tests/express has no node_modules: run scripts/test.sh, which runs npm ci there"
        );
        let mut command = Command::new("node");
        command
            .arg("app.mjs")
            .current_dir(dir)
            .env("PORT", "0")
            .env("REDIS_URL", redis.url())
            .env("SESSION_SECRETS", json!(secrets).to_string())
            .env("MAX_AGE_MS", MAX_AGE_MS.to_string())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tied_to_process(command, Signal::SIGKILL).expect("node (Node.js)");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        let line = stdout
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let said: Vec<String> = stderr.try_iter().collect();
                panic!("the Express application did not start: {}", said.join("\n"))
            });
        let port = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _output: (stdout, stderr),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs `user` in with a cart; returns the session cookie (`connect.sid=...`).
    pub async fn login(&self, user: &str) -> String {
        self.sign_in(json!({ "user": user, "cart": ["a", "b"] }))
            .await
    }

    /// Signs `user` in with a session of its own lifetime (the "remember me" box).
    pub async fn login_for(&self, user: &str, max_age_ms: i64) -> String {
        self.sign_in(json!({ "user": user, "cart": ["a", "b"], "maxAgeMs": max_age_ms }))
            .await
    }

    /// The application changes the lifetime of `cookie`'s session, and saves it.
    pub async fn set_max_age(&self, cookie: &str, max_age_ms: i64) {
        let response = client()
            .post(self.url("/max-age"))
            .header(COOKIE, cookie)
            .json(&json!({ "maxAgeMs": max_age_ms }))
            .send()
            .await
            .expect("max-age");
        assert_eq!(response.status(), 204);
    }

    async fn sign_in(&self, body: Value) -> String {
        let response = client()
            .post(self.url("/login"))
            .json(&body)
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200);
        let cookie = set_cookie_pair(&response).expect("the login sets the cookie");
        // express-session saves the session while the body is on its way: the headers come
        // first, so only the whole answer means the session is in Redis.
        response.bytes().await.expect("the login's body");
        cookie
    }

    /// The application's own keepalive route with `cookie`: status and `Set-Cookie`, once the
    /// whole answer has arrived (express-session touches the session in Redis between sending
    /// the headers and the last byte of the body).
    pub async fn own_keepalive(&self, cookie: &str) -> (u16, Option<String>) {
        let response = client()
            .get(self.url("/api/v1/keepalive/"))
            .header(COOKIE, cookie)
            .send()
            .await
            .expect("the app's keepalive");
        let status = response.status().as_u16();
        let set = response
            .headers()
            .get(SET_COOKIE)
            .map(|v| v.to_str().expect("ascii").to_owned());
        response.bytes().await.expect("the app's keepalive body");
        (status, set)
    }

    /// Signs `cookie`'s user out (`req.session.destroy()`); returns the status.
    pub async fn logout(&self, cookie: &str) -> u16 {
        let response = client()
            .post(self.url("/logout"))
            .header(COOKIE, cookie)
            .send()
            .await
            .expect("logout");
        response.status().as_u16()
    }

    /// `GET /me` with `cookie`: status and body.
    pub async fn me(&self, cookie: &str) -> (u16, Value) {
        let response = client()
            .get(self.url("/me"))
            .header(COOKIE, cookie)
            .send()
            .await
            .expect("me");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }
}

impl Drop for ExpressApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `name=value` of a response's `Set-Cookie`, if it has one.
pub fn set_cookie_pair(response: &reqwest::Response) -> Option<String> {
    let set = response.headers().get(SET_COOKIE)?.to_str().ok()?;
    Some(set.split(';').next()?.to_owned())
}

/// keepalive serving the application's sessions from `redis`, verifying with `secrets`.
pub fn keepalive(
    redis: &RedisServer,
    dir: &std::path::Path,
    secrets: &[&str],
    extra: &[(&str, &str)],
) -> Process {
    let secrets = json!(secrets).to_string();
    let url = redis.url();
    let mut vars = vec![
        ("REDIS_URL", url.as_str()),
        ("KEEPALIVE_SESSION_FORMAT", "express"),
        ("KEEPALIVE_EXPRESS_SECRETS", secrets.as_str()),
        ("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms"),
        ("KEEPALIVE_REDIS_BACKOFF_MAX", "200ms"),
    ];
    vars.extend_from_slice(extra);
    Process::start(dir, &vars)
}

/// A keepalive with `cookie` on `base`: status, `Set-Cookie` and body.
pub async fn ping(base: &str, cookie: &str) -> (u16, Option<String>, Value) {
    let response = client()
        .get(format!("{base}/api/v1/keepalive/"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("keepalive");
    let status = response.status().as_u16();
    let set = response
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, set, response.json().await.expect("json"))
}

/// The Redis key of the session a `connect.sid=s%3A<id>.<signature>` cookie names.
pub fn session_key(cookie: &str) -> String {
    let value = cookie.split_once('=').expect("pair").1;
    let signed = value.strip_prefix("s%3A").expect("signed cookie");
    let id = signed.rsplit_once('.').expect("signature").0;
    format!("sess:{id}")
}

/// The Unix time in ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}
