//! The write-ahead log: what the periodic commits made durable, appended, until a fold writes
//! it into the sessions table.
//!
//! Writing an extension into the sessions table rewrites the leaf that holds the session, and
//! over a large file the sessions extended in one flush interval sit on as many leaves as
//! there are sessions: each commit reads, copies and writes back a 4 KiB page (two, with the
//! expiry index) for a few dozen bytes that changed. So a periodic commit appends its changes
//! instead, as one value of the `wal` table (a sequential write of their own bytes), and the
//! overlay keeps them in memory; creations and logouts are appended the same way, in the
//! commit their callers wait for (the store on its own keeps a keepalive's extension in its
//! table of times instead, see `times`). Every few seconds (half a minute for the store on
//! its own), and whenever a caller reads the tables (a user's sessions, a walk of the file,
//! the purge), a fold writes everything the overlay and the table hold into the tables in one
//! transaction and empties the log. A session extended many times
//! between two folds costs its leaf one write, and the leaves of a fold are each written once
//! for the many sessions they hold. After a crash, the store reads what the log holds back
//! into the overlay when it opens, and serves at once; its first fold writes it.
//!
//! One entry of a log value: the stored id's length (one byte) and bytes (see
//! `db::StoredId`), the change's kind (one byte: 1 a record, 2 a refresh, 3 a removal, 4 a
//! removal with a tombstone, 5 an extension), then for a record or a refresh its encoding's
//! length (four bytes, little-endian) and encoding (see `codec`), for a tombstone its two
//! times and for an extension its last activity and idle expiry (eight bytes each,
//! little-endian). Entries follow each other to the value's end. Written by hand:
//! the values are read only by this module, at open, and a serialization crate would add a
//! format to match these few fields.

use crate::session::{IdKind, SessionId, StoreError};
use crate::store::Tombstone;

use super::db::StoredId;
use super::overlay::Kept;

const PUT: u8 = 1;
const REFRESH: u8 = 2;
const REMOVE: u8 = 3;
const TOMBSTONE: u8 = 4;
const EXTEND: u8 = 5;

/// Encodes the changes of one commit as one log value.
pub fn encode<'a>(changes: impl IntoIterator<Item = (&'a SessionId, &'a Kept)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, change) in changes {
        let stored = StoredId::of(id);
        let key = stored.as_slice();
        // A stored id is a tag byte and at most `MAX_ID_BYTES`: its length fits a byte.
        out.push(key.len() as u8);
        out.extend_from_slice(key);
        match change {
            Kept::Put(bytes) | Kept::Refresh(bytes) => {
                out.push(if matches!(change, Kept::Put(_)) {
                    PUT
                } else {
                    REFRESH
                });
                // A record is at most a few hundred kilobytes of data: its length fits.
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Kept::Remove(None) => out.push(REMOVE),
            Kept::Remove(Some(tombstone)) => {
                out.push(TOMBSTONE);
                out.extend_from_slice(&tombstone.at.to_le_bytes());
                out.extend_from_slice(&tombstone.keep_until.to_le_bytes());
            }
            Kept::Extend {
                last_seen_at,
                expires_at,
            } => {
                out.push(EXTEND);
                out.extend_from_slice(&last_seen_at.to_le_bytes());
                out.extend_from_slice(&expires_at.to_le_bytes());
            }
        }
    }
    out
}

