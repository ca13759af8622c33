//! express-session's signed cookie, read and written as express-session does, so that
//! keepalive serves an Express application's sessions with its own cookie.
//!
//! The value is `s:` + the session id + `.` + the HMAC-SHA256 of the id under the
//! application's secret, in standard base64 without padding (express-session's
//! `cookie-signature`), percent-encoded in the header (`encodeURIComponent`, `%3A` for the
//! colon). A signature is checked against each secret, in constant time: the first secret
//! signs, every one verifies, as express-session's `secret` array does for a rotation.
//!
//! The `Set-Cookie` of a rolling session is written from the session's own stored cookie
//! (its path, domain, flags and `originalMaxAge`), attribute by attribute in the order of the
//! `cookie` package that express-session uses, so it is the one the application would send.
//! The signing is written here because it is these few lines of the two packages' format,
//! which no crate reproduces; the cryptography is `hmac` and `sha2`.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::clock::Millis;
use crate::config::Secret;
use crate::session::SessionId;
use crate::session::express::StoredCookie;

/// The cookie of an Express application's sessions.
#[derive(Clone)]
pub struct ExpressCookie {
    name: String,
    /// An HMAC keyed with each secret, in order: keying hashes the secret's pads, which every
    /// signature would otherwise do again (half of what a check costs).
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for ExpressCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpressCookie")
            .field("name", &self.name)
            .field("secrets", &self.keys.len())
            .finish()
    }
}

impl ExpressCookie {
    /// The cookie `name` (express-session's `name`, `connect.sid` by default), signed with the
    /// first of `secrets` and verified with each.
    pub fn new(name: String, secrets: Vec<Secret>) -> Self {
        let keys = secrets
            .iter()
            // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
            .map(|secret| {
                Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                    .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
            })
            .collect();
        Self { name, keys }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session id of the first pair with the cookie's name whose signature one of the
    /// secrets made. Unsigned, badly signed and malformed values are no session; they cost no
    /// store lookup, and a forged value planted before the real one (by a sibling subdomain)
    /// does not hide it.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        self.session_ids(headers).next()
    }

    /// The session ids of every pair with the cookie's name that one of the secrets signed, in
    /// order. More than one is possible: a sibling can plant a signed value it got for itself
    /// (of a session that is over, say) before the real one.
    pub fn session_ids<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = SessionId> + 'a {
        super::values(headers, &self.name).filter_map(|value| self.unsign(value))
    }

    /// The id of a cookie value, if it is signed by one of the secrets. Checked on the
    /// stack: every keepalive checks one.
    fn unsign(&self, value: &str) -> Option<SessionId> {
        // `s:`, an id of at most 43 characters, `.`, a signature of 43: longer is no session.
        let mut decoded = [0u8; 96];
        let mut len = 0;
        for byte in percent_encoding::percent_decode_str(value) {
            *decoded.get_mut(len)? = byte;
            len += 1;
        }
        let signed = std::str::from_utf8(&decoded[..len])
            .ok()?
            .strip_prefix("s:")?;
        let (text, signature) = signed.rsplit_once('.')?;
        // Only an id's canonical text parses, so `text` is what was signed.
        let id = SessionId::parse_express(text)?;
        let given = signature.as_bytes();
        let mut expected = [0u8; SIGNATURE_LEN];
        self.keys
            .iter()
            .any(|key| {
                let expected = sign_into(text.as_bytes(), key, &mut expected);
                bool::from(expected.ct_eq(given))
            })
            .then_some(id)
    }

    /// The cookie's value for session `id`, as express-session writes it: signed with the first
    /// secret, percent-encoded.
    pub fn value(&self, id: &SessionId) -> String {
        let text = id_text(id);
        let signature = match self.keys.first() {
            Some(key) => signature_of(text.as_bytes(), key),
            None => String::new(),
        };
        encode_uri_component(&format!("s:{text}.{signature}"))
    }

    /// The `Set-Cookie` express-session sends for session `id` whose stored cookie is `cookie`,
    /// touched at `now`: `Expires` moves to `now + originalMaxAge` (none for a browser-session
    /// cookie), every other attribute is the stored one.
    pub fn set_cookie(&self, id: &SessionId, cookie: &StoredCookie, now: Millis) -> String {
        let mut out = format!("{}={}", self.name, self.value(id));
        if let Some(domain) = cookie.domain().filter(|d| !d.is_empty()) {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if let Some(path) = cookie.path().filter(|p| !p.is_empty()) {
            out.push_str("; Path=");
            out.push_str(path);
        }
        if let Some(max_age) = cookie.max_age_ms() {
            out.push_str("; Expires=");
            out.push_str(&http_date(now.saturating_add(max_age)));
        }
        if cookie.http_only() {
            out.push_str("; HttpOnly");
        }
        if cookie.secure() {
            out.push_str("; Secure");
        }
        if cookie.partitioned() {
            out.push_str("; Partitioned");
        }
        match cookie.priority().map(str::to_ascii_lowercase).as_deref() {
            Some("low") => out.push_str("; Priority=Low"),
            Some("medium") => out.push_str("; Priority=Medium"),
            Some("high") => out.push_str("; Priority=High"),
            _ => {}
        }
        match cookie.same_site() {
            Some(serde_json::Value::Bool(true)) => out.push_str("; SameSite=Strict"),
            Some(serde_json::Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "strict" => out.push_str("; SameSite=Strict"),
                "lax" => out.push_str("; SameSite=Lax"),
                "none" => out.push_str("; SameSite=None"),
                _ => {}
            },
            _ => {}
        }
        out
    }

    /// The `Set-Cookie` that removes the cookie (after a logout through keepalive), at the
    /// path express-session uses by default.
    pub fn clear(&self) -> String {
        format!(
            "{}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly",
            self.name
        )
    }
}

