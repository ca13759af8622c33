//! An Express application's session as express-session stores it through connect-redis: the
//! JSON text of the session object, its `cookie` first, the application's own fields after.
//!
//! keepalive reads three things from it and writes none: the cookie (for the lifetime
//! connect-redis gives the key, and for a rolling session's `Set-Cookie`), the user (a field the
//! operator names, for forward authentication), and nothing else. The text itself is kept as
//! it is, byte for byte, as the session's `data`, so that what goes back to Redis after an
//! outage is exactly what the application wrote.

use std::time::Duration;

use serde::Deserialize;

use crate::clock::{Millis, duration_millis};

use super::{SessionId, SessionRecord, check_user};

/// The latest time an answer shows (9999-12-31T23:59:59.999Z): the absolute expiry of an
/// Express session that has none, which express-session does not give (a rolling session, or a
/// browser-session cookie).
pub const NO_ABSOLUTE_EXPIRY: Millis = 253_402_300_799_999;

/// How keepalive reads an Express application's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressFormat {
    /// connect-redis's `ttl`: the lifetime of a session whose cookie has no expiry.
    pub ttl: Duration,
    /// express-session's `rolling`: whether the cookie's expiry moves with every answer.
    pub rolling: bool,
    /// The path of the field that names the user (`["passport", "user"]`); empty: none.
    pub user_field: Vec<String>,
}

/// The `cookie` object express-session stores with each session (`Cookie.data`), as far as
/// keepalive needs it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredCookie {
    /// The `maxAge` the session was given, in ms; `None`: a browser-session cookie.
    #[serde(default)]
    original_max_age: Option<f64>,
    /// When the cookie expires, as express-session last saved it.
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    secure: Option<serde_json::Value>,
    #[serde(default)]
    http_only: Option<bool>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    same_site: Option<serde_json::Value>,
    #[serde(default)]
    partitioned: Option<bool>,
    #[serde(default)]
    priority: Option<String>,
}

impl StoredCookie {
    /// The `cookie` object of a stored session (its JSON text); a session without one, or
    /// text that is no JSON object, reads as a cookie without expiry or attributes.
    pub fn of_session(json: &str) -> Self {
        read::cookie_and_user(json, &[]).0
    }

    /// The session's `maxAge` in whole ms, when its cookie has an expiry: express-session moves
    /// that expiry to `now + maxAge` on every request.
    pub fn max_age_ms(&self) -> Option<Millis> {
        self.expires.as_ref()?;
        self.original_max_age
            .filter(|ms| ms.is_finite())
            .map(|ms| ms as Millis)
    }

    /// When the cookie expires as last saved, in Unix ms.
    pub fn expires_at(&self) -> Option<Millis> {
        let text = self.expires.as_deref()?;
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        Some((at.unix_timestamp_nanos() / 1_000_000) as Millis)
    }

    /// The `Domain` attribute.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The `Path` attribute.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Whether the cookie is `HttpOnly`.
    pub fn http_only(&self) -> bool {
        self.http_only == Some(true)
    }

    /// Whether the cookie is `Secure` (`secure: "auto"` was resolved before it was stored; as
    /// in JavaScript, a non-empty string counts).
    pub fn secure(&self) -> bool {
        match &self.secure {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            _ => false,
        }
    }

    /// Whether the cookie is `Partitioned`.
    pub fn partitioned(&self) -> bool {
        self.partitioned == Some(true)
    }

    /// The `Priority` attribute as stored.
    pub fn priority(&self) -> Option<&str> {
        self.priority.as_deref()
    }

    /// The `SameSite` attribute as stored (`true`, or `"strict"`, `"lax"`, `"none"`).
    pub fn same_site(&self) -> Option<&serde_json::Value> {
        self.same_site.as_ref()
    }
}

