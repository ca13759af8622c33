//! The redb file: its tables and the transactions the store runs on them.
//!
//! `sessions` maps an id to its encoded record. `expiry` is an index of (the end of the
//! bucket of the idle expiry, id), so the purge walks only the expired prefix: its
//! cost grows with the number of sessions that expired, not with the number stored, and an
//! extension rewrites the index only when it crosses into a later bucket. `users` is an index
//! of (user, id) for the sessions created for a user, so listing or ending a user's sessions
//! reads only theirs. A session's user never changes, so the index is written when a session
//! appears and when it goes. `ended` keeps the tombstones of removed sessions (see
//! [`Tombstone`]), indexed by when they may go, and `notes` a few small values a caller keeps
//! across restarts.
//!
//! Ids are stored as their kind's tag byte followed by their bytes (see [`StoredId`]), so
//! keepalive's own sessions and an Express application's share the file without meeting. The
//! first layout keyed tables by the 16 bytes of keepalive's own ids; a file of that layout is
//! copied into this one at open, once (see [`open`]).

use std::ops::Bound;
use std::path::Path;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

use crate::clock::Millis;
use crate::session::{ID_BYTES, IdKind, MAX_ID_BYTES, SessionId, SessionRecord, StoreError};
use crate::store::{Tombstone, answered};

use super::committer::YIELD_EVERY;
use super::overlay::{Kept, extend};
use super::times::Stamp;
use super::{codec, wal};

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions.v2");
const EXPIRY: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("expiry.v2");
const USERS: TableDefinition<(&str, &[u8]), ()> = TableDefinition::new("users.v2");
/// Tombstones of removed sessions: id to (removed at, keep until). The failover leaves one
/// for each logout, kept until the session could no longer have lived, so that the logout
/// reaches a Redis that was away or came back empty.
const ENDED: TableDefinition<&[u8], (i64, i64)> = TableDefinition::new("ended.v2");
/// Index of `ENDED` by (keep until, id), so the purge finds the tombstones it may forget
/// without reading the others.
const ENDED_UNTIL: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("ended_until.v2");
/// Facts about the file's layout: `layout`, its version (absent: the first), and
/// `expiry_bucket_ms`, the bucket width its expiry index was built with.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The write-ahead log (see `wal`): one value per commit, by a sequence number, until a fold
/// writes what they hold into the tables above and empties it.
const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");
/// Small values kept across restarts, each read once (see [`take_note`]).
const NOTES: TableDefinition<&str, &[u8]> = TableDefinition::new("notes");
/// The version of the layout this code writes.
const LAYOUT: u64 = 2;

/// The tables of the first layout, keyed by the 16 bytes of keepalive's own ids: copied at
/// open, then dropped. Their indexes are rebuilt rather than copied.
mod first_layout {
    use redb::TableDefinition;

    pub type Key = [u8; 16];
    pub const SESSIONS: TableDefinition<Key, &[u8]> = TableDefinition::new("sessions");
    pub const ENDED: TableDefinition<Key, (i64, i64)> = TableDefinition::new("ended");
    pub const EXPIRY: TableDefinition<(u64, Key), ()> = TableDefinition::new("expiry");
    pub const USERS: TableDefinition<(&str, Key), ()> = TableDefinition::new("users");
    pub const ENDED_UNTIL: TableDefinition<(u64, Key), ()> = TableDefinition::new("ended_until");
    /// The one note of an early version, a table of its own: where the file stood with Redis
    /// at the last clean stop. Without it the next start writes every live session back,
    /// which is always safe.
    pub const SYNCED: TableDefinition<&str, (&str, i64)> = TableDefinition::new("synced");
}

/// An id as the tables store it: the kind's tag, then the id's bytes.
pub struct StoredId {
    bytes: [u8; 1 + MAX_ID_BYTES],
    len: usize,
}

