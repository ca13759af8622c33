//! Hostile traffic over real HTTP against the real binary: thousands of random cookies, paths,
//! methods and malformed requests. Every answer must be 2xx or 4xx, the server must stay up, a
//! flood of unknown session ids must write nothing to the store, and memory must stay bounded.
//!
//! Then the attacks of issue #18: a flood of logouts of made-up ids (nothing written to Redis
//! or the local store, and a budget per client), `X-Forwarded-For` chains that do not parse
//! through a real nginx (never exempt, never another client's budget), and cookie values a
//! sibling subdomain plants before the session's own.

use crate::harness::{Process, client, create_session, keepalive};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::header::COOKIE;

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A few thousand values drawn from a strategy, reproducibly.
fn sample<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, count: usize) -> Vec<T> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("value").current())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cookies_paths_and_methods_never_get_5xx_nor_grow_memory_or_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    let base = process.base.clone();
    let live = create_session(&base).await;
    let pid = process.child.id();
    let http = client();
    // Warm up allocator pools so the measurement below sees growth, not first use.
    for _ in 0..500 {
        let _ = http
            .get(format!("{base}/api/v1/keepalive/"))
            .header(COOKIE, "keepalive_sid=AAAAAAAAAAAAAAAAAAAAAA")
            .send()
            .await;
    }
    let before = rss_kib(pid);
    let writes_before = metric(
        &http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
        "keepalive_store_writes_total",
    );

    // Well-formed but unknown ids (each a real store lookup), and garbage of every shape.
    let ids = sample("[A-Za-z0-9_-]{22}", 2000);
    let garbage = sample("[ -~]{0,300}", 1000);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for value in ids
        .iter()
        .map(|id| format!("keepalive_sid={id}"))
        .chain(garbage.iter().cloned())
    {
        let Ok(response) = http
            .get(format!("{base}/api/v1/keepalive/"))
            .header(COOKIE, value.as_str())
            .send()
            .await
        else {
            panic!("no answer for cookie {value:?}");
        };
        *statuses.entry(response.status().as_u16()).or_default() += 1;
    }
    let paths = sample("(/[ -~&&[^?#/]]{0,30}){1,4}", 1000);
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO",
    ];
    for (i, path) in paths.iter().enumerate() {
        let encoded: String = path
            .chars()
            .map(|c| {
                if c == ' '
                    || c == '%'
                    || c == '"'
                    || c == '`'
                    || c == '\\'
                    || c == '^'
                    || c == '|'
                    || c == '{'
                    || c == '}'
                    || c == '<'
                    || c == '>'
                {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        let method =
            reqwest::Method::from_bytes(methods[i % methods.len()].as_bytes()).expect("method");
        let Ok(response) = http
            .request(method.clone(), format!("{base}{encoded}"))
            .send()
            .await
        else {
            panic!("no answer for {method} {encoded:?}");
        };
        *statuses.entry(response.status().as_u16()).or_default() += 1;
    }
    assert!(
        statuses.keys().all(|s| (200..500).contains(s)),
        "only 2xx-4xx answers: {statuses:?}"
    );

    let after = rss_kib(pid);
    let writes_after = metric(
        &http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
        "keepalive_store_writes_total",
    );
    assert_eq!(
        writes_after, writes_before,
        "unknown ids cost no store write"
    );
    assert!(
        after < before + 20 * 1024,
        "memory grew from {before} KiB to {after} KiB over 4000 hostile requests"
    );
    assert_eq!(
        keepalive(&base, Some(&live)).await.0,
        200,
        "the real session survived the flood"
    );
}

/// The status line of the server's answer to raw bytes (empty if it closed without one).
fn status_line(addr: &str, bytes: &[u8]) -> String {
    crate::harness::raw_exchange(addr, bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn malformed_requests_get_4xx_and_the_server_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    let addr = process.base.trim_start_matches("http://").to_owned();
    let cases: Vec<Vec<u8>> = vec![
        b"GET /api/v1/keepalive/ HTTP/1.1\r\nHost: x\r\nCookie: keepalive_sid=\xff\xfe\xfd\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /api/v1/keepalive/ HTTP/1.1\r\nHost: x\r\nCookie: keepalive_sid=a\r\nCookie: keepalive_sid=b\r\nCookie: \r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{\"a\":".to_vec(),
        b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n{}".to_vec(),
        b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZZ\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        b"\x00\x01\x02\x03 garbage\r\n\r\n".to_vec(),
        b"GET /api/v1/keepalive/ HTTP/1.1\r\nHost: x\r\nBad Header: spaces\r\n\r\n".to_vec(),
        b"DELETE /api/v1/session HTTP/1.1\r\nHost: x\r\nCookie: keepalive_sid=;;;===;\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    for case in &cases {
        let status = status_line(&addr, case);
        let code: Option<u16> = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok());
        assert!(
            code.is_none_or(|c| (200..500).contains(&c)),
            "{:?} got {status:?}",
            String::from_utf8_lossy(case)
        );
    }
    let live = status_line(
        &addr,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(live.starts_with("HTTP/1.1 200"), "still serving: {live}");
}

// ---- logouts of sessions that do not exist ------------------------------------------------------

/// Well-formed session ids that name no session.
fn unknown_ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            keepalive::session::SessionId::generate()
                .expect("rng")
                .to_string()
        })
        .collect()
}

