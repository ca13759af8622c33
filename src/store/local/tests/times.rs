//! The store on its own answers keepalives from its table of times: the same answers as a
//! keepalive that reads the file, kept through folds, crashes and logouts.

use std::collections::HashMap;

use super::*;

/// Opens the store and waits for its table of times to be complete.
async fn open_with_times(f: &Fixture) -> LocalStore {
    let store = f.open().await;
    let times = store
        .shared
        .times
        .as_ref()
        .expect("kept for the store on its own");
    within(Duration::from_secs(5), || times.is_complete()).await;
    store
}

/// Opens the store in `f`'s directory as Redis's mirror: no table of times, the expiry index
/// by the minute when `fine_expiry_order` (a budget), by ten minutes otherwise.
async fn open_as_mirror(f: &Fixture, fine_expiry_order: bool) -> LocalStore {
    LocalStore::open(
        f.dir.path(),
        LocalStoreOptions {
            cache_bytes: MIRROR_CACHE_BYTES,
            flush_interval: Duration::from_millis(50),
            purge_interval: Duration::from_secs(3600),
            times_in_memory: false,
            fine_expiry_order,
        },
        Arc::new(f.clock.clone()),
        Arc::new(Metrics::new()),
    )
    .await
    .expect("opens")
}

/// What the overlay holds for `id`.
fn newest(store: &LocalStore, id: &SessionId) -> Option<overlay::Newest> {
    store.shared.overlay.shard(id).get(id).expect("reads")
}

