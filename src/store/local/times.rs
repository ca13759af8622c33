//! The times of every session the store on its own holds, in memory: what a keepalive needs
//! (whether the session lives, its idle and absolute expiries) without reading the file.
//!
//! A keepalive answers a session's times, never its user or data, yet reading those times
//! from the file costs a walk of redb's tree and, once the store outgrows redb's cache, a read
//! of a page the cache no longer holds: the keepalive of a store of a million sessions cost a
//! third more than that of a thousand. Here each session costs about 28 bytes: its id's last
//! 14 bytes and its two expiries in 6 bytes each, in sorted arrays under the id's first two
//! bytes. A hash map of the same entries costs half as much again (its empty slots and
//! control bytes), and a B-tree map more. Only keepalive's own ids (16 random bytes, so the
//! arrays stay even) are kept; an Express application's ids are read from the file.
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
/// Bytes of a time: milliseconds since 1970 up to the year 10 889.
const TIME: usize = 6;
const ENTRY: usize = KEY + 2 * TIME;
/// The largest time an entry holds; as both times, it means "read the file".
const IN_FILE: u64 = (1 << (8 * TIME)) - 1;

type Entry = [u8; ENTRY];

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
    buckets: Box<[Mutex<Vec<Entry>>]>,
    complete: AtomicBool,
}

impl Default for Times {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Mutex::default()).collect(),
            complete: AtomicBool::new(false),
        }
    }
}

impl Times {
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
        match find(&bucket, key) {
            Ok(at) => decode(&bucket[at]),
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
        let Ok(at) = find(&bucket, key) else {
            return Known::Absent;
        };
        let (expires_at, absolute_expires_at) = match decode(&bucket[at]) {
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
        // Within 48 bits: no later than the absolute expiry, which the entry holds.
        bucket[at][KEY..KEY + TIME].copy_from_slice(&(extended as u64).to_le_bytes()[..TIME]);
        Known::Times {
            expires_at: extended,
            absolute_expires_at,
        }
    }

    /// Records a session's times.
    pub fn set(&self, id: &SessionId, expires_at: Millis, absolute_expires_at: Millis) {
        let (Some(expires), Some(absolute)) = (time(expires_at), time(absolute_expires_at)) else {
            return self.set_in_file(id);
        };
        self.write(id, expires, absolute, true);
    }

    /// Records that the session ended.
    pub fn set_gone(&self, id: &SessionId) {
        self.write(id, 0, 0, true);
    }

    /// Records that the session's times are to be read from the file.
    pub fn set_in_file(&self, id: &SessionId) {
        self.write(id, IN_FILE, IN_FILE, true);
    }

    /// Records a session read from the file, unless a change since left an entry.
    pub fn fill(&self, id: &SessionId, expires_at: Millis, absolute_expires_at: Millis) {
        let (expires, absolute) = match (time(expires_at), time(absolute_expires_at)) {
            (Some(expires), Some(absolute)) => (expires, absolute),
            _ => (IN_FILE, IN_FILE),
        };
        self.write(id, expires, absolute, false);
    }

    /// Drops the entries of sessions expired by `expired_by` (ended ones among them) and
    /// gives the arrays' spare room back; returns how many went.
    pub fn purge(&self, expired_by: Millis) -> usize {
        let mut removed = 0;
        for bucket in self.buckets.iter() {
            let mut bucket = lock(bucket);
            let before = bucket.len();
            bucket.retain(|entry| match decode(entry) {
                Known::Times { expires_at, .. } => expires_at > expired_by,
                _ => true,
            });
            removed += before - bucket.len();
            if bucket.capacity() > bucket.len() + bucket.len() / 8 + 1 {
                bucket.shrink_to_fit();
            }
        }
        removed
    }

    /// How many entries the table holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| lock(b).len()).sum()
    }

    fn place<'a>(&self, id: &'a SessionId) -> Option<(MutexGuard<'_, Vec<Entry>>, &'a [u8])> {
        if !Self::keeps(id) {
            return None;
        }
        let bytes = id.as_bytes();
        let bucket = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        Some((lock(&self.buckets[bucket]), &bytes[2..]))
    }

    fn write(&self, id: &SessionId, expires: u64, absolute: u64, replace: bool) {
        let Some((mut bucket, key)) = self.place(id) else {
            return;
        };
        let mut entry = [0u8; ENTRY];
        entry[..KEY].copy_from_slice(key);
        entry[KEY..KEY + TIME].copy_from_slice(&expires.to_le_bytes()[..TIME]);
        entry[KEY + TIME..].copy_from_slice(&absolute.to_le_bytes()[..TIME]);
        match find(&bucket, key) {
            Ok(at) if replace => bucket[at] = entry,
            Ok(_) => {}
            Err(at) => {
                // Grown by an eighth at a time, not doubled: the arrays are many and small,
                // and a doubling would leave a third of the table empty on average.
                if bucket.len() == bucket.capacity() {
                    let more = bucket.len() / 8 + 1;
                    bucket.reserve_exact(more);
                }
                bucket.insert(at, entry);
            }
        }
    }
}

fn lock(bucket: &Mutex<Vec<Entry>>) -> MutexGuard<'_, Vec<Entry>> {
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

/// A time as an entry holds it, if it fits.
fn time(at: Millis) -> Option<u64> {
    u64::try_from(at).ok().filter(|&t| t < IN_FILE)
}

fn decode(entry: &Entry) -> Known {
    let read = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes[..TIME].copy_from_slice(&entry[at..at + TIME]);
        u64::from_le_bytes(bytes)
    };
    let (expires, absolute) = (read(KEY), read(KEY + TIME));
    if expires == IN_FILE {
        return Known::InFile;
    }
    // Both fit in 48 bits: the conversions cannot fail.
    Known::Times {
        expires_at: expires as Millis,
        absolute_expires_at: absolute as Millis,
    }
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
        let times = Times::default();
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
        assert_eq!(
            times.get(&b),
            Known::Times {
                expires_at: 5,
                absolute_expires_at: 9
            }
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
        let times = Times::default();
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
        let times = Times::default();
        let (ended, extended, untouched) = (id(3, 1), id(3, 2), id(3, 3));
        times.set_gone(&ended);
        times.set(&extended, 500, 900);
        times.fill(&ended, 100, 900);
        times.fill(&extended, 100, 900);
        times.fill(&untouched, 100, 900);
        assert_eq!(
            times.get(&ended),
            Known::Times {
                expires_at: 0,
                absolute_expires_at: 0
            }
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
        let times = Times::default();
        let a = id(4, 1);
        times.set(&a, -1, 10);
        assert_eq!(times.get(&a), Known::InFile);
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
        let times = Times::default();
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
    fn an_entry_is_twenty_eight_bytes_or_less() {
        assert!(std::mem::size_of::<Entry>() <= 28);
    }
}
