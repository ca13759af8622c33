//! The on-disk form of a session record.
//!
//! A fixed header (a version byte and four little-endian `i64` times) followed by the
//! application's data as UTF-8 JSON text. Written by hand because the layout is five fields and
//! the purge reads the expiry straight from the header without decoding the rest; the version
//! byte lets a later format coexist with this one.

use crate::session::{SessionId, SessionRecord, StoreError};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 * 8;

/// Encodes a record (its id is the key, not part of the value).
pub fn encode(record: &SessionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + record.data.len());
    out.push(VERSION);
    for t in [
        record.created_at,
        record.last_seen_at,
        record.expires_at,
        record.absolute_expires_at,
    ] {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(record.data.as_bytes());
    out
}

/// Decodes a record stored under `id`.
pub fn decode(id: SessionId, bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    let times = header(bytes)?;
    let data = std::str::from_utf8(&bytes[HEADER..])
        .map_err(|_| StoreError::Corrupt("session data is not UTF-8".to_owned()))?
        .to_owned();
    Ok(SessionRecord {
        id,
        created_at: times[0],
        last_seen_at: times[1],
        expires_at: times[2],
        absolute_expires_at: times[3],
        data,
    })
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
    if bytes[0] != VERSION {
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
            data: r#"{"user":"zoé"}"#.to_owned(),
        };
        let bytes = encode(&record);
        assert_eq!(decode(record.id, &bytes).expect("decodes"), record);
        assert_eq!(expires_at(&bytes).expect("header"), i64::MAX);
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
            data in ".{0,200}",
        ) {
            let record = SessionRecord {
                id: SessionId::from_bytes(id),
                created_at: times[0],
                last_seen_at: times[1],
                expires_at: times[2],
                absolute_expires_at: times[3],
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