/// A logout with the cookie `keepalive_sid=<id>`, as the client `forwarded_for` names (none:
/// loopback itself); returns the status.
async fn logout_as(base: &str, id: &str, forwarded_for: Option<&str>) -> u16 {
    let mut request = client()
        .delete(format!("{base}/api/v1/session"))
        .header(COOKIE, format!("keepalive_sid={id}"));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request.send().await.expect("logout").status().as_u16()
}

/// The size of the local store's file, in bytes.
fn store_file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("sessions.redb"))
        .expect("the local store's file")
        .len()
}

/// `keepalive_store_writes_total`, once the writer's next batch has had time to land.
async fn settled_store_writes(base: &str) -> f64 {
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    metric(
        &crate::harness::metrics(base).await,
        "keepalive_store_writes_total",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_logouts_of_unknown_ids_leaves_redis_and_the_local_store_as_they_were() {
    let redis = keepalive_testkit::redis::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    // A generous Redis timeout: a logout made during an outage is kept whatever it names (see
    // docs/security.md), and a loaded machine must not turn a slow answer into one.
    let process = Process::start(
        dir.path(),
        &[
            ("REDIS_URL", url.as_str()),
            ("KEEPALIVE_REDIS_TIMEOUT", "5s"),
        ],
    );
    let base = process.base.clone();
    crate::harness::within(
        std::time::Duration::from_secs(10),
        "Redis answers",
        || async { keepalive(&base, None).await.1["serverHealth"]["checks"]["redis"] == "ok" },
    )
    .await;
    let live = create_session(&base).await;
    let copy_only = create_session(&base).await;
    // Every session and logout mark (`keepalive:{<id>}...`); the store's other keys are not
    // about sessions.
    let session_keys = || redis.keys("keepalive:{*}*");
    let writes_before = settled_store_writes(&base).await;
    let keys_before = session_keys();
    assert_eq!(keys_before.len(), 2, "the two sessions: {keys_before:?}");
    let file_before = store_file_len(dir.path());

    // From loopback, which no rate limit applies to: only the logout's own cost counts.
    for id in unknown_ids(300) {
        assert_eq!(
            logout_as(&base, &id, None).await,
            204,
            "logout is idempotent"
        );
    }
    assert_eq!(
        metric(
            &crate::harness::metrics(&base).await,
            "keepalive_redis_outages_total"
        ),
        0.0,
        "Redis answered throughout"
    );
    assert_eq!(
        session_keys(),
        keys_before,
        "a logout of an unknown id leaves no key in Redis"
    );
    assert_eq!(
        settled_store_writes(&base).await,
        writes_before,
        "nor a write in the local store"
    );
    assert_eq!(store_file_len(dir.path()), file_before);

    // A real session's logout is still remembered: its mark keeps every copy out of Redis.
    assert_eq!(crate::harness::logout(&base, &live).await, 204);
    let id = live.split_once('=').expect("pair").1;
    assert!(
        redis.exists(&format!("keepalive:{{{id}}}:ended")),
        "the logout of a live session leaves its mark"
    );
    assert_eq!(keepalive(&base, Some(&live)).await.0, 401);

    // So is the logout of a session Redis lost but this instance still holds a copy of: that
    // copy could be written back by a re-sync, which the mark prevents.
    let id = copy_only.split_once('=').expect("pair").1;
    let removed: i64 = redis.query(redis::cmd("DEL").arg(format!("keepalive:{{{id}}}")), "DEL");
    assert_eq!(removed, 1);
    assert_eq!(crate::harness::logout(&base, &copy_only).await, 204);
    assert!(
        redis.exists(&format!("keepalive:{{{id}}}:ended")),
        "the logout of a session held only here leaves its mark"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_are_rate_limited_per_client_and_unknown_ids_cost_the_local_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[("KEEPALIVE_RATE_LIMIT_SESSIONS", "20")]);
    let base = process.base.clone();
    let live = create_session(&base).await;
    let writes_before = settled_store_writes(&base).await;
    for id in unknown_ids(200) {
        assert_eq!(logout_as(&base, &id, None).await, 204);
    }
    assert_eq!(
        settled_store_writes(&base).await,
        writes_before,
        "a logout of an unknown id writes nothing to the store"
    );

    // A client behind the (loopback, trusted) proxy has a budget of logouts like one of
    // creations; another client has its own.
    let ids = unknown_ids(21);
    for id in &ids[..20] {
        assert_eq!(logout_as(&base, id, Some("203.0.113.77")).await, 204);
    }
    assert_eq!(
        logout_as(&base, &ids[20], Some("203.0.113.77")).await,
        429,
        "the 21st logout in a minute is refused"
    );
    assert_eq!(logout_as(&base, &ids[20], Some("203.0.113.78")).await, 204);
    assert_eq!(keepalive(&base, Some(&live)).await.0, 200);
}

// ---- X-Forwarded-For that does not parse --------------------------------------------------------

/// A session creation through `proxy` with these `X-Forwarded-For` bytes; returns the status.
async fn create_through(proxy: &crate::harness::nginx::Nginx, forwarded: &[u8]) -> u16 {
    client()
        .post(proxy.url("/api/v1/session"))
        .header(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_bytes(forwarded).expect("header value"),
        )
        .send()
        .await
        .expect("create through nginx")
        .status()
        .as_u16()
}

/// Through the documented nginx (which appends the address it got the request from, here
/// loopback: the test plays a trusted outer proxy in front of it, naming the client in the
/// header it sends), an `X-Forwarded-For` that does not parse never makes the client exempt
/// nor lets it spend another client's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_chains_that_do_not_parse_never_exempt_a_client_nor_borrow_a_budget() {
    use crate::harness::nginx::{Nginx, port_of};

    let server = crate::harness::TestServer::start(&[("KEEPALIVE_RATE_LIMIT_SESSIONS", "3")]).await;
    let nginx = Nginx::start(port_of(&server.base), keepalive_testkit::ports::free_port());

    // One byte outside visible ASCII: the chain still has the addresses nginx appended, and
    // the client whose entry is unreadable counts under the proxy that relayed it, never as
    // loopback.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(create_through(&nginx, b"198.51.100.1\xff").await);
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 429, 429],
        "a non-ASCII X-Forwarded-For is limited"
    );

    // A proxy that appends `ip:port`: the client is that ip, not what the client wrote before.
    for _ in 0..3 {
        assert_eq!(
            create_through(&nginx, b"198.51.100.7, 203.0.113.9:4711").await,
            201
        );
    }
    assert_eq!(
        create_through(&nginx, b"198.51.100.7, 203.0.113.9:4711").await,
        429
    );
    assert_eq!(
        create_through(&nginx, b"203.0.113.9").await,
        429,
        "keyed by the address of the ip:port entry"
    );
    assert_eq!(
        create_through(&nginx, b"198.51.100.7").await,
        201,
        "the address the client wrote itself keeps its own budget"
    );

    // A proxy that appends `unknown` (or anything that is no address): the walk stops there,
    // and the client cannot name whose budget it spends.
    for _ in 0..4 {
        create_through(&nginx, b"198.51.100.8, unknown").await;
    }
    assert_eq!(
        create_through(&nginx, b"198.51.100.8").await,
        201,
        "a client behind `unknown` did not spend 198.51.100.8's budget"
    );
    assert_eq!(
        create_through(&nginx, b"198.51.100.8, unknown").await,
        429,
        "and is limited itself"
    );
    drop(nginx);
    server.stop().await;
}

