//! The HTTP worker threads over real HTTP: connections spread over every loop and stay on
//! theirs, a shutdown waits for in-flight requests on every loop and for the threads to end,
//! and a server dropped before that aborts its connections and stops its threads.
//!
//! Each test counts the process's `http-loop-*` threads, so they run one at a time
//! (nextest gives each test a process of its own; `cargo test` shares one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use keepalive::config::ConnectionLimits as Limits;
use keepalive::http::serve;
use keepalive::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn limits() -> Limits {
    Limits {
        max_connections: 100,
        max_connections_per_client: 0,
        header_read_timeout: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
        max_headers: 64,
    }
}

/// The event-loop threads of this process, as the kernel names them.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("http-loop-"))
        .count()
}

/// Waits for the loops' threads to leave `/proc`: `serve` joined them before it returned, and
/// the kernel drops a joined thread's entry a moment later.
async fn threads_gone() {
    crate::harness::within(Duration::from_secs(1), "the loops' threads end", || async {
        worker_threads() == 0
    })
    .await;
}

/// Starts `serve` with `workers` loops; returns its address, the trigger of its shutdown and
/// its task.
async fn start(
    router: Router,
    workers: usize,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        router,
        limits(),
        &[],
        workers,
        Arc::new(Metrics::new()),
        async move {
            let _ = stopped.await;
        },
    ));
    (base, stop, task)
}

/// Triggers the shutdown and waits for `serve` to return, which it must do cleanly.
async fn shut_down(stop: oneshot::Sender<()>, task: tokio::task::JoinHandle<std::io::Result<()>>) {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("task")
        .expect("served");
}

/// A client with a connection of its own, kept alive between its requests.
fn own_connection() -> reqwest::Client {
    keepalive::outbound::client_builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_every_loop_and_each_stays_on_its_own() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let router = Router::new().route(
        "/thread",
        get(|| async { std::thread::current().name().unwrap_or("?").to_owned() }),
    );
    let (base, stop, task) = start(router, 3).await;
    let url = format!("{base}/thread");

    // Six connections, opened one after the other and kept open: two on each loop.
    let clients: Vec<reqwest::Client> = (0..6).map(|_| own_connection()).collect();
    let mut first = Vec::new();
    for client in &clients {
        let name = client.get(&url).send().await.expect("get");
        first.push(name.text().await.expect("body"));
    }
    let mut per_loop = BTreeMap::new();
    for name in &first {
        *per_loop.entry(name.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        per_loop,
        BTreeMap::from([
            ("http-loop-0".to_owned(), 2),
            ("http-loop-1".to_owned(), 2),
            ("http-loop-2".to_owned(), 2),
        ]),
        "the least busy loop takes each new connection"
    );
    // Later requests of a connection are served by the same loop.
    for _ in 0..3 {
        for (client, name) in clients.iter().zip(&first) {
            let again = client.get(&url).send().await.expect("get");
            assert_eq!(&again.text().await.expect("body"), name);
        }
    }
    assert_eq!(worker_threads(), 3);

    drop(clients);
    shut_down(stop, task).await;
    threads_gone().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_lets_every_loop_finish_its_requests_then_ends_the_threads() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (started, mut reached) = mpsc::unbounded_channel::<()>();
    // Blocking work a request left running (as a store write of an aborted request would):
    // its loop's runtime waits for it before the thread ends.
    let left_behind = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        "/slow",
        get({
            let left_behind = Arc::clone(&left_behind);
            move || {
                let started = started.clone();
                let left_behind = Arc::clone(&left_behind);
                async move {
                    let _ = started.send(());
                    tokio::task::spawn_blocking(move || {
                        std::thread::sleep(Duration::from_millis(600));
                        left_behind.fetch_add(1, Ordering::SeqCst);
                    });
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    "done"
                }
            }
        }),
    );
    let (base, stop, task) = start(router, 2).await;

    let requests: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{base}/slow");
            tokio::spawn(async move { own_connection().get(url).send().await })
        })
        .collect();
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(5), reached.recv())
            .await
            .expect("each request reaches its handler");
    }
    let asked = Instant::now();
    shut_down(stop, task).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "serve waited for the requests in flight"
    );
    assert_eq!(
        left_behind.load(Ordering::SeqCst),
        4,
        "serve returns once its threads, and their blocking work, have ended"
    );
    threads_gone().await;
    for request in requests {
        let response = request.await.expect("task").expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dropped_mid_request_closes_its_connections_and_stops_its_threads() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (started, mut reached) = mpsc::unbounded_channel::<()>();
    let router = Router::new().route(
        "/hang",
        get(move || {
            let started = started.clone();
            async move {
                let _ = started.send(());
                std::future::pending::<()>().await;
            }
        }),
    );
    let (base, _stop, task) = start(router, 2).await;
    let request =
        tokio::spawn(async move { own_connection().get(format!("{base}/hang")).send().await });
    tokio::time::timeout(Duration::from_secs(5), reached.recv())
        .await
        .expect("the request reaches its handler");
    assert_eq!(worker_threads(), 2);

    // What the server does when in-flight requests outlive the shutdown timeout.
    task.abort();
    let answer = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the client hears at once")
        .expect("task");
    assert!(answer.is_err(), "the connection is closed, not answered");
    threads_gone().await;
}