impl ExpressFormat {
    /// The lifetime connect-redis gives a session's key when express-session touches it:
    /// `ceil(maxAge / 1000)` seconds when its cookie has an expiry (express-session has just
    /// moved it to `now + maxAge`), connect-redis's `ttl` otherwise.
    pub fn ttl_secs(&self, cookie: &StoredCookie) -> i64 {
        match cookie.max_age_ms() {
            Some(ms) => ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0),
            None => duration_millis(self.ttl) / 1000,
        }
    }

    /// The lifetime in seconds connect-redis gives the key of the session whose stored text is
    /// `json` when express-session touches it ([`ttl_secs`](Self::ttl_secs) of its cookie).
    ///
    /// Read from the head of the text when the cookie is where express-session puts it (see
    /// `head_max_age`), as the store's touch script reads it: a keepalive asks this several
    /// times of each session it extends, at the cost of a few comparisons whatever the
    /// session's size. Any other text is decoded.
    pub fn ttl_of(&self, json: &str) -> i64 {
        match head_max_age(json) {
            Some(ms) => ms.div_ceil(1000) as i64,
            None => self.ttl_secs(&StoredCookie::of_session(json)),
        }
    }

    /// How long a session may stay idle: the lifetime its key gets from each request.
    pub fn idle_of(&self, json: &str) -> Duration {
        Duration::from_secs(self.ttl_of(json).max(0).unsigned_abs())
    }

    /// The session `id` whose stored text is `json`, as Redis just extended it at `now` for
    /// `ttl_secs`: it lives until then, or until its cookie expires in the browser when that is
    /// sooner and does not move (not rolling). Its `created_at` is when the application last
    /// saved it, the only time express-session keeps.
    pub fn record(&self, id: SessionId, json: String, ttl_secs: i64, now: Millis) -> SessionRecord {
        let (cookie, user) = read::cookie_and_user(&json, &self.user_field);
        let saved_expiry = cookie.expires_at();
        let cookie_expiry = if self.rolling { None } else { saved_expiry };
        let absolute_expires_at = cookie_expiry.unwrap_or(NO_ABSOLUTE_EXPIRY);
        let expires_at = now
            .saturating_add(ttl_secs.saturating_mul(1000))
            .min(absolute_expires_at);
        let created_at = match (saved_expiry, cookie.max_age_ms()) {
            (Some(expires), Some(max_age)) => expires.saturating_sub(max_age),
            _ => now,
        };
        SessionRecord {
            id,
            created_at,
            last_seen_at: now,
            expires_at,
            absolute_expires_at,
            user: user.filter(|user| check_user(user).is_ok()),
            data: json,
        }
    }

    /// The user the configured field names, if it holds a string or a number keepalive can
    /// carry in a header.
    pub fn user_of(&self, json: &str) -> Option<String> {
        read::cookie_and_user(json, &self.user_field)
            .1
            .filter(|user| check_user(user).is_ok())
    }
}

