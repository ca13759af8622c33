//! The epoch: a key keepalive writes in Redis so that a Redis that lost its data without
//! restarting can be told from one that kept it.
//!
//! A restarted Redis has another run id, and the failover treats it as possibly empty. But
//! `FLUSHALL`, `FLUSHDB`, a replica promoted with writes missing, or eviction under `maxmemory`
//! keep the run id. So the link also writes, at each connection, an epoch key holding a random
//! token (the first instance to find none writes it, every other one reads it), without a TTL
//! (`volatile-*` eviction never takes it), and reads it back at every probe: gone or replaced,
//! Redis lost data, and the failover writes back everything it holds, as after an empty restart.
//!
//! A `FLUSHALL` on one master of a cluster empties only that master, so a cluster gets one epoch
//! key per master: keys whose hash tags fall in each master's slots, chosen at each connection
//! from the slot map (the same tags on every instance, for the same map). A master given slots
//! after the connection is watched from the next one.
//!
//! Eviction removes keys one by one and may leave the epoch key alone: that a session is missing
//! while this instance holds it live is the failover's to notice, at its next keepalive.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use redis::{Script, Value};

use crate::session::StoreError;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16_384;
/// Hash tags tried, at most, to find one in each master's slots.
const MAX_TAGS: u32 = 1_000_000;

/// Writes the token if the key has none, and answers the key's token. KEYS: the epoch key.
/// ARGV: a fresh token.
pub(crate) static ENSURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return ARGV[1] end
return redis.call('GET', KEYS[1])
",
    )
});

/// A fresh token for an epoch key.
pub(crate) fn token() -> String {
    let word = || getrandom::u64().unwrap_or_default();
    format!("{:016x}{:016x}", word(), word())
}

/// The token a `GET` or [`ENSURE`] answered; `-` for none.
pub(crate) fn token_of(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        _ => "-".to_owned(),
    }
}

/// The epoch keys of a cluster whose slot map is `slots` (a `CLUSTER SLOTS` answer): one per
/// master, `{base}:{<tag>}`, with the first tags (0, 1, 2, ...) that fall in each master's
/// slots.
pub(crate) fn cluster_keys(base: &str, slots: &Value) -> Result<Vec<String>, StoreError> {
    let ranges = masters(slots)?;
    let mut owners: Vec<Option<&str>> = vec![None; usize::from(SLOTS)];
    for (master, range) in &ranges {
        for slot in range.clone() {
            if let Some(owner) = owners.get_mut(usize::from(slot)) {
                *owner = Some(master.as_str());
            }
        }
    }
    let wanted = ranges
        .iter()
        .map(|(m, _)| m.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    let mut chosen: BTreeMap<&str, String> = BTreeMap::new();
    for tag in 0..MAX_TAGS {
        if chosen.len() == wanted.len() {
            break;
        }
        let tag = tag.to_string();
        if let Some(master) = owners[usize::from(slot(tag.as_bytes()))]
            && !chosen.contains_key(master)
        {
            chosen.insert(master, format!("{base}:{{{tag}}}"));
        }
    }
    Ok(chosen.into_values().collect())
}

/// Each master's id and one of its slot ranges, from a `CLUSTER SLOTS` answer.
fn masters(slots: &Value) -> Result<Vec<(String, std::ops::RangeInclusive<u16>)>, StoreError> {
    let unexpected = || StoreError::Backend("unexpected answer to CLUSTER SLOTS".to_owned());
    let Value::Array(entries) = slots else {
        return Err(unexpected());
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(unexpected());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(unexpected());
        };
        // The node's id (third field); its address where a server gives none.
        let id = match (node.get(2), node.first(), node.get(1)) {
            (Some(id), _, _) if token_of(id) != "-" => token_of(id),
            (_, Some(host), Some(Value::Int(port))) => format!("{}:{port}", token_of(host)),
            _ => return Err(unexpected()),
        };
        let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
            return Err(unexpected());
        };
        out.push((id, start..=end));
    }
    Ok(out)
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag (or the whole key without one),
/// modulo 16384, as Redis Cluster computes it.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC16, XMODEM variant (polynomial 0x1021, initial value 0), bit by bit: a few keys per
/// connection, never on a request's path.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // The CRC16/XMODEM check value.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        // A hash tag decides alone; an empty one does not count.
        assert_eq!(slot(b"keepalive:{abc}:ended"), slot(b"abc"));
        assert_eq!(slot(b"x{}y"), crc16(b"x{}y") % SLOTS);
        assert!(slot(b"anything") < SLOTS);
    }

    fn node(id: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::Int(port),
            Value::BulkString(id.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn a_cluster_gets_one_epoch_key_in_each_masters_slots() {
        let range = |start, end, id, port| {
            Value::Array(vec![Value::Int(start), Value::Int(end), node(id, port)])
        };
        let slots = Value::Array(vec![
            range(0, 5460, "a", 7000),
            range(5461, 10922, "b", 7001),
            range(10923, 16383, "c", 7002),
        ]);
        let keys = cluster_keys("keepalive:epoch", &slots).expect("keys");
        assert_eq!(keys.len(), 3, "{keys:?}");
        let owner = |key: &String| match slot(key.as_bytes()) {
            0..=5460 => 'a',
            5461..=10922 => 'b',
            _ => 'c',
        };
        let mut owners: Vec<char> = keys.iter().map(owner).collect();
        owners.sort_unstable();
        assert_eq!(owners, vec!['a', 'b', 'c'], "{keys:?}");
        assert_eq!(
            keys,
            cluster_keys("keepalive:epoch", &slots).expect("keys"),
            "the same map gives the same keys"
        );
        assert!(cluster_keys("k", &Value::Nil).is_err());
    }
}
