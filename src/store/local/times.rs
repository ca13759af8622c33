//! The times of every session the store on its own holds, in memory: what a keepalive needs
//! (whether the session lives, its idle and absolute expiries) without reading the file.
//!
//! A keepalive answers a session's times, never its user or data, yet reading those times
//! from the file costs a walk of redb's tree and, once the store outgrows redb's cache, a read
//! of a page the cache no longer holds: the keepalive of a store of a million sessions cost a
//! third more than that of a thousand. Here each session costs about 23 bytes: its id's last
//! 14 bytes and its two expiries in 4 bytes each, in milliseconds after its array's base
//! time, in sorted arrays under the id's first two bytes. A hash map of the same entries
//! costs half as much again (its empty slots and control bytes), and a B-tree map more. The
//! purge moves each array's base up to the time it purged by, so an expiry fits whenever it
//! is less than 49 days after that; one that does not is read from the file. Only
//! keepalive's own ids (16 random bytes, so the arrays stay even) are kept; an Express
//! application's ids are read from the file.
//!
//! The table is kept in step with the overlay: every change put there is put here under the
//! same shard lock (see `Shared::put`), so the two agree whatever order requests come in.
//! It is complete once the store opened has read every session of its file into it, in the
//! background (a start does not wait for it); until then a keepalive reads the file as
//! before. An entry is one of: a live or expired session by its times; gone (a logout: kept
//! as an expired entry so the background read, working from an older view of the file,
//! cannot bring it back; the purge drops it); or "read the file" (a change whose times the
//! table cannot tell, such as one read back from the write-ahead log after a crash: the next
//! keepalive reads the file, then the entry holds its times again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::clock::Millis;
use crate::session::{IdKind, SessionId};

/// Arrays, one per value of an id's first two bytes.
const BUCKETS: usize = 1 << 16;
/// Bytes of an id after the two that choose its array.
const KEY: usize = 14;
/// Bytes of a time: milliseconds after the array's base.
const TIME: usize = 4;
const ENTRY: usize = KEY + 2 * TIME;
/// As an idle expiry: "read the file".
const IN_FILE: u32 = u32::MAX;
/// How long before the table was made its first base lies: an expiry earlier than a base is
/// held as the base, past for any clock that reads the time since.
const FIRST_BASE_BEFORE: Millis = 24 * 3_600_000;

type Entry = [u8; ENTRY];

/// One array and the time its entries count from.
struct Bucket {
    base: Millis,
    entries: Vec<Entry>,
}

impl Bucket {
    /// `at` as an offset from the base: the base for a time at or before it, `None` for one
    /// too far after it.
    fn offset(&self, at: Millis) -> Option<u32> {
        u32::try_from(at.saturating_sub(self.base).max(0))
            .ok()
            .filter(|&t| t < IN_FILE)
    }

    fn decode(&self, entry: &Entry) -> Known {
        let (expires, absolute) = offsets(entry);
        if expires == IN_FILE {
            return Known::InFile;
        }
        Known::Times {
            expires_at: self.base + Millis::from(expires),
            absolute_expires_at: self.base + Millis::from(absolute),
        }
    }
}

/// An entry's two offsets: its idle expiry's and its absolute expiry's.
fn offsets(entry: &Entry) -> (u32, u32) {
    let read = |at: usize| {
        let mut bytes = [0u8; TIME];
        bytes.copy_from_slice(&entry[at..at + TIME]);
        u32::from_le_bytes(bytes)
    };
    (read(KEY), read(KEY + TIME))
}

fn entry(key: &[u8], expires: u32, absolute: u32) -> Entry {
    let mut entry = [0u8; ENTRY];
    entry[..KEY].copy_from_slice(key);
    entry[KEY..KEY + TIME].copy_from_slice(&expires.to_le_bytes());
    entry[KEY + TIME..].copy_from_slice(&absolute.to_le_bytes());
    entry
}

/// What the table knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Not in the table: the store does not hold it, once the table is complete.
    Absent,
    /// Its times (an ended session's are both zero).
    Times {
        expires_at: Millis,
        absolute_expires_at: Millis,
    },
    /// The table cannot tell: read the file.
    InFile,
}