impl StoredId {
    pub fn of(id: &SessionId) -> Self {
        let raw = id.as_bytes();
        let mut bytes = [0u8; 1 + MAX_ID_BYTES];
        bytes[0] = id.kind().tag();
        bytes[1..=raw.len()].copy_from_slice(raw);
        Self {
            bytes,
            len: 1 + raw.len(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The id a stored key stands for.
fn id_of(key: &[u8]) -> Result<SessionId, StoreError> {
    key.split_first()
        .and_then(|(tag, bytes)| SessionId::from_parts(IdKind::from_tag(*tag)?, bytes))
        .ok_or_else(|| StoreError::Corrupt("a stored session id is malformed".to_owned()))
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn index_key(at: Millis, id: &[u8]) -> (u64, &[u8]) {
    (u64::try_from(at).unwrap_or(0), id)
}

/// Width of the buckets of the expiry index. A session is indexed under the end of the bucket
/// its idle expiry falls in, so an extension rewrites the index only when it moves the expiry
/// into a later bucket, and the purge finds an expired session at most one bucket late. A
/// session kept alive every half minute crosses into the next bucket at one write in twenty
/// here; and the index's entries it leaves lie anywhere in the index, so over a large store
/// each such write costs a page read and written.
pub const EXPIRY_BUCKET_MS: Millis = 600_000;
/// The same for Redis's mirror under a budget, which drops the copies that expire first, in
/// this order (see `failover::budget`): to within a minute. A keepalive every half minute
/// then moves its session's entry at every other write, which at a million copies cost more
/// than writing the copy itself: only a mirror whose order is read pays it.
pub const BUDGET_EXPIRY_BUCKET_MS: Millis = 60_000;

/// The end of the bucket of `width` that holds `expires_at`: the first bucket boundary at or
/// after it.
fn bucket(expires_at: Millis, width: Millis) -> Millis {
    expires_at
        .div_euclid(width)
        .saturating_add(i64::from(expires_at.rem_euclid(width) != 0))
        .saturating_mul(width)
}

/// The expiry index's key for a session expiring at `expires_at`, in buckets of `width`.
fn expiry_key(expires_at: Millis, width: Millis, id: &[u8]) -> (u64, &[u8]) {
    index_key(bucket(expires_at, width), id)
}

/// The width of the expiry index's buckets in this file (set at open).
fn expiry_width(txn: &WriteTransaction) -> Result<Millis, StoreError> {
    let meta = txn.open_table(META).map_err(backend)?;
    let width = meta.get("expiry_bucket_ms").map_err(backend)?;
    Ok(width
        .and_then(|w| Millis::try_from(w.value()).ok())
        .filter(|&w| w > 0)
        .unwrap_or(BUDGET_EXPIRY_BUCKET_MS))
}

/// Opens (or creates) the database file and its tables, with a page cache of `cache_bytes`
/// and the expiry index in buckets of `expiry_width` ms; copies a file of the first layout
/// into this one (rebuilding every index), and rebuilds an expiry index of another width,
/// once: a store that moves to or from being the mirror of a Redis under a budget rebuilds it
/// at that start, a walk of every session before the store serves.
pub fn open(path: &Path, cache_bytes: usize, expiry_width: Millis) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|err| match err {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
            "{} is already in use by another keepalive process; give each instance its own data directory",
            path.display()
        )),
        other => StoreError::Backend(format!("cannot open {}: {other}", path.display())),
    })?;
    let txn = db.begin_write().map_err(backend)?;
    txn.open_table(SESSIONS).map_err(backend)?;
    txn.open_table(EXPIRY).map_err(backend)?;
    txn.open_table(ENDED).map_err(backend)?;
    txn.open_table(ENDED_UNTIL).map_err(backend)?;
    txn.open_table(USERS).map_err(backend)?;
    txn.open_table(NOTES).map_err(backend)?;
    txn.open_table(WAL).map_err(backend)?;
    let (layout, width) = {
        let meta = txn.open_table(META).map_err(backend)?;
        let read = |key: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta.get(key).map_err(backend)?.map(|v| v.value()))
        };
        (read("layout")?, read("expiry_bucket_ms")?)
    };
    // A file written before the width was recorded has one-minute buckets.
    let width = width.unwrap_or(BUDGET_EXPIRY_BUCKET_MS.unsigned_abs());
    if layout != Some(LAYOUT) {
        copy_first_layout(&txn)?;
        rebuild_indexes(&txn, expiry_width, true)?;
    } else if width != expiry_width.unsigned_abs() {
        rebuild_indexes(&txn, expiry_width, false)?;
    }
    {
        let mut meta = txn.open_table(META).map_err(backend)?;
        meta.insert("layout", LAYOUT).map_err(backend)?;
        meta.insert("expiry_bucket_ms", expiry_width.unsigned_abs())
            .map_err(backend)?;
    }
    txn.commit().map_err(backend)?;
    Ok(db)
}

