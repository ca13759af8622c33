use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;

const MIN: Duration = Duration::from_secs(60);
const START: Millis = 1_700_000_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            clock: ManualClock::new(START),
        }
    }

    async fn open(&self) -> LocalStore {
        LocalStore::open(
            self.dir.path(),
            LocalStoreOptions {
                flush_interval: Duration::from_millis(50),
                purge_interval: Duration::from_secs(3600),
            },
            Arc::new(self.clock.clone()),
            Arc::new(Metrics::new()),
        )
        .await
        .expect("opens")
    }

    fn record(&self, idle: Duration) -> SessionRecord {
        SessionRecord::new(
            SessionId::generate().expect("rng"),
            self.clock.now(),
            idle,
            60 * MIN,
            r#"{"user":"ana"}"#.to_owned(),
        )
    }
}

#[tokio::test]
async fn created_sessions_survive_reopening() {
    let f = Fixture::new();
    let record = f.record(10 * MIN);
    {
        let store = f.open().await;
        store.create(record.clone()).await.expect("create");
        store.close().await.expect("close");
    }
    let store = f.open().await;
    assert_eq!(
        store.load(&record.id, f.clock.now()).await.expect("load"),
        Some(record)
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn touch_extends_and_the_extension_is_persisted() {
    let f = Fixture::new();
    let store = f.open().await;
    let record = f.record(10 * MIN);
    store.create(record.clone()).await.expect("create");
    f.clock.advance(5 * MIN);
    let touched = store
        .touch(&record.id, f.clock.now(), 10 * MIN)
        .await
        .expect("touch")
        .expect("live");
    assert_eq!(touched.expires_at, f.clock.now() + 600_000);
    store.close().await.expect("close");
    drop(store);

    let store = f.open().await;
    let loaded = store
        .load(&record.id, f.clock.now())
        .await
        .expect("load")
        .expect("live");
    assert_eq!(loaded.expires_at, touched.expires_at);
    store.close().await.expect("close");
}

#[tokio::test]
async fn expired_sessions_are_neither_loaded_nor_extended() {
    let f = Fixture::new();
    let store = f.open().await;
    let record = f.record(10 * MIN);
    store.create(record.clone()).await.expect("create");
    f.clock.advance(10 * MIN);
    assert_eq!(
        store.load(&record.id, f.clock.now()).await.expect("load"),
        None
    );
    assert_eq!(
        store
            .touch(&record.id, f.clock.now(), 10 * MIN)
            .await
            .expect("touch"),
        None
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn delete_is_durable_and_final() {
    let f = Fixture::new();
    let record = f.record(10 * MIN);
    {
        let store = f.open().await;
        store.create(record.clone()).await.expect("create");
        assert!(store.delete(&record.id).await.expect("delete"));
        assert!(!store.delete(&record.id).await.expect("delete again"));
        assert_eq!(
            store
                .touch(&record.id, f.clock.now(), 10 * MIN)
                .await
                .expect("touch"),
            None
        );
        store.close().await.expect("close");
    }
    let store = f.open().await;
    assert_eq!(
        store.load(&record.id, f.clock.now()).await.expect("load"),
        None
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_keepalive_racing_a_logout_never_resurrects_the_session() {
    let f = Fixture::new();
    let store = Arc::new(f.open().await);
    for _ in 0..50 {
        let record = f.record(10 * MIN);
        store.create(record.clone()).await.expect("create");
        let toucher = {
            let store = Arc::clone(&store);
            let now = f.clock.now();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let _ = store.touch(&record.id, now, 10 * MIN).await;
                    tokio::task::yield_now().await;
                }
            })
        };
        store.delete(&record.id).await.expect("delete");
        toucher.await.expect("toucher");
        assert_eq!(
            store.load(&record.id, f.clock.now()).await.expect("load"),
            None
        );
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn purge_removes_only_the_expired() {
    let f = Fixture::new();
    let store = f.open().await;
    let short: Vec<_> = (0..300).map(|_| f.record(2 * MIN)).collect();
    let long: Vec<_> = (0..20).map(|_| f.record(30 * MIN)).collect();
    for r in short.iter().chain(&long) {
        store.create(r.clone()).await.expect("create");
    }
    // One short session is kept alive past the others' expiry: the purge must spare it.
    f.clock.advance(90 * Duration::from_secs(1));
    store
        .touch(&short[0].id, f.clock.now(), 2 * MIN)
        .await
        .expect("touch")
        .expect("live");
    // The others expired at 2 min; the purge finds them within the minute after (the expiry
    // index counts in one-minute buckets). The touched one lives until 3.5 min.
    f.clock.advance(90 * Duration::from_secs(1));

    assert_eq!(store.count().await.expect("count"), 320);
    assert_eq!(store.purge_expired().await.expect("purge"), 299);
    assert_eq!(store.count().await.expect("count"), 21);
    assert_eq!(
        store.purge_expired().await.expect("purge"),
        0,
        "nothing left to purge"
    );
    assert!(
        store
            .load(&short[0].id, f.clock.now())
            .await
            .expect("load")
            .is_some()
    );
    assert!(
        store
            .load(&long[0].id, f.clock.now())
            .await
            .expect("load")
            .is_some()
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn extensions_are_batched_not_flushed_one_by_one() {
    let f = Fixture::new();
    let metrics = Arc::new(Metrics::new());
    let store = LocalStore::open(
        f.dir.path(),
        LocalStoreOptions {
            flush_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(3600),
        },
        Arc::new(f.clock.clone()),
        Arc::clone(&metrics),
    )
    .await
    .expect("opens");
    let records: Vec<_> = (0..10).map(|_| f.record(10 * MIN)).collect();
    for r in &records {
        store.create(r.clone()).await.expect("create");
    }
    let commits_before = metrics.store_flush_seconds.get_sample_count();
    for _ in 0..20 {
        for r in &records {
            store
                .touch(&r.id, f.clock.now(), 10 * MIN)
                .await
                .expect("touch")
                .expect("live");
        }
    }
    let commits_after = metrics.store_flush_seconds.get_sample_count();
    assert!(
        commits_after - commits_before <= 1,
        "200 keepalives cost {} commits",
        commits_after - commits_before
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused_clearly() {
    let f = Fixture::new();
    let store = f.open().await;
    let second = LocalStore::open(
        f.dir.path(),
        LocalStoreOptions {
            flush_interval: Duration::from_millis(50),
            purge_interval: Duration::from_secs(60),
        },
        Arc::new(f.clock.clone()),
        Arc::new(Metrics::new()),
    )
    .await;
    let err = second.err().expect("refused").to_string();
    assert!(err.contains("already in use"), "{err}");
    store.close().await.expect("close");
}

#[tokio::test]
async fn closed_store_refuses_work() {
    let f = Fixture::new();
    let store = f.open().await;
    store.close().await.expect("close");
    let err = store.create(f.record(MIN)).await.unwrap_err();
    assert!(matches!(err, StoreError::Closed));
}

#[tokio::test]
async fn in_an_outage_sessions_seen_before_it_get_one_idle_timeout_of_grace() {
    let f = Fixture::new();
    let store = f.open().await;
    let idle = 10 * MIN;
    let a = f.record(idle);
    let b = f.record(idle);
    store.create(a.clone()).await.expect("create");
    store.create(b.clone()).await.expect("create");
    f.clock.advance(5 * MIN);
    let outage_began = f.clock.now();
    let c = f.record(idle);
    store
        .create(c.clone())
        .await
        .expect("create during the outage");

    // 12 minutes after creation: a's and b's copies expired at 10, but another instance may
    // have kept them alive until 15 at the latest (outage start + idle timeout).
    f.clock.advance(7 * MIN);
    let touched = store
        .touch_in_outage(&a.id, f.clock.now(), idle, outage_began)
        .expect("touch");
    assert_eq!(
        touched.map(|r| r.expires_at),
        Some(f.clock.now() + 600_000),
        "accepted within the grace"
    );

    // c was seen here during the outage: no other instance knows better, the normal rule holds.
    f.clock.advance(4 * MIN);
    assert_eq!(
        store
            .touch_in_outage(&c.id, f.clock.now(), idle, outage_began)
            .expect("touch"),
        None
    );

    // 16 minutes: the grace is over for b, which nobody kept alive here.
    assert_eq!(
        store
            .touch_in_outage(&b.id, f.clock.now(), idle, outage_began)
            .expect("touch"),
        None
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn recorded_logouts_last_until_their_time_and_survive_reopening() {
    let f = Fixture::new();
    let ended_here = f.record(10 * MIN);
    let copy = f.record(10 * MIN);
    let unknown = SessionId::generate().expect("rng");
    {
        let store = f.open().await;
        store.create(ended_here.clone()).await.expect("create");
        store.mirror(copy.clone()).expect("mirror");
        let now = f.clock.now();
        store
            .remember_end(&ended_here.id, now, now + 30 * 60_000)
            .expect("remember");
        // Another instance ended the session this one holds a copy of; an id it never held
        // leaves nothing behind.
        assert!(store.ended_elsewhere(&copy.id, now).expect("heard"));
        assert!(!store.ended_elsewhere(&unknown, now).expect("heard"));
        for id in [&ended_here.id, &copy.id] {
            assert_eq!(store.get_any(id).expect("get"), None, "ended at once");
        }
        store.close().await.expect("close");
    }
    let store = f.open().await;
    let mut ended = store.ended_since(None).await.expect("ended");
    ended.sort();
    let mut want = vec![ended_here.id, copy.id];
    want.sort();
    assert_eq!(
        ended, want,
        "both logouts are on disk, the unknown id is not"
    );
    assert_eq!(
        store
            .ended_since(Some(f.clock.now() + 1))
            .await
            .expect("ended"),
        Vec::<SessionId>::new(),
        "none since a later instant"
    );
    // The copy's logout is kept until its absolute expiry (60 min), the other one 30 min.
    f.clock.advance(31 * MIN);
    store.purge_expired().await.expect("purge");
    assert_eq!(store.ended_since(None).await.expect("ended"), vec![copy.id]);
    f.clock.advance(30 * MIN);
    store.purge_expired().await.expect("purge");
    assert!(store.ended_since(None).await.expect("ended").is_empty());
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_session_extended_across_index_buckets_is_purged_once_expired() {
    let f = Fixture::new();
    let store = f.open().await;
    let record = f.record(2 * MIN);
    store.create(record.clone()).await.expect("create");
    // Twenty seconds apart for five minutes: the expiry crosses several one-minute buckets,
    // each write reaching the disk (the purge flushes first).
    for _ in 0..15 {
        f.clock.advance(Duration::from_secs(20));
        store
            .touch(&record.id, f.clock.now(), 2 * MIN)
            .await
            .expect("touch")
            .expect("live");
        assert_eq!(store.purge_expired().await.expect("purge"), 0, "alive");
    }
    f.clock.advance(2 * MIN);
    assert!(
        store
            .load(&record.id, f.clock.now())
            .await
            .expect("load")
            .is_none(),
        "expired"
    );
    f.clock.advance(MIN);
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert_eq!(store.count().await.expect("count"), 0);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_file_indexed_by_exact_expiries_is_indexed_again_at_open() {
    let f = Fixture::new();
    let record = f.record(2 * MIN);
    {
        let store = f.open().await;
        store.create(record.clone()).await.expect("create");
        store.close().await.expect("close");
    }
    // The first layout: exact expiries in the index, no `meta` table.
    {
        let db = redb::Database::create(f.dir.path().join(FILE_NAME)).expect("open");
        let txn = db.begin_write().expect("write");
        txn.delete_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .expect("drop meta");
        txn.delete_table(redb::TableDefinition::<(u64, [u8; 16]), ()>::new("expiry"))
            .expect("drop expiry");
        {
            let mut expiry = txn
                .open_table(redb::TableDefinition::<(u64, [u8; 16]), ()>::new("expiry"))
                .expect("expiry");
            let exact = u64::try_from(record.expires_at).expect("positive");
            expiry
                .insert((exact, *record.id.as_bytes()), ())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = f.open().await;
    // Extended within its bucket: a write that leaves the index alone, which would strand
    // the session had the old entry been kept.
    f.clock.advance(Duration::from_secs(1));
    store
        .touch(&record.id, f.clock.now(), 2 * MIN)
        .await
        .expect("touch")
        .expect("live");
    // A purge when the old entry's time has come and the session still lives: it takes the
    // old entry; only a rebuilt index still finds the session later.
    f.clock.advance(2 * MIN - Duration::from_secs(1));
    assert_eq!(store.purge_expired().await.expect("purge"), 0, "alive");
    f.clock.advance(4 * MIN);
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert_eq!(store.count().await.expect("count"), 0);
    store.close().await.expect("close");
}

#[tokio::test]
async fn the_mirrors_expiry_follows_mirror_forget_and_purge() {
    let f = Fixture::new();
    let store = f.open().await;
    let record = f.record(2 * MIN);
    let expiry = || store.expires_at_of(&record.id).expect("expiry");
    // Mirrored, then on disk: its expiry is answered.
    let mirrored = |copy: &SessionRecord| {
        store.mirror(copy.clone()).expect("mirror");
        store.flush()
    };
    assert_eq!(expiry(), None);
    mirrored(&record).await.expect("flush");
    assert_eq!(expiry(), Some(record.expires_at));

    let mut later = record.clone();
    later.touch(f.clock.now() + 60_000, 2 * MIN);
    mirrored(&later).await.expect("flush");
    assert_eq!(expiry(), Some(later.expires_at));

    store.forget(&record.id).expect("forget");
    store.flush().await.expect("flush");
    assert_eq!(expiry(), None);

    // Mirrored again, then expired and purged: whatever is answered says it is over.
    mirrored(&later).await.expect("flush");
    assert_eq!(expiry(), Some(later.expires_at));
    f.clock.advance(5 * MIN);
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    let now = f.clock.now();
    assert!(expiry().is_none_or(|at| at <= now));
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_sync_point_survives_reopening_and_is_read_once() {
    let f = Fixture::new();
    const STORE: &str = "redis://127.0.0.1:6379/0 prefix=keepalive:";
    let point = SyncPoint {
        store: STORE.to_owned(),
        run_id: "a1b2c3".to_owned(),
        at: START + 42,
    };
    {
        let store = f.open().await;
        assert_eq!(store.take_sync_point(STORE).await.expect("take"), None);
        store.save_sync_point(point.clone()).await.expect("save");
        store.close().await.expect("close");
    }
    {
        let store = f.open().await;
        assert_eq!(
            store.take_sync_point(STORE).await.expect("take"),
            Some(point.clone())
        );
        assert_eq!(
            store.take_sync_point(STORE).await.expect("take again"),
            None,
            "taken means removed: a crash after this start leaves none"
        );
        store.save_sync_point(point).await.expect("save");
        store.close().await.expect("close");
    }
    let store = f.open().await;
    assert_eq!(
        store
            .take_sync_point("redis://127.0.0.1:6379/1 prefix=keepalive:")
            .await
            .expect("take"),
        None,
        "recorded for another database: it does not hold"
    );
    assert_eq!(
        store.take_sync_point(STORE).await.expect("take"),
        None,
        "and it is gone too"
    );
}
