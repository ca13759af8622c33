//! The history of a run: every request a simulated user made and what it got back, with the
//! wall-clock times it was sent and answered, and the sessions those requests named.
//!
//! Times are Unix microseconds of this machine's clock, the clock the instances read too, so a
//! request's times compare directly with the expiries the server reported.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Unix time in microseconds.
pub type Micros = i64;

/// The current wall-clock time.
pub fn now_us() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// An RFC 3339 time as the server writes it (`2026-11-25T18:40:15.053Z`), in microseconds.
pub fn parse_time(text: &str) -> Option<Micros> {
    let at = humantime::parse_rfc3339(text).ok()?;
    let since = at.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_micros()).ok()
}

/// A time in microseconds as the server writes it in its log, for messages to read beside it.
pub fn format_time(at: Micros) -> String {
    let since = Duration::from_micros(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since).to_string()
}

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `POST /api/v1/session`: an anonymous session, as a browser creates one.
    Create,
    /// `POST /api/v1/backend/sessions`: a session for a user, as the application's login does.
    CreateForUser,
    /// `GET /api/v1/keepalive/`.
    Keepalive,
    /// `DELETE /api/v1/session`.
    Logout,
    /// `POST /api/v1/session/rotate`.
    Rotate,
    /// `DELETE /api/v1/backend/users/{user}/sessions`: log out everywhere.
    EndAll,
}

impl Op {
    /// Whether a request of this kind extends the session it names when it succeeds.
    pub fn extends(self) -> bool {
        matches!(
            self,
            Self::Create | Self::CreateForUser | Self::Keepalive | Self::Rotate
        )
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// An HTTP answer. `error` is the `error` field of a JSON error body; `proxy` marks an
    /// answer nginx made itself (its HTML error page), not one an instance made.
    Answer {
        status: u16,
        error: Option<String>,
        proxy: bool,
    },
    /// No connection could be opened: nothing reached a server, so nothing happened.
    Refused(String),
    /// The connection broke or timed out after the request may have reached a server: it
    /// may or may not have taken effect.
    Lost(String),
}

impl Outcome {
    /// The HTTP status, for an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the request may have taken effect without the client knowing what it did:
    /// a lost request, or a 5xx.
    pub fn uncertain(&self) -> bool {
        match self {
            Self::Answer { status, .. } => *status >= 500,
            Self::Refused(_) => false,
            Self::Lost(_) => true,
        }
    }

    /// A short description for examples: `200`, `503 store_unavailable`, `lost (...)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Answer {
                status,
                error,
                proxy,
            } => {
                let mut text = status.to_string();
                if let Some(error) = error {
                    text.push(' ');
                    text.push_str(error);
                }
                if *proxy {
                    text.push_str(" (from nginx)");
                }
                text
            }
            Self::Refused(why) => format!("refused ({why})"),
            Self::Lost(why) => format!("lost ({why})"),
        }
    }
}

/// One request and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The simulated person and which of their devices (browsers) made it.
    pub person: usize,
    pub device: usize,
    pub op: Op,
    /// A keepalive made with a cookie the device saw end (logged out, rotated away): it
    /// checks that no instance brings the session back.
    pub probe: bool,
    /// The session the request names (its cookie), or the one it created.
    pub session: Option<usize>,
    /// The session a rotation created.
    pub created: Option<usize>,
    /// The user of a creation for a user or of a "log out everywhere".
    pub user: Option<String>,
    /// The instance that answered (or was asked, when nothing answered).
    pub instance: Option<usize>,
    /// Whether the request went through nginx.
    pub via_proxy: bool,
    pub sent: Micros,
    pub answered: Micros,
    pub outcome: Outcome,
    /// The session's idle expiry and absolute expiry as the answer reported them.
    pub expires_at: Option<Micros>,
    pub absolute_at: Option<Micros>,
    /// `serverHealth.checks.redis` of the answer (`ok`, `offline`).
    pub redis: Option<String>,
}

impl Record {
    /// A record of `op` by `person`'s `device`, sent at `sent`, not answered yet.
    pub fn new(person: usize, device: usize, op: Op, sent: Micros) -> Self {
        Self {
            person,
            device,
            op,
            probe: false,
            session: None,
            created: None,
            user: None,
            instance: None,
            via_proxy: false,
            sent,
            answered: sent,
            outcome: Outcome::Refused("not sent".to_owned()),
            expires_at: None,
            absolute_at: None,
            redis: None,
        }
    }

    /// The HTTP status, for an answer.
    pub fn status(&self) -> Option<u16> {
        self.outcome.status()
    }
}

/// A session some request created.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Its token (the cookie's value).
    pub token: String,
    /// The user it was created for (and a rotation keeps), if any.
    pub user: Option<String>,
    /// The record that created it.
    pub created_by: usize,
}

/// Every record and session of a run.
#[derive(Debug, Default, Serialize)]
pub struct History {
    pub records: Vec<Record>,
    pub sessions: Vec<SessionInfo>,
    #[serde(skip)]
    by_token: HashMap<String, usize>,
}

impl History {
    /// Appends a record; returns its index.
    pub fn push(&mut self, record: Record) -> usize {
        self.records.push(record);
        self.records.len() - 1
    }

    /// The index of the session `token` created by record `created_by` (the record is
    /// updated to name it). A token seen before keeps its first index.
    pub fn session(&mut self, token: &str, user: Option<&str>, created_by: usize) -> usize {
        if let Some(&index) = self.by_token.get(token) {
            return index;
        }
        let index = self.sessions.len();
        self.sessions.push(SessionInfo {
            token: token.to_owned(),
            user: user.map(str::to_owned),
            created_by,
        });
        self.by_token.insert(token.to_owned(), index);
        index
    }

    /// The first characters of a session's token, for examples (enough to find it in logs).
    pub fn short(&self, session: usize) -> String {
        self.sessions
            .get(session)
            .map_or_else(|| "?".to_owned(), |s| s.token.chars().take(8).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_times_parse_to_microseconds() {
        assert_eq!(
            parse_time("1970-01-01T00:00:01.250Z"),
            Some(1_250_000),
            "fractional seconds kept"
        );
        assert_eq!(
            parse_time("2026-11-25T18:40:15.053Z"),
            Some(1_795_632_015_053_000)
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn a_token_is_one_session() {
        let mut history = History::default();
        let a = history.session("AAAAAAAAAAAAAAAAAAAAAA", Some("ann"), 0);
        let b = history.session("BBBBBBBBBBBBBBBBBBBBBB", None, 1);
        assert_ne!(a, b);
        assert_eq!(history.session("AAAAAAAAAAAAAAAAAAAAAA", None, 5), a);
        assert_eq!(history.sessions[a].user.as_deref(), Some("ann"));
        assert_eq!(history.short(a), "AAAAAAAA");
    }
}