/// The cookie's `originalMaxAge` (whole ms) when the text begins as `JSON.stringify` writes
/// an express-session session whose cookie has an expiry: `{"cookie":{"originalMaxAge":N,`,
/// `partitioned` and `priority` when the application sets them, then `"expires":"`. `None` for
/// anything else (a browser-session cookie, a fractional or negative `maxAge`, another
/// order), which is then decoded whole. The same reading as the touch script's
/// `ttl_from_head`, so that both give a session the same lifetime; `JSON.stringify` never
/// repeats a key, so the head's cookie is the session's.
fn head_max_age(json: &str) -> Option<u64> {
    let rest = json.strip_prefix(r#"{"cookie":{"originalMaxAge":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = rest.split_at(digits);
    let ms = number.parse::<u64>().ok()?;
    let mut rest = rest.strip_prefix(',')?;
    if let Some(after) = rest.strip_prefix(r#""partitioned":"#) {
        let word = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        rest = after[word..].strip_prefix(',')?;
    }
    if let Some(after) = rest.strip_prefix(r#""priority":""#) {
        let word = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        rest = after[word..].strip_prefix("\",")?;
    }
    rest.starts_with(r#""expires":""#).then_some(ms)
}

/// Reading a session's cookie and user in one pass over its text, every other field of the
/// application skipped rather than built: a keepalive reads each session it extends, and a
/// `serde_json::Value` of the whole session would allocate every field of it. serde has no
/// ready-made way to pick one path out of a document, hence these visitors.
mod read {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    use serde_json::value::RawValue;

    use super::StoredCookie;

    /// The session's cookie (the default when the text is no JSON object, or has none) and the
    /// value at `user_field` when it is a string or a number.
    pub fn cookie_and_user(json: &str, user_field: &[String]) -> (StoredCookie, Option<String>) {
        let mut reader = serde_json::Deserializer::from_str(json);
        match (Session { user_field }).deserialize(&mut reader) {
            Ok((cookie, user)) if reader.end().is_ok() => (cookie.unwrap_or_default(), user),
            _ => (StoredCookie::default(), None),
        }
    }

    /// The top of a session: its `cookie` and the first step of the user's path.
    struct Session<'a> {
        user_field: &'a [String],
    }

    impl<'de> DeserializeSeed<'de> for Session<'_> {
        type Value = (Option<StoredCookie>, Option<String>);

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Session<'_> {
        type Value = (Option<StoredCookie>, Option<String>);

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a session object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (first, rest) = match self.user_field.split_first() {
                Some((first, rest)) => (Some(first.as_str()), rest),
                None => (None, &[][..]),
            };
            let (mut cookie, mut user) = (None, None);
            // As in JavaScript, a repeated field's last value counts.
            while let Some([is_cookie, is_user]) =
                map.next_key_seed(Key(["cookie", first.unwrap_or("")], first.is_some()))?
            {
                match (is_cookie, is_user) {
                    // A user inside the cookie: no application does it, but it reads right.
                    (true, true) => {
                        let value: serde_json::Value = map.next_value()?;
                        cookie = Option::<StoredCookie>::deserialize(&value).ok().flatten();
                        user = Path(rest).deserialize(value).ok().flatten();
                    }
                    // A cookie of another shape is no cookie; the user is still read.
                    (true, false) => {
                        let raw: &RawValue = map.next_value()?;
                        cookie = serde_json::from_str(raw.get()).ok().flatten();
                    }
                    (false, true) => user = map.next_value_seed(Path(rest))?,
                    (false, false) => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok((cookie, user))
        }
    }

    /// A field name compared with two names without being copied: whether it is the first,
    /// and (when `second` is on) the second.
    struct Key<'a>([&'a str; 2], bool);

    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = [bool; 2];

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key<'_> {
        type Value = [bool; 2];

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a field name")
        }

        fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
            Ok([name == self.0[0], self.1 && name == self.0[1]])
        }
    }

    /// The rest of the user's path: at its end a string or a number is the user, anything
    /// else is none.
    struct Path<'a>(&'a [String]);

    impl<'de> DeserializeSeed<'de> for Path<'_> {
        type Value = Option<String>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Path<'_> {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(self.0.is_empty().then(|| v.to_owned()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(self.0.is_empty().then(|| v.to_string()))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(self.0.is_empty().then(|| v.to_string()))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(self
                .0
                .is_empty()
                .then(|| serde_json::Number::from_f64(v).map(|n| n.to_string()))
                .flatten())
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut user = None;
            let next = self.0.split_first();
            let name = next.map_or("", |(first, _)| first.as_str());
            while let Some([is_next, _]) = map.next_key_seed(Key([name, ""], false))? {
                match next {
                    Some((_, rest)) if is_next => user = map.next_value_seed(Path(rest))?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(user)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"cookie":{"originalMaxAge":3600000,"expires":"2026-12-03T19:00:00.000Z","secure":false,"httpOnly":true,"path":"/"},"passport":{"user":42},"cart":[1,2]}"#;
    const NOW: Millis = 1_796_320_800_000; // 2026-12-03T18:00:00Z

    fn format(rolling: bool) -> ExpressFormat {
        ExpressFormat {
            ttl: Duration::from_secs(86_400),
            rolling,
            user_field: vec!["passport".to_owned(), "user".to_owned()],
        }
    }

    fn id() -> SessionId {
        SessionId::parse_express("kH2mQX3c9bE4vR1uYtN0sL8pWq6aZ5dF").expect("id")
    }

    #[test]
    fn the_ttl_is_connect_redis_s() {
        let f = format(false);
        assert_eq!(f.ttl_secs(&StoredCookie::of_session(JSON)), 3600);
        let odd = r#"{"cookie":{"originalMaxAge":1500,"expires":"2026-12-03T18:00:01.500Z"}}"#;
        assert_eq!(f.ttl_secs(&StoredCookie::of_session(odd)), 2, "rounded up");
        let session_cookie = r#"{"cookie":{"originalMaxAge":null,"expires":null,"path":"/"}}"#;
        assert_eq!(
            f.ttl_secs(&StoredCookie::of_session(session_cookie)),
            86_400
        );
        assert_eq!(f.ttl_secs(&StoredCookie::of_session("not json")), 86_400);
    }

    #[test]
    fn a_record_keeps_the_text_and_reads_user_and_expiries() {
        let record = format(false).record(id(), JSON.to_owned(), 3600, NOW);
        assert_eq!(record.data, JSON, "byte for byte");
        assert_eq!(record.user.as_deref(), Some("42"));
        assert_eq!(record.created_at, NOW, "saved at expires - maxAge");
        assert_eq!(record.expires_at, NOW + 3_600_000);
        assert_eq!(
            record.absolute_expires_at,
            NOW + 3_600_000,
            "the cookie's own expiry"
        );

        // Touched later without rolling: Redis keeps it an hour from now, the browser's cookie
        // still expires when it was set to.
        let later = format(false).record(id(), JSON.to_owned(), 3600, NOW + 600_000);
        assert_eq!(later.expires_at, NOW + 3_600_000);
        // Rolling: the cookie moves with every answer; no absolute expiry.
        let rolling = format(true).record(id(), JSON.to_owned(), 3600, NOW + 600_000);
        assert_eq!(rolling.expires_at, NOW + 4_200_000);
        assert_eq!(rolling.absolute_expires_at, NO_ABSOLUTE_EXPIRY);
    }

    #[test]
    fn the_user_field_is_a_path_to_a_string_or_a_number() {
        let mut f = format(false);
        assert_eq!(f.user_of(JSON).as_deref(), Some("42"));
        f.user_field = vec!["userId".to_owned()];
        assert_eq!(
            f.user_of(r#"{"userId":"ana@example.com"}"#).as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(
            f.user_of(r#"{"userId":{"id":1}}"#),
            None,
            "an object names no user"
        );
        assert_eq!(
            f.user_of(r#"{"userId":"has space"}"#),
            None,
            "not carried in a header"
        );
        assert_eq!(f.user_of(JSON), None);
        f.user_field = Vec::new();
        assert_eq!(f.user_of(JSON), None);
    }
    /// The one-pass reader against the plain reading (a `serde_json::Value` of the whole text,
    /// walked): the same cookie and user for any session.
    mod properties {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::{StoredCookie, read};

        fn plain(json: &str, path: &[String]) -> (StoredCookie, Option<String>) {
            let Ok(value) = serde_json::from_str::<Value>(json) else {
                return (StoredCookie::default(), None);
            };
            if !value.is_object() {
                return (StoredCookie::default(), None);
            }
            let cookie = value
                .get("cookie")
                .and_then(|c| StoredCookie::deserialize(c).ok())
                .unwrap_or_default();
            let mut at = Some(&value);
            for field in path {
                at = at.and_then(|v| v.get(field));
            }
            let user = match (path.is_empty(), at) {
                (false, Some(Value::String(s))) => Some(s.clone()),
                (false, Some(Value::Number(n))) => Some(n.to_string()),
                _ => None,
            };
            (cookie, user)
        }

        use serde::Deserialize;

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("cookie".to_owned()),
                Just("passport".to_owned()),
                Just("user".to_owned()),
                "[a-z]{1,3}",
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (-1e9f64..1e9).prop_map(Value::from),
                "[a-z ]{0,6}".prop_map(Value::from),
                Just(
                    json!({"originalMaxAge": 3_600_000, "expires": "2026-12-03T19:00:00.000Z", "path": "/"})
                ),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    proptest::collection::vec((name(), inner), 0..4)
                        .prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn one_pass_reads_what_the_whole_value_says(
                session in proptest::collection::vec((name(), value()), 0..5),
                path in proptest::collection::vec(name(), 0..3),
            ) {
                let text = Value::Object(session.into_iter().collect()).to_string();
                prop_assert_eq!(read::cookie_and_user(&text, &path), plain(&text, &path));
            }

            #[test]
            fn any_text_is_read_without_panicking(text in ".{0,200}") {
                let _ = read::cookie_and_user(&text, &["passport".to_owned(), "user".to_owned()]);
            }
        }
    }
}