// ---- cookie values planted before the session's -------------------------------------------------

/// A request with this `Cookie` header; returns the status.
async fn with_cookie(method: reqwest::Method, url: String, cookie: &str) -> u16 {
    client()
        .request(method, url)
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// A sibling subdomain can set cookies of the same name on the parent domain, which the
/// browser sends before the session's own: junk, and well-formed ids of no session. The live
/// session behind them is found, up to the documented bound of well-formed values tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_session_is_found_behind_planted_cookie_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    let base = process.base.clone();
    let live = create_session(&base).await;
    let unknown = unknown_ids(4);
    let planted = |count: usize| {
        let mut pairs = vec!["keepalive_sid=junk".to_owned(), "keepalive_sid=".to_owned()];
        pairs.extend(
            unknown[..count]
                .iter()
                .map(|id| format!("keepalive_sid={id}")),
        );
        pairs.push(live.clone());
        pairs.join("; ")
    };
    let behind_three = planted(3);
    let get = reqwest::Method::GET;
    assert_eq!(
        with_cookie(
            get.clone(),
            format!("{base}/api/v1/keepalive/"),
            &behind_three
        )
        .await,
        200,
        "the keepalive finds the session behind junk and three unknown ids"
    );
    assert_eq!(
        with_cookie(get.clone(), format!("{base}/api/v1/session"), &behind_three).await,
        200
    );
    // Forward authentication: the session is found (an anonymous one: 401 anonymous_session,
    // not session_expired).
    let auth = client()
        .get(format!("{base}/api/v1/auth"))
        .header(COOKIE, &behind_three)
        .send()
        .await
        .expect("auth");
    let body: serde_json::Value = auth.json().await.expect("json");
    assert_eq!(body["error"], "anonymous_session", "{body}");
    // Bounded work: a fifth well-formed value is not looked at.
    assert_eq!(
        with_cookie(
            get.clone(),
            format!("{base}/api/v1/keepalive/"),
            &planted(4)
        )
        .await,
        401,
        "at most four well-formed values are tried"
    );

    // Rotation and logout act on the live session, not on a planted value.
    let rotated = client()
        .post(format!("{base}/api/v1/session/rotate"))
        .header(COOKIE, &behind_three)
        .send()
        .await
        .expect("rotate");
    assert_eq!(rotated.status(), 200);
    let renewed = crate::harness::cookie_pair(&rotated);
    assert_eq!(
        keepalive(&base, Some(&live)).await.0,
        401,
        "the old id ended"
    );
    let mut pairs = vec!["keepalive_sid=junk".to_owned()];
    pairs.extend(unknown[..3].iter().map(|id| format!("keepalive_sid={id}")));
    pairs.push(renewed.clone());
    assert_eq!(
        with_cookie(
            reqwest::Method::DELETE,
            format!("{base}/api/v1/session"),
            &pairs.join("; ")
        )
        .await,
        204
    );
    assert_eq!(
        keepalive(&base, Some(&renewed)).await.0,
        401,
        "the logout ended the live session behind the planted values"
    );
}