/// The table.
pub struct Times {
    buckets: Box<[Mutex<Bucket>]>,
    complete: AtomicBool,
}

impl Times {
    /// An empty table, made at `now`.
    pub fn new(now: Millis) -> Self {
        let base = now.saturating_sub(FIRST_BASE_BEFORE);
        Self {
            buckets: (0..BUCKETS)
                .map(|_| {
                    Mutex::new(Bucket {
                        base,
                        entries: Vec::new(),
                    })
                })
                .collect(),
            complete: AtomicBool::new(false),
        }
    }

    /// Whether every session of the file has been read in: an id not in the table is then
    /// not in the store.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// The background read of the file is done.
    pub fn set_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Whether the table keeps sessions with this id's kind.
    pub fn keeps(id: &SessionId) -> bool {
        id.kind() == IdKind::Native && id.as_bytes().len() == KEY + 2
    }

    /// What the table knows of `id`; `InFile` for an id it does not keep.
    #[cfg(test)]
    pub fn get(&self, id: &SessionId) -> Known {
        let Some((bucket, key)) = self.place(id) else {
            return Known::InFile;
        };
        match find(&bucket.entries, key) {
            Ok(at) => bucket.decode(&bucket.entries[at]),
            Err(_) => Known::Absent,
        }
    }

    /// A keepalive at `now`: extends a live session's idle expiry to `now + idle`, never past
    /// its absolute expiry nor back (as `SessionRecord::touch` does), and answers its new
    /// times; `Absent` for a session the table does not hold or that expired, `InFile` when
    /// the table cannot tell. One look-up under one lock.
    pub fn extend(&self, id: &SessionId, now: Millis, idle: Millis) -> Known {
        let Some((mut bucket, key)) = self.place(id) else {
            return Known::InFile;
        };
        let Ok(at) = find(&bucket.entries, key) else {
            return Known::Absent;
        };
        let (expires_at, absolute_expires_at) = match bucket.decode(&bucket.entries[at]) {
            Known::Times {
                expires_at,
                absolute_expires_at,
            } => (expires_at, absolute_expires_at),
            other => return other,
        };
        if now >= expires_at {
            return Known::Absent;
        }
        let extended = now
            .saturating_add(idle)
            .min(absolute_expires_at)
            .max(expires_at);
        // No later than the absolute expiry, which fits.
        let Some(offset) = bucket.offset(extended) else {
            return Known::InFile;
        };
        bucket.entries[at][KEY..KEY + TIME].copy_from_slice(&offset.to_le_bytes());
        Known::Times {
            expires_at: extended,
            absolute_expires_at,
        }
    }

    /// Records a session's times.
    pub fn set(&self, id: &SessionId, expires_at: Millis, absolute_expires_at: Millis) {
        self.write(id, Some((expires_at, absolute_expires_at)), true);
    }

    /// Records that the session ended: held as expired at the array's base.
    pub fn set_gone(&self, id: &SessionId) {
        self.write(id, Some((Millis::MIN, Millis::MIN)), true);
    }

    /// Records that the session's times are to be read from the file.
    pub fn set_in_file(&self, id: &SessionId) {
        self.write(id, None, true);
    }

    /// Records a session read from the file, unless a change since left an entry.
    pub fn fill(&self, id: &SessionId, expires_at: Millis, absolute_expires_at: Millis) {
        self.write(id, Some((expires_at, absolute_expires_at)), false);
    }

    /// Drops the entries of sessions expired by `expired_by` (ended ones among them), moves
    /// each array's base up to it, and gives the arrays' spare room back; returns how many
    /// entries went.
    pub fn purge(&self, expired_by: Millis) -> usize {
        let mut removed = 0;
        for bucket in self.buckets.iter() {
            let mut bucket = lock(bucket);
            let Bucket { base, entries } = &mut *bucket;
            let before = entries.len();
            let shift = expired_by.saturating_sub(*base).max(0);
            let shift = u32::try_from(shift).unwrap_or(u32::MAX);
            entries.retain_mut(|entry| {
                let (expires, absolute) = offsets(entry);
                if expires == IN_FILE {
                    return true;
                }
                if expires <= shift {
                    return false;
                }
                // Live past the new base: its idle expiry's offset stays positive.
                entry[KEY..KEY + TIME].copy_from_slice(&(expires - shift).to_le_bytes());
                let absolute = absolute.saturating_sub(shift);
                entry[KEY + TIME..].copy_from_slice(&absolute.to_le_bytes());
                true
            });
            *base += Millis::from(shift);
            removed += before - entries.len();
            if entries.capacity() > entries.len() + entries.len() / 8 + 1 {
                entries.shrink_to_fit();
            }
        }
        removed
    }

