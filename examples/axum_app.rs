//! An axum application that embeds keepalive: the application signs its users in against its
//! own user table, and keepalive holds their sessions and keeps them alive.
//!
//! What it shows:
//! - [`app`] builds one router: the application's routes (`/`, `/app.js`, `/login`, `/me`,
//!   `/logout`), with keepalive's layer so that handlers can take `CurrentSession`, and behind
//!   them keepalive's own routes (`/api/v1/keepalive/`, `/api/v1/session`, `/keepalive.js`,
//!   `/livez`, `/readyz`, `/health`, `/metrics`, ...).
//! - `POST /login` checks a password, then gives the browser a keepalive session for that user
//!   (`Sessions::create_for_user` and the `Set-Cookie` of `keepalive::http::cookie::set`);
//!   `POST /logout` ends it. Both refuse requests made by other sites' pages.
//! - `GET /me` and `GET /` read the session with the extractor; the page loads
//!   `/keepalive.js`, which keeps the session alive while the user is active on it.
//! - [`main`] runs it like the standalone server: configuration from the environment (`PORT`,
//!   `KEEPALIVE_*`; `cargo run -- config` lists them), keepalive's logging, readiness, and on
//!   Ctrl-C or SIGTERM a graceful stop, then the session store flushed and closed.
//!
//! Run it (port 8080, sessions in `./data`; the demo users are `alice` / `wonderland` and
//! `bob` / `builder`):
//!
//! ```sh
//! cargo run --example axum_app
//!
//! # sign in: 200 and the session cookie
//! curl -si -c jar -H 'Content-Type: application/json' \
//!     -d '{"user":"alice","password":"wonderland"}' localhost:8080/login
//! # who am I: the user and the session's data
//! curl -s -b jar localhost:8080/me
//! # what the browser client sends each tick: extends the session, answers its expiry
//! curl -s -b jar localhost:8080/api/v1/keepalive/
//! # sign out: 204, the cookie cleared; /me then answers 401
//! curl -si -b jar -c jar -X POST localhost:8080/logout
//! curl -si -b jar localhost:8080/me
//! ```
//!
//! Or open <http://localhost:8080/> in a browser.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keepalive::cli::EXIT_CONFIG;
use keepalive::clock::rfc3339;
use keepalive::config::Config;
use keepalive::http::{ApiError, CurrentSession, cookie, csrf};
use keepalive::server::Keepalive;
use keepalive::session::{SessionError, Sessions};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

/// Largest body `POST /login` reads: a user name and a password.
const MAX_LOGIN_BODY: usize = 1024;

/// Longest time one of the application's own requests may take, so a stuck one cannot hold
/// up the graceful stop forever. keepalive's routes have their own limit
/// (`KEEPALIVE_REQUEST_TIMEOUT`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The page may load only this site's scripts: no inline code, no third party.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// What [`Users::verify`] compares an unknown user's password with, so that a wrong user
/// costs the same comparison as a wrong password.
const NO_SUCH_USER: &str = "no such user; this value is never a password";

/// One account of the application.
struct Account {
    password: String,
    display_name: String,
}

/// The application's users.
///
/// A stand-in: a real application looks its users up in its own user database, which keeps a
/// password hash (argon2id, or scrypt or bcrypt) and never the password, and checks a password
/// with the hash library's `verify`. Plain passwords in memory keep this example
/// self-contained; do not copy them.
#[derive(Default)]
struct Users(HashMap<String, Account>);

impl Users {
    /// The demo accounts named in the module documentation.
    fn demo() -> Self {
        let users = Self::default().with("alice", "wonderland", "Alice");
        users.with("bob", "builder", "Bob the Builder")
    }

    /// Adds an account. `user` must be a user id keepalive accepts (1 to 256 visible ASCII
    /// characters).
    fn with(mut self, user: &str, password: &str, display_name: &str) -> Self {
        self.0.insert(
            user.to_owned(),
            Account {
                password: password.to_owned(),
                display_name: display_name.to_owned(),
            },
        );
        self
    }

