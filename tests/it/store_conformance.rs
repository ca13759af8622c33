//! One conformance suite for the `SessionStore` trait, run against every store: the local
//! store, Redis, Redis through a sentinel, a three-master Redis Cluster, and the failover store
//! (online and offline).

use std::sync::Arc;
use std::time::Duration;

use crate::harness::START;
use futures_util::StreamExt;
use keepalive::clock::{Clock, ManualClock};
use keepalive::config::RedisTarget as Target;
use keepalive::metrics::Metrics;
use keepalive::session::{SessionId, SessionRecord, SessionStore, SharedStoreState, StoreError};
use keepalive::store::failover::{Ended, FailoverOptions, FailoverStore};
use keepalive::store::local::{CACHE_BYTES, LocalStore, LocalStoreOptions};
use keepalive::store::redis::{RedisOptions, RedisStore};
use keepalive_testkit::redis::{RedisCluster, RedisSentinel, RedisServer};

const MIN: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(600);

fn record(clock: &ManualClock, absolute: Duration) -> SessionRecord {
    SessionRecord::new(
        SessionId::generate().expect("rng"),
        clock.now(),
        IDLE,
        absolute,
        r#"{"user":"zoé","n":1}"#.to_owned(),
    )
}

/// What a store answers for an id it never held: `None`, or, for the failover store while
/// Redis is offline, "cannot tell" (another instance may hold the session).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unknown {
    None,
    Undecided,
}

impl Unknown {
    /// Checks a read of an id the store never held.
    #[track_caller]
    fn check<T: std::fmt::Debug>(self, answer: Result<Option<T>, StoreError>) {
        match (self, answer) {
            (Self::None, Ok(None)) | (Self::Undecided, Err(StoreError::Undecided)) => {}
            (expected, answer) => panic!("an unknown id: {answer:?}, expected {expected:?}"),
        }
    }
}

/// Every store must behave the same way on these.
async fn conformance(store: &dyn SessionStore, clock: &ManualClock, unknown_ids: Unknown) {
    // Create, then load the same record.
    let a = record(clock, 60 * MIN);
    store.create(a.clone()).await.expect("create");
    assert_eq!(
        store.load(&a.id, clock.now()).await.expect("load"),
        Some(a.clone()),
        "load after create"
    );

    // Touch extends from now and is visible to a load.
    clock.advance(4 * MIN);
    let touched = store
        .touch(&a.id, clock.now(), IDLE)
        .await
        .expect("touch")
        .expect("live");
    assert_eq!(touched.expires_at, clock.now() + 600_000);
    assert_eq!(touched.last_seen_at, clock.now());
    assert_eq!(touched.created_at, a.created_at);
    assert_eq!(touched.data, a.data);
    assert_eq!(
        store.load(&a.id, clock.now()).await.expect("load"),
        Some(touched.clone())
    );

    // Unknown ids.
    let unknown = SessionId::generate().expect("rng");
    unknown_ids.check(store.load(&unknown, clock.now()).await);
    unknown_ids.check(store.touch(&unknown, clock.now(), IDLE).await);
    assert!(!store.delete(&unknown).await.expect("delete unknown"));

    // Idle expiry.
    let b = record(clock, 60 * MIN);
    store.create(b.clone()).await.expect("create");
    clock.advance(10 * MIN);
    assert_eq!(
        store.load(&b.id, clock.now()).await.expect("load"),
        None,
        "idle session expired"
    );
    assert_eq!(
        store.touch(&b.id, clock.now(), IDLE).await.expect("touch"),
        None
    );

    // Absolute lifetime caps every extension.
    let c = record(clock, 15 * MIN);
    store.create(c.clone()).await.expect("create");
    clock.advance(9 * MIN);
    let t = store
        .touch(&c.id, clock.now(), IDLE)
        .await
        .expect("touch")
        .expect("live");
    assert_eq!(t.expires_at, c.absolute_expires_at);
    clock.advance(6 * MIN);
    assert_eq!(
        store.touch(&c.id, clock.now(), IDLE).await.expect("touch"),
        None,
        "absolute lifetime reached"
    );

    // A caller whose clock runs behind (another instance) never moves a session back.
    let s = record(clock, 60 * MIN);
    store.create(s.clone()).await.expect("create");
    clock.advance(2 * MIN);
    let ahead = store
        .touch(&s.id, clock.now(), IDLE)
        .await
        .expect("touch")
        .expect("live");
    let behind = clock.now() - 60_000;
    let late = store
        .touch(&s.id, behind, IDLE)
        .await
        .expect("touch")
        .expect("live");
    assert_eq!(
        (late.expires_at, late.last_seen_at),
        (ahead.expires_at, ahead.last_seen_at),
        "neither expiry nor last activity goes back"
    );

    // Delete is final.
    let d = record(clock, 60 * MIN);
    store.create(d.clone()).await.expect("create");
    assert!(store.delete(&d.id).await.expect("delete"));
    assert_eq!(store.load(&d.id, clock.now()).await.expect("load"), None);
    assert_eq!(
        store.touch(&d.id, clock.now(), IDLE).await.expect("touch"),
        None
    );
    assert!(!store.delete(&d.id).await.expect("delete again"));

    // Rotation: the same session under a new id, the old id dead.
    let e = record(clock, 60 * MIN);
    store.create(e.clone()).await.expect("create");
    let new_id = SessionId::generate().expect("rng");
    let rotated = store
        .rotate(&e.id, new_id, clock.now())
        .await
        .expect("rotate")
        .expect("live");
    assert_eq!(rotated.id, new_id);
    assert_eq!(
        (
            rotated.created_at,
            rotated.expires_at,
            rotated.absolute_expires_at,
            &rotated.data
        ),
        (e.created_at, e.expires_at, e.absolute_expires_at, &e.data)
    );
    assert_eq!(
        store.load(&e.id, clock.now()).await.expect("load"),
        None,
        "the old id is dead"
    );
    assert_eq!(
        store.touch(&e.id, clock.now(), IDLE).await.expect("touch"),
        None
    );
    assert_eq!(
        store.load(&new_id, clock.now()).await.expect("load"),
        Some(rotated.clone())
    );
    assert!(
        store
            .touch(&new_id, clock.now(), IDLE)
            .await
            .expect("touch")
            .is_some()
    );
    let unknown_new = SessionId::generate().expect("rng");
    assert_eq!(
        store
            .rotate(&e.id, unknown_new, clock.now())
            .await
            .expect("rotate"),
        None,
        "a dead id cannot be rotated"
    );
    unknown_ids.check(store.load(&unknown_new, clock.now()).await);

    // Empty data and many sessions.
    let mut many = Vec::new();
    for _ in 0..50 {
        let mut r = record(clock, 60 * MIN);
        r.data = String::new();
        store.create(r.clone()).await.expect("create");
        many.push(r);
    }
    for r in &many {
        assert_eq!(
            store.load(&r.id, clock.now()).await.expect("load"),
            Some(r.clone())
        );
    }

    users(store, clock, unknown_ids).await;
    store.flush().await.expect("flush");
}