    /// How many entries the table holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| lock(b).entries.len()).sum()
    }

    fn place<'a>(&self, id: &'a SessionId) -> Option<(MutexGuard<'_, Bucket>, &'a [u8])> {
        if !Self::keeps(id) {
            return None;
        }
        let bytes = id.as_bytes();
        let bucket = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        Some((lock(&self.buckets[bucket]), &bytes[2..]))
    }

    /// Writes `times` (idle and absolute expiries; `None`: read the file) for `id`, over an
    /// entry it holds only if `replace`.
    fn write(&self, id: &SessionId, times: Option<(Millis, Millis)>, replace: bool) {
        let Some((mut bucket, key)) = self.place(id) else {
            return;
        };
        let offsets = times.and_then(|(expires_at, absolute)| {
            Some((bucket.offset(expires_at)?, bucket.offset(absolute)?))
        });
        let (expires, absolute) = offsets.unwrap_or((IN_FILE, IN_FILE));
        let new = entry(key, expires, absolute);
        let entries = &mut bucket.entries;
        match find(entries, key) {
            Ok(at) if replace => entries[at] = new,
            Ok(_) => {}
            Err(at) => {
                // Grown by an eighth at a time, not doubled: the arrays are many and small,
                // and a doubling would leave a third of the table empty on average.
                if entries.len() == entries.capacity() {
                    let more = entries.len() / 8 + 1;
                    entries.reserve_exact(more);
                }
                entries.insert(at, new);
            }
        }
    }
}