    /// The account `user` signs in to with `password`, if that is its password.
    ///
    /// The comparison takes the same time however many leading bytes are right (`subtle`), and
    /// an unknown user is compared too, so the answer's timing tells neither. (It does depend
    /// on the lengths; a real application compares hashes, whose length is fixed.)
    fn verify(&self, user: &str, password: &str) -> Option<&Account> {
        let account = self.0.get(user);
        let expected = account.map_or(NO_SUCH_USER, |a| a.password.as_str());
        let matches = bool::from(expected.as_bytes().ct_eq(password.as_bytes()));
        account.filter(|_| matches)
    }
}

/// What the application's handlers share: keepalive's sessions, the user table and the other
/// origins whose pages may sign in and out.
#[derive(Clone)]
struct AppState {
    sessions: Sessions,
    users: Arc<Users>,
    trusted_origins: Arc<[String]>,
}

/// The application's router: its own routes, keepalive's routes, and a JSON 404 for the rest.
fn app(keepalive: &Keepalive, users: Users) -> Router {
    let state = AppState {
        sessions: keepalive.sessions().clone(),
        users: Arc::new(users),
        trusted_origins: keepalive.cors_origins().into(),
    };
    Router::new()
        .route("/", get(home))
        .route("/app.js", get(script))
        .route(
            "/login",
            post(login).layer(DefaultBodyLimit::max(MAX_LOGIN_BODY)),
        )
        .route("/me", get(me))
        .route("/logout", post(logout))
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        // Answers about a user's session must not be kept by caches.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        // Lets the handlers take `CurrentSession`.
        .layer(keepalive.layer())
        // keepalive's API, browser client, probes and metrics, with their own layers.
        .merge(keepalive.router())
        .fallback(|| async { ApiError::not_found("no such page") })
}

/// The body of `POST /login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    user: String,
    password: String,
}

/// `POST /login`: checks the password and gives the browser a session for the user.
async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<Response, ApiError> {
    // Another site's page could otherwise sign the browser in to the attacker's account.
    refuse_cross_site(&app, &headers)?;
    let Json(credentials) = body.map_err(malformed)?;
    let Some(account) = app.users.verify(&credentials.user, &credentials.password) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong user or password",
        ));
    };
    // The session the browser had before, if any, ends: signing in always starts a session
    // with an id nobody else could have known (no session fixation).
    let settings = app.sessions.settings();
    if let Some(previous) = cookie::session_id(&headers, &settings.cookie_name) {
        app.sessions.end(&previous).await.map_err(session_error)?;
    }
    let data = json!({ "displayName": account.display_name }).to_string();
    let record = app
        .sessions
        .create_for_user(&credentials.user, data)
        .await
        .map_err(session_error)?;
    tracing::info!(user = ?credentials.user, "signed in");
    let answer = json!({
        "user": credentials.user,
        "displayName": account.display_name,
        "expiresAt": rfc3339(record.expires_at),
    });
    Ok((
        [(header::SET_COOKIE, cookie::set(settings, &record.id))],
        Json(answer),
    )
        .into_response())
}

/// `GET /me`: the signed-in user and their session's data; 401 without a session.
async fn me(session: CurrentSession) -> Result<Json<Value>, ApiError> {
    let Some(user) = session.user() else {
        // A session made with keepalive's own `POST /api/v1/session` belongs to nobody.
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not_signed_in",
            "this session belongs to no user: sign in with POST /login",
        ));
    };
    Ok(Json(json!({
        "user": user,
        "data": session.data(),
        "expiresAt": rfc3339(session.record().expires_at),
    })))
}

/// `POST /logout`: ends the session and clears the cookie; 204 even without one.
async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    refuse_cross_site(&app, &headers)?;
    let settings = app.sessions.settings();
    if let Some(id) = cookie::session_id(&headers, &settings.cookie_name) {
        app.sessions.end(&id).await.map_err(session_error)?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie::clear(settings))],
    )
        .into_response())
}