/// What the write-ahead log holds (the changes of the commits since the last fold, left by a
/// process that stopped without folding them: a crash), in their order, and the key its next
/// value takes.
pub fn read_wal(db: &Database) -> Result<(Vec<(SessionId, Kept)>, u64), StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let log = txn.open_table(WAL).map_err(backend)?;
    let mut changes = Vec::new();
    let mut next = 0;
    for entry in log.iter().map_err(backend)? {
        let (seq, value) = entry.map_err(backend)?;
        next = seq.value() + 1;
        // A value is written whole in one transaction: one that cannot be read means a damaged
        // file or a bug. The store still starts with the rest; refusing to would take the
        // instance down for at most one flush interval of changes.
        let mut read = Vec::new();
        match wal::decode(value.value(), &mut read) {
            Ok(()) => changes.append(&mut read),
            Err(err) => tracing::error!(
                error = %err,
                value = seq.value(),
                "a value of the local store's write-ahead log cannot be read and is left out: the changes it held (at most one flush interval of keepalives, creations and logouts) are lost; the file may be damaged: check the disk it is on"
            ),
        }
    }
    Ok((changes, next))
}

/// How many values the log holds.
#[cfg(test)]
pub fn wal_len(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    txn.open_table(WAL).map_err(backend)?.len().map_err(backend)
}

/// Appends one periodic commit's changes to the log, durably, under `seq` (larger than
/// any before it since the last fold).
pub fn append_wal(db: &Database, seq: u64, value: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    txn.open_table(WAL)
        .map_err(backend)?
        .insert(seq, value)
        .map_err(backend)?;
    txn.commit().map_err(backend)
}

/// Copies the sessions and tombstones of the first layout's tables, if the file has them,
/// and drops those tables.
fn copy_first_layout(txn: &WriteTransaction) -> Result<(), StoreError> {
    let names: Vec<String> = txn
        .list_tables()
        .map_err(backend)?
        .map(|t| t.name().to_owned())
        .collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    let native = |key: [u8; ID_BYTES]| StoredId::of(&SessionId::from_bytes(key));
    if has(first_layout::SESSIONS.name()) {
        let old = txn.open_table(first_layout::SESSIONS).map_err(backend)?;
        let mut new = txn.open_table(SESSIONS).map_err(backend)?;
        for entry in old.iter().map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            new.insert(native(key.value()).as_slice(), value.value())
                .map_err(backend)?;
        }
    }
    if has(first_layout::ENDED.name()) {
        let old = txn.open_table(first_layout::ENDED).map_err(backend)?;
        let mut new = txn.open_table(ENDED).map_err(backend)?;
        for entry in old.iter().map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            new.insert(native(key.value()).as_slice(), value.value())
                .map_err(backend)?;
        }
    }
    txn.delete_table(first_layout::SESSIONS).map_err(backend)?;
    txn.delete_table(first_layout::ENDED).map_err(backend)?;
    txn.delete_table(first_layout::EXPIRY).map_err(backend)?;
    txn.delete_table(first_layout::USERS).map_err(backend)?;
    txn.delete_table(first_layout::ENDED_UNTIL)
        .map_err(backend)?;
    txn.delete_table(first_layout::SYNCED).map_err(backend)?;
    Ok(())
}

/// Builds the expiry index again, in buckets of `width`, from the sessions table, and with
/// `all` the user and tombstone indexes too (only the expiry index depends on the width).
fn rebuild_indexes(txn: &WriteTransaction, width: Millis, all: bool) -> Result<(), StoreError> {
    txn.delete_table(EXPIRY).map_err(backend)?;
    if all {
        txn.delete_table(USERS).map_err(backend)?;
    }
    {
        let sessions = txn.open_table(SESSIONS).map_err(backend)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(backend)?;
        let mut users = txn.open_table(USERS).map_err(backend)?;
        for entry in sessions.iter().map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            let (key, bytes) = (key.value(), value.value());
            expiry
                .insert(expiry_key(codec::expires_at(bytes)?, width, key), ())
                .map_err(backend)?;
            if !all {
                continue;
            }
            if let Some(user) = codec::user(bytes)? {
                users.insert((user, key), ()).map_err(backend)?;
            }
        }
    }
    if !all {
        return Ok(());
    }
    txn.delete_table(ENDED_UNTIL).map_err(backend)?;
    let ended = txn.open_table(ENDED).map_err(backend)?;
    let mut until = txn.open_table(ENDED_UNTIL).map_err(backend)?;
    for entry in ended.iter().map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        until
            .insert(index_key(value.value().1, key.value()), ())
            .map_err(backend)?;
    }
    Ok(())
}