#[tokio::test]
async fn a_keepalive_keeps_only_times_and_the_session_stays_whole() {
    let f = Fixture::new();
    let mut record = f.record(10 * MIN);
    record.user = Some("ada".to_owned());
    {
        let store = open_with_times(&f).await;
        store.create(record.clone()).await.expect("create");
        // In the file, and out of the overlay: the next keepalive finds it in the table only.
        store.flush().await.expect("folds");
        store.flush().await.expect("folds");
        store.shared.overlay.forget_recent();
        assert_eq!(newest(&store, &record.id), None);

        f.clock.advance(2 * MIN);
        let expiry = store
            .extend(&record.id, f.clock.now(), 10 * MIN)
            .await
            .expect("extends")
            .expect("live");
        assert_eq!(
            expiry,
            Expiry {
                expires_at: START + 12 * 60_000,
                absolute_expires_at: record.absolute_expires_at
            }
        );
        assert_eq!(
            newest(&store, &record.id),
            Some(overlay::Newest::Extended {
                last_seen_at: START + 2 * 60_000,
                expires_at: START + 12 * 60_000
            }),
            "the keepalive kept the times only"
        );
        // A read sees the session whole, extended.
        let read = store
            .load(&record.id, f.clock.now())
            .await
            .expect("load")
            .expect("live");
        assert_eq!(read.expires_at, expiry.expires_at);
        assert_eq!(
            (read.user.as_deref(), read.data.as_str()),
            (Some("ada"), record.data.as_str())
        );
        // A second keepalive over the first, and a change of data over both.
        f.clock.advance(MIN);
        store
            .extend(&record.id, f.clock.now(), 10 * MIN)
            .await
            .expect("extends")
            .expect("live");
        let updated = store
            .update(&record.id, r#"{"cart":1}"#.to_owned(), f.clock.now())
            .await
            .expect("updates")
            .expect("live");
        assert_eq!(updated.expires_at, START + 13 * 60_000);
        assert_eq!(updated.user.as_deref(), Some("ada"));
        store.close().await.expect("close");
    }
    let store = f.open().await;
    let read = store
        .load(&record.id, f.clock.now())
        .await
        .expect("load")
        .expect("live after reopening");
    assert_eq!(read.expires_at, START + 13 * 60_000);
    assert_eq!(read.last_seen_at, START + 3 * 60_000);
    assert_eq!(read.data, r#"{"cart":1}"#);
    assert_eq!(
        store
            .list_user("ada", f.clock.now())
            .await
            .expect("lists")
            .len(),
        1,
        "the user index kept it"
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn extensions_kept_as_times_reach_the_file_through_the_fold() {
    let f = Fixture::new();
    let store = open_with_times(&f).await;
    let records: Vec<_> = (0..200).map(|_| f.record(10 * MIN)).collect();
    for r in &records {
        store.create(r.clone()).await.expect("create");
    }
    store.flush().await.expect("folds");
    f.clock.advance(5 * MIN);
    for r in &records {
        store
            .extend(&r.id, f.clock.now(), 10 * MIN)
            .await
            .expect("extends")
            .expect("live");
    }
    store.flush().await.expect("folds");
    for r in &records {
        let stored = db::get(&store.shared.db, &r.id)
            .expect("reads")
            .expect("kept");
        assert_eq!(stored.expires_at, START + 15 * 60_000);
        assert_eq!(stored.last_seen_at, START + 5 * 60_000);
        assert_eq!(stored.data, r.data);
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn what_the_table_answers_is_what_the_file_would() {
    let f = Fixture::new();
    let store = open_with_times(&f).await;
    let (expiring, capped, ended, rotated) = (
        f.record(10 * MIN),
        f.record(10 * MIN),
        f.record(10 * MIN),
        f.record(10 * MIN),
    );
    for r in [&expiring, &capped, &ended, &rotated] {
        store.create(r.clone()).await.expect("create");
    }
    store.flush().await.expect("folds");
    store.flush().await.expect("folds");
    store.shared.overlay.forget_recent();
    let (store, clock) = (&store, &f.clock);
    let extend = |id: SessionId| async move {
        store
            .extend(&id, clock.now(), 10 * MIN)
            .await
            .expect("extends")
    };

    // Unknown: no read of the file tells otherwise.
    assert_eq!(extend(SessionId::generate().expect("id")).await, None);
    // Ended, then asked for: gone, and stays gone.
    assert!(store.delete(&ended.id).await.expect("deletes"));
    assert_eq!(extend(ended.id).await, None);
    // Rotated: the old id is gone, the new one extends.
    let new = SessionId::generate().expect("id");
    store
        .rotate(&rotated.id, new, f.clock.now())
        .await
        .expect("rotates")
        .expect("live");
    assert_eq!(extend(rotated.id).await, None);
    assert!(extend(new).await.is_some());
    // Kept alive up to its absolute lifetime, never past it.
    for _ in 0..5 {
        f.clock.advance(9 * MIN);
        assert!(extend(capped.id).await.is_some());
    }
    f.clock.advance(9 * MIN);
    let last = extend(capped.id)
        .await
        .expect("live until its absolute expiry");
    assert_eq!(last.expires_at, capped.absolute_expires_at);
    f.clock.advance(9 * MIN);
    assert_eq!(extend(capped.id).await, None, "past its absolute lifetime");
    assert_eq!(extend(expiring.id).await, None, "idle past its expiry");

    // The purge drops the expired entries; the answers stay.
    assert!(store.purge_expired().await.expect("purges") >= 2);
    assert_eq!(extend(expiring.id).await, None);
    assert_eq!(extend(ended.id).await, None);
    store.close().await.expect("close");
}

#[tokio::test]
async fn the_table_is_read_from_the_file_at_open_and_keeps_every_logout() {
    let f = Fixture::new();
    let records: Vec<_> = (0..500).map(|_| f.record(10 * MIN)).collect();
    {
        let store = f.open().await;
        for r in &records {
            store.create(r.clone()).await.expect("create");
        }
        for r in &records[..100] {
            assert!(store.delete(&r.id).await.expect("deletes"));
        }
        store.close().await.expect("close");
    }
    let store = open_with_times(&f).await;
    assert_eq!(
        store.shared.times.as_ref().expect("kept").len(),
        400,
        "every session in the file, and nothing else"
    );
    f.clock.advance(MIN);
    for (n, r) in records.iter().enumerate() {
        let extended = store
            .extend(&r.id, f.clock.now(), 10 * MIN)
            .await
            .expect("extends");
        assert_eq!(extended.is_some(), n >= 100, "session {n}");
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn extensions_a_crash_left_in_the_log_are_read_from_the_file_they_extend() {
    let f = Fixture::new();
    let path = f.dir.path().join(FILE_NAME);
    let (kept, created) = (f.record(10 * MIN), f.record(10 * MIN));
    {
        let db = db::open(&path, CACHE_BYTES, db::EXPIRY_BUCKET_MS).expect("opens");
        let written: HashMap<_, _> =
            [(kept.id, overlay::Kept::of(Write::Put(kept.clone())))].into();
        db::apply(&db, &written, std::iter::empty()).expect("writes");
        // A creation and two keepalives that kept times only, in two commits, then a crash.
        let first: HashMap<_, _> = [
            (
                kept.id,
                overlay::Kept::Extend {
                    last_seen_at: START + 60_000,
                    expires_at: START + 11 * 60_000,
                },
            ),
            (created.id, overlay::Kept::of(Write::Put(created.clone()))),
        ]
        .into();
        let second: HashMap<_, _> = [
            (
                kept.id,
                overlay::Kept::Extend {
                    last_seen_at: START + 2 * 60_000,
                    expires_at: START + 12 * 60_000,
                },
            ),
            (
                created.id,
                overlay::Kept::Extend {
                    last_seen_at: START + 2 * 60_000,
                    expires_at: START + 12 * 60_000,
                },
            ),
        ]
        .into();
        db::append_wal(&db, 0, &wal::encode(&first)).expect("appends");
        db::append_wal(&db, 1, &wal::encode(&second)).expect("appends");
    }
    let store = open_with_times(&f).await;
    f.clock.advance(3 * MIN);
    for r in [&kept, &created] {
        let read = store
            .load(&r.id, f.clock.now())
            .await
            .expect("load")
            .expect("live");
        assert_eq!(read.expires_at, START + 12 * 60_000, "the newest extension");
        assert_eq!(read.data, r.data);
        let extended = store
            .extend(&r.id, f.clock.now(), 10 * MIN)
            .await
            .expect("extends")
            .expect("live");
        assert_eq!(extended.expires_at, START + 13 * 60_000);
    }
    store.flush().await.expect("folds");
    for r in [&kept, &created] {
        let stored = db::get(&store.shared.db, &r.id)
            .expect("reads")
            .expect("kept");
        assert_eq!(stored.expires_at, START + 13 * 60_000);
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_mirror_keeps_no_table_and_express_ids_read_the_file() {
    let f = Fixture::new();
    let store = open_with_times(&f).await;
    let mut express = f.record(10 * MIN);
    express.id = SessionId::from_parts(IdKind::Express, b"an-express-session").expect("id");
    store.create(express.clone()).await.expect("create");
    store.flush().await.expect("folds");
    f.clock.advance(MIN);
    let extended = store
        .extend(&express.id, f.clock.now(), 10 * MIN)
        .await
        .expect("extends")
        .expect("live");
    assert_eq!(extended.expires_at, START + 11 * 60_000);
    assert!(
        matches!(
            newest(&store, &express.id),
            Some(overlay::Newest::Write(Write::Put(_)))
        ),
        "read from the file and written whole"
    );
    store.close().await.expect("close");
    drop(store);

    let mirror = open_as_mirror(&f, true).await;
    assert!(mirror.shared.times.is_none());
    assert!(
        mirror
            .extend(&express.id, f.clock.now(), 10 * MIN)
            .await
            .expect("extends")
            .is_some()
    );
    mirror.close().await.expect("close");
}

#[tokio::test]
async fn a_fold_writes_a_record_and_its_extension_as_one() {
    let f = Fixture::new();
    let db = db::open(
        &f.dir.path().join(FILE_NAME),
        CACHE_BYTES,
        db::EXPIRY_BUCKET_MS,
    )
    .expect("opens");
    let record = f.record(10 * MIN);
    let older: HashMap<_, _> = [(record.id, overlay::Kept::of(Write::Put(record.clone())))].into();
    let newer: HashMap<_, _> = [(
        record.id,
        overlay::Kept::Extend {
            last_seen_at: START + 60_000,
            expires_at: START + 11 * 60_000,
        },
    )]
    .into();
    db::apply(&db, older.iter().chain(newer.iter()), std::iter::empty()).expect("writes");
    let stored = db::get(&db, &record.id).expect("reads").expect("created");
    assert_eq!(stored.expires_at, START + 11 * 60_000);
    assert_eq!(stored.data, record.data);
}

/// Keepalives between two folds live in the table of times and the log, not in the overlay:
/// reads, a crash and the purge see them all the same, and the fold writes them.
#[tokio::test]
async fn keepalives_wait_in_the_log_and_the_table_not_in_the_overlay() {
    let f = Fixture::new();
    // No periodic commit: the test says when the store appends and folds.
    let store = f.open_committing_every(Duration::from_secs(3600)).await;
    let times = store.shared.times.as_ref().expect("kept");
    within(Duration::from_secs(5), || times.is_complete()).await;
    let records: Vec<_> = (0..50).map(|_| f.record(10 * MIN)).collect();
    for r in &records {
        store.create(r.clone()).await.expect("create");
    }
    store.flush().await.expect("folds");
    store.shared.overlay.forget_recent();

    f.clock.advance(9 * MIN);
    let seen = f.clock.now();
    for r in &records {
        store
            .extend(&r.id, seen, 10 * MIN)
            .await
            .expect("extends")
            .expect("live");
    }
    // A creation's commit appends what is pending to the log, the keepalives with it.
    store.create(f.record(10 * MIN)).await.expect("create");
    assert_eq!(db::wal_len(&store.shared.db).expect("reads"), 1);
    for r in &records {
        assert_eq!(newest(&store, &r.id), None, "the overlay let it go");
        let stored = db::get(&store.shared.db, &r.id)
            .expect("reads")
            .expect("kept");
        assert_eq!(stored.expires_at, r.expires_at, "not folded yet");
        let read = store.load(&r.id, seen).await.expect("load").expect("live");
        assert_eq!(
            (read.last_seen_at, read.expires_at, read.data.as_str()),
            (seen, seen + 10 * 60_000, r.data.as_str()),
            "a read sees the keepalive through the table"
        );
    }

    // A crash now: a copy of the file as it stands opens with the keepalives in its log.
    let crashed = tempfile::tempdir().expect("tempdir");
    std::fs::copy(f.dir.path().join(FILE_NAME), crashed.path().join(FILE_NAME)).expect("copies");
    {
        let after_crash = f.open_in(crashed.path(), Duration::from_secs(3600)).await;
        f.clock.advance(5 * MIN);
        for r in &records {
            let read = after_crash
                .load(&r.id, f.clock.now())
                .await
                .expect("load")
                .expect("kept alive by the keepalive in the log");
            assert_eq!(
                (read.last_seen_at, read.expires_at),
                (seen, seen + 10 * 60_000)
            );
        }
        after_crash.close().await.expect("close");
    }

    // Past the expiry the file holds, not the one the keepalives gave: the purge (which folds
    // first) keeps every session, and the file holds the new times after it.
    assert_eq!(store.purge_expired().await.expect("purges"), 0);
    assert_eq!(db::wal_len(&store.shared.db).expect("reads"), 0);
    for r in &records {
        let stored = db::get(&store.shared.db, &r.id)
            .expect("reads")
            .expect("kept");
        assert_eq!(
            (stored.last_seen_at, stored.expires_at),
            (seen, seen + 10 * 60_000)
        );
    }
    // Nothing left to write: the next fold takes no extension from the table.
    assert_eq!(times.extended().count(), 0);
    store.close().await.expect("close");
}

/// A mirror sorts its copies by expiry in the store's ten-minute buckets unless a budget reads
/// that order, and then by the minute: a copy expiring a minute and a half from now is listed
/// under the end of its ten minutes, or of its minute.
#[tokio::test]
async fn a_mirror_sorts_expiries_by_the_minute_only_under_a_budget() {
    for (fine_expiry_order, width) in [
        (false, db::EXPIRY_BUCKET_MS),
        (true, db::BUDGET_EXPIRY_BUCKET_MS),
    ] {
        let f = Fixture::new();
        let mirror = open_as_mirror(&f, fine_expiry_order).await;
        let mut record = f.record(10 * MIN);
        record.expires_at = START + 90_000;
        Mirror::copy(&mirror, &record).expect("copies");
        mirror.flush().await.expect("folds");
        let listed = Mirror::first_to_expire(&mirror, f.clock.now(), 10)
            .await
            .expect("lists");
        let bucket_end = (record.expires_at + width - 1) / width * width;
        assert_eq!(listed, vec![(record.id, bucket_end)], "width {width}");
        assert!(bucket_end >= record.expires_at && bucket_end - record.expires_at < width);
        mirror.close().await.expect("close");
    }
}