/// `GET /`: greets the signed-in user, or offers the sign-in form.
async fn home(session: Option<CurrentSession>) -> Response {
    let signed_in = session.as_ref().and_then(|session| {
        let user = session.user()?;
        let data = session.data();
        let name = data
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or(user);
        Some(escape(name))
    });
    let body = match signed_in {
        // keepalive.js defines `createKeepalive`, which app.js starts.
        Some(name) => format!(
            r#"<h1>Hello, {name}</h1>
<p>Your session stays alive while you use this page.</p>
<button id="logout" type="button">Sign out</button>
<script src="/keepalive.js"></script>
<script src="/app.js"></script>"#
        ),
        None => r#"<h1>Sign in</h1>
<form id="login">
  <label>User <input name="user" autocomplete="username" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>
<p id="error" hidden></p>
<script src="/app.js"></script>"#
            .to_owned(),
    };
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>axum_app</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    );
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        )],
        Html(page),
    )
        .into_response()
}

/// The page's script: signs in and out through the application's routes; while signed in,
/// runs keepalive's browser client, and shows the sign-in form again once the session ends.
const APP_JS: &str = r#""use strict";
(() => {
  const form = document.getElementById("login");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = new FormData(form);
      const answer = await fetch("/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user: fields.get("user"), password: fields.get("password") }),
      });
      if (answer.ok) {
        location.reload();
        return;
      }
      const error = document.getElementById("error");
      error.textContent = (await answer.json().catch(() => ({}))).message || "Sign-in failed";
      error.hidden = false;
    });
  }
  const logout = document.getElementById("logout");
  if (logout) {
    const client = createKeepalive();
    client.on("expired", () => location.reload());
    client.start();
    logout.addEventListener("click", async () => {
      client.stop();
      await fetch("/logout", { method: "POST" });
      location.reload();
    });
  }
})();
"#;

/// `GET /app.js`.
async fn script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        APP_JS,
    )
        .into_response()
}

/// 403 for a request another site's page made: only the application's own pages may sign
/// in or out.
fn refuse_cross_site(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    // The origins keepalive trusts (`KEEPALIVE_CORS_ORIGINS`) are the application's too.
    if csrf::is_cross_site(headers, &app.trusted_origins) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "this request comes from another site's page; sign in and out from this site's pages",
        ));
    }
    Ok(())
}

/// 400 for a body that is not `{"user": ..., "password": ...}`; 413 and 415 as axum finds them.
fn malformed(rejection: JsonRejection) -> ApiError {
    let shape = r#"expected {"user": "...", "password": "..."}"#;
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body may be at most {MAX_LOGIN_BODY} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent as application/json",
        ),
        _ => ApiError::bad_request(format!("{}; {shape}", rejection.body_text())),
    }
}

/// The answer to a failed session operation: 503 when the store failed, 500 for a user id
/// keepalive refuses (a mistake in the user table, not the client's).
fn session_error(err: SessionError) -> ApiError {
    match err {
        SessionError::InvalidUser(_) => {
            tracing::error!(error = %err, "a user of the user table is not a valid keepalive user id");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        }
        err => ApiError::store_unavailable(&err),
    }
}

