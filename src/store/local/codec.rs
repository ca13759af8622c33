//! The on-disk form of a session record.
//!
//! Version 3, the one written: a version byte, the creation time as a little-endian signed
//! 48-bit millisecond count, the last activity, idle expiry and absolute expiry as signed
//! 40-bit offsets from it (about ±17 years), the user's length (one byte below 128, else two
//! with the top bit of the first set) and its UTF-8 bytes (length 0: anonymous), then the
//! application's data as UTF-8 JSON text. A session without user or data is 23 bytes, where
//! version 2 took 35: the table's leaves hold a fifth more sessions, and a commit that extends
//! sessions all over the table reads and writes a fifth fewer pages. A record whose times do
//! not fit (none the configuration allows) is written in version 2: a version byte, four
//! little-endian `i64` times, the user's length as a little-endian `u16`, the user, the data.
//! Version 1 (no user) and 2 are still read, so a file written by an earlier version is read
//! as it is and each record moves to version 3 when it is next written. Written by hand
//! because the layout is a handful of fields and the store reads the expiry and the user
//! straight from the header without decoding the rest.

use crate::session::{SessionId, SessionRecord, StoreError};

/// The format this version writes.
pub const VERSION: u8 = 3;
/// Four `i64` times, then a `u16` user length: for times version 3 cannot hold.
const VERSION_2: u8 = 2;
/// The first format: four `i64` times, no user.
const VERSION_1: u8 = 1;
const HEADER_V1: usize = 1 + 4 * 8;
const HEADER_V3: usize = 1 + 6 + 3 * 5;

