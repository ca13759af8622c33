//! How a session is laid out in its Redis key: one string, a compact binary header the scripts
//! read and rewrite in place, then the user and the data.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | layout version, 2 |
//! | 1 | 6 | `c` created: Unix milliseconds, signed 48-bit |
//! | 7 | 5 | `l` last seen, as milliseconds after `c` (signed 40-bit, as the next three) |
//! | 12 | 5 | `e` idle expiry, after `c` |
//! | 17 | 5 | `a` absolute expiry, after `c` |
//! | 22 | 5 | `x` when the key's own TTL runs out, after `c` |
//! | 27 | 1 or 2 | `n`, the length of the user in bytes: one byte below 128, else two with the top bit set |
//! | 28 or 29 | `n` | the user, UTF-8 (none: a session without a user) |
//! | then | rest | the data, JSON text |
//!
//! Integers are big-endian. Why so compact: Redis keeps every key in its memory, and a value of
//! at most 28 bytes (this layout, for a session without user or data) is the size below which
//! Redis's allocator puts a session under the default prefix in 120 bytes of `MEMORY USAGE`
//! instead of 152 for the 45 bytes of layout 1 (eight-byte times). Offsets after `c` span
//! ±17 years, beyond any absolute lifetime the configuration accepts (at most ten years);
//! a time beyond them (only a record forged by hand could hold one) is written as the
//! furthest the field can say.
//!
//! Layout 1 (the same five times as eight-byte Unix milliseconds at offsets 1 to 33, then a
//! four-byte `n` at 41 and the user at 45) is still read, by this module and by the scripts,
//! and rewritten in its own layout, so sessions written before layout 2 live out their
//! lifetime; every value written whole is layout 2.
//!
//! Why not a hash with a field each (the obvious layout, and readable with `HGETALL`): a
//! keepalive is a read and a write of the same few numbers, and in a script each field of a
//! hash is one more string for Redis to copy into Lua and back. With one string a keepalive
//! is a `GET` and a `SETRANGE` of the 10 bytes that change, which cost Redis markedly less a
//! key when the two scripts were measured side by side on one server. Lua
//! reads the header with Redis's bundled `struct` library. Encoded by hand, in a few lines:
//! the scripts fix the layout byte by byte, so a serialization crate's format would only add a
//! dependency to match.

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, StoreError};

/// The first byte of every value this version writes.
pub const VERSION: u8 = 2;
/// The layout before [`VERSION`], still read.
pub const VERSION_1: u8 = 1;
/// The shortest value of this layout: a session without user or data.
pub const HEADER: usize = 28;
/// The length of layout 1's header.
const HEADER_1: usize = 45;
/// The furthest an offset after `c` reaches either way (40-bit signed).
const OFFSET_LIMIT: i64 = (1 << 39) - 1;
/// The furthest `c` reaches either way (48-bit signed).
const CREATED_LIMIT: i64 = (1 << 47) - 1;
/// The longest user the two-byte length can say.
const USER_LIMIT: usize = 0x7fff;

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
    // A user id is at most `MAX_USER_LEN` (256) bytes, checked where it enters.
    let user = &user[..user.len().min(USER_LIMIT)];
    let mut out = Vec::with_capacity(HEADER + 1 + user.len() + record.data.len());
    out.push(VERSION);
    let created = record.created_at.clamp(-CREATED_LIMIT, CREATED_LIMIT);
    out.extend_from_slice(&created.to_be_bytes()[2..]);
    for time in [
        record.last_seen_at,
        record.expires_at,
        record.absolute_expires_at,
        ttl_until,
    ] {
        let offset = time
            .saturating_sub(created)
            .clamp(-OFFSET_LIMIT, OFFSET_LIMIT);
        out.extend_from_slice(&offset.to_be_bytes()[3..]);
    }
    match u8::try_from(user.len()) {
        Ok(short) if short < 0x80 => out.push(short),
        // At most `USER_LIMIT`, so the top bit is free to say "two bytes".
        _ => out.extend_from_slice(&(0x8000 | user.len() as u16).to_be_bytes()),
    }
    out.extend_from_slice(user);
    out.extend_from_slice(record.data.as_bytes());
    out
}

/// Reads the value of session `id`'s key (either layout).
pub fn decode(id: SessionId, bytes: &[u8]) -> Result<Stored, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("redis value of session {id:?}: {what}"));
    let Some(&version) = bytes.first() else {
        return Err(corrupt("empty"));
    };
    let (times, user_at, user_len) = match version {
        VERSION => {
            if bytes.len() < HEADER {
                return Err(corrupt("shorter than its header"));
            }
            let created = signed(&bytes[1..7]);
            let at = |offset: usize| created.saturating_add(signed(&bytes[offset..offset + 5]));
            let times = [created, at(7), at(12), at(17), at(22)];
            if bytes[27] < 0x80 {
                (times, HEADER, usize::from(bytes[27]))
            } else if bytes.len() > HEADER {
                let len = u16::from_be_bytes([bytes[27] & 0x7f, bytes[28]]);
                (times, HEADER + 1, usize::from(len))
            } else {
                return Err(corrupt("shorter than its header"));
            }
        }
        VERSION_1 => {
            if bytes.len() < HEADER_1 {
                return Err(corrupt("shorter than its header"));
            }
            let at = |offset: usize| signed(&bytes[offset..offset + 8]);
            let times = [at(1), at(9), at(17), at(25), at(33)];
            let mut len = [0u8; 4];
            len.copy_from_slice(&bytes[41..HEADER_1]);
            let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
            (times, HEADER_1, len)
        }
        other => {
            return Err(corrupt(&format!(
                "layout version {other}, this keepalive reads {VERSION_1} and {VERSION}"
            )));
        }
    };
    let user_end = user_at
        .checked_add(user_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| corrupt("its user runs past its end"))?;
    let text = |part: &[u8], what: &str| {
        std::str::from_utf8(part)
            .map(str::to_owned)
            .map_err(|_| corrupt(&format!("its {what} is not UTF-8")))
    };
    let user = text(&bytes[user_at..user_end], "user")?;
    Ok(Stored {
        record: SessionRecord {
            id,
            created_at: times[0],
            last_seen_at: times[1],
            expires_at: times[2],
            absolute_expires_at: times[3],
            data: text(&bytes[user_end..], "data")?,
            user: Some(user).filter(|u| !u.is_empty()),
        },
        ttl_until: times[4],
    })
}