/// The same for an Express application's signed cookie: a signed value of a session that is
/// over (a sibling can plant one it got for itself) does not hide the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_express_session_is_found_behind_a_planted_signed_cookie() {
    use keepalive::config::Secret;
    use keepalive::http::cookie::ExpressCookie;
    use keepalive::session::SessionId;

    const SECRET: &str = "the-secret-of-the-express-app-in-hostile";
    let redis = keepalive_testkit::redis::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let process = crate::express::keepalive(&redis, dir.path(), &[SECRET], &[]);
    let base = process.base.clone();
    let express_id = || {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).expect("rng");
        SessionId::from_parts(keepalive::session::IdKind::Express, &bytes).expect("id")
    };
    let (live, dead) = (express_id(), express_id());
    // The live session as express-session with connect-redis writes it.
    let json = concat!(
        r#"{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z","#,
        r#""httpOnly":true,"path":"/"},"passport":{"user":"ana"}}"#
    );
    let _: () = redis.query(
        redis::cmd("SET")
            .arg(format!("sess:{live}"))
            .arg(json)
            .arg("EX")
            .arg(3600),
        "SET",
    );
    let cookie = ExpressCookie::new(
        "connect.sid".to_owned(),
        vec![Secret::new(SECRET.to_owned())],
    );
    let header = format!(
        "connect.sid=s%3Ajunk.junk; connect.sid={}; connect.sid={}",
        cookie.value(&dead),
        cookie.value(&live)
    );
    crate::harness::within(
        std::time::Duration::from_secs(10),
        "keepalive serves the Express session",
        || async {
            with_cookie(
                reqwest::Method::GET,
                format!("{base}/api/v1/keepalive/"),
                &format!("connect.sid={}", cookie.value(&live)),
            )
            .await
                == 200
        },
    )
    .await;
    assert_eq!(
        with_cookie(
            reqwest::Method::GET,
            format!("{base}/api/v1/keepalive/"),
            &header
        )
        .await,
        200,
        "the live session behind a signed value of a session that is over"
    );
}
