//! Wall-clock time for session expiry, behind a trait so tests can move time by hand.
//!
//! Session expiries are absolute instants that outlive the process (they are stored on disk
//! and, later, in Redis), so they are measured on the wall clock in milliseconds since the Unix
//! epoch rather than on tokio's monotonic clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// RFC 3339 in UTC with exactly three fractional digits, so every time has the same shape.
const RFC3339_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests of expiry and purging.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(duration_millis(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// A duration in whole milliseconds, saturating.
pub fn duration_millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The first instant `humantime` does not format (year 10000), in milliseconds.
const YEAR_10000: Millis = 253_402_300_800_000;

/// Formats an instant as RFC 3339 in UTC with millisecond precision.
///
/// Every keepalive answer carries three of these: `humantime`'s fixed-layout formatter, about
/// five times cheaper than interpreting a format description, writes them for years 1970 to
/// 9999, and `time` the rest (the same text).
pub fn rfc3339(at: Millis) -> String {
    if (0..YEAR_10000).contains(&at) {
        let instant = UNIX_EPOCH + Duration::from_millis(at.unsigned_abs());
        return humantime::format_rfc3339_millis(instant).to_string();
    }
    let nanos = i128::from(at) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(RFC3339_MILLIS).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(rfc3339(1_764_000_000_780), "2025-11-24T16:00:00.780Z");
        assert_eq!(rfc3339(YEAR_10000 - 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn both_formatters_agree() {
        let slow = |at: Millis| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
                .expect("in range")
                .format(RFC3339_MILLIS)
                .expect("formats")
        };
        let mut at: Millis = 1;
        while at < YEAR_10000 {
            for t in [at, at + 999, at * 7 / 3] {
                if t < YEAR_10000 {
                    assert_eq!(rfc3339(t), slow(t), "{t}");
                }
            }
            at = at * 3 + 17;
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), 3_000);
    }
}
