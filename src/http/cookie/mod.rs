//! The session cookie the browser carries: keepalive's own (`native`), or an Express
//! application's, signed by express-session (`express`), read and written as that application
//! would. Every route reads the session id and writes cookies through [`SessionCookie`], so the
//! two formats differ here and nowhere else in the HTTP layer.

pub mod express;
mod native;

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

pub use express::ExpressCookie;
pub use native::{clear, session_id, set};

use crate::clock::Millis;
use crate::config::SessionSettings;
use crate::session::express::{ExpressFormat, StoredCookie};
use crate::session::{SessionId, SessionRecord};

/// Most `Cookie` pairs looked at in one request: a flood of cookies costs a bounded scan.
const MAX_PAIRS: usize = 64;

/// The values of the request's cookies named `name`, in order, quotes removed.
///
/// Split by hand rather than with `cookie::Cookie::split_parse`: only one name matters, and this
/// scan neither allocates nor percent-decodes, and stops after a bounded number of pairs.
fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .take(MAX_PAIRS)
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

/// Whose sessions the browser's cookie names, and how it is written.
#[derive(Debug, Clone)]
pub enum SessionCookie {
    /// keepalive's own sessions and cookie.
    Native(SessionSettings),
    /// An Express application's sessions and signed cookie.
    Express {
        /// The cookie, its name and secrets.
        cookie: ExpressCookie,
        /// How its sessions are read.
        format: ExpressFormat,
    },
}

impl SessionCookie {
    /// Whether the sessions are keepalive's own (they can be created and rotated here).
    pub fn is_native(&self) -> bool {
        matches!(self, Self::Native(_))
    }

    /// The session id the request's cookie carries, if it is well-formed (and, for an Express
    /// application's, signed with one of its secrets).
    pub fn session_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        match self {
            Self::Native(settings) => native::session_id(headers, &settings.cookie_name),
            Self::Express { cookie, .. } => cookie.session_id(headers),
        }
    }

    /// The `Set-Cookie` that hands `record` to the browser, as `now`.
    pub fn set(&self, record: &SessionRecord, now: Millis) -> String {
        match self {
            Self::Native(settings) => native::set(settings, &record.id),
            Self::Express { cookie, .. } => {
                cookie.set_cookie(&record.id, &StoredCookie::of_session(&record.data), now)
            }
        }
    }

    /// The `Set-Cookie` a keepalive's answer carries: the Express application's cookie again,
    /// with its expiry moved, when its sessions are rolling (as express-session sends it on
    /// every answer); nothing otherwise.
    pub fn after_keepalive(&self, record: &SessionRecord, now: Millis) -> Option<String> {
        match self {
            Self::Express { format, .. } if format.rolling => Some(self.set(record, now)),
            _ => None,
        }
    }

    /// The `Set-Cookie` that removes the cookie.
    pub fn clear(&self) -> String {
        match self {
            Self::Native(settings) => native::clear(settings),
            Self::Express { cookie, .. } => cookie.clear(),
        }
    }

    /// How long `record` may stay idle: keepalive's `idle_timeout`, or an Express session's
    /// own `maxAge`.
    pub fn idle_timeout(&self, record: &SessionRecord, configured: Duration) -> Duration {
        match self {
            Self::Native(_) => configured,
            Self::Express { format, .. } => format.idle_of(&record.data),
        }
    }
}