/// Encodes a record (its id is the key, not part of the value), in a buffer of its exact size:
/// the local store's overlay keeps the encoding as it is until the next commit.
pub fn encode(record: &SessionRecord) -> Vec<u8> {
    let user = record.user.as_deref().unwrap_or("").as_bytes();
    // User ids are checked to be at most 256 bytes long long before they get here.
    let user_len = u16::try_from(user.len()).expect("user ids are short");
    let mut header = [0u8; HEADER_V1 + 2];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        header[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    let created = record.created_at;
    let offsets = [
        record.last_seen_at,
        record.expires_at,
        record.absolute_expires_at,
    ]
    .map(|t| t.checked_sub(created).filter(|o| fits(*o, 40)));
    match offsets {
        [Some(seen), Some(expires), Some(absolute)] if fits(created, 48) && user_len < 0x8000 => {
            put(&[VERSION]);
            put(&created.to_le_bytes()[..6]);
            for offset in [seen, expires, absolute] {
                put(&offset.to_le_bytes()[..5]);
            }
            if user_len < 0x80 {
                put(&[user_len as u8]);
            } else {
                put(&(user_len | 0x8000).to_be_bytes());
            }
        }
        _ => {
            put(&[VERSION_2]);
            for t in [
                created,
                record.last_seen_at,
                record.expires_at,
                record.absolute_expires_at,
            ] {
                put(&t.to_le_bytes());
            }
            put(&user_len.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(at + user.len() + record.data.len());
    out.extend_from_slice(&header[..at]);
    out.extend_from_slice(user);
    out.extend_from_slice(record.data.as_bytes());
    out
}

/// Whether `value` is a signed integer of `bits` bits.
fn fits(value: i64, bits: u32) -> bool {
    let bound = 1i64 << (bits - 1);
    (-bound..bound).contains(&value)
}

/// The signed little-endian integer of `bytes` (at most eight).
fn signed(bytes: &[u8]) -> i64 {
    let mut field = [0u8; 8];
    field[..bytes.len()].copy_from_slice(bytes);
    let shift = 64 - 8 * bytes.len() as u32;
    (i64::from_le_bytes(field) << shift) >> shift
}

/// Decodes a record stored under `id`.
pub fn decode(id: SessionId, bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    let (times, _) = header(bytes)?;
    let (user, rest) = split_user(bytes)?;
    let data = std::str::from_utf8(rest)
        .map_err(|_| StoreError::Corrupt("session data is not UTF-8".to_owned()))?
        .to_owned();
    Ok(SessionRecord {
        id,
        created_at: times[0],
        last_seen_at: times[1],
        expires_at: times[2],
        absolute_expires_at: times[3],
        user: user.map(str::to_owned),
        data,
    })
}

/// The user of an encoded record, without decoding its data.
pub fn user(bytes: &[u8]) -> Result<Option<&str>, StoreError> {
    Ok(split_user(bytes)?.0)
}

/// The user and the bytes after it.
fn split_user(bytes: &[u8]) -> Result<(Option<&str>, &[u8]), StoreError> {
    let (_, length) = header(bytes)?;
    let body = &bytes[length..];
    let corrupt = || StoreError::Corrupt("session user is truncated or not UTF-8".to_owned());
    let (len, rest) = match bytes[0] {
        VERSION_1 => return Ok((None, body)),
        VERSION_2 => {
            let (len, rest) = body.split_first_chunk::<2>().ok_or_else(corrupt)?;
            (usize::from(u16::from_le_bytes(*len)), rest)
        }
        _ => match body.first() {
            Some(&first) if first & 0x80 == 0 => (usize::from(first), &body[1..]),
            // The two-byte form only for lengths the one-byte form cannot hold: one record,
            // one encoding.
            Some(_) => match body.split_first_chunk::<2>() {
                Some((len, rest)) if u16::from_be_bytes(*len) & 0x7fff >= 0x80 => {
                    (usize::from(u16::from_be_bytes(*len) & 0x7fff), rest)
                }
                _ => return Err(corrupt()),
            },
            None => return Err(corrupt()),
        },
    };
    if rest.len() < len {
        return Err(corrupt());
    }
    let (user, rest) = rest.split_at(len);
    let user = std::str::from_utf8(user).map_err(|_| corrupt())?;
    Ok(((!user.is_empty()).then_some(user), rest))
}

/// The idle expiry of an encoded record, without decoding its data.
pub fn expires_at(bytes: &[u8]) -> Result<i64, StoreError> {
    Ok(header(bytes)?.0[2])
}

/// A record's last activity and idle expiry, from its header alone.
pub fn activity(bytes: &[u8]) -> Result<(i64, i64), StoreError> {
    let [_, last_seen_at, expires_at, _] = header(bytes)?.0;
    Ok((last_seen_at, expires_at))
}

/// A record's last activity and idle and absolute expiries, from its header alone.
pub fn times(bytes: &[u8]) -> Result<[i64; 3], StoreError> {
    let [_, last_seen_at, expires_at, absolute_expires_at] = header(bytes)?.0;
    Ok([last_seen_at, expires_at, absolute_expires_at])
}

/// The four times of a record (created, last seen, idle expiry, absolute expiry) and the
/// length of its header.
fn header(bytes: &[u8]) -> Result<([i64; 4], usize), StoreError> {
    let length = match bytes.first() {
        Some(&VERSION) => HEADER_V3,
        Some(&VERSION_1 | &VERSION_2) => HEADER_V1,
        Some(other) => {
            return Err(StoreError::Corrupt(format!(
                "unknown record version {other}"
            )));
        }
        None => 0,
    };
    if length == 0 || bytes.len() < length {
        return Err(StoreError::Corrupt(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    let mut times = [0i64; 4];
    if bytes[0] == VERSION {
        let created = signed(&bytes[1..7]);
        times[0] = created;
        for (i, t) in times[1..].iter_mut().enumerate() {
            let start = 7 + i * 5;
            *t = created.saturating_add(signed(&bytes[start..start + 5]));
        }
    } else {
        for (i, t) in times.iter_mut().enumerate() {
            *t = signed(&bytes[1 + i * 8..9 + i * 8]);
        }
    }
    Ok((times, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(times: [i64; 4], user: Option<&str>, data: &str) -> SessionRecord {
        SessionRecord {
            id: SessionId::from_bytes([1; 16]),
            created_at: times[0],
            last_seen_at: times[1],
            expires_at: times[2],
            absolute_expires_at: times[3],
            user: user.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn round_trips_in_version_3() {
        let at = 1_700_000_000_000;
        let anonymous = record([at, at + 1, at + 600_000, at + 43_200_000], None, "");
        let bytes = encode(&anonymous);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(bytes.len(), 23, "a session without user or data");
        assert_eq!(decode(anonymous.id, &bytes).expect("decodes"), anonymous);

        // Before its creation, a user long enough for the two-byte length, data after it.
        let long_user = "u".repeat(200);
        let signed_in = record(
            [at, at - 5, at + 600_000, at + 43_200_000],
            Some(&long_user),
            r#"{"theme":"dark"}"#,
        );
        let bytes = encode(&signed_in);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode(signed_in.id, &bytes).expect("decodes"), signed_in);
        assert_eq!(expires_at(&bytes).expect("header"), at + 600_000);
        assert_eq!(user(&bytes).expect("user"), Some(long_user.as_str()));
    }

    #[test]
    fn times_version_3_cannot_hold_are_written_in_version_2() {
        let far = record(
            [1, -2, i64::MAX, 4],
            Some("zoé@example.com"),
            r#"{"theme":"dark"}"#,
        );
        let bytes = encode(&far);
        assert_eq!(bytes[0], VERSION_2);
        assert_eq!(decode(far.id, &bytes).expect("decodes"), far);
        assert_eq!(expires_at(&bytes).expect("header"), i64::MAX);
        assert_eq!(user(&bytes).expect("user"), Some("zoé@example.com"));
    }

    #[test]
    fn reads_the_first_format_as_anonymous() {
        let mut bytes = vec![VERSION_1];
        for t in [1i64, 2, 3, 4] {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        bytes.extend_from_slice(br#"{"a":1}"#);
        let record = decode(SessionId::from_bytes([1; 16]), &bytes).expect("decodes");
        assert_eq!(record.user, None);
        assert_eq!(record.data, r#"{"a":1}"#);
        assert_eq!(record.expires_at, 3);
    }

    #[test]
    fn reads_the_second_format_as_it_was_written() {
        let mut bytes = vec![VERSION_2];
        for t in [
            1_700_000_000_000i64,
            1_700_000_000_001,
            1_700_000_600_000,
            1_700_043_200_000,
        ] {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        bytes.extend_from_slice(&3u16.to_le_bytes());
        bytes.extend_from_slice(b"ana");
        bytes.extend_from_slice(br#"{"a":1}"#);
        let record = decode(SessionId::from_bytes([1; 16]), &bytes).expect("decodes");
        assert_eq!(record.user.as_deref(), Some("ana"));
        assert_eq!(record.data, r#"{"a":1}"#);
        assert_eq!(record.last_seen_at, 1_700_000_000_001);
        assert_eq!(expires_at(&bytes).expect("header"), 1_700_000_600_000);
    }

    #[test]
    fn rejects_truncated_and_foreign_records() {
        let id = SessionId::from_bytes([1; 16]);
        assert!(decode(id, &[]).is_err());
        assert!(decode(id, &[VERSION; 10]).is_err());
        assert!(decode(id, &[VERSION_2; 20]).is_err());
        let mut bytes = vec![9u8; HEADER_V1];
        assert!(decode(id, &bytes).is_err(), "unknown version");
        bytes[0] = VERSION_2;
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert!(decode(id, &bytes).is_err(), "user longer than the record");
        let mut bytes = vec![VERSION; HEADER_V3];
        assert!(decode(id, &bytes).is_err(), "no user length");
        bytes.extend_from_slice(&[5, b'a']);
        assert!(decode(id, &bytes).is_err(), "user longer than the record");
        bytes.truncate(HEADER_V3);
        bytes.push(0x80);
        assert!(decode(id, &bytes).is_err(), "half a two-byte length");
        bytes.push(0x00);
        assert!(
            decode(id, &bytes).is_err(),
            "a two-byte length the one-byte form holds"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_record_round_trips(
            id in any::<[u8; 16]>(),
            times in any::<[i64; 4]>(),
            user in proptest::option::of("[!-~]{1,256}"),
            data in ".{0,200}",
        ) {
            let record = SessionRecord {
                id: SessionId::from_bytes(id),
                created_at: times[0],
                last_seen_at: times[1],
                expires_at: times[2],
                absolute_expires_at: times[3],
                user,
                data,
            };
            let bytes = encode(&record);
            prop_assert_eq!(bytes.capacity(), bytes.len(), "kept as it is, no spare room");
            prop_assert_eq!(decode(record.id, &bytes).expect("decodes"), record.clone());
            prop_assert_eq!(expires_at(&bytes).expect("header"), record.expires_at);
        }

        /// Times as sessions have them: within ten years of their creation, written in the
        /// compact version.
        #[test]
        fn any_session_round_trips_compactly(
            created in 0i64..4_000_000_000_000,
            offsets in any::<[u32; 3]>(),
            user in proptest::option::of("[!-~]{1,256}"),
            data in ".{0,200}",
        ) {
            let [seen, expires, absolute] = offsets.map(|o| created + i64::from(o) * 73);
            let record = SessionRecord {
                id: SessionId::from_bytes([7; 16]),
                created_at: created,
                last_seen_at: seen,
                expires_at: expires,
                absolute_expires_at: absolute,
                user,
                data,
            };
            let bytes = encode(&record);
            prop_assert_eq!(bytes[0], VERSION);
            prop_assert_eq!(bytes.capacity(), bytes.len(), "kept as it is, no spare room");
            prop_assert_eq!(decode(record.id, &bytes).expect("decodes"), record.clone());
            prop_assert_eq!(expires_at(&bytes).expect("header"), record.expires_at);
            prop_assert_eq!(super::user(&bytes).expect("user"), record.user.as_deref());
            prop_assert_eq!(
                activity(&bytes).expect("header"),
                (record.last_seen_at, record.expires_at)
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode(SessionId::from_bytes([0; 16]), &bytes);
            let _ = expires_at(&bytes);
            let _ = user(&bytes);
        }
    }
}
