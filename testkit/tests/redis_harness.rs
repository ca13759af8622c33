//! Self-test of the Redis harness (`src/redis.rs`): the servers it starts are real, its fault
//! injection really does what the Redis store tests and the benchmarks rely on, and it cleans
//! up.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use keepalive_testkit::ports::free_port;
use keepalive_testkit::redis::{RedisCluster, RedisServer};

/// Bound for every async Redis operation in these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// PING with connect, read and write timeouts of `timeout`; `Err` when there is no answer.
fn ping(url: &str, timeout: Duration) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    redis::cmd("PING").query(&mut con)
}

/// Whether a process with this pid exists (zombies included: a zombie means "not reaped").
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn free_port_is_bindable_and_not_the_shared_redis() {
    let port = free_port();
    assert_ne!(port, 6379);
    assert_ne!(free_port(), port, "ports are not handed out twice");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("free port can be bound");
}

#[test]
fn start_kill_and_restart_empty() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_ne!(port, 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/0"));
    assert_eq!(ping(&server.url(), Duration::from_secs(2)).unwrap(), "PONG");
    // Only loopback: the server reports the bind address it was given.
    let bind: Vec<String> = server.query(
        redis::cmd("CONFIG").arg("GET").arg("bind"),
        "CONFIG GET bind",
    );
    assert_eq!(bind, ["bind", "127.0.0.1"]);

    let _: () = server.query(redis::cmd("SET").arg("session:a").arg("1"), "SET");
    let first_run = server.run_id();
    assert_eq!(server.keys("session:*"), ["session:a"]);

    server.restart_empty();
    assert_eq!(server.port(), port, "restart keeps the port");
    assert_ne!(server.run_id(), first_run, "a new process");
    assert!(server.keys("*").is_empty(), "restart loses every key");

    let _: () = server.query(redis::cmd("SET").arg("session:b").arg("1"), "SET");
    let second_run = server.run_id();
    server.kill();
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    assert!(
        ping(&server.url(), Duration::from_millis(500)).is_err(),
        "nothing answers on a killed server's port"
    );
    server.start_again();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.run_id(), second_run);
    assert!(server.keys("*").is_empty());
}

#[test]
fn start_again_waits_for_a_port_held_by_someone_else() {
    let mut server = RedisServer::start();
    let port = server.port();
    server.kill();
    // Someone else listens on the port for a while; the restart must retry, not fail.
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("port free after kill");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(holder);
    });
    let started = Instant::now();
    server.start_again();
    release.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(server.port(), port);
    assert_eq!(ping(&server.url(), Duration::from_secs(2)).unwrap(), "PONG");
}

#[test]
fn data_helpers_read_what_was_written() {
    let server = RedisServer::start();
    let mut con = server.connection();
    let _: () = redis::cmd("SET")
        .arg("session:x")
        .arg(b"ada\x00\x2a".as_slice())
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg("session:x")
        .arg(60_000)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("other")
        .arg("1")
        .query(&mut con)
        .unwrap();

    assert_eq!(
        server.get("session:x").as_deref(),
        Some(&b"ada\x00\x2a"[..])
    );
    assert!(server.exists("session:x"));
    assert_eq!(server.get("missing"), None);
    assert!(!server.exists("missing"));

    let pttl = server.pttl("session:x");
    assert!((50_000..=60_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(server.pttl("other"), -1);
    assert_eq!(server.pttl("missing"), -2);

    assert_eq!(server.keys("session:*"), ["session:x"]);
    assert_eq!(server.keys("*"), ["other", "session:x"]);
    server.flushall();
    assert!(server.keys("*").is_empty());
}

#[test]
fn freeze_makes_pings_time_out_and_thaw_brings_answers_back() {
    let server = RedisServer::start();
    let url = server.url();
    server.freeze();
    let started = Instant::now();
    let frozen = ping(&url, Duration::from_millis(200));
    assert!(frozen.is_err(), "frozen server answered: {frozen:?}");
    // It failed by timing out, not by waiting for something else.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    server.thaw();
    assert_eq!(ping(&url, Duration::from_secs(2)).unwrap(), "PONG");
}

#[tokio::test]
async fn password_server_refuses_without_and_accepts_with_the_url() {
    // Characters that must be escaped in a URL, to check `url()` encodes them.
    let password = "s3cret:/@%pw";
    let server = RedisServer::start_with_password(password);
    assert_eq!(
        server.url(),
        format!(
            "redis://:s3cret%3A%2F%40%25pw@127.0.0.1:{}/0",
            server.port()
        )
    );

    // Raw RESP, so no client library can hide what the server says.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(b"GET session:a\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert!(line.starts_with("-NOAUTH"), "unauthenticated GET: {line:?}");

    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port());
    assert!(ping(&wrong, Duration::from_secs(2)).is_err());

    let client = redis::Client::open(server.url()).unwrap();
    let mut con = tokio::time::timeout(LIMIT, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("password in the URL is accepted");
    let _: () = tokio::time::timeout(
        LIMIT,
        redis::cmd("SET")
            .arg("session:a")
            .arg("v")
            .query_async(&mut con),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(server.keys("*"), ["session:a"]);

    // A restart keeps the password.
    let mut server = server;
    server.restart_empty();
    assert!(ping(&server.url(), Duration::from_secs(2)).is_ok());
    assert!(ping(&wrong, Duration::from_secs(2)).is_err());
}

#[test]
fn drop_kills_and_reaps_even_frozen_servers_and_on_panic() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    server.freeze();
    drop(server);
    assert!(
        !process_exists(pid),
        "frozen server {pid} survived its drop"
    );

    // A test that panics while owning a server.
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let server = RedisServer::start();
        tx.send(server.pid().unwrap()).unwrap();
        panic!("test failure while a redis-server runs");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(
        !process_exists(pid),
        "server {pid} survived a panicking test"
    );
}

#[tokio::test]
async fn cluster_reaches_ok_and_serves_a_cluster_client() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for node in cluster.nodes() {
        let port = node.port();
        assert!(port <= 55535, "bus port {port}+10000 must exist");
        let info: String = node.query(redis::cmd("CLUSTER").arg("INFO"), "CLUSTER INFO");
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(
            info.contains("cluster_slots_assigned:16384"),
            "{port}: {info}"
        );
    }

    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut con = tokio::time::timeout(LIMIT, client.get_async_connection())
        .await
        .expect("connect in time")
        .expect("cluster connection");
    // Keys in different slots, so more than one master has to serve them.
    let keys: Vec<String> = (0..20).map(|i| format!("session:{i}")).collect();
    for key in &keys {
        let _: () = tokio::time::timeout(
            LIMIT,
            redis::cmd("SET").arg(key).arg(key).query_async(&mut con),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for key in &keys {
        let value: String =
            tokio::time::timeout(LIMIT, redis::cmd("GET").arg(key).query_async(&mut con))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(&value, key);
    }
    let per_node: Vec<usize> = cluster
        .nodes()
        .iter()
        .map(|node| node.keys("session:*").len())
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), keys.len(), "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() > 1,
        "keys spread over the masters: {per_node:?}"
    );
}
