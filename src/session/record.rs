//! A session as stored: its times and the application's data.

use std::time::Duration;

use crate::clock::{Millis, duration_millis};

use super::SessionId;

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its identifier.
    pub id: SessionId,
    /// When it was created.
    pub created_at: Millis,
    /// Last time it was kept alive.
    pub last_seen_at: Millis,
    /// When it expires unless kept alive again; never after `absolute_expires_at`.
    pub expires_at: Millis,
    /// When it expires whatever happens.
    pub absolute_expires_at: Millis,
    /// The signed-in user the application created it for; `None` for an anonymous session
    /// (one the browser created itself). Set at creation and never changed.
    pub user: Option<String>,
    /// The application's data, as JSON text (an object), or empty.
    pub data: String,
}

/// A session's expiries: what a keepalive answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// When it expires unless kept alive again.
    pub expires_at: Millis,
    /// When it expires whatever happens.
    pub absolute_expires_at: Millis,
}

impl Expiry {
    /// The expiries of `record`.
    pub fn of(record: &SessionRecord) -> Self {
        Self {
            expires_at: record.expires_at,
            absolute_expires_at: record.absolute_expires_at,
        }
    }
}

impl SessionRecord {
    /// A new session created at `now`.
    pub fn new(
        id: SessionId,
        now: Millis,
        idle: Duration,
        absolute: Duration,
        data: String,
    ) -> Self {
        let absolute_expires_at = now.saturating_add(duration_millis(absolute));
        Self {
            id,
            created_at: now,
            last_seen_at: now,
            expires_at: now
                .saturating_add(duration_millis(idle))
                .min(absolute_expires_at),
            absolute_expires_at,
            user: None,
            data,
        }
    }

    /// The same session, created for `user`.
    pub fn with_user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }

    /// Whether the session is still alive at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        now < self.expires_at
    }

    /// Kept alive at `now`: the idle expiry moves to `now + idle`, capped by the absolute
    /// lifetime, so activity can never keep a session alive forever.
    pub fn touch(&mut self, now: Millis, idle: Duration) {
        self.last_seen_at = self.last_seen_at.max(now);
        let extended = now
            .saturating_add(duration_millis(idle))
            .min(self.absolute_expires_at);
        self.expires_at = self.expires_at.max(extended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn record() -> SessionRecord {
        let id = SessionId::from_bytes([7; 16]);
        SessionRecord::new(id, 0, 10 * MIN, 60 * MIN, String::new())
    }

    #[test]
    fn touch_extends_the_idle_expiry() {
        let mut r = record();
        assert_eq!(r.expires_at, 600_000);
        r.touch(300_000, 10 * MIN);
        assert_eq!(r.expires_at, 900_000);
        assert_eq!(r.last_seen_at, 300_000);
    }

    #[test]
    fn touch_never_passes_the_absolute_lifetime() {
        let mut r = record();
        for minute in (5..=120).step_by(5) {
            let now = minute * 60_000;
            if r.is_live(now) {
                r.touch(now, 10 * MIN);
            }
        }
        assert_eq!(r.expires_at, r.absolute_expires_at);
        assert!(!r.is_live(r.absolute_expires_at));
    }

    #[test]
    fn an_older_touch_never_shortens_the_session() {
        let mut r = record();
        r.touch(300_000, 10 * MIN);
        r.touch(100_000, 10 * MIN);
        assert_eq!(r.expires_at, 900_000);
        assert_eq!(r.last_seen_at, 300_000);
    }
}