/// `text` with the characters that mean something in HTML escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Loads the configuration and serves; on an error prints its whole chain and exits non-zero
/// (64 for an invalid configuration, as the standalone server does).
#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load(None) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("axum_app: {err}");
            eprintln!(
                "axum_app: `cargo run -- config` shows every setting and where it comes from"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    keepalive::logging::init(&config.log);
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("axum_app: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, starts keepalive, serves until Ctrl-C or SIGTERM, then stops keepalive.
async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; set PORT or KEEPALIVE_BIND to a free address")
    })?;
    // The address bound, which names the port the system chose for `PORT=0`.
    let addr = listener
        .local_addr()
        .context("cannot read the address listened on")?;
    let drain_delay = config.server.drain_delay;
    let keepalive = Keepalive::start(config)
        .await
        .context("cannot start keepalive")?;
    let router = app(&keepalive, Users::demo());
    tracing::info!(%addr, "listening on http://{addr}");
    keepalive.set_ready(true);
    // At the signal `/readyz` answers 503 for the drain delay, so the load balancer stops
    // sending new requests; then axum stops accepting and waits for the requests in flight
    // (each bounded by its route's timeout).
    let ready = keepalive.ready_switch();
    let stopping = async move {
        keepalive::server::shutdown_signal().await;
        ready.set(false);
        tokio::time::sleep(drain_delay).await;
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stopping)
        .await;
    // The store is closed even if serving failed, so no pending write is lost.
    let closed = keepalive.shutdown().await;
    served.context("serving HTTP failed")?;
    closed.context("cannot close the session store cleanly")?;
    tracing::info!("stopped; sessions flushed to the local store");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The application over real HTTP: keepalive started with a manual clock, the router
    //! served on a port of 127.0.0.1, cookies handled by hand so each test sees what is sent.

    use super::*;

    use keepalive::clock::{ManualClock, Millis, duration_millis};
    use keepalive::config::Layers;
    use keepalive::server::Environment;
    use reqwest::header::{COOKIE, SET_COOKIE};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    /// The manual clock's first instant.
    const START: Millis = 1_800_000_000_000;

    /// The application served on a free port, with its own data directory.
    struct TestApp {
        base: String,
        clock: ManualClock,
        idle_timeout: Duration,
        cookie_name: String,
        client: reqwest::Client,
        keepalive: Keepalive,
        stop: oneshot::Sender<()>,
        served: JoinHandle<std::io::Result<()>>,
        _dir: tempfile::TempDir,
    }

    impl TestApp {
        async fn start() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let vars = [
                ("KEEPALIVE_BIND", "127.0.0.1".to_owned()),
                ("PORT", "0".to_owned()),
                ("KEEPALIVE_DATA_DIR", dir.path().display().to_string()),
                ("KEEPALIVE_FLUSH_INTERVAL", "50ms".to_owned()),
                ("KEEPALIVE_HEALTH_INTERVAL", "50ms".to_owned()),
            ];
            let config = Layers::new(None, vars.map(|(k, v)| (k.to_owned(), v)))
                .expect("layers")
                .validate()
                .expect("valid config");
            let clock = ManualClock::new(START);
            let env = Environment {
                clock: Arc::new(clock.clone()),
                proc_root: "/".into(),
            };
            let keepalive = Keepalive::start_with(config.clone(), env)
                .await
                .expect("keepalive starts");
            let listener = TcpListener::bind(config.server.listen).await.expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let (stop, stopped) = oneshot::channel::<()>();
            let served = tokio::spawn(
                axum::serve(listener, app(&keepalive, Users::demo()))
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .into_future(),
            );
            keepalive.set_ready(true);
            let client = keepalive::outbound::client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            Self {
                base,
                clock,
                idle_timeout: config.session.idle_timeout,
                cookie_name: config.session.cookie_name,
                client,
                keepalive,
                stop,
                served,
                _dir: dir,
            }
        }

        /// Stops serving, then keepalive, and checks both stopped cleanly.
        async fn stop(self) {
            // Its idle connections would otherwise hold up the graceful stop.
            drop(self.client);
            let _ = self.stop.send(());
            let served = tokio::time::timeout(Duration::from_secs(10), self.served)
                .await
                .expect("stops serving in time");
            served.expect("server task").expect("served cleanly");
            self.keepalive
                .shutdown()
                .await
                .expect("keepalive shuts down cleanly");
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
            let mut request = self.client.get(self.url(path));
            if let Some(cookie) = cookie {
                request = request.header(COOKIE, cookie);
            }
            request.send().await.expect("GET")
        }

        async fn login(&self, user: &str, password: &str) -> reqwest::Response {
            self.client
                .post(self.url("/login"))
                .json(&json!({ "user": user, "password": password }))
                .send()
                .await
                .expect("POST /login")
        }

        async fn logout(&self, cookie: &str) -> reqwest::Response {
            self.client
                .post(self.url("/logout"))
                .header(COOKIE, cookie)
                .send()
                .await
                .expect("POST /logout")
        }

        /// Signs alice in; returns the `name=value` pair of her session cookie.
        async fn alice(&self) -> String {
            let response = self.login("alice", "wonderland").await;
            assert_eq!(response.status(), 200);
            cookie_pair(&response).expect("Set-Cookie")
        }
    }

    /// The whole `Set-Cookie` header, if any.
    fn set_cookie(response: &reqwest::Response) -> Option<String> {
        let value = response.headers().get(SET_COOKIE)?;
        Some(value.to_str().expect("ascii").to_owned())
    }

    /// The `name=value` pair of the `Set-Cookie` header, if any.
    fn cookie_pair(response: &reqwest::Response) -> Option<String> {
        set_cookie(response).map(|set| set.split(';').next().unwrap_or_default().to_owned())
    }

    async fn json_body(response: reqwest::Response) -> Value {
        response.json().await.expect("JSON body")
    }

    #[tokio::test]
    async fn sign_in_use_keepalive_and_sign_out() {
        let app = TestApp::start().await;

        let response = app.login("alice", "wonderland").await;
        assert_eq!(response.status(), 200);
        let set = set_cookie(&response).expect("Set-Cookie");
        assert!(set.starts_with(&format!("{}=", app.cookie_name)), "{set}");
        assert!(set.contains("HttpOnly"), "{set}");
        let cookie = cookie_pair(&response).expect("pair");
        let expires = rfc3339(START + duration_millis(app.idle_timeout));
        let body = json_body(response).await;
        assert_eq!(body["user"], "alice");
        assert_eq!(body["displayName"], "Alice");
        assert_eq!(body["expiresAt"], expires.as_str());

        let me = app.get("/me", Some(&cookie)).await;
        assert_eq!(me.status(), 200);
        assert_eq!(
            me.headers()
                .get(header::CACHE_CONTROL)
                .map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        let me = json_body(me).await;
        assert_eq!(me["user"], "alice");
        assert_eq!(me["data"], json!({ "displayName": "Alice" }));

        // keepalive's own routes are mounted and know the session the application created.
        let ping = app.get("/api/v1/keepalive/", Some(&cookie)).await;
        assert_eq!(ping.status(), 200);
        let ping = json_body(ping).await;
        assert_eq!(ping["session"]["expiresAt"], expires.as_str());
        assert!(ping["serverHealth"]["status"].is_string(), "{ping}");
        let session = app.get("/api/v1/session", Some(&cookie)).await;
        assert_eq!(session.status(), 200);
        let session = json_body(session).await;
        assert_eq!(session["session"]["user"], "alice");
        assert_eq!(session["session"]["data"]["displayName"], "Alice");

        let out = app.logout(&cookie).await;
        assert_eq!(out.status(), 204);
        let cleared = set_cookie(&out).expect("the cookie is cleared");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");

        let me = app.get("/me", Some(&cookie)).await;
        assert_eq!(me.status(), 401);
        assert_eq!(json_body(me).await["error"], "session_expired");
        let ping = app.get("/api/v1/keepalive/", Some(&cookie)).await;
        assert_eq!(ping.status(), 401);
        let again = app.logout(&cookie).await;
        assert_eq!(again.status(), 204, "logout is idempotent");

        app.stop().await;
    }

    #[tokio::test]
    async fn wrong_passwords_and_missing_sessions_are_refused() {
        let app = TestApp::start().await;

        for (user, password) in [
            ("alice", "builder"),
            ("alice", ""),
            ("alice", "wonderland "),
            ("nobody", "wonderland"),
            ("nobody", NO_SUCH_USER),
        ] {
            let response = app.login(user, password).await;
            assert_eq!(response.status(), 401, "{user} / {password}");
            assert!(set_cookie(&response).is_none(), "no cookie for {user}");
            assert_eq!(json_body(response).await["error"], "invalid_credentials");
        }

        let me = app.get("/me", None).await;
        assert_eq!(me.status(), 401);
        assert_eq!(json_body(me).await["error"], "session_expired");

        // An anonymous session from keepalive's own route signs nobody in.
        let anonymous = app
            .client
            .post(app.url("/api/v1/session"))
            .send()
            .await
            .expect("POST /api/v1/session");
        assert_eq!(anonymous.status(), 201);
        let cookie = cookie_pair(&anonymous).expect("Set-Cookie");
        let me = app.get("/me", Some(&cookie)).await;
        assert_eq!(me.status(), 401);
        assert_eq!(json_body(me).await["error"], "not_signed_in");

        app.stop().await;
    }

    #[tokio::test]
    async fn malformed_bodies_are_refused() {
        let app = TestApp::start().await;
        let post = |body: &'static str, content_type: &'static str| {
            app.client
                .post(app.url("/login"))
                .header(header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
        };
        for body in [
            "",
            "{",
            "[]",
            r#"{"user":"alice"}"#,
            r#"{"user":"alice","password":5}"#,
            r#"{"user":"alice","password":"wonderland","admin":true}"#,
        ] {
            let response = post(body, "application/json").await.expect("POST");
            assert_eq!(response.status(), 400, "{body}");
            assert!(set_cookie(&response).is_none());
            assert_eq!(json_body(response).await["error"], "bad_request");
        }
        let form = post("user=alice&password=wonderland", "text/plain")
            .await
            .expect("POST");
        assert_eq!(form.status(), 415);
        let large = app
            .client
            .post(app.url("/login"))
            .json(&json!({ "user": "alice", "password": "x".repeat(2 * MAX_LOGIN_BODY) }))
            .send()
            .await
            .expect("POST");
        assert_eq!(large.status(), 413);

        app.stop().await;
    }

    #[tokio::test]
    async fn other_sites_cannot_sign_in_or_out() {
        let app = TestApp::start().await;

        let cross_site = app
            .client
            .post(app.url("/login"))
            .header("sec-fetch-site", "cross-site")
            .json(&json!({ "user": "alice", "password": "wonderland" }))
            .send()
            .await
            .expect("POST /login");
        assert_eq!(cross_site.status(), 403);
        assert!(set_cookie(&cross_site).is_none());
        assert_eq!(json_body(cross_site).await["error"], "cross_site_request");
        let foreign_origin = app
            .client
            .post(app.url("/login"))
            .header(header::ORIGIN, "https://evil.example")
            .json(&json!({ "user": "alice", "password": "wonderland" }))
            .send()
            .await
            .expect("POST /login");
        assert_eq!(foreign_origin.status(), 403);

        let same_origin = app
            .client
            .post(app.url("/login"))
            .header("sec-fetch-site", "same-origin")
            .json(&json!({ "user": "alice", "password": "wonderland" }))
            .send()
            .await
            .expect("POST /login");
        assert_eq!(same_origin.status(), 200);
        let cookie = cookie_pair(&same_origin).expect("Set-Cookie");

        let forced_out = app
            .client
            .post(app.url("/logout"))
            .header(COOKIE, &cookie)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .expect("POST /logout");
        assert_eq!(forced_out.status(), 403);
        assert!(set_cookie(&forced_out).is_none());
        assert_eq!(app.get("/me", Some(&cookie)).await.status(), 200);

        app.stop().await;
    }

    #[tokio::test]
    async fn the_page_greets_the_user_or_offers_the_sign_in() {
        let app = TestApp::start().await;

        let page = app.get("/", None).await;
        assert_eq!(page.status(), 200);
        let content_type = page.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let page = page.text().await.expect("text");
        assert!(page.contains(r#"<form id="login">"#), "{page}");
        assert!(!page.contains("Hello"), "{page}");
        assert!(!page.contains("/keepalive.js"), "{page}");

        let cookie = app.alice().await;
        let page = app
            .get("/", Some(&cookie))
            .await
            .text()
            .await
            .expect("text");
        assert!(page.contains("<h1>Hello, Alice</h1>"), "{page}");
        assert!(page.contains(r#"<script src="/keepalive.js">"#), "{page}");
        assert!(!page.contains(r#"<form id="login">"#), "{page}");

        // The scripts the page loads are served: keepalive's client and the application's.
        let client = app.get("/keepalive.js", None).await;
        assert_eq!(client.status(), 200);
        assert!(
            client
                .text()
                .await
                .expect("text")
                .contains("createKeepalive")
        );
        let script = app.get("/app.js", None).await;
        assert_eq!(script.status(), 200);
        assert_eq!(
            script.headers()[header::CACHE_CONTROL].to_str().ok(),
            Some("no-cache")
        );
        assert!(
            script
                .text()
                .await
                .expect("text")
                .contains("createKeepalive()")
        );

        // Paths nobody serves get keepalive's JSON 404.
        let missing = app.get("/nowhere", None).await;
        assert_eq!(missing.status(), 404);
        assert_eq!(json_body(missing).await["error"], "not_found");

        app.stop().await;
    }

    #[tokio::test]
    async fn a_session_lives_while_used_and_expires_when_idle() {
        let app = TestApp::start().await;
        let cookie = app.alice().await;
        let almost = app.idle_timeout - Duration::from_secs(60);

        // Using the application is activity: each request extends the session.
        for _ in 0..3 {
            app.clock.advance(almost);
            let me = app.get("/me", Some(&cookie)).await;
            assert_eq!(me.status(), 200);
        }
        app.clock.advance(almost);
        let ping = app.get("/api/v1/keepalive/", Some(&cookie)).await;
        assert_eq!(ping.status(), 200);

        app.clock.advance(app.idle_timeout + Duration::from_secs(1));
        let me = app.get("/me", Some(&cookie)).await;
        assert_eq!(me.status(), 401);
        assert_eq!(json_body(me).await["error"], "session_expired");
        let page = app
            .get("/", Some(&cookie))
            .await
            .text()
            .await
            .expect("text");
        assert!(page.contains(r#"<form id="login">"#), "{page}");
        assert_eq!(
            app.get("/api/v1/keepalive/", Some(&cookie)).await.status(),
            401
        );

        app.stop().await;
    }

    #[tokio::test]
    async fn signing_in_again_replaces_the_previous_session() {
        let app = TestApp::start().await;
        let first = app.alice().await;
        let second = app
            .client
            .post(app.url("/login"))
            .header(COOKIE, &first)
            .json(&json!({ "user": "bob", "password": "builder" }))
            .send()
            .await
            .expect("POST /login");
        assert_eq!(second.status(), 200);
        let second = cookie_pair(&second).expect("Set-Cookie");
        assert_ne!(first, second);

        assert_eq!(app.get("/me", Some(&first)).await.status(), 401);
        let me = json_body(app.get("/me", Some(&second)).await).await;
        assert_eq!(me["user"], "bob");
        let page = app
            .get("/", Some(&second))
            .await
            .text()
            .await
            .expect("text");
        assert!(page.contains("Hello, Bob the Builder"), "{page}");

        app.stop().await;
    }

    #[test]
    fn passwords_are_checked_against_the_user_table() {
        let users = Users::demo();
        assert_eq!(
            users
                .verify("alice", "wonderland")
                .map(|a| a.display_name.as_str()),
            Some("Alice")
        );
        assert!(users.verify("alice", "builder").is_none());
        assert!(users.verify("alice", "wonderlan").is_none());
        assert!(users.verify("Alice", "wonderland").is_none());
        assert!(users.verify("nobody", NO_SUCH_USER).is_none());
    }

    #[test]
    fn names_are_escaped_in_the_page() {
        assert_eq!(
            escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }
}
