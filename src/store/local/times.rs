//! The times of every session the store on its own holds, in memory: what a keepalive needs
//! (whether the session lives, its idle and absolute expiries) without reading the file, and
//! where its extension waits for the fold.
//!
//! A keepalive answers a session's times, never its user or data, yet reading those times
//! from the file costs a walk of redb's tree and, once the store outgrows redb's cache, a read
//! of a page the cache no longer holds: the keepalive of a store of a million sessions cost a
//! third more than that of a thousand. Here each session costs about 27 bytes: its id's last
//! 14 bytes, its two expiries in 4 bytes each, in milliseconds after its array's base time,
//! and its last activity as the time from it to the idle expiry, in sorted arrays under the
//! id's first two bytes. A hash map of the same entries costs half as much again (its empty
//! slots and control bytes), and a B-tree map more. The purge moves each array's base up to
//! the time it purged by, so an expiry fits whenever it is less than 49 days after that, and
//! a last activity when it is less than 24 days before the idle expiry; an entry that does
//! not fit is read from the file. Only keepalive's own ids (16 random bytes, so the arrays
//! stay even) are kept; an Express application's ids are read from the file.
//!
//! A keepalive marks the entry it extends. The overlay lets the extension go once the log
//! holds it (see `Overlay::end_log`): reads bring a record up to the table's times, and the
//! fold takes the marked entries, in the sessions table's key order, to write them
//! ([`Times::extended`]). So between two folds memory holds each session's times once,
//! whatever the number of sessions kept alive.
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
use crate::session::{IdKind, SessionId, SessionRecord, StoreError};

use super::codec;

/// Arrays, one per value of an id's first two bytes.
const BUCKETS: usize = 1 << 16;
/// Bytes of an id after the two that choose its array.
const KEY: usize = 14;
/// Bytes of a time: milliseconds after the array's base.
const TIME: usize = 4;
/// Where each time sits in an entry: the idle expiry's offset, the absolute expiry's
/// offset, and how long before the idle expiry the last activity was.
const EXPIRES: usize = KEY;
const ABSOLUTE: usize = KEY + TIME;
const SEEN: usize = KEY + 2 * TIME;
const ENTRY: usize = KEY + 3 * TIME;
/// As an idle expiry: "read the file".
const IN_FILE: u32 = u32::MAX;
/// In the last activity's number: the session was extended since the fold last wrote it
/// (see [`Times::extended`]). The rest of the number is the time from the last activity to
/// the idle expiry, so an idle timeout of up to 24 days fits.
const EXTENDED: u32 = 1 << 31;
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
        decode(self.base, entry)
    }

    /// `times` as an entry's three numbers; `None` for times that do not fit.
    fn encode(&self, times: &Stamp) -> Option<[u32; 3]> {
        let seen = times.expires_at.saturating_sub(times.last_seen_at).max(0);
        Some([
            self.offset(times.expires_at)?,
            self.offset(times.absolute_expires_at)?,
            u32::try_from(seen).ok().filter(|&t| t < EXTENDED)?,
        ])
    }
}

/// What an entry of an array with this base holds.
fn decode(base: Millis, entry: &Entry) -> Known {
    let expires = read(entry, EXPIRES);
    if expires == IN_FILE {
        return Known::InFile;
    }
    let expires_at = base + Millis::from(expires);
    Known::Times(Stamp {
        last_seen_at: expires_at - Millis::from(read(entry, SEEN) & !EXTENDED),
        expires_at,
        absolute_expires_at: base + Millis::from(read(entry, ABSOLUTE)),
    })
}

/// The number at `at` in an entry.
fn read(entry: &Entry, at: usize) -> u32 {
    let mut bytes = [0u8; TIME];
    bytes.copy_from_slice(&entry[at..at + TIME]);
    u32::from_le_bytes(bytes)
}

fn write(entry: &mut Entry, at: usize, value: u32) {
    entry[at..at + TIME].copy_from_slice(&value.to_le_bytes());
}

fn entry(key: &[u8], [expires, absolute, seen]: [u32; 3]) -> Entry {
    let mut entry = [0u8; ENTRY];
    entry[..KEY].copy_from_slice(key);
    write(&mut entry, EXPIRES, expires);
    write(&mut entry, ABSOLUTE, absolute);
    write(&mut entry, SEEN, seen);
    entry
}