fn lock(bucket: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    bucket
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn find(bucket: &[Entry], key: &[u8]) -> Result<usize, usize> {
    // As integers: a comparison of two registers rather than a call to `memcmp`.
    let key = ordered(key);
    bucket.binary_search_by(|entry| ordered(&entry[..KEY]).cmp(&key))
}

/// A key as a number that orders as its bytes do.
fn ordered(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[..KEY].copy_from_slice(key);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, last: u8) -> SessionId {
        let mut bytes = [7u8; 16];
        bytes[0] = first;
        bytes[15] = last;
        SessionId::from_bytes(bytes)
    }

    #[test]
    fn keeps_times_by_id_and_tells_what_it_does_not_hold() {
        let times = Times::new(1_700_000_000_000);
        let (a, b, c) = (id(1, 1), id(1, 2), id(2, 1));
        times.set(&a, 1_700_000_060_000, 1_700_003_600_000);
        times.set(&b, 5, 9);
        assert_eq!(
            times.get(&a),
            Known::Times {
                expires_at: 1_700_000_060_000,
                absolute_expires_at: 1_700_003_600_000
            }
        );
        assert!(
            matches!(times.get(&b), Known::Times { expires_at, .. } if expires_at < 1_700_000_000_000),
            "a time before the base is held as past"
        );
        assert_eq!(times.get(&c), Known::Absent);
        times.set(&a, 1_700_000_090_000, 1_700_003_600_000);
        assert!(matches!(
            times.get(&a),
            Known::Times {
                expires_at: 1_700_000_090_000,
                ..
            }
        ));
        assert_eq!(times.len(), 2);
    }

    #[test]
    fn a_keepalive_extends_within_the_absolute_lifetime_and_never_back() {
        let times = Times::new(0);
        let a = id(5, 1);
        times.set(&a, 1_000, 10_000);
        let extended = |expires_at| Known::Times {
            expires_at,
            absolute_expires_at: 10_000,
        };
        assert_eq!(times.extend(&a, 500, 2_000), extended(2_500));
        assert_eq!(times.extend(&a, 600, 1_000), extended(2_500), "never back");
        assert_eq!(times.extend(&a, 2_000, 9_000), extended(10_000), "capped");
        assert_eq!(times.get(&a), extended(10_000));
        assert_eq!(times.extend(&a, 10_000, 2_000), Known::Absent, "expired");
        assert_eq!(times.extend(&id(5, 2), 500, 2_000), Known::Absent);
        times.set_gone(&a);
        assert_eq!(times.extend(&a, 500, 2_000), Known::Absent, "ended");
        times.set_in_file(&a);
        assert_eq!(times.extend(&a, 500, 2_000), Known::InFile);
    }

    #[test]
    fn a_read_of_the_file_never_undoes_a_change_made_since() {
        let times = Times::new(0);
        let (ended, extended, untouched) = (id(3, 1), id(3, 2), id(3, 3));
        times.set_gone(&ended);
        times.set(&extended, 500, 900);
        times.fill(&ended, 100, 900);
        times.fill(&extended, 100, 900);
        times.fill(&untouched, 100, 900);
        assert!(
            matches!(times.get(&ended), Known::Times { expires_at, .. } if expires_at <= 0),
            "ended: expired before the table was made"
        );
        assert!(matches!(
            times.get(&extended),
            Known::Times {
                expires_at: 500,
                ..
            }
        ));
        assert!(matches!(
            times.get(&untouched),
            Known::Times {
                expires_at: 100,
                ..
            }
        ));
    }

    #[test]
    fn times_it_cannot_hold_and_ids_it_does_not_keep_send_to_the_file() {
        let times = Times::new(0);
        let a = id(4, 1);
        let fifty_days = 50 * 24 * 3_600_000;
        times.set(&a, 10, fifty_days);
        assert_eq!(times.get(&a), Known::InFile, "beyond the array's range");
        times.set(&a, 10, 20);
        times.set_in_file(&a);
        assert_eq!(times.get(&a), Known::InFile);
        let express = SessionId::parse_express("abc").expect("an Express id");
        times.set(&express, 10, 20);
        assert_eq!(times.get(&express), Known::InFile);
        assert_eq!(times.len(), 1);
    }

    #[test]
    fn the_purge_drops_expired_and_ended_entries_only() {
        let times = Times::new(0);
        for n in 0..100u8 {
            times.set(&id(n % 3, n), i64::from(n) * 10, 10_000);
        }
        times.set_gone(&id(9, 9));
        times.set_in_file(&id(9, 10));
        assert_eq!(times.purge(495), 50 + 1);
        assert_eq!(times.len(), 50 + 1);
        assert_eq!(times.get(&id(9, 10)), Known::InFile);
        assert_eq!(times.get(&id(0, 0)), Known::Absent);
        assert!(matches!(times.get(&id(99 % 3, 99)), Known::Times { .. }));
    }

    #[test]
    fn the_purge_moves_the_base_and_the_times_stay_exact() {
        let day = 24 * 3_600_000;
        let times = Times::new(0);
        let (kept, long) = (id(6, 1), id(6, 2));
        times.set(&kept, 30 * day + 7, 40 * day + 11);
        times.set(&long, 40 * day, 60 * day);
        assert_eq!(
            times.get(&long),
            Known::InFile,
            "60 days from a base a day before 0"
        );
        times.set_gone(&long);
        assert_eq!(times.purge(20 * day), 1, "the ended one");
        let expected = Known::Times {
            expires_at: 30 * day + 7,
            absolute_expires_at: 40 * day + 11,
        };
        assert_eq!(times.get(&kept), expected);
        times.set(&long, 40 * day, 60 * day);
        assert!(
            matches!(times.get(&long), Known::Times { absolute_expires_at, .. } if absolute_expires_at == 60 * day),
            "fits from the new base"
        );
        assert_eq!(
            times.extend(&kept, 30 * day, day),
            Known::Times {
                expires_at: 31 * day,
                absolute_expires_at: 40 * day + 11
            }
        );
        assert_eq!(times.purge(35 * day), 1);
        assert_eq!(times.get(&kept), Known::Absent);
    }

    #[test]
    fn an_entry_is_twenty_two_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 22);
    }
}
