//! The redb file: two tables and the three transactions the store runs on them.
//!
//! `sessions` maps an id to its encoded record. `expiry` is an index of (idle expiry, id),
//! so the purge walks only the expired prefix: its cost grows with the number of sessions that
//! expired, not with the number stored. `users` is an index of (user, id) for the sessions
//! created for a user, so listing or ending a user's sessions reads only theirs. A session's
//! user never changes, so the index is written when a session appears and when it goes.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::clock::Millis;
use crate::session::{ID_BYTES, SessionId, SessionRecord, StoreError};

use super::codec;

type Key = [u8; ID_BYTES];
const SESSIONS: TableDefinition<Key, &[u8]> = TableDefinition::new("sessions");
const EXPIRY: TableDefinition<(u64, Key), ()> = TableDefinition::new("expiry");
const USERS: TableDefinition<(&str, Key), ()> = TableDefinition::new("users");
/// Logouts, kept for the shared store until the session could no longer have lived: those
/// made while it was offline reach it when it returns, and every one is written again to a
/// shared store that came back empty, so no instance's copy of the session can revive it.
/// Id to (ended at, keep until).
const ENDED: TableDefinition<Key, (i64, i64)> = TableDefinition::new("ended");
/// Index of `ENDED` by (keep until, id), so the purge finds the logouts it may forget without
/// reading the others.
const ENDED_UNTIL: TableDefinition<(u64, Key), ()> = TableDefinition::new("ended_until");

/// A pending change to one session.
#[derive(Debug, Clone)]
pub enum Change {
    /// Store this record (a creation or an extension).
    Put(SessionRecord),
    /// Remove the session.
    Delete,
    /// Remove the session and remember the logout for the shared store, until `keep_until`.
    End {
        /// When the session was ended.
        ended_at: Millis,
        /// When the record of the logout may go.
        keep_until: Millis,
    },
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn index_key(expires_at: Millis, id: &Key) -> (u64, Key) {
    (u64::try_from(expires_at).unwrap_or(0), *id)
}

/// Opens (or creates) the database file and its tables.
pub fn open(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(|err| match err {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
            "{} is already in use by another keepalive process; give each instance its own data directory",
            path.display()
        )),
        other => StoreError::Backend(format!("cannot open {}: {other}", path.display())),
    })?;
    let txn = db.begin_write().map_err(backend)?;
    txn.open_table(SESSIONS).map_err(backend)?;
    txn.open_table(EXPIRY).map_err(backend)?;
    {
        let ended = txn.open_table(ENDED).map_err(backend)?;
        let mut until = txn.open_table(ENDED_UNTIL).map_err(backend)?;
        // A file written before the index existed: index what it holds, once.
        if until.is_empty().map_err(backend)? && !ended.is_empty().map_err(backend)? {
            for entry in ended.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                until
                    .insert(index_key(value.value().1, &key.value()), ())
                    .map_err(backend)?;
            }
        }
    }
    txn.open_table(USERS).map_err(backend)?;
    txn.commit().map_err(backend)?;
    Ok(db)
}

/// The ids of the sessions stored for `user` (live or awaiting the purge).
pub fn user_sessions(db: &Database, user: &str) -> Result<Vec<SessionId>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(USERS).map_err(backend)?;
    let range = (user, [0; ID_BYTES])..=(user, [u8::MAX; ID_BYTES]);
    let mut out = Vec::new();
    for entry in table.range(range).map_err(backend)? {
        let (key, _) = entry.map_err(backend)?;
        out.push(SessionId::from_bytes(key.value().1));
    }
    Ok(out)
}

/// Reads one session as stored (live or not).
pub fn get(db: &Database, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    match table.get(id.as_bytes()).map_err(backend)? {
        Some(value) => codec::decode(*id, value.value()).map(Some),
        None => Ok(None),
    }
}

/// Every stored session that `keep` accepts.
pub fn scan(
    db: &Database,
    keep: impl Fn(&SessionRecord) -> bool,
) -> Result<Vec<SessionRecord>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        let record = codec::decode(SessionId::from_bytes(key.value()), value.value())?;
        if keep(&record) {
            out.push(record);
        }
    }
    Ok(out)
}

/// Logouts recorded at or after `since` (all for `None`).
pub fn ended_since(db: &Database, since: Option<Millis>) -> Result<Vec<SessionId>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(ENDED).map_err(backend)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        let (ended_at, _) = value.value();
        if since.is_none_or(|s| ended_at >= s) {
            out.push(SessionId::from_bytes(key.value()));
        }
    }
    Ok(out)
}

/// The number of stored sessions, live or awaiting the purge.
pub fn count(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(SESSIONS).map_err(backend)?;
    table.len().map_err(backend)
}

