//! Session identifiers: 128 bits from the operating system's CSPRNG, written as 22
//! characters of unpadded base64url in the cookie.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Length of an identifier in bytes (128 bits, above OWASP's 64-bit entropy floor).
pub const ID_BYTES: usize = 16;
/// Length of an identifier as written in the cookie.
pub const ID_TEXT_LEN: usize = 22;

/// A session identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; ID_BYTES]);

/// The operating system's random source failed; no identifier can be made safely.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(String);

impl SessionId {
    /// A fresh identifier from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Parses the cookie form. Anything but exactly 22 base64url characters is rejected
    /// before any allocation or store lookup.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != ID_TEXT_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(ID_BYTES) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// The raw bytes, as stores key them.
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// Rebuilds an identifier from stored bytes.
    pub fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for SessionId {
    /// The cookie form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_TEXT_LEN];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SessionId {
    /// Identifiers are bearer secrets: logs and debug output show only a short prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_string();
        write!(f, "SessionId({}…)", &text[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