/// The ids of the sessions stored for `user` (live or awaiting the purge).
pub fn user_sessions(db: &Database, user: &str) -> Result<Vec<SessionId>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(USERS).map_err(backend)?;
    // Every stored id starts with a kind's tag, which is below 0xff.
    let range = (user, &[][..])..(user, &[u8::MAX][..]);
    let mut out = Vec::new();
    for entry in table.range(range).map_err(backend)? {
        let (key, _) = entry.map_err(backend)?;
        out.push(id_of(key.value().1)?);
    }
    Ok(out)
}

/// Reads one session as stored (live or not).
pub fn get(db: &Database, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    match table.get(StoredId::of(id).as_slice()).map_err(backend)? {
        Some(value) => codec::decode(*id, value.value()).map(Some),
        None => Ok(None),
    }
}

/// What `pick` makes of each stored session, for those it keeps.
pub fn scan<T>(
    db: &Database,
    pick: impl Fn(SessionRecord) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        let record = codec::decode(id_of(key.value())?, value.value())?;
        out.extend(pick(record));
    }
    Ok(out)
}

/// Hands `each` the id and the times of every stored session with one of keepalive's own ids
/// (they come first in the table), reading the records' headers only, until it answers
/// `false`; returns how many it read.
pub fn native_times(
    db: &Database,
    mut each: impl FnMut(&SessionId, Stamp) -> bool,
) -> Result<usize, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    let native = [IdKind::Native.tag()];
    let after = [IdKind::Native.tag() + 1];
    let mut read = 0;
    for entry in table
        .range(native.as_slice()..after.as_slice())
        .map_err(backend)?
    {
        let (key, value) = entry.map_err(backend)?;
        let times = Stamp::read(value.value())?;
        read += 1;
        if !each(&id_of(key.value())?, times) {
            break;
        }
    }
    Ok(read)
}

/// Whether the tombstone of a removed session is kept.
pub fn ended(db: &Database, id: &SessionId) -> Result<bool, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(ENDED).map_err(backend)?;
    Ok(table
        .get(StoredId::of(id).as_slice())
        .map_err(backend)?
        .is_some())
}

/// The sessions whose tombstone is dated at or after `since` (all for `None`).
pub fn removed_since(db: &Database, since: Option<Millis>) -> Result<Vec<SessionId>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(ENDED).map_err(backend)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        let (ended_at, _) = value.value();
        if since.is_none_or(|s| ended_at >= s) {
            out.push(id_of(key.value())?);
        }
    }
    Ok(out)
}

/// Up to `limit` entries of `table` whose ids follow `after` (from the first for `None`), in
/// the order of ids: one page of a walk that a caller resumes where the last page ended, each
/// in its own read transaction, so that a walk through a million sessions neither holds them
/// all in memory nor pins one snapshot of the file for its whole length.
fn page<V: redb::Value + 'static, T>(
    db: &Database,
    table: TableDefinition<&[u8], V>,
    after: Option<&SessionId>,
    limit: usize,
    mut pick: impl FnMut(SessionId, V::SelfType<'_>) -> Result<Option<T>, StoreError>,
) -> Result<(Vec<T>, Option<SessionId>), StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(table).map_err(backend)?;
    let start = after.map(StoredId::of);
    let bounds = (
        start
            .as_ref()
            .map_or(Bound::Unbounded, |s| Bound::Excluded(s.as_slice())),
        Bound::Unbounded,
    );
    let mut out = Vec::new();
    let mut last = None;
    for (read, entry) in table.range::<&[u8]>(bounds).map_err(backend)?.enumerate() {
        if read == limit {
            return Ok((out, last));
        }
        let (key, value) = entry.map_err(backend)?;
        let id = id_of(key.value())?;
        out.extend(pick(id, value.value())?);
        last = Some(id);
    }
    Ok((out, None))
}

/// One page of the stored sessions after `after`: what `pick` makes of each of up to `limit`
/// of them, and the id to resume after (`None`: the walk is done).
pub fn sessions_page<T>(
    db: &Database,
    after: Option<&SessionId>,
    limit: usize,
    pick: impl Fn(SessionRecord) -> Option<T>,
) -> Result<(Vec<T>, Option<SessionId>), StoreError> {
    page(
        db,
        SESSIONS,
        after,
        limit,
        |id, value| match codec::decode(id, value) {
            Ok(record) => Ok(pick(record)),
            // One unreadable session must not stop a walk through a million: it could not be
            // written anywhere anyway. The id stays out of the log (a bearer secret).
            Err(err) => {
                tracing::warn!(error = %err, "a session in the local store cannot be read and is skipped: {err}; if this repeats, the data directory's disk may be failing");
                Ok(None)
            }
        },
    )
}

