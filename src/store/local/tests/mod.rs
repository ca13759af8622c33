use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::session::IdKind;
use crate::store::Tombstone;
use crate::store::failover::Mirror;

mod times;

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
        self.open_committing_every(Duration::from_millis(50)).await
    }

    async fn open_committing_every(&self, flush_interval: Duration) -> LocalStore {
        self.open_in(self.dir.path(), flush_interval).await
    }

    /// The store on its own in `dir`, on this fixture's clock.
    async fn open_in(&self, dir: &std::path::Path, flush_interval: Duration) -> LocalStore {
        LocalStore::open(
            dir,
            LocalStoreOptions {
                cache_bytes: CACHE_BYTES,
                flush_interval,
                purge_interval: Duration::from_secs(3600),
                times_in_memory: true,
                fine_expiry_order: false,
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

/// A keepalive that a fold took from the pending changes (a caller asked for the tables, as
/// ending a user's sessions does), then a logout appended to the log and folded on its own:
/// the keepalive's copy in memory must not outlive the logout that followed it. It did once,
/// and a keepalive after the logout answered 200.
#[tokio::test]
async fn a_logout_folded_after_a_keepalive_folded_from_pending_stays_a_logout() {
    let f = Fixture::new();
    // Commits only when a caller waits for one: the order of the steps is the test's.
    let store = f.open_committing_every(Duration::from_secs(3600)).await;
    let record = f.record(10 * MIN);
    store.create(record.clone()).await.expect("create");
    f.clock.advance(MIN);
    let now = f.clock.now();
    assert!(
        store
            .touch(&record.id, now, 10 * MIN)
            .await
            .expect("touch")
            .is_some()
    );
    store
        .flush()
        .await
        .expect("fold with the keepalive pending");
    assert!(store.delete(&record.id).await.expect("logout"));
    store.flush().await.expect("fold of the logout alone");
    assert_eq!(store.load(&record.id, now).await.expect("load"), None);
    assert_eq!(
        store.touch(&record.id, now, 10 * MIN).await.expect("touch"),
        None
    );
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
    // One short session is kept alive past the others' expiry: the purge must spare it. The
    // others expired at 2 min; the purge finds them within the bucket after (the store on its
    // own indexes expiries in ten-minute buckets). The touched one lives until 11.5 min.
    for _ in 0..7 {
        f.clock.advance(90 * Duration::from_secs(1));
        store
            .touch(&short[0].id, f.clock.now(), 2 * MIN)
            .await
            .expect("touch")
            .expect("live");
    }

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
            cache_bytes: CACHE_BYTES,
            flush_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(3600),
            times_in_memory: true,
            fine_expiry_order: false,
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
            cache_bytes: CACHE_BYTES,
            flush_interval: Duration::from_millis(50),
            purge_interval: Duration::from_secs(60),
            times_in_memory: true,
            fine_expiry_order: false,
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
async fn tombstones_last_until_their_time_and_survive_reopening() {
    let f = Fixture::new();
    let ended_here = f.record(10 * MIN);
    let copy = f.record(10 * MIN);
    let unknown = SessionId::generate().expect("rng");
    {
        let store = f.open().await;
        store.create(ended_here.clone()).await.expect("create");
        store
            .modify(&copy.id, &mut |_| Some(Write::Put(copy.clone())))
            .expect("copy");
        let now = f.clock.now();
        let tombstone = |keep_until| {
            Some(Write::Remove(Some(Tombstone {
                at: now,
                keep_until,
            })))
        };
        store
            .modify(&ended_here.id, &mut |_| tombstone(now + 30 * 60_000))
            .expect("remove");
        store
            .modify(&copy.id, &mut |current| {
                let current = current.expect("the copy is seen");
                tombstone(current.absolute_expires_at)
            })
            .expect("remove");
        // A change that writes nothing for an unknown id leaves nothing behind.
        store
            .modify(&unknown, &mut |current| {
                assert!(current.is_none());
                None
            })
            .expect("nothing");
        for id in [&ended_here.id, &copy.id] {
            assert_eq!(
                Mirror::get(&store, id).expect("get"),
                None,
                "removed at once"
            );
        }
        store.close().await.expect("close");
    }
    let store = f.open().await;
    let mut ended = store.removed_since(None).await.expect("removed");
    ended.sort();
    let mut want = vec![ended_here.id, copy.id];
    want.sort();
    assert_eq!(
        ended, want,
        "both tombstones are on disk, the unknown id has none"
    );
    assert_eq!(
        store
            .removed_since(Some(f.clock.now() + 1))
            .await
            .expect("removed"),
        Vec::<SessionId>::new(),
        "none since a later instant"
    );
    // The copy's tombstone is kept until its absolute expiry (60 min), the other one 30 min.
    f.clock.advance(31 * MIN);
    store.purge_expired().await.expect("purge");
    assert_eq!(
        store.removed_since(None).await.expect("removed"),
        vec![copy.id]
    );
    f.clock.advance(30 * MIN);
    store.purge_expired().await.expect("purge");
    assert!(store.removed_since(None).await.expect("removed").is_empty());
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_change_sees_the_newest_state_and_nothing_between_its_read_and_write() {
    let f = Fixture::new();
    let store = Arc::new(f.open().await);
    let record = f.record(10 * MIN);
    store.create(record.clone()).await.expect("create");
    // Many concurrent changes, each reading the data and writing it one longer: none is lost,
    // which a read and a write split by another change would allow.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let id = record.id;
            tokio::task::spawn_blocking(move || {
                store
                    .modify(&id, &mut |current| {
                        let mut next = current.expect("live").clone();
                        next.data.push('x');
                        Some(Write::Put(next))
                    })
                    .expect("modify")
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let now = f.clock.now();
    let seen = store
        .load(&record.id, now)
        .await
        .expect("load")
        .expect("live");
    assert_eq!(seen.data.len(), record.data.len() + 50);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_session_extended_across_index_buckets_is_purged_once_expired() {
    let f = Fixture::new();
    let store = f.open().await;
    let record = f.record(2 * MIN);
    store.create(record.clone()).await.expect("create");
    // Twenty seconds apart for fifteen minutes: the expiry crosses into the next ten-minute
    // bucket, each write reaching the disk (the purge flushes first).
    for _ in 0..45 {
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
    // Found by the purge within a bucket.
    f.clock.advance(10 * MIN);
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert_eq!(store.count().await.expect("count"), 0);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_file_of_the_first_layout_is_copied_at_open() {
    let f = Fixture::new();
    let ana = f.record(2 * MIN).with_user(Some("ana".to_owned()));
    let other = f.record(10 * MIN);
    let ended = SessionId::generate().expect("rng");
    // The first layout: tables keyed by the 16 bytes of the id, the expiry index by exact
    // expiries, no meta table; a tombstone, a user index and the early `synced` note.
    {
        type Key = [u8; 16];
        let key = |id: &SessionId| -> Key { id.as_bytes().try_into().expect("16 bytes") };
        let db = redb::Database::create(f.dir.path().join(FILE_NAME)).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut sessions = txn
                .open_table(redb::TableDefinition::<Key, &[u8]>::new("sessions"))
                .expect("sessions");
            let mut expiry = txn
                .open_table(redb::TableDefinition::<(u64, Key), ()>::new("expiry"))
                .expect("expiry");
            let mut users = txn
                .open_table(redb::TableDefinition::<(&str, Key), ()>::new("users"))
                .expect("users");
            for record in [&ana, &other] {
                sessions
                    .insert(key(&record.id), codec::encode(record).as_slice())
                    .expect("insert");
                let exact = u64::try_from(record.expires_at).expect("positive");
                expiry.insert((exact, key(&record.id)), ()).expect("index");
            }
            users.insert(("ana", key(&ana.id)), ()).expect("user");
            let mut tombstones = txn
                .open_table(redb::TableDefinition::<Key, (i64, i64)>::new("ended"))
                .expect("ended");
            let now = f.clock.now();
            tombstones
                .insert(key(&ended), (now, now + 30 * 60_000))
                .expect("tombstone");
            txn.open_table(redb::TableDefinition::<&str, (&str, i64)>::new("synced"))
                .expect("synced")
                .insert("redis://x prefix=keepalive:", ("runid", now))
                .expect("note");
        }
        txn.commit().expect("commit");
    }
    let store = f.open().await;
    let now = f.clock.now();
    assert_eq!(
        store.load(&ana.id, now).await.expect("load"),
        Some(ana.clone())
    );
    assert_eq!(
        store.list_user("ana", now).await.expect("list"),
        vec![ana.clone()],
        "the user index is rebuilt"
    );
    assert_eq!(
        store.removed_since(None).await.expect("removed"),
        vec![ended],
        "the tombstone is kept"
    );
    // The expiry index is rebuilt by buckets: extended within its bucket the session stays,
    // and it is purged once expired, not before.
    f.clock.advance(Duration::from_secs(1));
    store
        .touch(&ana.id, f.clock.now(), 2 * MIN)
        .await
        .expect("touch")
        .expect("live");
    f.clock.advance(2 * MIN - Duration::from_secs(1));
    assert_eq!(store.purge_expired().await.expect("purge"), 0, "alive");
    f.clock.advance(8 * MIN);
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert_eq!(
        store.count().await.expect("count"),
        1,
        "the other session stays"
    );
    store.close().await.expect("close");
    drop(store);
    // Opened again, nothing is copied twice.
    let store = f.open().await;
    assert_eq!(store.count().await.expect("count"), 1);
    store.close().await.expect("close");
}

#[tokio::test]
async fn sessions_of_both_kinds_of_id_live_side_by_side() {
    let f = Fixture::new();
    let store = f.open().await;
    let native = f.record(10 * MIN);
    let mut express = f.record(10 * MIN);
    // The same bytes, another kind: another session.
    express.id = SessionId::from_parts(IdKind::Express, native.id.as_bytes()).expect("id");
    express.data = r#"{"cookie":{}}"#.to_owned();
    let mut long = f.record(10 * MIN);
    long.id = SessionId::parse_express("kH2mQX3c9bE4vR1uYtN0sL8pWq6aZ5dF").expect("id");
    for record in [&native, &express, &long] {
        store.create(record.clone()).await.expect("create");
    }
    store.close().await.expect("close");
    drop(store);
    let store = f.open().await;
    let now = f.clock.now();
    for record in [&native, &express, &long] {
        assert_eq!(
            store.load(&record.id, now).await.expect("load").as_ref(),
            Some(record)
        );
    }
    let (live, next) = store.live_page(None, now, 10).await.expect("page");
    assert_eq!(next, None, "three sessions in one page");
    let mut live: Vec<SessionId> = live.into_iter().map(|r| r.id).collect();
    live.sort();
    let mut want = vec![native.id, express.id, long.id];
    want.sort();
    assert_eq!(live, want);
    assert!(store.delete(&express.id).await.expect("delete"));
    assert!(store.load(&native.id, now).await.expect("load").is_some());
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_note_survives_reopening_and_is_read_once() {
    let f = Fixture::new();
    const KEY: &str = "failover.clean-stop";
    let note = br#"{"at":42}"#.to_vec();
    {
        let store = f.open().await;
        assert_eq!(store.take_note(KEY).await.expect("take"), None);
        store
            .write_note(KEY, b"older".to_vec())
            .await
            .expect("write");
        store.write_note(KEY, note.clone()).await.expect("replace");
        store
            .write_note("other", b"kept".to_vec())
            .await
            .expect("write");
        store.close().await.expect("close");
    }
    let store = f.open().await;
    assert_eq!(store.take_note(KEY).await.expect("take"), Some(note));
    assert_eq!(
        store.take_note(KEY).await.expect("take again"),
        None,
        "taken means removed: a crash after this start leaves none"
    );
    assert_eq!(
        store.take_note("other").await.expect("take"),
        Some(b"kept".to_vec()),
        "each key is its own note"
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn pages_walk_every_live_session_and_tombstone_once_in_id_order() {
    let f = Fixture::new();
    let store = f.open().await;
    let mut live = Vec::new();
    for _ in 0..10 {
        let record = f.record(10 * MIN);
        store.create(record.clone()).await.expect("create");
        live.push(record.id);
    }
    let short = f.record(Duration::from_secs(1));
    store.create(short.clone()).await.expect("create");
    let mut ended = Vec::new();
    for _ in 0..4 {
        let record = f.record(10 * MIN);
        store.create(record.clone()).await.expect("create");
        store
            .modify(&record.id, &mut |_| {
                Some(Write::Remove(Some(Tombstone {
                    at: START,
                    keep_until: START + 60 * 60_000,
                })))
            })
            .expect("remove");
        ended.push(record.id);
    }
    let mut express = f.record(10 * MIN);
    express.id = SessionId::parse_express("kH2mQX3c9bE4vR1uYtN0sL8pWq6aZ5dF").expect("id");
    store.create(express.clone()).await.expect("create");
    live.push(express.id);
    store.flush().await.expect("flush");
    f.clock.advance(Duration::from_secs(2));
    let now = f.clock.now();

    let mut walked = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (records, next) = store.live_page(after, now, 3).await.expect("page");
        assert!(records.len() <= 3);
        walked.extend(records.iter().map(|r| r.id));
        pages += 1;
        match next {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    live.sort();
    assert_eq!(
        walked, live,
        "every live one once, in id order, the expired one left out"
    );
    assert_eq!(pages, 4, "12 stored sessions read three at a time");

    let (first, next) = store.removed_page(None, 2).await.expect("page");
    let (rest, last) = store.removed_page(next, 10).await.expect("page");
    assert_eq!(last, None, "the walk is done");
    ended.sort();
    assert_eq!([first, rest].concat(), ended);
    store.close().await.expect("close");
}

/// A read's answer brings up a copy the mirror holds, in memory at once and on the file with
/// the batch, and makes none for a session it does not hold; an answer that arrives after a
/// newer one the mirror still has in memory does not move the copy back.
#[tokio::test]
async fn a_refresh_brings_up_a_copy_and_makes_none() {
    let f = Fixture::new();
    let store = f.open().await;
    let held = f.record(10 * MIN);
    let stranger = f.record(10 * MIN);
    Mirror::copy(&store, &held).expect("copy");
    // Out of the overlay's memory: the refresh meets the copy on the file only.
    for _ in 0..3 {
        store.flush().await.expect("flush");
    }

    let mut answer = held.clone();
    answer.touch(START + 4 * 60_000, 10 * MIN);
    answer.data = r#"{"user":"ana","step":2}"#.to_owned();
    Mirror::refresh(&store, &answer).expect("refresh");
    Mirror::refresh(&store, &stranger).expect("refresh");
    assert_eq!(
        Mirror::get(&store, &held.id).expect("get"),
        Some(answer.clone())
    );
    assert_eq!(Mirror::get(&store, &stranger.id).expect("get"), None);
    store.flush().await.expect("flush");
    assert_eq!(
        Mirror::get(&store, &held.id).expect("get"),
        Some(answer.clone())
    );
    assert_eq!(Mirror::get(&store, &stranger.id).expect("get"), None);
    assert_eq!(store.count().await.expect("count"), 1, "no copy made");

    // Two answers of overlapping requests, the newer first: the later times stay.
    let mut newer = answer.clone();
    newer.touch(START + 5 * 60_000, 10 * MIN);
    let older = answer.clone();
    Mirror::copy(&store, &newer).expect("copy");
    Mirror::refresh(&store, &older).expect("refresh");
    Mirror::copy(&store, &older).expect("copy");
    assert_eq!(
        Mirror::get(&store, &held.id).expect("get"),
        Some(newer.clone())
    );
    store.flush().await.expect("flush");
    assert_eq!(Mirror::get(&store, &held.id).expect("get"), Some(newer));

    // A copy removed (a logout heard) is not brought back by a read's answer.
    store
        .modify(&held.id, &mut |_| Some(Write::Remove(None)))
        .expect("remove");
    Mirror::refresh(&store, &held).expect("refresh");
    store.flush().await.expect("flush");
    assert_eq!(Mirror::get(&store, &held.id).expect("get"), None);
    store.close().await.expect("close");
}

#[tokio::test]
async fn periodic_commits_append_to_the_log_and_a_fold_writes_it_into_the_table() {
    let f = Fixture::new();
    let store = f.open().await;
    let record = f.record(10 * MIN);
    store.create(record.clone()).await.expect("create");
    // Keepalives at every step of the clock: the periodic commits find them and append them to
    // the log; reads see the newest while the table still holds an older one, or none.
    let mut seen_loged = false;
    let mut newest = record.clone();
    for _ in 0..400 {
        f.clock.advance(Duration::from_secs(1));
        newest = store
            .touch(&record.id, f.clock.now(), 10 * MIN)
            .await
            .expect("touch")
            .expect("live");
        // The creation too may still be in the log alone.
        let in_table = db::get(&store.shared.db, &record.id).expect("reads");
        if db::wal_len(&store.shared.db).expect("reads") > 0
            && in_table.is_none_or(|r| r.expires_at < newest.expires_at)
        {
            seen_loged = true;
            assert_eq!(
                store.load(&record.id, f.clock.now()).await.expect("load"),
                Some(newest.clone()),
                "a read sees what the log holds"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen_loged, "no keepalive waited in the log");
    // Quiet: the next tick finds nothing pending and folds.
    within(Duration::from_secs(5), || {
        db::wal_len(&store.shared.db).expect("reads") == 0
            && db::get(&store.shared.db, &record.id)
                .expect("reads")
                .is_some_and(|r| r.expires_at == newest.expires_at)
    })
    .await;
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_log_left_by_a_crash_is_served_at_open_and_folded_in_the_background() {
    use std::collections::HashMap;
    let f = Fixture::new();
    let path = f.dir.path().join(FILE_NAME);
    let (kept, ended, revived) = (f.record(10 * MIN), f.record(10 * MIN), f.record(10 * MIN));
    let tombstone = Tombstone {
        at: START + 120_000,
        keep_until: START + 3_600_000,
    };
    {
        let db = db::open(&path, CACHE_BYTES, db::EXPIRY_BUCKET_MS).expect("opens");
        let created: HashMap<_, _> = [&kept, &ended]
            .map(|r| (r.id, overlay::Kept::of(Write::Put(r.clone()))))
            .into();
        db::apply(&db, &created, std::iter::empty()).expect("writes");
        // Two periodic commits, the second newer: an extension, then another and a logout; a
        // logout, then the session written again (its tombstone stays all the same).
        let mut extended = kept.clone();
        extended.touch(START + 60_000, 10 * MIN);
        let first: HashMap<_, _> = [
            (kept.id, overlay::Kept::of(Write::Put(extended.clone()))),
            (
                revived.id,
                overlay::Kept::of(Write::Remove(Some(tombstone))),
            ),
        ]
        .into();
        extended.touch(START + 120_000, 10 * MIN);
        let second: HashMap<_, _> = [
            (kept.id, overlay::Kept::of(Write::Put(extended.clone()))),
            (ended.id, overlay::Kept::of(Write::Remove(Some(tombstone)))),
            (revived.id, overlay::Kept::of(Write::Put(revived.clone()))),
        ]
        .into();
        db::append_wal(&db, 0, &wal::encode(&first)).expect("appends");
        db::append_wal(&db, 1, &wal::encode(&second)).expect("appends");
        // The process ends here, before a fold.
    }
    // Served from memory at once, the log still as it was.
    let store = f.open().await;
    let now = START + 130_000;
    let read = store
        .load(&kept.id, now)
        .await
        .expect("load")
        .expect("kept");
    assert_eq!(read.last_seen_at, START + 120_000, "the newest entry wins");
    assert_eq!(read.expires_at, START + 120_000 + 600_000);
    assert!(store.load(&ended.id, now).await.expect("load").is_none());
    assert!(
        Mirror::ended(&store, &ended.id).expect("reads"),
        "the logout"
    );
    assert_eq!(
        store.load(&revived.id, now).await.expect("load"),
        Some(revived.clone())
    );
    assert!(
        Mirror::ended(&store, &revived.id).expect("reads"),
        "a tombstone stays whatever is written after it"
    );
    // The fold writes it into the tables and empties the log.
    store.flush().await.expect("folds");
    let db = &store.shared.db;
    assert_eq!(db::wal_len(db).expect("reads"), 0, "folded");
    let read = db::get(db, &kept.id).expect("reads").expect("kept");
    assert_eq!(read.expires_at, START + 120_000 + 600_000);
    assert!(db::get(db, &ended.id).expect("reads").is_none());
    assert!(db::ended(db, &ended.id).expect("reads"));
    assert_eq!(
        db::get(db, &revived.id).expect("reads"),
        Some(revived.clone())
    );
    assert!(db::ended(db, &revived.id).expect("reads"));
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_log_value_that_cannot_be_read_is_left_out_and_the_store_starts() {
    let f = Fixture::new();
    let record = f.record(10 * MIN);
    {
        let db = db::open(
            &f.dir.path().join(FILE_NAME),
            CACHE_BYTES,
            db::EXPIRY_BUCKET_MS,
        )
        .expect("opens");
        let created: std::collections::HashMap<_, _> =
            [(record.id, overlay::Kept::of(Write::Put(record.clone())))].into();
        db::append_wal(&db, 0, &[3, 0xff, 0xff]).expect("appends");
        db::append_wal(&db, 1, &wal::encode(&created)).expect("appends");
    }
    let store = f.open().await;
    assert_eq!(
        store.load(&record.id, f.clock.now()).await.expect("load"),
        Some(record),
        "the readable value is kept"
    );
    store.close().await.expect("close");
}

/// Waits until `condition` holds, up to `limit`.
async fn within(limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