/// Sessions created for users: listed per user, data replaced, rotation keeps the user.
async fn users(store: &dyn SessionStore, clock: &ManualClock, unknown_ids: Unknown) {
    let for_user = |user: &str| record(clock, 60 * MIN).with_user(Some(user.to_owned()));
    let first = for_user("alice@example.com");
    store.create(first.clone()).await.expect("create");
    clock.advance(Duration::from_millis(5));
    let second = for_user("alice@example.com");
    store.create(second.clone()).await.expect("create");
    let bob = for_user("bob");
    store.create(bob.clone()).await.expect("create");
    let anonymous = record(clock, 60 * MIN);
    store.create(anonymous.clone()).await.expect("create");

    let listed = store
        .list_user("alice@example.com", clock.now())
        .await
        .expect("list");
    assert_eq!(listed, vec![first.clone(), second.clone()], "oldest first");
    assert_eq!(
        store.list_user("bob", clock.now()).await.expect("list"),
        vec![bob.clone()]
    );
    assert!(
        store
            .list_user("nobody", clock.now())
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .load(&first.id, clock.now())
            .await
            .expect("load")
            .and_then(|r| r.user),
        Some("alice@example.com".to_owned())
    );

    // Replacing the data: activity without extension.
    clock.advance(MIN);
    let updated = store
        .update(&first.id, r#"{"role":"admin"}"#.to_owned(), clock.now())
        .await
        .expect("update")
        .expect("live");
    assert_eq!(updated.data, r#"{"role":"admin"}"#);
    assert_eq!(updated.last_seen_at, clock.now());
    assert_eq!(updated.expires_at, first.expires_at);
    assert_eq!(updated.user, first.user);
    assert_eq!(
        store.load(&first.id, clock.now()).await.expect("load"),
        Some(updated.clone())
    );
    let unknown = SessionId::generate().expect("rng");
    unknown_ids.check(store.update(&unknown, String::new(), clock.now()).await);

    // An ended session leaves the list; a rotated one is listed under its new id.
    assert!(store.delete(&second.id).await.expect("delete"));
    let new_id = SessionId::generate().expect("rng");
    let rotated = store
        .rotate(&first.id, new_id, clock.now())
        .await
        .expect("rotate")
        .expect("live");
    assert_eq!(rotated.user.as_deref(), Some("alice@example.com"));
    let listed = store
        .list_user("alice@example.com", clock.now())
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![new_id]
    );
    assert_eq!(listed[0].data, r#"{"role":"admin"}"#);

    // Expired sessions are not listed, and cannot be updated.
    clock.advance(IDLE);
    assert!(
        store
            .list_user("alice@example.com", clock.now())
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .list_user("bob", clock.now())
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .update(&bob.id, String::new(), clock.now())
            .await
            .expect("update"),
        None
    );
}

/// Every logout is published on the logout channel, where a subscriber (another instance)
/// hears it. Ends one more session, so it runs after any count of markers.
async fn logouts_are_published(store: &RedisStore, clock: &ManualClock) {
    let mut heard = store.subscribe_ended().await.expect("subscribe to logouts");
    let ended = record(clock, 60 * MIN);
    store.create(ended.clone()).await.expect("create");
    assert!(store.end(&ended.id, clock.now()).await.expect("end"));
    // Earlier logouts of the suite may still be on their way (in a cluster, another node
    // relays them over the cluster bus a little later): only this session's id counts.
    let id = ended.id;
    let heard_it = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = heard.next().await {
            if message == Ended::Session(id) {
                return true;
            }
        }
        false
    })
    .await
    .expect("the logout is heard within 5 s");
    assert!(
        heard_it,
        "the subscription ended before the logout was heard"
    );
    // Written back twice (a re-sync after the instance missed nothing), it is not announced
    // again: the marker says every instance heard it.
    assert!(!store.end(&ended.id, clock.now()).await.expect("end again"));
    let again = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(message) = heard.next().await {
            if message == Ended::Session(id) {
                return;
            }
        }
        // The subscription ended: no second message came.
        std::future::pending::<()>().await;
    })
    .await;
    assert!(again.is_err(), "a second message for {id}");
}