/// The id's text, as express-session wrote it and as it stands in the Redis key.
fn id_text(id: &SessionId) -> String {
    id.to_string()
}

/// Characters of a signature: 32 bytes in base64 without padding.
const SIGNATURE_LEN: usize = 43;

/// `cookie-signature`'s signature of `value`: HMAC-SHA256 under `key`'s secret, standard
/// base64 without its padding.
fn signature_of(value: &[u8], key: &Hmac<Sha256>) -> String {
    let mut out = [0u8; SIGNATURE_LEN];
    String::from_utf8_lossy(sign_into(value, key, &mut out)).into_owned()
}

/// [`signature_of`], written into `out`.
fn sign_into<'a>(value: &[u8], key: &Hmac<Sha256>, out: &'a mut [u8; SIGNATURE_LEN]) -> &'a [u8] {
    let mut mac = key.clone();
    mac.update(value);
    let written = STANDARD_NO_PAD
        .encode_slice(mac.finalize().into_bytes(), out)
        .unwrap_or_else(|_| unreachable!("32 bytes take {SIGNATURE_LEN} characters"));
    &out[..written]
}

/// JavaScript's `encodeURIComponent`, for the ASCII text of a signed cookie.
fn encode_uri_component(text: &str) -> String {
    const KEEP: &[u8] = b"-_.!~*'()";
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || KEEP.contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `Date.prototype.toUTCString()`: `Wed, 03 Dec 2026 18:00:00 GMT`.
fn http_date(at: Millis) -> String {
    let seconds = at.div_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => {
            let format = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            t.format(format).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;

    use super::*;

    fn cookie(secrets: &[&str]) -> ExpressCookie {
        ExpressCookie::new(
            "connect.sid".to_owned(),
            secrets
                .iter()
                .map(|s| Secret::new((*s).to_owned()))
                .collect(),
        )
    }

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(COOKIE, HeaderValue::from_str(value).expect("header"));
        map
    }

    const SID: &str = "kH2mQX3c9bE4vR1uYtN0sL8pWq6aZ5dF";

    #[test]
    fn signs_as_cookie_signature_does() {
        // cookie-signature's own test vector: sign('hello', 'tobiiscool').
        let cookie = ExpressCookie::new(
            "connect.sid".to_owned(),
            vec![Secret::new("tobiiscool".to_owned())],
        );
        assert_eq!(
            signature_of(b"hello", &cookie.keys[0]),
            "DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
        );
    }

    #[test]
    fn the_longest_id_reads_and_a_longer_value_is_no_session() {
        let c = cookie(&["secret"]);
        let id = SessionId::from_parts(crate::session::IdKind::Express, &[7u8; 32]).expect("id");
        let value = c.value(&id);
        assert_eq!(
            c.session_id(&headers(&format!("connect.sid={value}"))),
            Some(id)
        );
        for padded in [format!("{value}A"), format!("{value}%41%41%41")] {
            assert_eq!(
                c.session_id(&headers(&format!("connect.sid={padded}"))),
                None
            );
        }
    }

    #[test]
    fn reads_a_signed_cookie_with_any_of_the_secrets() {
        let id = SessionId::parse_express(SID).expect("id");
        let old = cookie(&["old-secret"]);
        let value = old.value(&id);
        assert!(value.starts_with("s%3A"), "{value}");
        let rotated = cookie(&["new-secret", "old-secret"]);
        assert_eq!(
            rotated.session_id(&headers(&format!("connect.sid={value}"))),
            Some(id)
        );
        assert_eq!(
            cookie(&["new-secret"]).session_id(&headers(&format!("connect.sid={value}"))),
            None,
            "a secret the application dropped no longer verifies"
        );
    }

    #[test]
    fn unsigned_tampered_and_malformed_values_are_no_session() {
        let c = cookie(&["s3cret"]);
        let id = SessionId::parse_express(SID).expect("id");
        let good = c.value(&id);
        let other = SessionId::parse_express("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("id");
        let forged = good.replace(SID, &other.to_string());
        for value in [
            SID.to_owned(),
            format!("s%3A{SID}"),
            format!("s%3A{SID}."),
            forged,
            good.replace("s%3A", "x%3A"),
            format!("{}x", good),
            "%E0%A4%A".to_owned(),
            String::new(),
        ] {
            assert_eq!(
                c.session_id(&headers(&format!("connect.sid={value}"))),
                None,
                "{value}"
            );
        }
        assert_eq!(c.session_id(&HeaderMap::new()), None);
    }

    #[test]
    fn a_planted_value_before_the_real_one_does_not_hide_it() {
        let c = cookie(&["s3cret"]);
        let id = SessionId::parse_express(SID).expect("id");
        let planted = "connect.sid=s%3Ajunk.junk; connect.sid=garbage";
        let header = format!("{planted}; connect.sid={}", c.value(&id));
        assert_eq!(c.session_id(&headers(&header)), Some(id));
    }

    #[test]
    fn the_set_cookie_follows_the_stored_cookie_in_the_cookie_packages_order() {
        let c = cookie(&["s3cret"]);
        let id = SessionId::parse_express(SID).expect("id");
        let stored = StoredCookie::of_session(
            r#"{"cookie":{"originalMaxAge":3600000,"expires":"2026-12-03T18:00:00.000Z","secure":true,"httpOnly":true,"domain":"example.com","path":"/app","sameSite":"lax","priority":"high"},"passport":{"user":"42"}}"#,
        );
        // 2026-12-03T18:00:00Z + 1 h.
        let now = 1_796_320_800_000;
        let set = c.set_cookie(&id, &stored, now);
        assert_eq!(
            set,
            format!(
                "connect.sid={}; Domain=example.com; Path=/app; Expires=Thu, 03 Dec 2026 19:00:00 GMT; HttpOnly; Secure; Priority=High; SameSite=Lax",
                c.value(&id)
            )
        );
        // A browser-session cookie (no maxAge) gets no Expires.
        let session = StoredCookie::of_session(
            r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#,
        );
        assert_eq!(session.max_age_ms(), None);
        assert_eq!(
            c.set_cookie(&id, &session, now),
            format!("connect.sid={}; Path=/; HttpOnly", c.value(&id))
        );
    }
}