/// One page of the kept tombstones after `after`: the ids of up to `limit` of them, and the id
/// to resume after (`None`: the walk is done).
pub fn removed_page(
    db: &Database,
    after: Option<&SessionId>,
    limit: usize,
) -> Result<(Vec<SessionId>, Option<SessionId>), StoreError> {
    page(db, ENDED, after, limit, |id, _| Ok(Some(id)))
}

/// Up to `limit` stored sessions live at `now` whose expiry comes first, in that order (within
/// one bucket of the expiry index, by id): the least lately active, each with the end of the
/// bucket it is indexed under (its expiry is no later). Read from the index, so the work grows
/// with `limit` and with the expired sessions the purge has not removed yet, never with the
/// live ones.
pub fn first_to_expire(
    db: &Database,
    now: Millis,
    limit: usize,
) -> Result<Vec<(SessionId, Millis)>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let expiry = txn.open_table(EXPIRY).map_err(backend)?;
    // Buckets that ended by `now` hold only expired sessions.
    let from = index_key(now.saturating_add(1), &[]);
    let mut first = Vec::with_capacity(limit.min(4096));
    for entry in expiry.range(from..).map_err(backend)?.take(limit) {
        let (key, _) = entry.map_err(backend)?;
        let (at, id) = key.value();
        first.push((id_of(id)?, Millis::try_from(at).unwrap_or(Millis::MAX)));
    }
    Ok(first)
}

/// Keeps `note` under `key`, durably, replacing an earlier one.
pub fn write_note(db: &Database, key: &str, note: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    txn.open_table(NOTES)
        .map_err(backend)?
        .insert(key, note)
        .map_err(backend)?;
    txn.commit().map_err(backend)
}

/// The note under `key`, removed in the same transaction.
pub fn take_note(db: &Database, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let taken = txn
        .open_table(NOTES)
        .map_err(backend)?
        .remove(key)
        .map_err(backend)?
        .map(|note| note.value().to_vec());
    txn.commit().map_err(backend)?;
    Ok(taken)
}

/// The number of stored sessions, live or awaiting the purge.
pub fn count(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    table.len().map_err(backend)
}

/// The number of sessions live at `now`, from the tables' own lengths: the stored sessions
/// less those in expiry buckets that ended by `now` (expired, awaiting the purge). A session
/// that expired within the current bucket still counts until the bucket ends. The work grows
/// with the expired sessions the purge has not removed yet, never with the live ones.
pub fn live_count(db: &Database, now: Millis) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let stored = txn
        .open_table(SESSIONS)
        .map_err(backend)?
        .len()
        .map_err(backend)?;
    let expiry = txn.open_table(EXPIRY).map_err(backend)?;
    let upper = index_key(now.saturating_add(1), &[]);
    let mut expired = 0u64;
    for entry in expiry.range(..upper).map_err(backend)? {
        entry.map_err(backend)?;
        expired += 1;
    }
    Ok(stored.saturating_sub(expired))
}

/// The order of the sessions table's keys (see [`StoredId`]).
fn stored_order(id: &SessionId) -> (u8, &[u8]) {
    (id.kind().tag(), id.as_bytes())
}

