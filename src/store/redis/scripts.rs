//! The Lua scripts that make each session operation one Redis round trip, atomically.
//!
//! A session is a hash under `{prefix}{<id>}` with fields `c` (created), `l` (last seen),
//! `e` (idle expiry), `a` (absolute expiry), `x` (when the key's own TTL runs out), all in
//! Unix milliseconds, `d` (data, JSON text) and, for a session created for a user, `u` (the
//! user). The key's own TTL follows `e`, so Redis expires sessions by itself: it runs out at
//! `e` or at most half an idle timeout after it, since a keepalive only pushes it further
//! (`PEXPIRE`, a third of a keepalive's cost to Redis) once `e` has caught up with `x`. Between
//! `e` and `x` every script and read treats the session as expired. A user's sessions are listed in a sorted set
//! `{prefix}user:{<user>}` (member: id, score: absolute expiry), which lives as long as its
//! newest session may; members whose session ended are dropped when the set is next read. A logout leaves
//! a marker `{prefix}{<id>}:ended` until the session's absolute expiry, so a re-sync from an
//! instance that missed the logout cannot bring the session back, and is published on the
//! channel `{prefix}ended` (the id as the message), so every instance ends its local copy. The id sits in braces so a
//! session and its marker share a cluster slot.

use std::sync::LazyLock;

use redis::Script;

/// Extends live sessions. KEYS: the sessions. ARGV: for each key in order, now, now + idle ms,
/// and the TTL and `x` to set when the key's TTL must move: 1.5 idle ms and now + 1.5 idle ms.
/// Returns, for each key, its six fields, or nil when it is unknown or expired.
///
/// Several keys per call let concurrent keepalives share one call (see `batch.rs`); each key
/// is handled exactly as alone. The caller passes the usual new expiry ready-written:
/// formatting numbers is most of what a script costs Redis (`string.format` took a third of
/// this one's time, measured with `redis-benchmark`), so only the rare cases (the absolute
/// lifetime caps the expiry, or another instance's clock ran ahead) format any.
pub static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = false
  local v = redis.call('HMGET', key, 'c', 'l', 'e', 'a', 'd', 'u', 'x')
  local exp = tonumber(v[3])
  local at = i * 4 - 3
  local now = tonumber(ARGV[at])
  if exp and exp > now then
    local e = ARGV[at + 1]
    local wanted = tonumber(e)
    local new = math.max(math.min(wanted, tonumber(v[4])), exp)
    local capped = new ~= wanted
    if capped then e = string.format('%.0f', new) end
    local l = ARGV[at]
    if tonumber(v[2]) > now then l = v[2] end
    local x = tonumber(v[7])
    if x and x >= new then
      redis.call('HSET', key, 'l', l, 'e', e)
    else
      local ttl, upto = ARGV[at + 2], ARGV[at + 3]
      if capped then
        upto = string.format('%.0f', new)
        ttl = string.format('%.0f', math.max(new - now, 1))
      end
      redis.call('HSET', key, 'l', l, 'e', e, 'x', upto)
      redis.call('PEXPIRE', key, ttl)
    end
    out[i] = {v[1], l, e, v[4], v[5] or '', v[6] or ''}
  end
end
return out
",
    )
});

/// Replaces the data of a live session and records the activity. KEYS: session. ARGV: now,
/// data. Returns the six fields, or nil.
pub static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'c', 'l', 'e', 'a', 'u')
if not v[3] then return false end
local now = tonumber(ARGV[1])
if tonumber(v[3]) <= now then return false end
local l = string.format('%.0f', math.max(tonumber(v[2]), now))
redis.call('HSET', KEYS[1], 'l', l, 'd', ARGV[2])
return {v[1], l, v[3], v[4], ARGV[2], v[5] or ''}
",
    )
});

/// Adds a session to its user's set and drops the members past their absolute expiry.
/// KEYS: user set. ARGV: id, absolute expiry, now. The set lives until its newest member's
/// absolute expiry.
pub static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[3])
local abs = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if abs <= now then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ttl = abs - now
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
end
return 1
",
    )
});

/// Ends a session, leaves the marker and tells every instance, so they end their local copies
/// (not again for a logout written back twice, which finds its marker and no session).
/// KEYS: session, marker. ARGV: now, marker ttl ms when the session is unknown, the logout
/// channel, the id. Returns 1 if the session existed.
pub static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local a = redis.call('HGET', KEYS[1], 'a')
local existed = redis.call('DEL', KEYS[1])
local marked = redis.call('EXISTS', KEYS[2])
local ttl = tonumber(ARGV[2])
if a then ttl = tonumber(a) - tonumber(ARGV[1]) end
if ttl > 0 then redis.call('SET', KEYS[2], '1', 'PX', string.format('%.0f', ttl)) end
if existed == 1 or marked == 0 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return existed
",
    )
});

/// Writes back a session kept locally, unless Redis knows newer activity or a logout.
/// KEYS: session, marker. ARGV: c, l, e, a, d, now, u (empty: anonymous). Returns 1 if
/// written.
pub static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = tonumber(ARGV[6])
local exp = tonumber(ARGV[3])
if exp <= now then return 0 end
local cur = redis.call('HMGET', KEYS[1], 'l', 'e')
if cur[1] and tonumber(cur[1]) >= tonumber(ARGV[2]) then return 0 end
if cur[2] and tonumber(cur[2]) > exp then exp = tonumber(cur[2]) end
local e = string.format('%.0f', exp)
redis.call('HSET', KEYS[1], 'c', ARGV[1], 'l', ARGV[2], 'e', e, 'x', e, 'a', ARGV[4], 'd', ARGV[5])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'u', ARGV[7]) end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.max(exp - now, 1)))
return 1
",
    )
});
