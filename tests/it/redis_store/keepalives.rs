//! How the Redis store carries keepalives: concurrent ones share script calls (each still
//! answered with its own session), a frozen Redis answers every waiting one within the
//! timeout, and a session key's own TTL never runs out before the session does, although a
//! keepalive moves it only once in a while. Against real `redis-server` processes the
//! harness starts on free ports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::START;
use futures_util::future::join_all;
use keepalive::clock::{Clock, ManualClock};
use keepalive::config::RedisTarget as Target;
use keepalive::metrics::Metrics;
use keepalive::session::{SessionId, SessionRecord, SessionStore};
use keepalive::store::redis::{RedisOptions, RedisStore, value};
use keepalive_testkit::redis::RedisServer;

const MIN: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(600);
const IDLE_MS: i64 = 600_000;

struct Fixture {
    redis: RedisServer,
    clock: ManualClock,
    metrics: Arc<Metrics>,
    store: RedisStore,
}

async fn fixture(timeout: Duration) -> Fixture {
    fixture_with(timeout, false).await
}

/// A store whose callers each get a connection of their own (`connection_per_thread`) or not.
async fn fixture_with(timeout: Duration, connection_per_thread: bool) -> Fixture {
    fixture_under("test:", timeout, connection_per_thread).await
}

/// A store whose keys are under `prefix`.
async fn fixture_under(prefix: &str, timeout: Duration, connection_per_thread: bool) -> Fixture {
    let redis = RedisServer::start();
    let clock = ManualClock::new(START);
    let metrics = Arc::new(Metrics::new());
    let store = RedisStore::new(
        Target::parse(&redis.url()).expect("url"),
        RedisOptions {
            prefix: prefix.to_owned(),
            timeout,
            connect_timeout: Duration::from_secs(2),
            absolute_lifetime: 12 * 60 * MIN,
            connection_per_thread,
            logout_record_cap: 100_000,
        },
        Arc::new(clock.clone()),
        metrics.clone(),
    );
    store.connect().await.expect("connect");
    Fixture {
        redis,
        clock,
        metrics,
        store,
    }
}

impl Fixture {
    async fn create(&self, absolute: Duration, data: String) -> SessionRecord {
        let record = SessionRecord::new(
            SessionId::generate().expect("rng"),
            self.clock.now(),
            IDLE,
            absolute,
            data,
        );
        self.store.create(record.clone()).await.expect("create");
        record
    }

    /// Whether a keepalive now finds the session live.
    async fn touched(&self, id: &SessionId) -> bool {
        let touched = self.store.touch(id, self.clock.now(), IDLE).await;
        touched.expect("touch").is_some()
    }

    /// Script calls that carried keepalives so far.
    fn touch_calls(&self) -> u64 {
        self.metrics
            .redis_operation_duration_seconds
            .with_label_values(&["touch"])
            .get_sample_count()
    }

    /// The session as stored, with when its key's TTL runs out (`x`), and the key's PTTL.
    fn stored(&self, id: &SessionId) -> (value::Stored, i64) {
        let key = format!("test:{{{id}}}");
        let bytes = self
            .redis
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is gone"));
        let stored = value::decode(*id, &bytes).expect("a session value");
        (stored, self.redis.pttl(&key))
    }

    /// The session's idle expiry `e`, `x`, and the key's PTTL.
    fn expiry_of(&self, id: &SessionId) -> (i64, i64, i64) {
        let (stored, pttl) = self.stored(id);
        (stored.record.expires_at, stored.ttl_until, pttl)
    }
}