/// "Log out everywhere" is recorded in Redis before the user's sessions are read: a copy of a
/// session of that user created by then, kept by an instance that could not reach Redis and
/// written back afterwards, is refused and its logout marked, while one created later is
/// written back. In a cluster the time and the user's set share a slot, but for a user id
/// that begins with `}` (an empty hash tag), where two round trips keep the same order.
async fn a_user_logged_out_everywhere_is_not_written_back(store: &RedisStore, clock: &ManualClock) {
    for user in ["carol", "}carol"] {
        logged_out_everywhere(store, clock, user).await;
    }
}

async fn logged_out_everywhere(store: &RedisStore, clock: &ManualClock, user: &str) {
    let for_carol = || record(clock, 60 * MIN).with_user(Some(user.to_owned()));
    let listed = for_carol();
    store.create(listed.clone()).await.expect("create");
    // Kept by an offline instance: Redis never held it.
    let offline = for_carol();
    clock.advance(Duration::from_millis(5));
    let ids = store
        .mark_user_ended(user, clock.now())
        .await
        .expect("log out everywhere");
    assert_eq!(ids, vec![listed.id], "the set as the logout read it");
    clock.advance(Duration::from_millis(5));
    let later = for_carol();

    assert!(
        !store.merge(&offline, clock.now()).await.expect("merge"),
        "a copy of a session created before the logout is refused"
    );
    assert!(
        store.is_ended(&offline.id).await.expect("mark"),
        "its logout is marked"
    );
    assert_eq!(
        store.load(&offline.id, clock.now()).await.expect("load"),
        None
    );
    assert!(store.merge(&later, clock.now()).await.expect("merge"));
    let listed_now = store.list_user(user, clock.now()).await.expect("list");
    assert_eq!(
        listed_now.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![listed.id, later.id],
        "the script only records and lists (the failover ends what it lists)"
    );
    // A second, earlier time (another instance's clock a little behind) does not move it back.
    store
        .mark_user_ended(user, offline.created_at - 1)
        .await
        .expect("log out everywhere again");
    let mut between = for_carol();
    between.created_at = offline.created_at;
    assert!(
        !store.merge(&between, clock.now()).await.expect("merge"),
        "created after the earlier time, before the later one"
    );
}

fn local_options() -> LocalStoreOptions {
    LocalStoreOptions {
        cache_bytes: CACHE_BYTES,
        flush_interval: Duration::from_millis(50),
        purge_interval: Duration::from_secs(3600),
        times_in_memory: true,
        fine_expiry_order: false,
    }
}

fn redis_options() -> RedisOptions {
    RedisOptions {
        connection_per_thread: false,
        prefix: "test:".to_owned(),
        timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        absolute_lifetime: 12 * 60 * MIN,
        logout_record_cap: 100_000,
    }
}