/// A big-endian signed integer of up to eight bytes.
fn signed(bytes: &[u8]) -> i64 {
    let mut wide = [0u8; 8];
    wide[8 - bytes.len()..].copy_from_slice(bytes);
    let shift = 64 - 8 * bytes.len() as u32;
    // Shifting left then back (arithmetically) carries the field's sign bit.
    (i64::from_be_bytes(wide) << shift) >> shift
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn id() -> SessionId {
        SessionId::generate().expect("rng")
    }

    fn record(user: Option<&str>, data: &str) -> SessionRecord {
        let mut record = SessionRecord::new(
            id(),
            1_700_000_000_000,
            Duration::from_secs(600),
            Duration::from_secs(3600),
            data.to_owned(),
        );
        record.user = user.map(str::to_owned);
        record
    }

    #[test]
    fn the_header_sits_where_the_scripts_read_it() {
        let record = record(Some("ana"), r#"{"k":1}"#);
        let bytes = encode(&record, 1_700_000_900_000);
        assert_eq!(bytes[0], 2);
        assert_eq!(signed(&bytes[1..7]), record.created_at);
        let after = |offset: usize| record.created_at + signed(&bytes[offset..offset + 5]);
        assert_eq!(after(7), record.last_seen_at);
        assert_eq!(after(12), record.expires_at);
        assert_eq!(after(17), record.absolute_expires_at);
        assert_eq!(after(22), 1_700_000_900_000);
        assert_eq!(bytes[27], 3);
        assert_eq!(&bytes[28..31], b"ana");
        assert_eq!(&bytes[31..], br#"{"k":1}"#);
    }

    #[test]
    fn a_session_without_user_or_data_fits_in_the_header() {
        // The size that keeps a session key at 120 bytes of Redis's `MEMORY USAGE` under the
        // default prefix (see the module's comment).
        assert_eq!(encode(&record(None, ""), 1_700_000_900_000).len(), HEADER);
    }

    #[test]
    fn a_user_of_128_bytes_or_more_takes_a_two_byte_length() {
        for len in [127, 128, 256] {
            let user = "u".repeat(len);
            let record = record(Some(&user), "{}");
            let bytes = encode(&record, record.expires_at);
            let header = if len < 128 { HEADER } else { HEADER + 1 };
            assert_eq!(bytes.len(), header + len + 2, "user of {len}");
            let stored = decode(record.id, &bytes).expect("decodes");
            assert_eq!(stored.record, record);
        }
    }

    #[test]
    fn a_value_of_layout_1_is_still_read() {
        let record = record(Some("ana"), r#"{"k":1}"#);
        let mut bytes = vec![VERSION_1];
        for n in [
            record.created_at,
            record.last_seen_at,
            record.expires_at,
            record.absolute_expires_at,
            1_700_000_900_000,
        ] {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"ana");
        bytes.extend_from_slice(br#"{"k":1}"#);
        let stored = decode(record.id, &bytes).expect("layout 1 decodes");
        assert_eq!(
            stored,
            Stored {
                record,
                ttl_until: 1_700_000_900_000
            }
        );
    }

    #[test]
    fn times_beyond_what_the_layout_says_are_written_as_its_furthest() {
        let mut record = record(None, "");
        record.absolute_expires_at = Millis::MAX;
        let stored = decode(record.id, &encode(&record, record.expires_at)).expect("decodes");
        assert_eq!(
            stored.record.absolute_expires_at,
            record.created_at + OFFSET_LIMIT
        );
        assert_eq!(stored.record.expires_at, record.expires_at);
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
        assert!(message(b"\x03rest").contains("layout version 3"));
        assert!(message(&good[..HEADER - 1]).contains("header"));
        assert!(message(&[VERSION_1; 44]).contains("header"));
        let mut long_user = good.clone();
        long_user[27] = 9;
        assert!(message(&long_user).contains("user runs past"));
        long_user[27] = 0x80;
        assert!(message(&long_user).contains("header"));
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
            created in -CREATED_LIMIT..=CREATED_LIMIT,
            offsets in proptest::array::uniform4(-OFFSET_LIMIT..=OFFSET_LIMIT),
            user in proptest::option::of("\\PC{1,200}"),
            data in "\\PC{0,200}",
        ) {
            let id = id();
            let record = SessionRecord {
                id,
                created_at: created,
                last_seen_at: created + offsets[0],
                expires_at: created + offsets[1],
                absolute_expires_at: created + offsets[2],
                data,
                user,
            };
            let stored = decode(id, &encode(&record, created + offsets[3])).expect("decodes");
            prop_assert_eq!(stored, Stored { record, ttl_until: created + offsets[3] });
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            version in 0u8..4,
        ) {
            let mut bytes = bytes;
            if let Some(first) = bytes.first_mut() {
                *first = version;
            }
            let _ = decode(id(), &bytes);
        }
    }
}