/// Writes changes in one durable transaction, keeping the indexes in step, and empties the
/// log: the changes, with the extensions `extended` hands over (in the table's key order,
/// each newer than any change to its session), include everything it held. Where several
/// change one session, the last is written, and the last tombstone among them is kept.
pub fn apply<'a>(
    db: &Database,
    changes: impl IntoIterator<Item = (&'a SessionId, &'a Kept)>,
    extended: impl Iterator<Item = (SessionId, Stamp)>,
) -> Result<usize, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let width = expiry_width(&txn)?;
    let mut written = 0;
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(backend)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(backend)?;
        let mut ended = txn.open_table(ENDED).map_err(backend)?;
        let mut ended_until = txn.open_table(ENDED_UNTIL).map_err(backend)?;
        let mut users = txn.open_table(USERS).map_err(backend)?;
        // In key order: each leaf of the table is then read, copied and written once per
        // commit. In the hash maps' order, a batch larger than redb's write buffer (half its
        // cache) has leaves written out and read back between two of their writes. The sort
        // is stable, so one session's changes stay in their order. Sorted by a copy of each
        // key, side by side: a comparison that followed each change's reference into the
        // maps it came from met a cache miss, and such a sort took a tenth of a large fold.
        let mut changes: Vec<(&SessionId, &Kept)> = changes.into_iter().collect();
        changes.sort_by_cached_key(|(id, _)| (id.kind().tag(), **id));
        txn.open_table(WAL)
            .map_err(backend)?
            .retain(|_, _| false)
            .map_err(backend)?;
        let mut extended = extended.peekable();
        let mut rest = changes.as_slice();
        loop {
            // The next session in key order, from either.
            let id = match (rest.first(), extended.peek()) {
                (None, None) => break,
                (Some(&(id, _)), None) => *id,
                (None, Some((id, _))) => *id,
                (Some(&(a, _)), Some((b, _))) => {
                    *std::cmp::min_by(a, b, |a, b| stored_order(a).cmp(&stored_order(b)))
                }
            };
            let id = &id;
            let run = rest.iter().take_while(|(other, _)| *other == id).count();
            let (changes_of_id, after) = rest.split_at(run);
            rest = after;
            let from_times = extended
                .next_if(|(other, _)| other == id)
                .map(|(_, stamp)| Kept::Extend {
                    last_seen_at: stamp.last_seen_at,
                    expires_at: stamp.expires_at,
                });
            // The last change is the session's state (an extension, the record an earlier
            // one wrote, extended); a tombstone an earlier one left is kept all the same, as
            // the table keeps one whatever is written for the session later.
            let mut all = changes_of_id.iter().map(|(_, c)| *c).chain(&from_times);
            let Some(last) = all.clone().last() else {
                continue;
            };
            let merged;
            let change = if matches!(last, Kept::Extend { .. })
                && run + usize::from(from_times.is_some()) > 1
            {
                let first = all.next().cloned();
                merged = all.fold(first, |older, newer| {
                    older.map(|older| Kept::over(&older, newer.clone()))
                });
                merged.as_ref().unwrap_or(last)
            } else {
                last
            };
            let tombstone = changes_of_id.iter().rev().find_map(|(_, c)| match c {
                Kept::Remove(Some(tombstone)) => Some(**tombstone),
                _ => None,
            });
            let stored = StoredId::of(id);
            let key = stored.as_slice();
            if let Some(Tombstone { at, keep_until }) = tombstone {
                if let Some(old) = ended.insert(key, (at, keep_until)).map_err(backend)? {
                    ended_until
                        .remove(index_key(old.value().1, key))
                        .map_err(backend)?;
                }
                ended_until
                    .insert(index_key(keep_until, key), ())
                    .map_err(backend)?;
            }
            // The record to keep, encoded: a refresh's is the stored copy brought up to the
            // answer, and there is nothing to write without one.
            let refreshed;
            let keep: Option<&[u8]> = match change {
                Kept::Put(bytes) => Some(bytes),
                Kept::Refresh(answer) => {
                    let Some(value) = sessions.get(key).map_err(backend)? else {
                        continue;
                    };
                    let copy = codec::decode(*id, value.value())?;
                    refreshed = codec::encode(&answered(&copy, &codec::decode(*id, answer)?));
                    Some(&refreshed)
                }
                Kept::Remove(_) => None,
                Kept::Extend {
                    last_seen_at,
                    expires_at,
                } => {
                    let Some(value) = sessions.get(key).map_err(backend)? else {
                        continue;
                    };
                    let mut copy = codec::decode(*id, value.value())?;
                    extend(&mut copy, *last_seen_at, *expires_at);
                    refreshed = codec::encode(&copy);
                    Some(&refreshed)
                }
            };
            // One walk down the tree: the write hands back what it replaced. The old user
            // is copied out only when the index changes (a new session, a removal): an
            // extension, the common write, compares it in place.
            let new_user = keep.map(codec::user).transpose()?.flatten();
            let new_expiry = keep.map(codec::expires_at).transpose()?;
            let replaced = match keep {
                Some(bytes) => sessions.insert(key, bytes),
                None => sessions.remove(key),
            }
            .map_err(backend)?;
            let (old_expiry, old_user) = match replaced {
                Some(value) => {
                    let bytes = value.value();
                    let user = codec::user(bytes)?;
                    let moved = (user != new_user).then(|| user.map(str::to_owned));
                    (Some(codec::expires_at(bytes)?), moved)
                }
                None => (None, Some(None)),
            };
            // Most writes are extensions within the same bucket: the index stays.
            let in_bucket = |at| bucket(at, width);
            if old_expiry.map(in_bucket) != new_expiry.map(in_bucket) {
                if let Some(old) = old_expiry {
                    expiry
                        .remove(expiry_key(old, width, key))
                        .map_err(backend)?;
                }
                if let Some(new) = new_expiry {
                    expiry
                        .insert(expiry_key(new, width, key), ())
                        .map_err(backend)?;
                }
            }
            // `Some(previous)` when the session's entry in the user index must change.
            if let Some(previous) = old_user {
                if let Some(user) = previous {
                    users.remove((user.as_str(), key)).map_err(backend)?;
                }
                if let Some(user) = new_user {
                    users.insert((user, key), ()).map_err(backend)?;
                }
            }
            written += 1;
            // On the commit thread: let a request that waits for a core have it.
            if written % YIELD_EVERY == 0 {
                std::thread::yield_now();
            }
        }
    }
    txn.commit().map_err(backend)?;
    Ok(written)
}