/// A session's times, as the table holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub last_seen_at: Millis,
    pub expires_at: Millis,
    pub absolute_expires_at: Millis,
}

impl Stamp {
    pub fn of(record: &SessionRecord) -> Self {
        Self {
            last_seen_at: record.last_seen_at,
            expires_at: record.expires_at,
            absolute_expires_at: record.absolute_expires_at,
        }
    }

    /// The times of a record in its stored encoding, from its header.
    pub fn read(encoded: &[u8]) -> Result<Self, StoreError> {
        let [last_seen_at, expires_at, absolute_expires_at] = codec::times(encoded)?;
        Ok(Self {
            last_seen_at,
            expires_at,
            absolute_expires_at,
        })
    }

    /// Brings `record` up to these times, where they are later.
    pub fn bring_up(&self, record: &mut SessionRecord) {
        super::overlay::extend(record, self.last_seen_at, self.expires_at);
    }
}

/// What the table knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Not in the table: the store does not hold it, once the table is complete.
    Absent,
    /// Its times (an ended session's lie before the table was made).
    Times(Stamp),
    /// The table cannot tell: read the file.
    InFile,
}

/// The table.
pub struct Times {
    buckets: Box<[Mutex<Bucket>]>,
    complete: AtomicBool,
    /// A fold took extensions and failed to write them: the next one takes every entry.
    unwritten: AtomicBool,
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
            unwritten: AtomicBool::new(false),
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
        let mut times = match bucket.decode(&bucket.entries[at]) {
            Known::Times(times) => times,
            other => return other,
        };
        if now >= times.expires_at {
            return Known::Absent;
        }
        times.last_seen_at = times.last_seen_at.max(now);
        times.expires_at = now
            .saturating_add(idle)
            .min(times.absolute_expires_at)
            .max(times.expires_at);
        let Some([expires, absolute, seen]) = bucket.encode(&times) else {
            return Known::InFile;
        };
        let extended = entry(key, [expires, absolute, seen | EXTENDED]);
        bucket.entries[at][KEY..].copy_from_slice(&extended[KEY..]);
        Known::Times(times)
    }

    /// Records a session's times.
    pub fn set(&self, id: &SessionId, times: Stamp) {
        self.write(id, Some(times), true);
    }

    /// Records that the session ended: held as expired at the array's base.
    pub fn set_gone(&self, id: &SessionId) {
        let gone = Stamp {
            last_seen_at: Millis::MIN,
            expires_at: Millis::MIN,
            absolute_expires_at: Millis::MIN,
        };
        self.write(id, Some(gone), true);
    }

    /// Records that the session's times are to be read from the file.
    pub fn set_in_file(&self, id: &SessionId) {
        self.write(id, None, true);
    }

    /// Records a session read from the file, unless a change since left an entry.
    pub fn fill(&self, id: &SessionId, times: Stamp) {
        self.write(id, Some(times), false);
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
                let expires = read(entry, EXPIRES);
                if expires == IN_FILE {
                    return true;
                }
                if expires <= shift {
                    return false;
                }
                // Live past the new base: its idle expiry's offset stays positive. The last
                // activity counts back from the idle expiry, which it follows.
                write(entry, EXPIRES, expires - shift);
                write(entry, ABSOLUTE, read(entry, ABSOLUTE).saturating_sub(shift));
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

    /// The sessions extended since the last fold took them, with their times, in the order of
    /// their ids' bytes (the sessions table's), taken one array at a time: a fold writes them
    /// without the table holding a second copy of them. Each is marked written as it is
    /// taken; one extended again after that is taken by the next fold. If the fold fails,
    /// [`unwritten`](Self::unwritten) makes the next one take every entry.
    pub fn extended(&self) -> Extended<'_> {
        Extended {
            times: self,
            every: self.unwritten.swap(false, Ordering::AcqRel),
            next_bucket: 0,
            taken: Vec::new(),
        }
    }

    /// A fold failed after taking extensions from [`extended`](Self::extended).
    pub fn unwritten(&self) {
        self.unwritten.store(true, Ordering::Release);
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

    /// Writes `times` (`None`: read the file) for `id`, over an entry it holds only if
    /// `replace`.
    fn write(&self, id: &SessionId, times: Option<Stamp>, replace: bool) {
        let Some((mut bucket, key)) = self.place(id) else {
            return;
        };
        let numbers = times.and_then(|times| bucket.encode(&times));
        let new = entry(key, numbers.unwrap_or([IN_FILE; 3]));
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

/// The walk of [`Times::extended`].
pub struct Extended<'a> {
    times: &'a Times,
    every: bool,
    next_bucket: usize,
    /// What the last array gave, last first.
    taken: Vec<(SessionId, Stamp)>,
}

impl Iterator for Extended<'_> {
    type Item = (SessionId, Stamp);

    fn next(&mut self) -> Option<Self::Item> {
        while self.taken.is_empty() && self.next_bucket < BUCKETS {
            let index = self.next_bucket;
            self.next_bucket += 1;
            let mut bucket = lock(&self.times.buckets[index]);
            let Bucket { base, entries } = &mut *bucket;
            for entry in entries.iter_mut().rev() {
                let seen = read(entry, SEEN);
                if read(entry, EXPIRES) == IN_FILE || (seen & EXTENDED == 0 && !self.every) {
                    continue;
                }
                write(entry, SEEN, seen & !EXTENDED);
                let Known::Times(stamp) = decode(*base, entry) else {
                    continue;
                };
                let mut id = [0u8; 16];
                id[..2].copy_from_slice(&(index as u16).to_be_bytes());
                id[2..].copy_from_slice(&entry[..KEY]);
                self.taken.push((SessionId::from_bytes(id), stamp));
            }
        }
        self.taken.pop()
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

    fn stamp(last_seen_at: Millis, expires_at: Millis, absolute_expires_at: Millis) -> Stamp {
        Stamp {
            last_seen_at,
            expires_at,
            absolute_expires_at,
        }
    }

    fn expires_at(known: Known) -> Millis {
        match known {
            Known::Times(times) => times.expires_at,
            other => panic!("no times: {other:?}"),
        }
    }

    #[test]
    fn keeps_times_by_id_and_tells_what_it_does_not_hold() {
        let times = Times::new(1_700_000_000_000);
        let (a, b, c) = (id(1, 1), id(1, 2), id(2, 1));
        let first = stamp(1_700_000_000_001, 1_700_000_060_000, 1_700_003_600_000);
        times.set(&a, first);
        times.set(&b, stamp(1, 5, 9));
        assert_eq!(times.get(&a), Known::Times(first));
        assert!(
            expires_at(times.get(&b)) < 1_700_000_000_000,
            "a time before the base is held as past"
        );
        assert_eq!(times.get(&c), Known::Absent);
        let later = stamp(1_700_000_030_000, 1_700_000_090_000, 1_700_003_600_000);
        times.set(&a, later);
        assert_eq!(times.get(&a), Known::Times(later));
        assert_eq!(times.len(), 2);
    }

    #[test]
    fn a_keepalive_extends_within_the_absolute_lifetime_and_never_back() {
        let times = Times::new(0);
        let a = id(5, 1);
        times.set(&a, stamp(0, 1_000, 10_000));
        let extended =
            |last_seen_at, expires_at| Known::Times(stamp(last_seen_at, expires_at, 10_000));
        assert_eq!(times.extend(&a, 500, 2_000), extended(500, 2_500));
        assert_eq!(
            times.extend(&a, 600, 1_000),
            extended(600, 2_500),
            "seen, and the expiry never back"
        );
        assert_eq!(
            times.extend(&a, 2_000, 9_000),
            extended(2_000, 10_000),
            "capped"
        );
        assert_eq!(times.get(&a), extended(2_000, 10_000));
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
        times.set(&extended, stamp(400, 500, 900));
        times.fill(&ended, stamp(0, 100, 900));
        times.fill(&extended, stamp(0, 100, 900));
        times.fill(&untouched, stamp(0, 100, 900));
        assert!(
            expires_at(times.get(&ended)) <= 0,
            "ended: expired before the table was made"
        );
        assert_eq!(times.get(&extended), Known::Times(stamp(400, 500, 900)));
        assert_eq!(times.get(&untouched), Known::Times(stamp(0, 100, 900)));
    }

    #[test]
    fn times_it_cannot_hold_and_ids_it_does_not_keep_send_to_the_file() {
        let times = Times::new(0);
        let a = id(4, 1);
        let fifty_days = 50 * 24 * 3_600_000;
        times.set(&a, stamp(0, 10, fifty_days));
        assert_eq!(times.get(&a), Known::InFile, "beyond the array's range");
        times.set(&a, stamp(-fifty_days, 10, 20));
        assert_eq!(
            times.get(&a),
            Known::InFile,
            "seen too long before it expires"
        );
        times.set(&a, stamp(0, 10, 20));
        assert!(matches!(times.get(&a), Known::Times(_)));
        times.set_in_file(&a);
        assert_eq!(times.get(&a), Known::InFile);
        let express = SessionId::parse_express("abc").expect("an Express id");
        times.set(&express, stamp(0, 10, 20));
        assert_eq!(times.get(&express), Known::InFile);
        assert_eq!(times.len(), 1);
    }

    #[test]
    fn the_purge_drops_expired_and_ended_entries_only() {
        let times = Times::new(0);
        for n in 0..100u8 {
            times.set(&id(n % 3, n), stamp(0, i64::from(n) * 10, 10_000));
        }
        times.set_gone(&id(9, 9));
        times.set_in_file(&id(9, 10));
        assert_eq!(times.purge(495), 50 + 1);
        assert_eq!(times.len(), 50 + 1);
        assert_eq!(times.get(&id(9, 10)), Known::InFile);
        assert_eq!(times.get(&id(0, 0)), Known::Absent);
        assert_eq!(
            times.get(&id(99 % 3, 99)),
            Known::Times(stamp(0, 990, 10_000))
        );
    }

    #[test]
    fn the_purge_moves_the_base_and_the_times_stay_exact() {
        let day = 24 * 3_600_000;
        let times = Times::new(0);
        let (kept, long) = (id(6, 1), id(6, 2));
        // Seen before the base the purge moves to: counted back from the expiry, it stays.
        let first = stamp(19 * day + 3, 30 * day + 7, 40 * day + 11);
        times.set(&kept, first);
        times.set(&long, stamp(0, 40 * day, 60 * day));
        assert_eq!(
            times.get(&long),
            Known::InFile,
            "60 days from a base a day before 0"
        );
        times.set_gone(&long);
        assert_eq!(times.purge(20 * day), 1, "the ended one");
        assert_eq!(times.get(&kept), Known::Times(first));
        times.set(&long, stamp(39 * day, 40 * day, 60 * day));
        assert!(
            matches!(times.get(&long), Known::Times(t) if t.absolute_expires_at == 60 * day),
            "fits from the new base"
        );
        assert_eq!(
            times.extend(&kept, 30 * day, day),
            Known::Times(stamp(30 * day, 31 * day, 40 * day + 11))
        );
        assert_eq!(times.purge(35 * day), 1);
        assert_eq!(times.get(&kept), Known::Absent);
    }

    #[test]
    fn a_fold_takes_each_extended_session_once_in_key_order() {
        let times = Times::new(0);
        let ids = [id(9, 1), id(1, 2), id(1, 1), id(200, 7)];
        for id in &ids {
            times.set(id, stamp(0, 1_000, 10_000));
        }
        assert_eq!(times.extended().count(), 0, "created, not extended");
        for id in &ids[..3] {
            times.extend(id, 500, 1_000);
        }
        let taken: Vec<_> = times.extended().collect();
        let expected: Vec<_> = [id(1, 1), id(1, 2), id(9, 1)]
            .into_iter()
            .map(|id| (id, stamp(500, 1_500, 10_000)))
            .collect();
        assert_eq!(taken, expected);
        assert_eq!(times.extended().count(), 0, "taken once");
        assert_eq!(times.get(&ids[0]), Known::Times(stamp(500, 1_500, 10_000)));
        // Extended again after the fold took it: the next takes it.
        times.extend(&ids[0], 600, 1_000);
        assert_eq!(
            times.extended().map(|(id, _)| id).collect::<Vec<_>>(),
            [ids[0]]
        );
        // A fold that failed: the next takes every entry with times.
        times.set_in_file(&ids[1]);
        times.unwritten();
        assert_eq!(times.extended().count(), 3);
        assert_eq!(times.extended().count(), 0);
    }

    #[test]
    fn an_entry_is_twenty_six_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 26);
    }
}