/// Reads one log value's changes, in their order, onto the end of `changes`.
pub fn decode(value: &[u8], changes: &mut Vec<(SessionId, Kept)>) -> Result<(), StoreError> {
    let mut rest = Reader(value);
    while !rest.0.is_empty() {
        let len = rest.take(1)?[0];
        let id = rest
            .take(usize::from(len))?
            .split_first()
            .and_then(|(tag, bytes)| SessionId::from_parts(IdKind::from_tag(*tag)?, bytes))
            .ok_or_else(corrupt)?;
        let change = match rest.take(1)?[0] {
            kind @ (PUT | REFRESH) => {
                let len = u32::from_le_bytes(rest.array()?);
                let bytes: Box<[u8]> = rest.take(len as usize)?.into();
                if kind == PUT {
                    Kept::Put(bytes)
                } else {
                    Kept::Refresh(bytes)
                }
            }
            REMOVE => Kept::Remove(None),
            TOMBSTONE => {
                let at = i64::from_le_bytes(rest.array()?);
                let keep_until = i64::from_le_bytes(rest.array()?);
                Kept::Remove(Some(Box::new(Tombstone { at, keep_until })))
            }
            EXTEND => Kept::Extend {
                last_seen_at: i64::from_le_bytes(rest.array()?),
                expires_at: i64::from_le_bytes(rest.array()?),
            },
            _ => return Err(corrupt()),
        };
        changes.push((id, change));
    }
    Ok(())
}

fn corrupt() -> StoreError {
    StoreError::Corrupt("an entry of the local store's write-ahead log is malformed".to_owned())
}

/// What is left of a log value to read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        self.take(N)?.try_into().map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionRecord;
    use crate::store::Write;
    use crate::store::local::overlay::Newest;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn every_kind_of_change_reads_back_in_order() {
        let native = SessionId::generate().expect("id");
        let express = SessionId::from_parts(IdKind::Express, b"an-express-session-id").expect("id");
        let mut record = SessionRecord::new(
            native,
            1_700_000_000_000,
            Duration::from_secs(1800),
            Duration::from_secs(43_200),
            r#"{"cart":3}"#.to_owned(),
        );
        record.user = Some("ada".to_owned());
        let tombstone = Tombstone {
            at: 1_700_000_001_000,
            keep_until: 1_700_043_200_000,
        };
        let first: HashMap<SessionId, Kept> = [
            (native, Kept::of(Write::Put(record.clone()))),
            (express, Kept::of(Write::Remove(Some(tombstone)))),
        ]
        .into();
        let mut later = record.clone();
        later.last_seen_at += 30_000;
        later.expires_at += 30_000;
        let second: HashMap<SessionId, Kept> = [
            (native, Kept::of(Write::Refresh(later.clone()))),
            (express, Kept::of(Write::Remove(None))),
        ]
        .into();
        let extended = SessionId::generate().expect("id");
        let third: HashMap<SessionId, Kept> = [(
            extended,
            Kept::Extend {
                last_seen_at: 1_700_000_030_000,
                expires_at: 1_700_001_830_000,
            },
        )]
        .into();

        let mut read = Vec::new();
        decode(&encode(&first), &mut read).expect("decodes");
        assert_eq!(read.iter().cloned().collect::<HashMap<_, _>>(), first);
        decode(&encode(&second), &mut read).expect("decodes");
        assert_eq!(read.len(), 4, "every change, in order");
        assert_eq!(read[2..].iter().cloned().collect::<HashMap<_, _>>(), second);
        decode(&encode(&third), &mut read).expect("decodes");
        assert_eq!(read[4..].iter().cloned().collect::<HashMap<_, _>>(), third);
        let newest = read
            .iter()
            .rev()
            .find(|(id, _)| *id == native)
            .expect("read");
        assert_eq!(
            newest.1.newest(native).expect("decodes"),
            Newest::Write(Write::Refresh(later))
        );
    }

    #[test]
    fn a_cut_or_unknown_entry_is_reported_not_guessed() {
        let id = SessionId::generate().expect("id");
        let changes: HashMap<SessionId, Kept> = [(id, Kept::Remove(None))].into();
        let value = encode(&changes);
        let mut read = Vec::new();
        assert!(matches!(
            decode(&value[..value.len() - 1], &mut read),
            Err(StoreError::Corrupt(_))
        ));
        let mut unknown = value.clone();
        *unknown.last_mut().expect("kind") = 9;
        assert!(matches!(
            decode(&unknown, &mut read),
            Err(StoreError::Corrupt(_))
        ));
        assert!(
            decode(&[], &mut read).is_ok(),
            "an empty value holds nothing"
        );
    }
}