/// Writes batches of changes in one durable transaction, keeping the index in step.
pub fn apply<'a>(
    db: &Database,
    batches: impl IntoIterator<Item = &'a HashMap<SessionId, Change>>,
) -> Result<usize, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let mut written = 0;
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(backend)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(backend)?;
        let mut ended = txn.open_table(ENDED).map_err(backend)?;
        let mut ended_until = txn.open_table(ENDED_UNTIL).map_err(backend)?;
        let mut users = txn.open_table(USERS).map_err(backend)?;
        for batch in batches {
            for (id, change) in batch {
                let key = id.as_bytes();
                match change {
                    Change::End {
                        ended_at,
                        keep_until,
                    } => {
                        if let Some(old) = ended
                            .insert(key, (*ended_at, *keep_until))
                            .map_err(backend)?
                        {
                            ended_until
                                .remove(index_key(old.value().1, key))
                                .map_err(backend)?;
                        }
                        ended_until
                            .insert(index_key(*keep_until, key), ())
                            .map_err(backend)?;
                    }
                    Change::Put(_) | Change::Delete => {}
                }
                // The user is copied out only when the index changes (a new session, a
                // removal): an extension, the common write, compares it in place.
                let new_user = match change {
                    Change::Put(record) => record.user.as_deref(),
                    _ => None,
                };
                let (old_expiry, old_user) = match sessions.get(key).map_err(backend)? {
                    Some(value) => {
                        let bytes = value.value();
                        let user = codec::user(bytes)?;
                        let moved = (user != new_user).then(|| user.map(str::to_owned));
                        (Some(codec::expires_at(bytes)?), moved)
                    }
                    None => (None, Some(None)),
                };
                if let Some(old) = old_expiry {
                    expiry.remove(index_key(old, key)).map_err(backend)?;
                }
                // `Some(previous)` when the session's entry in the user index must change.
                if let Some(Some(user)) = &old_user {
                    users.remove((user.as_str(), *key)).map_err(backend)?;
                }
                match change {
                    Change::Put(record) => {
                        sessions
                            .insert(key, codec::encode(record).as_slice())
                            .map_err(backend)?;
                        expiry
                            .insert(index_key(record.expires_at, key), ())
                            .map_err(backend)?;
                        if let (Some(_), Some(user)) = (&old_user, &record.user) {
                            users.insert((user.as_str(), *key), ()).map_err(backend)?;
                        }
                    }
                    Change::Delete | Change::End { .. } => {
                        sessions.remove(key).map_err(backend)?;
                    }
                }
                written += 1;
            }
        }
    }
    txn.commit().map_err(backend)?;
    Ok(written)
}

/// Removes up to `limit` sessions that expired before `now`; returns how many it removed.
pub fn purge(db: &Database, now: Millis, limit: usize) -> Result<usize, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let removed;
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(backend)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(backend)?;
        let upper = index_key(now, &[0; ID_BYTES]);
        let expired: Vec<(u64, Key)> = expiry
            .range(..upper)
            .map_err(backend)?
            .take(limit)
            .map(|entry| entry.map(|(k, _)| k.value()).map_err(backend))
            .collect::<Result<_, _>>()?;
        removed = expired.len();
        let mut ended_until = txn.open_table(ENDED_UNTIL).map_err(backend)?;
        let upper = index_key(now.saturating_add(1), &[0; ID_BYTES]);
        let stale: Vec<(u64, Key)> = ended_until
            .range(..upper)
            .map_err(backend)?
            .take(limit)
            .map(|entry| entry.map(|(k, _)| k.value()).map_err(backend))
            .collect::<Result<_, _>>()?;
        let mut ended = txn.open_table(ENDED).map_err(backend)?;
        let mut users = txn.open_table(USERS).map_err(backend)?;
        for (at, key) in &stale {
            ended_until.remove((*at, *key)).map_err(backend)?;
            ended.remove(key).map_err(backend)?;
        }
        for (at, id) in expired {
            expiry.remove((at, id)).map_err(backend)?;
            let current = match sessions.get(&id).map_err(backend)? {
                Some(value) => {
                    let bytes = value.value();
                    let user = codec::user(bytes)?.map(str::to_owned);
                    Some((codec::expires_at(bytes)?, user))
                }
                None => None,
            };
            // An index entry left behind by an extension points at a record that lives on.
            if let Some((exp, user)) = current
                && exp <= now
            {
                sessions.remove(&id).map_err(backend)?;
                if let Some(user) = user {
                    users.remove((user.as_str(), id)).map_err(backend)?;
                }
            }
        }
    }
    txn.commit().map_err(backend)?;
    Ok(removed)
}
