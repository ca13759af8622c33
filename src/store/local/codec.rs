//! The on-disk form of a session record.
//!
//! A fixed header (a version byte and four little-endian `i64` times), then, from version 2
//! on, the user as a little-endian `u16` length and its UTF-8 bytes (length 0: anonymous), then
//! the application's data as UTF-8 JSON text. Written by hand because the layout is a handful
//! of fields and the store reads the expiry and the user straight from the header without
//! decoding the rest; the version byte lets files written by an earlier version be read as
//! they are (version 1 has no user).

use crate::session::{SessionId, SessionRecord, StoreError};

/// The format this version writes.
pub const VERSION: u8 = 2;
/// The first format: no user.
const VERSION_1: u8 = 1;
const HEADER: usize = 1 + 4 * 8;

/// Encodes a record (its id is the key, not part of the value).
pub fn encode(record: &SessionRecord) -> Vec<u8> {
    let user = record.user.as_deref().unwrap_or("").as_bytes();
    // User ids are checked to be at most 256 bytes long long before they get here.
    let user_len = u16::try_from(user.len()).expect("user ids are short");
    let mut out = Vec::with_capacity(HEADER + 2 + user.len() + record.data.len());
    out.push(VERSION);
    for t in [
        record.created_at,
        record.last_seen_at,
        record.expires_at,
        record.absolute_expires_at,
    ] {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(&user_len.to_le_bytes());
    out.extend_from_slice(user);
    out.extend_from_slice(record.data.as_bytes());
    out
}

/// Decodes a record stored under `id`.
pub fn decode(id: SessionId, bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    let times = header(bytes)?;
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
    header(bytes)?;
    Ok(split_user(bytes)?.0)
}

/// The user and the bytes after it, of a record whose header was checked.
fn split_user(bytes: &[u8]) -> Result<(Option<&str>, &[u8]), StoreError> {
    let body = &bytes[HEADER..];
    if bytes[0] == VERSION_1 {
        return Ok((None, body));
    }
    let corrupt = || StoreError::Corrupt("session user is truncated or not UTF-8".to_owned());
    let (len, rest) = body.split_first_chunk::<2>().ok_or_else(corrupt)?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return Err(corrupt());
    }
    let (user, rest) = rest.split_at(len);
    let user = std::str::from_utf8(user).map_err(|_| corrupt())?;
    Ok(((!user.is_empty()).then_some(user), rest))
}

/// The idle expiry of an encoded record, without decoding its data.
pub fn expires_at(bytes: &[u8]) -> Result<i64, StoreError> {
    Ok(header(bytes)?[2])
}

fn header(bytes: &[u8]) -> Result<[i64; 4], StoreError> {
    if bytes.len() < HEADER {
        return Err(StoreError::Corrupt(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != VERSION && bytes[0] != VERSION_1 {
        return Err(StoreError::Corrupt(format!(
            "unknown record version {}",
            bytes[0]
        )));
    }
    let mut times = [0i64; 4];
    for (i, t) in times.iter_mut().enumerate() {
        let start = 1 + i * 8;
        let mut field = [0u8; 8];
        field.copy_from_slice(&bytes[start..start + 8]);
        *t = i64::from_le_bytes(field);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let record = SessionRecord {
            id: SessionId::from_bytes([1; 16]),
            created_at: 1,
            last_seen_at: -2,
            expires_at: i64::MAX,
            absolute_expires_at: 4,
            user: Some("zoé@example.com".to_owned()),
            data: r#"{"theme":"dark"}"#.to_owned(),
        };
        let bytes = encode(&record);
        assert_eq!(decode(record.id, &bytes).expect("decodes"), record);
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
    fn rejects_truncated_and_foreign_records() {
        let id = SessionId::from_bytes([1; 16]);
        assert!(decode(id, &[]).is_err());
        assert!(decode(id, &[VERSION; 10]).is_err());
        let mut bytes = vec![9u8; HEADER];
        assert!(decode(id, &bytes).is_err());
        bytes[0] = VERSION;
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert!(decode(id, &bytes).is_err());
        bytes[0] = VERSION_1 + 1;
        bytes.truncate(HEADER);
        bytes.extend_from_slice(&[5, 0, b'a']);
        assert!(decode(id, &bytes).is_err(), "user longer than the record");
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
            prop_assert_eq!(decode(record.id, &bytes).expect("decodes"), record.clone());
            prop_assert_eq!(expires_at(&bytes).expect("header"), record.expires_at);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode(SessionId::from_bytes([0; 16]), &bytes);
            let _ = expires_at(&bytes);
        }
    }
}
