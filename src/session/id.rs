//! Session identifiers.
//!
//! keepalive's own ids are 128 bits from the operating system's CSPRNG, written as 22
//! characters of unpadded base64url in the cookie. An Express application's ids (the
//! express-session compatibility mode) are whatever its `genid` made: by default 24 random
//! bytes written as 32 characters of unpadded base64url; any id of 1 to 32 bytes written that
//! way (a UUID's text is one) is taken. The [`IdKind`] keeps the two apart wherever both could
//! meet, such as the local store's file.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Length of keepalive's own identifiers in bytes (128 bits, above OWASP's 64-bit entropy
/// floor).
pub const ID_BYTES: usize = 16;
/// Length of keepalive's own identifiers as written in the cookie.
pub const ID_TEXT_LEN: usize = 22;
/// Longest identifier of any kind, in bytes (43 characters of text).
pub const MAX_ID_BYTES: usize = 32;

/// Whose identifier it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    /// A session keepalive created.
    Native,
    /// A session an Express application created (express-session with connect-redis).
    Express,
}

impl IdKind {
    /// The byte that stands for the kind where ids are stored.
    pub fn tag(self) -> u8 {
        match self {
            Self::Native => 0,
            Self::Express => 1,
        }
    }

    /// The kind a stored tag stands for.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Native),
            1 => Some(Self::Express),
            _ => None,
        }
    }
}

/// A session identifier. Small and `Copy`: its bytes live inline. Ids are ordered by kind,
/// then by their bytes: the order in which the local store keeps them, so that a walk through
/// its sessions can tell which ids it has passed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    kind: IdKind,
    len: u8,
    /// The id's bytes, then zeros.
    bytes: [u8; MAX_ID_BYTES],
}

/// The operating system's random source failed; no identifier can be made safely.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(String);

impl SessionId {
    /// A fresh identifier of keepalive's own from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parses the cookie form of keepalive's own ids. Anything but exactly 22 base64url
    /// characters is rejected before any allocation or store lookup.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != ID_TEXT_LEN {
            return None;
        }
        Self::decode(IdKind::Native, text).filter(|id| id.len() == ID_BYTES)
    }

    /// Parses an Express application's session id (the part of its signed cookie before the
    /// signature, and of its Redis key after the prefix): 1 to 32 bytes in canonical unpadded
    /// base64url.
    pub fn parse_express(text: &str) -> Option<Self> {
        Self::decode(IdKind::Express, text)
    }

    fn decode(kind: IdKind, text: &str) -> Option<Self> {
        // 32 bytes take 43 characters; base64url alone, checked before decoding.
        if text.is_empty()
            || text.len() > 43
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let mut bytes = [0u8; MAX_ID_BYTES];
        let len = URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok()?;
        let id = Self::from_parts(kind, &bytes[..len])?;
        // Only the canonical text: unused low bits must be zero, so one id has one text.
        let mut canonical = [0u8; 43];
        let written = URL_SAFE_NO_PAD
            .encode_slice(&bytes[..len], &mut canonical)
            .ok()?;
        (canonical[..written] == *text.as_bytes()).then_some(id)
    }

    /// An id of keepalive's own from its 16 stored bytes.
    pub fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        let mut all = [0u8; MAX_ID_BYTES];
        all[..ID_BYTES].copy_from_slice(&bytes);
        Self {
            kind: IdKind::Native,
            len: ID_BYTES as u8,
            bytes: all,
        }
    }

    /// An id of `kind` from its bytes; `None` when there are none or more than 32.
    pub fn from_parts(kind: IdKind, bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes.len() > MAX_ID_BYTES {
            return None;
        }
        let mut all = [0u8; MAX_ID_BYTES];
        all[..bytes.len()].copy_from_slice(bytes);
        Some(Self {
            kind,
            len: bytes.len() as u8,
            bytes: all,
        })
    }

    /// Whose id it is.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }
}

impl Ord for SessionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.kind, self.as_bytes()).cmp(&(other.kind, other.as_bytes()))
    }
}

impl std::hash::Hash for SessionId {
    /// The kind's tag and the bytes in use, not the zeros after them: equal ids have equal
    /// bytes, and a keepalive hashes its id several times.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u8(self.kind.tag());
        state.write(self.as_bytes());
    }
}

