//! The capped record of logouts: every logout announced on the channel is also appended to a
//! Redis stream (`{prefix}logouts`, trimmed to about `redis_logout_record_cap` entries), so that an
//! instance that was not listening (stopped, offline, between two subscriptions) reads the
//! logouts it missed from its last place in the stream, at a cost that grows with those
//! logouts, instead of looking up the mark of every session it mirrors.
//!
//! The entry is appended after the script that marks the logout and publishes it, as a command
//! of its own: in a cluster the stream lives in one slot and a session in another, and one
//! script may touch only one slot. A reader therefore never finds an entry whose mark is not
//! there yet. Trimming drops the oldest entries, so a reader whose place has fallen off the
//! capped stream is told by the count of entries ever added (`entries-added`, Redis 7.0 and
//! later) against the length: fewer held than added since its place means some were dropped.

use redis::Value;

use crate::session::StoreError;
use crate::store::failover::{Ended, LogoutMark, LogoutsRecord};

use super::{RedisStore, field_string, logout_message, shape};

/// Where the stream stands, in one round trip: nothing for a stream that does not exist yet,
/// `XINFO STREAM`'s reply otherwise. A script, so that a missing stream is an answer, not an
/// error.
static RECORD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
return redis.call('XINFO', 'STREAM', KEYS[1])
",
    )
});

impl RedisStore {
    /// Appends one announcement (the channel's message) to the stream, trimmed to about the
    /// cap (`MAXLEN ~`, so a little more): an instance away for fewer logouts than the cap
    /// reads what it missed; one away longer looks up every copy it holds, as when there was
    /// no record.
    pub(super) async fn record_logout(&self, message: &str) -> Result<(), StoreError> {
        let mut add = redis::cmd("XADD");
        add.arg(self.keys.logout_stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.options.logout_record_cap)
            .arg("*")
            .arg("m")
            .arg(message);
        self.link.run("record_logout", &mut add).await.map(drop)
    }

    /// Where the stream stands now.
    pub async fn logouts_record(&self) -> Result<LogoutsRecord, StoreError> {
        let mut invocation = RECORD.prepare_invoke();
        invocation.key(self.keys.logout_stream());
        let reply = self.link.invoke("logouts_record", invocation).await?;
        let fields = match reply {
            Value::Array(items) if items.is_empty() => {
                // No stream: nothing recorded, nothing dropped.
                return Ok(LogoutsRecord {
                    last: LogoutMark::default(),
                    added: Some(0),
                    held: 0,
                });
            }
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|pair| match pair {
                    [name, value] => Some((field_string(name), value.clone())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Value::Map(pairs) => pairs
                .into_iter()
                .map(|(name, value)| (field_string(&name), value))
                .collect(),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected reply to XINFO STREAM: {}",
                    shape(&other)
                )));
            }
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value)
        };
        let count = |name: &str| match field(name) {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        let last = field("last-generated-id")
            .and_then(|value| LogoutMark::parse(&field_string(value)))
            .ok_or_else(|| {
                StoreError::Corrupt("XINFO STREAM named no last-generated-id".to_owned())
            })?;
        // Before Redis 7.0 the stream does not count what was added: `None`, and a reader
        // looks up every copy.
        Ok(LogoutsRecord {
            last,
            added: count("entries-added"),
            held: count("length").unwrap_or(0),
        })
    }

    /// Up to `count` logouts recorded after `after` and at or before `upto`, and the mark to
    /// read after next (`None`: done).
    pub async fn logouts_after(
        &self,
        after: LogoutMark,
        upto: LogoutMark,
        count: usize,
    ) -> Result<(Vec<Ended>, Option<LogoutMark>), StoreError> {
        if after >= upto {
            return Ok((Vec::new(), None));
        }
        let mut range = redis::cmd("XRANGE");
        range
            .arg(self.keys.logout_stream())
            .arg(format!("({after}"))
            .arg(upto.to_string())
            .arg("COUNT")
            .arg(count);
        let reply = self.link.run("logouts_after", &mut range).await?;
        let Value::Array(entries) = reply else {
            return Err(StoreError::Corrupt(format!(
                "unexpected reply to XRANGE: {}",
                shape(&reply)
            )));
        };
        let full = entries.len() >= count;
        let mut ended = Vec::with_capacity(entries.len());
        let mut last = after;
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let [id, fields] = parts.as_slice() else {
                continue;
            };
            if let Some(mark) = LogoutMark::parse(&field_string(id)) {
                last = mark;
            }
            let Value::Array(fields) = fields else {
                continue;
            };
            // One field, `m`: the channel's message.
            if let Some(message) = fields.get(1).map(field_string) {
                ended.extend(logout_message(&message));
            }
        }
        let next = (full && last < upto).then_some(last);
        Ok((ended, next))
    }
}