#[tokio::test]
async fn concurrent_keepalives_share_calls_and_each_gets_its_own_session() {
    let f = fixture(Duration::from_secs(2)).await;
    let mut live = Vec::new();
    for n in 0..300 {
        live.push(f.create(60 * MIN, format!(r#"{{"n":{n}}}"#)).await);
    }
    let mut ended = Vec::new();
    for _ in 0..50 {
        let record = f.create(60 * MIN, "{}".to_owned()).await;
        assert!(f.store.delete(&record.id).await.expect("delete"));
        ended.push(record.id);
    }
    let unknown: Vec<SessionId> = (0..50)
        .map(|_| SessionId::generate().expect("rng"))
        .collect();
    // Interleaved, so every batch mixes live, ended and unknown sessions.
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(live[i].id);
        if i % 6 == 0 {
            ids.push(ended[i / 6]);
            ids.push(unknown[i / 6]);
        }
    }
    f.clock.advance(MIN);
    let now = f.clock.now();
    let before = f.touch_calls();
    let answers = join_all(ids.iter().map(|id| f.store.touch(id, now, IDLE))).await;
    let calls = f.touch_calls() - before;

    for (id, answer) in ids.iter().zip(answers) {
        let answer = answer.expect("touch");
        match live.iter().find(|r| r.id == *id) {
            Some(created) => {
                let touched = answer.unwrap_or_else(|| panic!("live session {id} not found"));
                assert_eq!(touched.id, *id);
                assert_eq!(touched.data, created.data, "each answer is its own session");
                assert_eq!(touched.created_at, created.created_at);
                assert_eq!(touched.last_seen_at, now);
                assert_eq!(touched.expires_at, now + IDLE_MS);
                assert_eq!(touched.absolute_expires_at, created.absolute_expires_at);
            }
            None => assert_eq!(answer, None, "ended or unknown session {id}"),
        }
    }
    assert!(
        calls <= 40,
        "{} concurrent keepalives took {calls} script calls; they should share calls",
        ids.len()
    );
    // The extensions are in Redis, as a load on its own shows.
    for record in &live {
        let loaded = f
            .store
            .load(&record.id, now)
            .await
            .expect("load")
            .expect("live");
        assert_eq!(loaded.expires_at, now + IDLE_MS);
    }
    f.store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_answers_every_waiting_keepalive_within_the_timeout() {
    let timeout = Duration::from_millis(200);
    let f = Arc::new(fixture(timeout).await);
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(f.create(60 * MIN, "{}".to_owned()).await.id);
    }
    f.redis.freeze();
    // Two waves: the second one asks while the first one's call is still on the wire, so it
    // waits behind it; it must still be answered within its own timeout, not after both.
    let wave = |ids: Vec<SessionId>| {
        let f = f.clone();
        tokio::spawn(async move {
            let now = f.clock.now();
            join_all(ids.iter().map(|id| {
                let f = f.clone();
                async move {
                    let asked = Instant::now();
                    let answer = f.store.touch(id, now, IDLE).await;
                    (answer, asked.elapsed())
                }
            }))
            .await
        })
    };
    let first = wave(ids[..50].to_vec());
    tokio::time::sleep(timeout / 2).await;
    let second = wave(ids[50..].to_vec());
    let mut slowest = Duration::ZERO;
    for (answer, took) in first
        .await
        .expect("first wave")
        .into_iter()
        .chain(second.await.expect("second wave"))
    {
        let err = answer.expect_err("a frozen Redis answers nothing");
        assert!(err.to_string().contains("timed out"), "{err}");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < timeout + Duration::from_millis(80),
        "a keepalive waited {slowest:?} with a timeout of {timeout:?}"
    );

    f.redis.thaw();
    let now = f.clock.now();
    let mut answered = None;
    for _ in 0..50 {
        if let Ok(answer) = f.store.touch(&ids[0], now, IDLE).await {
            answered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = answered.expect("keepalives answered again after SIGCONT");
    assert!(answer.is_some(), "the session survived the freeze");
    f.store.close().await.expect("close");
}

#[tokio::test]
async fn a_session_key_outlives_its_session_by_at_most_half_an_idle_timeout() {
    let f = fixture(Duration::from_secs(2)).await;
    let session = f.create(60 * MIN, "{}".to_owned()).await;
    let (e, x, pttl) = f.expiry_of(&session.id);
    assert_eq!((e, x), (START + IDLE_MS, START + IDLE_MS), "as created");
    assert!((IDLE_MS - 2_000..=IDLE_MS).contains(&pttl), "pttl {pttl}");

    // The first keepalive past the key's TTL moves it half an idle timeout further.
    f.clock.advance(MIN);
    let touched = f.store.touch(&session.id, f.clock.now(), IDLE).await;
    let now = f.clock.now();
    assert_eq!(
        touched.expect("touch").expect("live").expires_at,
        now + IDLE_MS
    );
    let (e, x, pttl) = f.expiry_of(&session.id);
    assert_eq!(e, now + IDLE_MS);
    assert_eq!(x, now + IDLE_MS * 3 / 2);
    assert!(pttl > IDLE_MS * 3 / 2 - 2_000, "pttl {pttl}");
    let moved = x;

    // The next ones, until the expiry catches up, leave it.
    for _ in 0..4 {
        f.clock.advance(MIN);
        f.store
            .touch(&session.id, f.clock.now(), IDLE)
            .await
            .expect("touch")
            .expect("live");
        let (e, x, pttl) = f.expiry_of(&session.id);
        assert_eq!(e, f.clock.now() + IDLE_MS);
        assert_eq!(
            x, moved,
            "the key's TTL stays while the expiry is behind it"
        );
        assert!(pttl > IDLE_MS * 3 / 2 - 5_000, "pttl {pttl}: not moved");
    }
    f.store.close().await.expect("close");
}

/// Keepalives at random moments: whatever their rhythm, the key's TTL always covers the
/// session's expiry and runs out at most half an idle timeout after it (or at the absolute
/// expiry), so Redis never drops a live session and always drops a dead one; and each answer
/// is exactly the session Redis then holds (the script extends it, the store extends the copy
/// it got back, by the same rule).
#[tokio::test]
async fn the_key_ttl_always_covers_the_session_whatever_the_rhythm() {
    let f = fixture(Duration::from_secs(2)).await;
    let absolute = 90 * MIN;
    let session = f.create(absolute, "{}".to_owned()).await;
    let absolute_at = session.absolute_expires_at;
    // A small linear congruential generator: reproducible steps, no dependency.
    let mut seed: u64 = 0x5eed_1234_abcd_0042;
    let mut step = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % 400_000
    };
    let mut touches = 0;
    loop {
        f.clock.advance(Duration::from_millis(step()));
        let now = f.clock.now();
        let Some(touched) = f.store.touch(&session.id, now, IDLE).await.expect("touch") else {
            assert!(
                now >= absolute_at,
                "ended early, at {now} before {absolute_at}"
            );
            break;
        };
        touches += 1;
        let (stored, pttl) = f.stored(&session.id);
        assert_eq!(stored.record, touched, "the answer is what Redis now holds");
        let (e, x) = (stored.record.expires_at, stored.ttl_until);
        assert!(
            x >= e,
            "the key's TTL ({x}) runs out before the session ({e})"
        );
        assert!(
            x <= (e + IDLE_MS / 2).max(absolute_at),
            "the key outlives its session by more than half an idle timeout: x {x}, e {e}"
        );
        // In Redis's own time, the key lasts at least as long as the session.
        assert!(
            pttl + 5_000 >= e - now,
            "pttl {pttl} shorter than the session's {} ms",
            e - now
        );
    }
    assert!(
        touches > 10,
        "only {touches} keepalives before the absolute expiry"
    );
    f.store.close().await.expect("close");
}

/// A key that holds something else than a session of this layout (a hash, another version of
/// the layout, a truncated value) fails its own keepalive as corrupt, by name; the keepalives
/// that share its script call are answered as usual, and Redis is not taken for down.
#[tokio::test]
async fn a_foreign_value_fails_only_its_own_keepalive() {
    let f = fixture(Duration::from_secs(2)).await;
    let live: Vec<SessionRecord> = futures_util::future::join_all(
        (0..60).map(|n| f.create(60 * MIN, format!(r#"{{"n":{n}}}"#))),
    )
    .await;
    let foreign: Vec<SessionId> = (0..3)
        .map(|_| SessionId::generate().expect("rng"))
        .collect();
    let mut con = f.redis.connection();
    let key = |id: &SessionId| format!("test:{{{id}}}");
    let _: () = redis::cmd("HSET")
        .arg(key(&foreign[0]))
        .arg("e")
        .arg(START + IDLE_MS)
        .query(&mut con)
        .expect("hset");
    let mut other_version = keepalive::store::redis::value::encode(&live[0], START + IDLE_MS);
    other_version[0] = 3;
    let _: () = redis::cmd("SET")
        .arg(key(&foreign[1]))
        .arg(other_version)
        .query(&mut con)
        .expect("set");
    let _: () = redis::cmd("SET")
        .arg(key(&foreign[2]))
        .arg(&[1u8, 0, 0][..])
        .query(&mut con)
        .expect("set");

    f.clock.advance(MIN);
    let now = f.clock.now();
    let mut ids: Vec<SessionId> = live.iter().map(|r| r.id).collect();
    for (n, id) in foreign.iter().enumerate() {
        ids.insert(n * 20 + 10, *id);
    }
    let before = f.touch_calls();
    let answers = join_all(ids.iter().map(|id| f.store.touch(id, now, IDLE))).await;
    assert!(f.touch_calls() - before < ids.len() as u64, "calls shared");
    for (id, answer) in ids.iter().zip(answers) {
        if foreign.contains(id) {
            let err = answer.expect_err("a foreign value is an error");
            assert!(
                matches!(err, keepalive::session::StoreError::Corrupt(_)),
                "{err:?}"
            );
            assert!(err.to_string().contains(&format!("{id:?}")), "{err}");
            assert!(
                !err.to_string().contains(&id.to_string()),
                "no whole id: {err}"
            );
        } else {
            let touched = answer.expect("touch").expect("live");
            assert_eq!(touched.expires_at, now + IDLE_MS);
        }
    }
    // A plain read of the hash (a wrong type for `GET`) is a corrupt session too, not a
    // failed Redis, so the failover store keeps Redis online.
    let err = f
        .store
        .load(&foreign[0], now)
        .await
        .expect_err("a hash is no session");
    assert!(
        matches!(err, keepalive::session::StoreError::Corrupt(_)),
        "{err:?}"
    );
    // The foreign values are left as they were.
    let hash: Vec<String> = redis::cmd("HGETALL")
        .arg(key(&foreign[0]))
        .query(&mut con)
        .expect("hgetall");
    assert_eq!(hash, ["e".to_owned(), (START + IDLE_MS).to_string()]);
    f.store.close().await.expect("close");
}

/// A session without user or data costs Redis at most 120 bytes under the default prefix, as
/// `MEMORY USAGE` counts it (key, value and the key's entry), which is what the compact layout
/// is for: layout 1's 45-byte value took 152.
#[tokio::test]
async fn a_session_key_costs_redis_at_most_120_bytes() {
    let f = fixture_under("keepalive:", Duration::from_secs(2), false).await;
    let plain = f.create(60 * MIN, String::new()).await;
    let mut with_user = SessionRecord::new(
        SessionId::generate().expect("rng"),
        f.clock.now(),
        IDLE,
        60 * MIN,
        String::new(),
    );
    with_user.user = Some("ana@example.com".to_owned());
    f.store.create(with_user.clone()).await.expect("create");
    let usage = |id: &SessionId| -> i64 {
        f.redis.query(
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(format!("keepalive:{{{id}}}")),
            "MEMORY USAGE",
        )
    };
    assert!(usage(&plain.id) <= 120, "{} bytes", usage(&plain.id));
    // A keepalive rewrites the value in place: it stays as small.
    f.clock.advance(MIN);
    assert!(f.touched(&plain.id).await);
    assert!(usage(&plain.id) <= 120, "{} bytes", usage(&plain.id));
    // The user is the value's only growth.
    assert!(
        usage(&with_user.id) <= 136,
        "{} bytes",
        usage(&with_user.id)
    );
    f.store.close().await.expect("close");
}

/// Sessions written in layout 1 (eight-byte times) before the compact layout keep working
/// to the end of their lifetime: keepalives and data updates rewrite them in their own
/// layout, a write-back weighs their activity, and a logout marks them until their absolute
/// expiry.
#[tokio::test]
async fn sessions_of_layout_1_live_on() {
    let f = fixture(Duration::from_secs(2)).await;
    let layout_1 = |record: &SessionRecord, ttl_until: i64| {
        let mut bytes = vec![value::VERSION_1];
        for n in [
            record.created_at,
            record.last_seen_at,
            record.expires_at,
            record.absolute_expires_at,
            ttl_until,
        ] {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        let user = record.user.as_deref().unwrap_or("");
        bytes.extend_from_slice(&(user.len() as u32).to_be_bytes());
        bytes.extend_from_slice(user.as_bytes());
        bytes.extend_from_slice(record.data.as_bytes());
        bytes
    };
    let now = f.clock.now();
    let old: Vec<SessionRecord> = (0..3)
        .map(|n| {
            SessionRecord::new(
                SessionId::generate().expect("rng"),
                now,
                IDLE,
                60 * MIN,
                format!(r#"{{"n":{n}}}"#),
            )
            .with_user(Some("ana".to_owned()))
        })
        .collect();
    let mut con = f.redis.connection();
    for record in &old {
        let _: () = redis::cmd("SET")
            .arg(format!("test:{{{}}}", record.id))
            .arg(layout_1(record, record.expires_at))
            .arg("PX")
            .arg(IDLE_MS)
            .query(&mut con)
            .expect("set");
    }
    let version = |id: &SessionId| f.redis.get(&format!("test:{{{id}}}")).map(|v| v[0]);

    // A keepalive at once (in place) and one past `x` (the TTL moves too).
    f.clock.advance(MIN);
    let touched = f.store.touch(&old[0].id, f.clock.now(), IDLE).await;
    let touched = touched.expect("touch").expect("live");
    assert_eq!(touched.expires_at, f.clock.now() + IDLE_MS);
    assert_eq!(touched.data, old[0].data);
    assert_eq!(touched.user.as_deref(), Some("ana"));
    let (stored, pttl) = f.stored(&old[0].id);
    assert_eq!(stored.record.expires_at, f.clock.now() + IDLE_MS);
    assert!(stored.ttl_until >= stored.record.expires_at);
    assert!(pttl > 0);
    assert_eq!(version(&old[0].id), Some(value::VERSION_1));

    // New data, the user and the times kept.
    let updated = f
        .store
        .update(&old[1].id, r#"{"cart":2}"#.to_owned(), f.clock.now())
        .await
        .expect("update")
        .expect("live");
    assert_eq!(updated.data, r#"{"cart":2}"#);
    let (stored, _) = f.stored(&old[1].id);
    assert_eq!(stored.record.data, r#"{"cart":2}"#);
    assert_eq!(stored.record.user.as_deref(), Some("ana"));
    assert_eq!(stored.record.last_seen_at, f.clock.now());
    assert_eq!(stored.record.expires_at, old[1].expires_at);
    assert_eq!(version(&old[1].id), Some(value::VERSION_1));

    // A write-back loses to Redis's newer activity, and wins over older.
    let mut stale = old[0].clone();
    stale.last_seen_at = now;
    assert!(!f.store.merge(&stale, f.clock.now()).await.expect("merge"));
    let mut newer = old[2].clone();
    f.clock.advance(MIN);
    newer.touch(f.clock.now(), IDLE);
    assert!(f.store.merge(&newer, f.clock.now()).await.expect("merge"));
    let (stored, _) = f.stored(&old[2].id);
    assert_eq!(stored.record, newer);
    assert_eq!(version(&old[2].id), Some(value::VERSION));

    // A logout leaves its marker until the absolute expiry read from layout 1.
    assert!(f.store.end(&old[0].id, f.clock.now()).await.expect("end"));
    let marker = format!("test:{{{}}}:ended", old[0].id);
    let left = f.redis.pttl(&marker);
    let until = old[0].absolute_expires_at - f.clock.now();
    assert!(left > until - 5_000 && left <= until, "{left} of {until}");
    f.store.close().await.expect("close");
}

/// Redis's `CLIENT LIST`, one line per connection, without the connection asking.
fn clients(redis: &RedisServer) -> Vec<String> {
    let list: String = redis.query(redis::cmd("CLIENT").arg("LIST"), "CLIENT LIST");
    list.lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .map(str::to_owned)
        .collect()
}

/// The `id=` of each connection in a `CLIENT LIST`.
fn client_ids(list: &[String]) -> Vec<String> {
    list.iter()
        .filter_map(|l| {
            l.split(' ')
                .find(|f| f.starts_with("id="))
                .map(str::to_owned)
        })
        .collect()
}

/// Waits, yielding to the runtime, until Redis sees `count` connections of the store, none of
/// them one of `gone`; returns their ids.
async fn connections_become(redis: &RedisServer, count: usize, gone: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = clients(redis);
        let ids = client_ids(&now);
        if now.len() == count && !ids.iter().any(|id| gone.contains(id)) {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "{count} connections expected: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asked for, on a single-threaded runtime as each HTTP event loop is, keepalives move to a
/// batcher and a Redis connection of the loop's own once it is open (in the background: the
/// first ones use the shared connection meanwhile), are answered correctly there, still within
/// the timeout when Redis freezes, and a new link brings a new connection in place of the old.
#[tokio::test(flavor = "current_thread")]
async fn a_single_threaded_runtime_gets_a_connection_of_its_own() {
    let timeout = Duration::from_millis(200);
    let f = fixture_with(timeout, true).await;
    let mut records = Vec::new();
    for n in 0..40 {
        records.push(f.create(60 * MIN, format!(r#"{{"n":{n}}}"#)).await);
    }
    assert_eq!(clients(&f.redis).len(), 1, "the shared connection only");
    let now = f.clock.now();
    assert!(f.touched(&records[0].id).await);
    let first = connections_become(&f.redis, 2, &[]).await;

    // A read goes over the shared connection, the keepalives over the loop's: each
    // connection's last command tells which carried what.
    f.store.load(&records[0].id, now).await.expect("load");
    f.clock.advance(MIN);
    let now = f.clock.now();
    let answers = join_all(records.iter().map(|r| f.store.touch(&r.id, now, IDLE))).await;
    for (record, answer) in records.iter().zip(answers) {
        let touched = answer.expect("touch").expect("live");
        assert_eq!(touched.id, record.id);
        assert_eq!(touched.data, record.data);
        assert_eq!(touched.expires_at, now + IDLE_MS);
    }
    let list = clients(&f.redis);
    assert_eq!(
        list.iter().filter(|l| l.contains(" cmd=get ")).count(),
        1,
        "{list:#?}"
    );
    assert_eq!(
        list.iter().filter(|l| l.contains(" cmd=evalsha ")).count(),
        1,
        "{list:#?}"
    );

    f.redis.freeze();
    let asked = Instant::now();
    let answers = join_all(records.iter().map(|r| f.store.touch(&r.id, now, IDLE))).await;
    let took = asked.elapsed();
    f.redis.thaw();
    for answer in answers {
        let err = answer.expect_err("a frozen Redis answers nothing");
        assert!(err.to_string().contains("timed out"), "{err}");
    }
    assert!(
        took < timeout + Duration::from_millis(80),
        "keepalives waited {took:?} with a timeout of {timeout:?}"
    );

    // A new link (what the failover store does after an outage): the loop opens a new
    // connection and lets the old one go, so two new ones remain.
    f.store.disconnect();
    f.store.connect().await.expect("reconnect");
    assert!(f.touched(&records[1].id).await);
    connections_become(&f.redis, 2, &first).await;
    assert!(f.touched(&records[2].id).await);
    f.store.close().await.expect("close");
}

/// Not asked for, a single-threaded runtime (an application's own, a `#[tokio::test]`) opens
/// no connection of its own: every keepalive goes over the shared one.
#[tokio::test(flavor = "current_thread")]
async fn without_the_choice_no_thread_opens_a_connection() {
    let f = fixture(Duration::from_secs(2)).await;
    let records: Vec<SessionRecord> =
        join_all((0..20).map(|_| f.create(60 * MIN, String::new()))).await;
    for round in 0..3 {
        f.clock.advance(MIN);
        let now = f.clock.now();
        let answers = join_all(records.iter().map(|r| f.store.touch(&r.id, now, IDLE))).await;
        for answer in answers {
            assert!(answer.expect("touch").is_some(), "round {round}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(clients(&f.redis).len(), 1, "{:#?}", clients(&f.redis));
    f.store.close().await.expect("close");
}
