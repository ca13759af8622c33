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
        #[derive(Deserialize)]
        struct Session {
            #[serde(default)]
            cookie: Option<StoredCookie>,
        }
        serde_json::from_str::<Session>(json)
            .ok()
            .and_then(|s| s.cookie)
            .unwrap_or_default()
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

    /// How long a session may stay idle: the lifetime its key gets from each request.
    pub fn idle_of(&self, json: &str) -> Duration {
        let secs = self.ttl_secs(&StoredCookie::of_session(json));
        Duration::from_secs(secs.max(0).unsigned_abs())
    }

    /// The session `id` whose stored text is `json`, as Redis just extended it at `now` for
    /// `ttl_secs`: it lives until then, or until its cookie expires in the browser when that is
    /// sooner and does not move (not rolling). Its `created_at` is when the application last
    /// saved it, the only time express-session keeps.
    pub fn record(&self, id: SessionId, json: String, ttl_secs: i64, now: Millis) -> SessionRecord {
        let cookie = StoredCookie::of_session(&json);
        let cookie_expiry = if self.rolling {
            None
        } else {
            cookie.expires_at()
        };
        let absolute_expires_at = cookie_expiry.unwrap_or(NO_ABSOLUTE_EXPIRY);
        let expires_at = now
            .saturating_add(ttl_secs.saturating_mul(1000))
            .min(absolute_expires_at);
        let created_at = match (cookie.expires_at(), cookie.max_age_ms()) {
            (Some(expires), Some(max_age)) => expires.saturating_sub(max_age),
            _ => now,
        };
        SessionRecord {
            id,
            created_at,
            last_seen_at: now,
            expires_at,
            absolute_expires_at,
            user: self.user_of(&json),
            data: json,
        }
    }

    /// The user the configured field names, if it holds a string or a number keepalive can
    /// carry in a header.
    pub fn user_of(&self, json: &str) -> Option<String> {
        if self.user_field.is_empty() {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        let mut at = &value;
        for field in &self.user_field {
            at = at.get(field)?;
        }
        let user = match at {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        check_user(&user).ok().map(|()| user)
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
}