async fn local(dir: &std::path::Path, clock: &ManualClock) -> LocalStore {
    LocalStore::open(
        dir,
        local_options(),
        Arc::new(clock.clone()),
        Arc::new(Metrics::new()),
    )
    .await
    .expect("local store")
}

fn redis_store(target: Target, clock: &ManualClock) -> RedisStore {
    RedisStore::new(
        target,
        redis_options(),
        Arc::new(clock.clone()),
        Arc::new(Metrics::new()),
    )
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let store = local(dir.path(), &clock).await;
    conformance(&store, &clock, Unknown::None).await;
    store.close().await.expect("close");
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(START);
    let store = redis_store(Target::parse(&redis.url()).expect("url"), &clock);
    store.connect().await.expect("connect");
    conformance(&store, &clock, Unknown::None).await;
    // Sessions are keys whose TTL follows the idle expiry, under the documented prefix. The
    // pattern also matches the logout markers (TTL: the absolute lifetime), which are left out.
    let keys: Vec<String> = redis
        .keys("test:{*}")
        .into_iter()
        .filter(|k| !k.ends_with(":ended"))
        .collect();
    assert!(!keys.is_empty());
    let ttl = redis.pttl(&keys[0]);
    // The idle timeout (10 min), or up to half of it later (see docs/redis.md, Keys).
    assert!(
        ttl > 0 && ttl <= 900_000,
        "each session key carries its own TTL: {ttl}"
    );
    let ended = redis.keys("test:{*}:ended");
    assert_eq!(
        ended.len(),
        5,
        "one logout marker per ended id (the unknown one, the deleted ones, the rotated-away ones): {ended:?}"
    );
    logouts_are_published(&store, &clock).await;
    a_user_logged_out_everywhere_is_not_written_back(&store, &clock).await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_conforms() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let target =
        Target::parse(&format!("redis+cluster://{}", hosts.join(","))).expect("cluster url");
    let clock = ManualClock::new(START);
    let store = redis_store(target, &clock);
    store.connect().await.expect("connect to the cluster");
    conformance(&store, &clock, Unknown::None).await;
    // Sessions spread over the three masters.
    let per_node: Vec<usize> = cluster
        .nodes()
        .iter()
        .map(|n| n.keys("test:{*}").len())
        .collect();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "sessions spread over the masters: {per_node:?}"
    );
    logouts_are_published(&store, &clock).await;
    a_user_logged_out_everywhere_is_not_written_back(&store, &clock).await;
    store.close().await.expect("close");
}

#[tokio::test]
async fn failover_store_conforms_while_redis_answers() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let store = FailoverStore::start(
        redis_store(Target::parse(&redis.url()).expect("url"), &clock),
        local(dir.path(), &clock).await,
        FailoverOptions {
            probe_interval: Duration::from_millis(100),
            backoff_max: Duration::from_millis(200),
            absolute_lifetime: 12 * 60 * MIN,
            write_back_rate: 0,
            mirror_max_sessions: 0,
        },
        Arc::new(clock.clone()),
        Arc::new(Metrics::new()),
    )
    .await;
    assert_eq!(store.status().state(), SharedStoreState::Ok);
    conformance(&store, &clock, Unknown::None).await;
    assert_eq!(store.status().state(), SharedStoreState::Ok);
    store.close().await.expect("close");
}

#[tokio::test]
async fn failover_store_conforms_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let store = FailoverStore::start(
        redis_store(Target::parse(&url).expect("url"), &clock),
        local(dir.path(), &clock).await,
        FailoverOptions {
            probe_interval: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            absolute_lifetime: 12 * 60 * MIN,
            write_back_rate: 0,
            mirror_max_sessions: 0,
        },
        Arc::new(clock.clone()),
        Arc::new(Metrics::new()),
    )
    .await;
    assert_eq!(store.status().state(), SharedStoreState::Offline);
    conformance(&store, &clock, Unknown::Undecided).await;
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_through_sentinel_conforms() {
    let master = RedisServer::start_with_password("sentinel-s3cret");
    let sentinel = tokio::task::spawn_blocking({
        let port = master.port();
        move || RedisSentinel::start(port)
    })
    .await
    .expect("sentinel");
    let target = Target::parse(&format!(
        "redis+sentinel://:sentinel-s3cret@127.0.0.1:{}/mymaster/0",
        sentinel.port
    ))
    .expect("sentinel url");
    let clock = ManualClock::new(START);
    let store = redis_store(target, &clock);
    store.connect().await.expect("connect through the sentinel");
    conformance(&store, &clock, Unknown::None).await;
    assert!(
        !master.keys("test:{*}").is_empty(),
        "sessions reached the master the sentinel named"
    );
    logouts_are_published(&store, &clock).await;
    store.close().await.expect("close");
}
