//! Limits and protections over real HTTP: header size and count (431), slow clients, the
//! connection bound and its per-client share, per-client rate limits behind trusted proxies
//! (429), the `__Host-` cookie, CORS, the metrics token and the security headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{TestServer, client, cookie_pair};
use reqwest::header::{COOKIE, SET_COOKIE};

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

fn raw(server: &TestServer, request: &[u8]) -> String {
    crate::harness::raw_exchange(&addr(server), request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_headers_get_431() {
    let server = TestServer::start(&[]).await;
    let big = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let answer = tokio::task::spawn_blocking({
        let server_addr = addr(&server);
        move || crate::harness::raw_exchange(&server_addr, big.as_bytes())
    })
    .await
    .expect("task");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    let mut many = String::from("GET /livez HTTP/1.1\r\nHost: x\r\n");
    for i in 0..80 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(&server, many.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    let fine = raw(
        &server,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine:.80}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_others_are_served() {
    let server = TestServer::start(&[("KEEPALIVE_HEADER_READ_TIMEOUT", "300ms")]).await;
    let server_addr = addr(&server);
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(server_addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .expect("write");
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap_or(0);
        (
            started.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        )
    });
    let response = client()
        .get(server.url("/livez"))
        .send()
        .await
        .expect("livez");
    assert_eq!(response.status(), 200, "other clients are served meanwhile");
    let (waited, answer) = slow.await.expect("task");
    assert!(waited < Duration::from_secs(3), "cut off after {waited:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:.80}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_wait_their_turn() {
    let server = TestServer::start(&[
        ("KEEPALIVE_MAX_CONNECTIONS", "2"),
        ("KEEPALIVE_HEADER_READ_TIMEOUT", "30s"),
    ])
    .await;
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr(&server)).expect("connect"))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quick = keepalive::outbound::client_builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    assert!(
        quick.get(server.url("/livez")).send().await.is_err(),
        "a third connection waits"
    );
    drop(idle);
    let mut served = false;
    for _ in 0..40 {
        if quick
            .get(server.url("/livez"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "served once a slot frees up");
    server.stop().await;
}

#[tokio::test]
async fn session_creation_is_rate_limited_per_client_behind_the_proxy() {
    let server = TestServer::start(&[
        ("KEEPALIVE_RATE_LIMIT_SESSIONS", "3"),
        ("KEEPALIVE_RATE_LIMIT_KEEPALIVE", "5"),
    ])
    .await;
    // The test talks from 127.0.0.1, a trusted proxy by default: the client is the address the
    // proxy appended, not whatever the client put first.
    let create = |xff: &'static str| {
        client()
            .post(server.url("/api/v1/session"))
            .header("x-forwarded-for", xff)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            create("6.6.6.6, 203.0.113.5")
                .await
                .expect("create")
                .status(),
            201
        );
    }
    let refused = create("7.7.7.7, 203.0.113.5").await.expect("create");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    let other = create("203.0.113.6").await.expect("create");
    assert_eq!(other.status(), 201, "another client has its own budget");

    let cookie = cookie_pair(&other);
    let ping = || {
        client()
            .get(server.url("/api/v1/keepalive/"))
            .header(COOKIE, &cookie)
            .header("x-forwarded-for", "198.51.100.1")
            .send()
    };
    for _ in 0..5 {
        assert_eq!(ping().await.expect("ping").status(), 200);
    }
    assert_eq!(ping().await.expect("ping").status(), 429);
    // Loopback itself (health checks, sidecars) is never limited.
    for _ in 0..10 {
        assert_eq!(
            client()
                .get(server.url("/api/v1/keepalive/"))
                .header(COOKIE, &cookie)
                .send()
                .await
                .expect("ping")
                .status(),
            200
        );
    }
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"keepalive_rate_limited_total{route="/api/v1/session"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn secure_cookies_carry_the_host_prefix() {
    let server = TestServer::start(&[
        ("KEEPALIVE_ENV", "production"),
        ("KEEPALIVE_DRAIN_DELAY", "0s"),
    ])
    .await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .send()
        .await
        .expect("create");
    let set = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(set.starts_with("__Host-keepalive_sid="), "{set}");
    assert!(
        set.contains("Secure") && set.contains("Path=/") && !set.contains("Domain"),
        "{set}"
    );
    let cookie = cookie_pair(&response);
    let ok = client()
        .get(server.url("/api/v1/keepalive/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("ping");
    assert_eq!(ok.status(), 200);
    let bare = cookie.replacen("__Host-", "", 1);
    let refused = client()
        .get(server.url("/api/v1/keepalive/"))
        .header(COOKIE, &bare)
        .send()
        .await
        .expect("ping");
    assert_eq!(
        refused.status(),
        401,
        "the unprefixed name is not the session cookie"
    );
    server.stop().await;
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let server = TestServer::start(&[]).await;
    let response = client()
        .get(server.url("/api/v1/keepalive/"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop().await;

    let server = TestServer::start(&[(
        "KEEPALIVE_CORS_ORIGINS",
        "https://app.example, https://admin.example",
    )])
    .await;
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/api/v1/session"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = preflight("https://evil.example").await.expect("preflight");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let token = "metrics-token-0123456789";
    let server = TestServer::start(&[("KEEPALIVE_METRICS_TOKEN", token)]).await;
    let anonymous = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = client()
        .get(server.url("/metrics"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .expect("metrics");
    assert_eq!(wrong.status(), 401);
    let ok = client()
        .get(server.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics");
    assert_eq!(ok.status(), 200);
    assert!(
        ok.text()
            .await
            .expect("text")
            .contains("keepalive_build_info")
    );
    server.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let server = TestServer::start(&[]).await;
    for path in ["/", "/livez", "/health", "/nope", "/api/v1/keepalive/"] {
        let response = client()
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert_eq!(
            response.headers()["referrer-policy"],
            "no-referrer",
            "{path}"
        );
    }
    server.stop().await;
}

/// Idle connections from `from` to `server`, as a client that opens sockets and sends nothing.
async fn idle_from(server: &TestServer, from: [u8; 4], count: usize) -> Vec<tokio::net::TcpStream> {
    let target: std::net::SocketAddr = addr(server).parse().expect("server address");
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((std::net::Ipv4Addr::from(from), 0).into())
            .expect("bind a loopback address");
        sockets.push(socket.connect(target).await.expect("connect"));
    }
    sockets
}

/// Whether the server closed `socket` within `wait` (a read returns end of file).
async fn closed_within(socket: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, socket.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// One address opening every connection slot with idle sockets (each may wait up to the
/// header timeout) gets only its own share; another client is served meanwhile. The trusted
/// proxy (here 127.0.0.1, through which every client would come) is not bound per address.
/// Linux routes all of 127.0.0.0/8 to loopback, so the test's clients bind 127.0.0.2 and
/// 127.0.0.3 before connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_connection_slot() {
    let server = TestServer::start(&[
        ("KEEPALIVE_MAX_CONNECTIONS", "24"),
        ("KEEPALIVE_MAX_CONNECTIONS_PER_CLIENT", "6"),
        ("KEEPALIVE_HEADER_READ_TIMEOUT", "30s"),
        ("KEEPALIVE_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let mut hog = idle_from(&server, [127, 0, 0, 2], 24).await;
    let proxy = idle_from(&server, [127, 0, 0, 1], 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let other = keepalive::outbound::client_builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let answer = other.get(server.url("/livez")).send().await;
    assert!(
        answer.as_ref().is_ok_and(|r| r.status() == 200),
        "another client is served while one holds idle connections: {answer:?}"
    );

    // The hog keeps six connections; the others were closed at once.
    let mut closed = 0;
    for socket in &mut hog {
        if closed_within(socket, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        24 - 6,
        "connections beyond the per-client bound are closed"
    );
    drop(hog);
    // The proxy's ten are all still open: it is not bound per address.
    for mut socket in proxy {
        assert!(
            !closed_within(&mut socket, Duration::from_millis(20)).await,
            "a trusted proxy's connection stays open"
        );
    }
    server.stop().await;
}
