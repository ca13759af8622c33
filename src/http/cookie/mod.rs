//! The session cookie the browser carries: keepalive's own (`native`), or an Express
//! application's, signed by express-session (`express`), read and written as that application
//! would. Every route reads the session id and writes cookies through [`SessionCookie`], so the
//! two formats differ here and nowhere else in the HTTP layer.
//!
//! A request may carry several values of the session cookie's name: a sibling subdomain can
//! set one on the parent domain, which the browser sends before the session's own (without
//! the `__Host-` prefix nothing stops it). So the routes do not trust the first value: they try
//! the well-formed ones (signed ones, for an Express application's) in the order sent, up to
//! [`MAX_CANDIDATES`], until one is a live session ([`SessionCookie::find`]). Malformed values
//! cost no lookup, and the scan of the header is bounded, so a request costs at most that many
//! store lookups whatever it carries.

pub mod express;
mod native;

use std::future::Future;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

pub use express::ExpressCookie;
pub use native::{clear, session_id, session_ids, set};

use crate::clock::Millis;
use crate::config::SessionSettings;
use crate::session::express::{ExpressFormat, StoredCookie};
use crate::session::{SessionId, SessionRecord};

/// Most `Cookie` pairs looked at in one request: a flood of cookies costs a bounded scan.
const MAX_PAIRS: usize = 64;

/// Most session ids tried in one request, and so most store lookups: the first this many
/// well-formed values of the session cookie, in the order the browser sent them.
pub const MAX_CANDIDATES: usize = 4;

/// The distinct session ids a request's cookie values carry, in order, at most
/// [`MAX_CANDIDATES`]. Held inline: reading them allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidates {
    ids: [Option<SessionId>; MAX_CANDIDATES],
}

impl Candidates {
    /// The first [`MAX_CANDIDATES`] distinct ids of `ids`.
    fn of(ids: impl Iterator<Item = SessionId>) -> Self {
        let mut out = Self::default();
        let mut len = 0;
        for id in ids {
            if out.ids[..len].contains(&Some(id)) {
                continue;
            }
            out.ids[len] = Some(id);
            len += 1;
            if len == MAX_CANDIDATES {
                break;
            }
        }
        out
    }

    /// The first id, if any.
    pub fn first(&self) -> Option<SessionId> {
        self.ids[0]
    }
}

impl IntoIterator for Candidates {
    type Item = SessionId;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<SessionId>, MAX_CANDIDATES>>;

    fn into_iter(self) -> Self::IntoIter {
        self.ids.into_iter().flatten()
    }
}

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

    /// The session ids the request's cookie values carry that are well-formed (and, for an
    /// Express application's, signed with one of its secrets), in order, at most
    /// [`MAX_CANDIDATES`].
    pub fn candidates(&self, headers: &HeaderMap) -> Candidates {
        match self {
            Self::Native(settings) => {
                Candidates::of(native::session_ids(headers, &settings.cookie_name))
            }
            Self::Express { cookie, .. } => Candidates::of(cookie.session_ids(headers)),
        }
    }

    /// The first of the [`candidates`](Self::candidates): not necessarily the live session
    /// when a sibling planted values before it; [`find`](Self::find) tries them all.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        self.candidates(headers).first()
    }

    /// The first answer `lookup` finds for the request's candidates, tried in order: the live
    /// session behind planted values, with at most [`MAX_CANDIDATES`] lookups. A lookup that
    /// fails does not end the search (during an outage a planted value is one this instance
    /// cannot judge, and the live session behind it must still be found); when no candidate is
    /// found, the first failure is the answer.
    pub async fn find<T, E, F, Fut>(
        &self,
        headers: &HeaderMap,
        mut lookup: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut(SessionId) -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let mut failed = None;
        for id in self.candidates(headers) {
            match lookup(id).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        failed.map_or(Ok(None), Err)
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use std::time::Duration;

    use super::*;

    fn native() -> SessionCookie {
        SessionCookie::Native(SessionSettings {
            idle_timeout: Duration::from_secs(600),
            absolute_lifetime: Duration::from_secs(3600),
            cookie_name: "sid".to_owned(),
            cookie_secure: false,
        })
    }

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(COOKIE, HeaderValue::from_str(value).expect("header"));
        map
    }

    #[test]
    fn candidates_are_the_first_distinct_well_formed_values_in_order() {
        let ids: Vec<SessionId> = (0..6)
            .map(|_| SessionId::generate().expect("rng"))
            .collect();
        let header = format!(
            "sid=junk; sid={}; other={}; sid={}; sid=; sid={}; sid={}; sid={}; sid={}",
            ids[0], ids[5], ids[1], ids[0], ids[2], ids[3], ids[4]
        );
        let found: Vec<SessionId> = native().candidates(&headers(&header)).into_iter().collect();
        assert_eq!(
            found,
            ids[..MAX_CANDIDATES],
            "junk skipped, duplicates once, at most four"
        );
        assert_eq!(native().session_id(&headers(&header)), Some(ids[0]));
        assert_eq!(native().candidates(&HeaderMap::new()).first(), None);
    }

    #[tokio::test]
    async fn find_tries_the_candidates_in_order_until_one_answers() {
        let ids: Vec<SessionId> = (0..3)
            .map(|_| SessionId::generate().expect("rng"))
            .collect();
        let header = headers(&format!("sid={}; sid={}; sid={}", ids[0], ids[1], ids[2]));
        let mut asked = Vec::new();
        let found: Result<Option<SessionId>, ()> = native()
            .find(&header, |id| {
                asked.push(id);
                let live = id == ids[1];
                async move { Ok(live.then_some(id)) }
            })
            .await;
        assert_eq!(found, Ok(Some(ids[1])));
        assert_eq!(asked, ids[..2], "stops at the first answer");
        let failed: Result<Option<SessionId>, &str> = native()
            .find(&header, |_| async { Err("store down") })
            .await;
        assert_eq!(failed, Err("store down"), "an error ends the search");
    }
}