/// Removes up to `limit` sessions that expired by `expired_by`, and tombstones no longer kept
/// at `now`; returns how many sessions it removed.
pub fn purge(
    db: &Database,
    expired_by: Millis,
    now: Millis,
    limit: usize,
) -> Result<usize, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let removed;
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(backend)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(backend)?;
        // Buckets that ended by `expired_by` hold only sessions expired by then.
        let upper = index_key(expired_by.saturating_add(1), &[]);
        let expired: Vec<(u64, Vec<u8>)> = expiry
            .range(..upper)
            .map_err(backend)?
            .take(limit)
            .map(|entry| {
                entry
                    .map(|(k, _)| {
                        let (at, id) = k.value();
                        (at, id.to_vec())
                    })
                    .map_err(backend)
            })
            .collect::<Result<_, _>>()?;
        removed = expired.len();
        let mut ended_until = txn.open_table(ENDED_UNTIL).map_err(backend)?;
        let upper = index_key(now.saturating_add(1), &[]);
        let stale: Vec<(u64, Vec<u8>)> = ended_until
            .range(..upper)
            .map_err(backend)?
            .take(limit)
            .map(|entry| {
                entry
                    .map(|(k, _)| {
                        let (at, id) = k.value();
                        (at, id.to_vec())
                    })
                    .map_err(backend)
            })
            .collect::<Result<_, _>>()?;
        let mut ended = txn.open_table(ENDED).map_err(backend)?;
        let mut users = txn.open_table(USERS).map_err(backend)?;
        for (at, key) in &stale {
            ended_until.remove((*at, key.as_slice())).map_err(backend)?;
            ended.remove(key.as_slice()).map_err(backend)?;
        }
        for (n, (at, id)) in expired.into_iter().enumerate() {
            if n % YIELD_EVERY == YIELD_EVERY - 1 {
                std::thread::yield_now();
            }
            let id = id.as_slice();
            expiry.remove((at, id)).map_err(backend)?;
            let current = match sessions.get(id).map_err(backend)? {
                Some(value) => {
                    let bytes = value.value();
                    let user = codec::user(bytes)?.map(str::to_owned);
                    Some((codec::expires_at(bytes)?, user))
                }
                None => None,
            };
            // An entry left behind (by a write that failed half-way, say) may point at a
            // record that lives on: only the expired go.
            if let Some((exp, user)) = current
                && exp <= expired_by
            {
                sessions.remove(id).map_err(backend)?;
                if let Some(user) = user {
                    users.remove((user.as_str(), id)).map_err(backend)?;
                }
            }
        }
    }
    txn.commit().map_err(backend)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_end_at_the_next_boundary() {
        let minute = BUDGET_EXPIRY_BUCKET_MS;
        assert_eq!(bucket(0, minute), 0);
        assert_eq!(bucket(1, minute), 60_000);
        assert_eq!(bucket(59_999, minute), 60_000);
        assert_eq!(bucket(60_000, minute), 60_000);
        assert_eq!(bucket(60_001, minute), 120_000);
        assert_eq!(bucket(-1, minute), 0);
        assert_eq!(bucket(i64::MAX, minute), i64::MAX, "saturates");
        assert_eq!(bucket(60_001, EXPIRY_BUCKET_MS), 600_000);
    }

    /// The expiry index's keys, in order.
    fn expiry_keys(db: &Database) -> Vec<(u64, Vec<u8>)> {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(EXPIRY).expect("expiry");
        table
            .iter()
            .expect("iter")
            .map(|entry| {
                let (key, _) = entry.expect("entry");
                let (at, id) = key.value();
                (at, id.to_vec())
            })
            .collect()
    }

    #[test]
    fn a_change_of_bucket_width_rebuilds_the_expiry_index_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sessions.redb");
        let cache = crate::store::local::CACHE_BYTES;
        let record = SessionRecord::new(
            SessionId::from_bytes([7; 16]),
            0,
            std::time::Duration::from_secs(90),
            std::time::Duration::from_secs(600),
            "{}".to_owned(),
        );
        let key = StoredId::of(&record.id);
        let key = key.as_slice();
        // An id with no session under it, planted by hand: in the user index (which a width
        // change leaves as it is) and later in the expiry index (which a rebuild drops it from).
        let stray = StoredId::of(&SessionId::from_bytes([9; 16]));
        let stray = stray.as_slice();
        {
            let db = open(&path, cache, EXPIRY_BUCKET_MS).expect("open");
            let txn = db.begin_write().expect("write");
            {
                let mut sessions = txn.open_table(SESSIONS).expect("sessions");
                sessions
                    .insert(key, codec::encode(&record).as_slice())
                    .expect("insert");
                let mut expiry = txn.open_table(EXPIRY).expect("expiry");
                expiry
                    .insert(expiry_key(record.expires_at, EXPIRY_BUCKET_MS, key), ())
                    .expect("index");
                let mut users = txn.open_table(USERS).expect("users");
                users.insert(("ana", stray), ()).expect("user");
            }
            txn.commit().expect("commit");
        }
        // On its own, then as the mirror of a Redis under a budget: one-minute buckets from
        // now on.
        let db = open(&path, cache, BUDGET_EXPIRY_BUCKET_MS).expect("reopen");
        assert_eq!(expiry_keys(&db), vec![(120_000, key.to_vec())]);
        assert_eq!(
            user_sessions(&db, "ana").expect("users").len(),
            1,
            "the user index does not depend on the width: left as it was"
        );

        // A file of a version that did not record the width has one-minute buckets: opened
        // with one-minute buckets, its index is kept as it is.
        let txn = db.begin_write().expect("write");
        txn.open_table(EXPIRY)
            .expect("expiry")
            .insert((0, stray), ())
            .expect("stray");
        txn.open_table(META)
            .expect("meta")
            .remove("expiry_bucket_ms")
            .expect("forget the width");
        txn.commit().expect("commit");
        drop(db);
        let db = open(&path, cache, BUDGET_EXPIRY_BUCKET_MS).expect("reopen");
        assert_eq!(
            expiry_keys(&db),
            vec![(0, stray.to_vec()), (120_000, key.to_vec())],
            "not rebuilt"
        );
        drop(db);
        // The same file opened by the store on its own: rebuilt in ten-minute buckets.
        let db = open(&path, cache, EXPIRY_BUCKET_MS).expect("reopen");
        assert_eq!(expiry_keys(&db), vec![(600_000, key.to_vec())]);
    }

    #[test]
    fn a_page_skips_a_session_it_cannot_read_and_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(
            &dir.path().join("sessions.redb"),
            crate::store::local::CACHE_BYTES,
            EXPIRY_BUCKET_MS,
        )
        .expect("open");
        let ids: Vec<SessionId> = (1..=3u8).map(|b| SessionId::from_bytes([b; 16])).collect();
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(SESSIONS).expect("table");
            for (n, id) in ids.iter().enumerate() {
                let record = SessionRecord::new(
                    *id,
                    0,
                    std::time::Duration::from_secs(60),
                    std::time::Duration::from_secs(600),
                    "{}".to_owned(),
                );
                let bytes = if n == 1 {
                    b"not a session".to_vec()
                } else {
                    codec::encode(&record)
                };
                table
                    .insert(StoredId::of(id).as_slice(), bytes.as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
        let (read, next) = sessions_page(&db, None, 10, |r| Some(r.id)).expect("page");
        assert_eq!(read, vec![ids[0], ids[2]], "the unreadable one left out");
        assert_eq!(next, None);
    }
}