impl PartialOrd for SessionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SessionId {
    /// The cookie form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 44];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.as_bytes(), &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SessionId {
    /// Identifiers are bearer secrets: logs and debug output show only a short prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_string();
        let shown = text.get(..4).unwrap_or("");
        write!(f, "SessionId({shown}…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_as_stored_kind_then_bytes() {
        let stored = |id: &SessionId| {
            let mut key = vec![id.kind().tag()];
            key.extend_from_slice(id.as_bytes());
            key
        };
        let express = |bytes: &[u8]| SessionId::from_parts(IdKind::Express, bytes).expect("id");
        let mut ids = vec![
            express(&[2]),
            express(&[1, 255]),
            express(&[1, 2, 0]),
            express(&[1, 2]),
            SessionId::from_bytes([9; ID_BYTES]),
            SessionId::from_bytes([0; ID_BYTES]),
        ];
        let mut by_key = ids.clone();
        by_key.sort_by_key(stored);
        ids.sort();
        assert_eq!(ids, by_key);
        assert_eq!(ids[0], SessionId::from_bytes([0; ID_BYTES]));
        assert_eq!(ids[2], express(&[1, 2]));
    }

    #[test]
    fn round_trips_through_text() {
        let id = SessionId::generate().expect("rng");
        let text = id.to_string();
        assert_eq!(text.len(), ID_TEXT_LEN);
        assert_eq!(SessionId::parse(&text), Some(id));
    }

    #[test]
    fn identifiers_differ() {
        let a = SessionId::generate().expect("rng");
        let b = SessionId::generate().expect("rng");
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "short",
            "AAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAA+/",
            "AAAAAAAAAAAAAAAAAAAA==",
            "ÀAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
        // 22 characters whose last one carries bits beyond 128 are not canonical.
        assert_eq!(SessionId::parse("AAAAAAAAAAAAAAAAAAAAA_"), None);
    }

    #[test]
    fn express_ids_are_their_canonical_text_of_up_to_32_bytes() {
        // express-session's default: 24 random bytes, 32 characters.
        let default = "kH2mQX3c9bE4vR1uYtN0sL8pWq6aZ5dF";
        let id = SessionId::parse_express(default).expect("express id");
        assert_eq!(id.kind(), IdKind::Express);
        assert_eq!(id.as_bytes().len(), 24);
        assert_eq!(id.to_string(), default);
        // A UUID's text is base64url too.
        let uuid = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(
            SessionId::parse_express(uuid).map(|i| i.to_string()),
            Some(uuid.to_owned())
        );
        for bad in [
            "",
            "has space",
            "dot.ted",
            "AB",            // leftover bits set
            &"A".repeat(44), // over 32 bytes
            "a+b/c",
        ] {
            assert_eq!(SessionId::parse_express(bad), None, "{bad:?}");
        }
        // The same bytes of the two kinds are two ids.
        let native = SessionId::generate().expect("rng");
        let express = SessionId::from_parts(IdKind::Express, native.as_bytes()).expect("id");
        assert_ne!(native, express);
        assert_eq!(native.to_string(), express.to_string());
        assert_eq!(SessionId::parse(&express.to_string()), Some(native));
    }

    #[test]
    fn kinds_survive_their_tag() {
        for kind in [IdKind::Native, IdKind::Express] {
            assert_eq!(IdKind::from_tag(kind.tag()), Some(kind));
        }
        assert_eq!(IdKind::from_tag(9), None);
    }

    #[test]
    fn debug_does_not_leak_the_identifier() {
        let id = SessionId::generate().expect("rng");
        let debug = format!("{id:?}");
        assert!(!debug.contains(&id.to_string()));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,40}") {
            if let Some(id) = SessionId::parse(&text) {
                // Only the canonical form of an id is accepted.
                prop_assert_eq!(id.to_string(), text);
            }
        }

        #[test]
        fn every_id_round_trips(bytes in any::<[u8; 16]>()) {
            let id = SessionId::from_bytes(bytes);
            prop_assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        }

        #[test]
        fn every_express_id_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..=32)) {
            let id = SessionId::from_parts(IdKind::Express, &bytes).expect("id");
            prop_assert_eq!(SessionId::parse_express(&id.to_string()), Some(id));
        }

        #[test]
        fn any_text_parses_as_an_express_id_only_in_its_canonical_form(text in "\\PC{0,50}") {
            if let Some(id) = SessionId::parse_express(&text) {
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }
}
