//! How a session is laid out in its Redis key: one string, a fixed binary header the scripts
//! read and rewrite in place, then the user and the data.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | layout version, 1 |
//! | 1 | 8 | `c` created |
//! | 9 | 8 | `l` last seen |
//! | 17 | 8 | `e` idle expiry |
//! | 25 | 8 | `a` absolute expiry |
//! | 33 | 8 | `x` when the key's own TTL runs out |
//! | 41 | 4 | `n`, the length of the user in bytes (0: a session without a user) |
//! | 45 | `n` | the user, UTF-8 |
//! | 45 + `n` | rest | the data, JSON text |
//!
//! Times are Unix milliseconds, big-endian signed 64-bit integers; `n` is big-endian unsigned.
//!
//! Why not a hash with a field each (the obvious layout, and readable with `HGETALL`): a
//! keepalive is a read and a write of the same few numbers, and in a script each field of a
//! hash is one more string for Redis to copy into Lua and back. With one string a keepalive
//! is a `GET` and a `SETRANGE` of the 16 bytes that change, which cost Redis markedly less a
//! key when the two scripts were measured side by side on one server. Lua
//! reads the header with Redis's bundled `struct` library. Encoded by hand, in a few lines:
//! the scripts fix the layout byte by byte, so a serialization crate's format would only add a
//! dependency to match.

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, StoreError};

/// The first byte of every value this version writes.
pub const VERSION: u8 = 1;
/// Bytes before the user.
pub const HEADER: usize = 45;

/// A session as Redis holds it: the record, and when the key's TTL runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The session.
    pub record: SessionRecord,
    /// When Redis drops the key (`x`): the idle expiry, or up to half an idle timeout later.
    pub ttl_until: Millis,
}

/// The value of `record`'s key, its TTL running out at `ttl_until`.
pub fn encode(record: &SessionRecord, ttl_until: Millis) -> Vec<u8> {
    let user = record.user.as_deref().unwrap_or("").as_bytes();
    let mut out = Vec::with_capacity(HEADER + user.len() + record.data.len());
    out.push(VERSION);
    for n in [
        record.created_at,
        record.last_seen_at,
        record.expires_at,
        record.absolute_expires_at,
        ttl_until,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    // A user id is at most `MAX_USER_LEN` (256) bytes, checked where it enters.
    let len = u32::try_from(user.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(user);
    out.extend_from_slice(record.data.as_bytes());
    out
}

/// Reads the value of session `id`'s key.
pub fn decode(id: SessionId, bytes: &[u8]) -> Result<Stored, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("redis value of session {id:?}: {what}"));
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(corrupt("empty"));
    };
    if version != VERSION {
        return Err(corrupt(&format!(
            "layout version {version}, this keepalive reads {VERSION}"
        )));
    }
    if bytes.len() < HEADER {
        return Err(corrupt("shorter than its header"));
    }
    let int = |at: usize| -> Millis {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rest[at..at + 8]);
        Millis::from_be_bytes(b)
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[41..HEADER]);
    let user_end = usize::try_from(u32::from_be_bytes(len))
        .ok()
        .and_then(|n| HEADER.checked_add(n))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| corrupt("its user runs past its end"))?;
    let text = |part: &[u8], what: &str| {
        std::str::from_utf8(part)
            .map(str::to_owned)
            .map_err(|_| corrupt(&format!("its {what} is not UTF-8")))
    };
    let user = text(&bytes[HEADER..user_end], "user")?;
    Ok(Stored {
        record: SessionRecord {
            id,
            created_at: int(0),
            last_seen_at: int(8),
            expires_at: int(16),
            absolute_expires_at: int(24),
            data: text(&bytes[user_end..], "data")?,
            user: Some(user).filter(|u| !u.is_empty()),
        },
        ttl_until: int(32),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn id() -> SessionId {
        SessionId::generate().expect("rng")
    }

    #[test]
    fn the_header_sits_where_the_scripts_read_it() {
        let mut record = SessionRecord::new(
            id(),
            1_700_000_000_000,
            Duration::from_secs(600),
            Duration::from_secs(3600),
            r#"{"k":1}"#.to_owned(),
        );
        record.user = Some("ana".to_owned());
        let bytes = encode(&record, 1_700_000_900_000);
        assert_eq!(bytes[0], 1);
        let at = |offset: usize| i64::from_be_bytes(bytes[offset..offset + 8].try_into().unwrap());
        assert_eq!(at(1), record.created_at);
        assert_eq!(at(9), record.last_seen_at);
        assert_eq!(at(17), record.expires_at);
        assert_eq!(at(25), record.absolute_expires_at);
        assert_eq!(at(33), 1_700_000_900_000);
        assert_eq!(&bytes[41..45], &[0, 0, 0, 3]);
        assert_eq!(&bytes[45..48], b"ana");
        assert_eq!(&bytes[48..], br#"{"k":1}"#);
    }

    #[test]
    fn foreign_and_damaged_values_are_refused_by_name() {
        let id = id();
        let record = SessionRecord::new(
            id,
            1,
            Duration::from_secs(1),
            Duration::from_secs(2),
            String::new(),
        );
        let good = encode(&record, 5);
        let message = |bytes: &[u8]| decode(id, bytes).expect_err("refused").to_string();
        assert!(message(b"").contains("empty"));
        assert!(message(b"\x02rest").contains("layout version 2"));
        assert!(message(&good[..44]).contains("header"));
        let mut long_user = good.clone();
        long_user[44] = 9;
        assert!(message(&long_user).contains("user runs past"));
        let mut bad_text = good.clone();
        bad_text.push(0xff);
        assert!(message(&bad_text).contains("not UTF-8"));
        // Named as logs name sessions: by a prefix, never the whole id (a bearer secret).
        assert!(message(&bad_text).contains(&format!("{id:?}")));
        assert!(!message(&bad_text).contains(&id.to_string()));
    }

    proptest! {
        #[test]
        fn what_is_encoded_decodes_to_the_same(
            times in proptest::array::uniform5(any::<i64>()),
            user in proptest::option::of("\\PC{1,40}"),
            data in "\\PC{0,200}",
        ) {
            let id = id();
            let record = SessionRecord {
                id,
                created_at: times[0],
                last_seen_at: times[1],
                expires_at: times[2],
                absolute_expires_at: times[3],
                data,
                user,
            };
            let stored = decode(id, &encode(&record, times[4])).expect("decodes");
            prop_assert_eq!(stored, Stored { record, ttl_until: times[4] });
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            version_one in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if version_one && !bytes.is_empty() {
                bytes[0] = VERSION;
            }
            let _ = decode(id(), &bytes);
        }
    }
}
