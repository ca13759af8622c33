//! The Lua scripts that make each session operation one Redis round trip, atomically.
//!
//! A session is a string under `{prefix}{<id>}`, laid out as [`super::value`] says: a binary
//! header with `c` (created), `l` (last seen), `e` (idle expiry), `a` (absolute expiry) and
//! `x` (when the key's own TTL runs out), then the user and the data. The key's own TTL
//! follows `e`, so Redis expires sessions by itself: it runs out at `e` or at most half an
//! idle timeout after it, since a keepalive only pushes it further (`PEXPIRE`) once `e` has
//! caught up with `x`. Between `e` and `x` every script and read treats the session as
//! expired. A user's sessions are listed in a sorted set `{prefix}user:{<user>}` (member: id,
//! score: absolute expiry), which lives as long as its newest session may; members whose
//! session ended are dropped when the set is next read, and `{prefix}user:{<user>}:ended` (same
//! hash tag) holds when the user was last logged out everywhere, which a session written back
//! from an instance's copy is checked against. A logout leaves a marker `{prefix}{<id>}:ended`
//! until the session's absolute expiry, so a re-sync from an instance that missed the logout
//! cannot bring the session back, and is published on the channel `{prefix}ended` (the id as
//! the message), so every instance ends its local copy. The id sits in braces so a session and
//! its marker share a cluster slot.
//!
//! A key that holds anything but a value of this layout (another type, another version) is
//! answered with the integer 0 where a session would be, so the caller reports that one
//! session as corrupt instead of the whole call failing.

use std::sync::LazyLock;

use redis::Script;

/// Lua functions the session scripts begin with: they read and rewrite a value of either
/// layout [`super::value`] describes, so the scripts themselves do not depend on offsets.
///
/// `times(raw)` gives the layout version, then `c`, `l`, `e`, `a` and `x` as Unix
/// milliseconds, or nothing for anything but a session value (another type, another version,
/// too short). `put(key, v, c, l, e [, a, x])` rewrites `l` and `e` (and `a` and `x`) in
/// place. `user_end(raw, v)` is the position of the user's last byte: the data follows it.
const LAYOUT: &str = r"
local function times(raw)
  if type(raw) ~= 'string' then return nil end
  local v = string.byte(raw)
  if v == 2 and #raw >= 28 then
    local c, l, e, a, x = struct.unpack('>i6i5i5i5i5', raw, 2)
    return v, c, c + l, c + e, c + a, c + x
  elseif v == 1 and #raw >= 45 then
    return v, struct.unpack('>i8i8i8i8i8', raw, 2)
  end
  return nil
end
local function put(key, v, c, l, e, a, x)
  if v == 2 then
    if a then
      redis.call('SETRANGE', key, 7, struct.pack('>i5i5i5i5', l - c, e - c, a - c, x - c))
    else
      redis.call('SETRANGE', key, 7, struct.pack('>i5i5', l - c, e - c))
    end
  elseif a then
    redis.call('SETRANGE', key, 9, struct.pack('>i8i8i8i8', l, e, a, x))
  else
    redis.call('SETRANGE', key, 9, struct.pack('>i8i8', l, e))
  end
end
local function user_end(raw, v)
  if v == 1 then return 45 + struct.unpack('>I4', raw, 42) end
  local n = string.byte(raw, 28)
  if n < 128 then return 28 + n end
  return 29 + (n - 128) * 256 + (string.byte(raw, 29) or 0)
end
";

/// Extends live sessions. KEYS: the sessions. ARGV: for each key in order, now, now + idle ms,
/// and the TTL and `x` to set when the key's TTL must move: 1.5 idle ms and now + 1.5 idle ms.
/// Returns, for each key, its value as it was before (the caller extends its copy by the same
/// rule, [`SessionRecord::touch`](crate::session::SessionRecord::touch)), nil when it is
/// unknown or expired, or 0 for a foreign value.
///
/// Several keys per call let concurrent keepalives share one call (see `batch.rs`); each key
/// is handled exactly as alone. The caller passes the usual new expiry ready-written, so only
/// the rare cases (the absolute lifetime caps the expiry, or another instance's clock ran
/// ahead) compute one; formatting a number for a command was a third of the script's time
/// when it did so on every call.
pub static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LAYOUT}{}",
        r"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = false
  local raw = redis.pcall('GET', key)
  local v, c, l, exp, a, x = times(raw)
  if raw and not v then
    out[i] = 0
  elseif raw then
    local at = i * 4 - 3
    local now = tonumber(ARGV[at])
    if exp > now then
      local wanted = tonumber(ARGV[at + 1])
      local new = math.max(math.min(wanted, a), exp)
      if l < now then l = now end
      if x >= new then
        put(key, v, c, l, new)
      else
        local ttl, upto = ARGV[at + 2], tonumber(ARGV[at + 3])
        if new ~= wanted then
          upto = new
          ttl = string.format('%.0f', math.max(new - now, 1))
        end
        put(key, v, c, l, new, a, upto)
        redis.call('PEXPIRE', key, ttl)
      end
      out[i] = raw
    end
  end
end
return out
",
    ))
});

/// Replaces the data of a live session and records the activity. KEYS: session. ARGV: now,
/// data. Returns the new value, nil, or 0 for a foreign value.
pub static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LAYOUT}{}",
        r"
local raw = redis.pcall('GET', KEYS[1])
if not raw then return false end
local v, c, l, e = times(raw)
if not v then return 0 end
local now = tonumber(ARGV[1])
if e <= now then return false end
if l < now then l = now end
local value
if v == 2 then
  value = string.sub(raw, 1, 7) .. struct.pack('>i5', l - c) .. string.sub(raw, 13, user_end(raw, v))
else
  value = string.sub(raw, 1, 9) .. struct.pack('>i8', l) .. string.sub(raw, 18, user_end(raw, v))
end
value = value .. ARGV[2]
redis.call('SET', KEYS[1], value, 'KEEPTTL')
return value
",
    ))
});

/// Adds a session to its user's set and drops the members past their absolute expiry.
/// KEYS: user set, the user's "log out everywhere" time. ARGV: id, absolute expiry, now, and
/// the session's creation time for a session written back (empty for a new one). The set
/// lives until its newest member's absolute expiry. Returns -1, adding nothing, for a session
/// written back that its user's "log out everywhere" ended (created at or before it); 1 when
/// added, 0 for a session past its absolute expiry.
///
/// One script for both keys, so that a "log out everywhere" ([`END_USER`]) either finds the
/// session in the set (and ends it) or is found here.
pub static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[3])
local abs = tonumber(ARGV[2])
if ARGV[4] ~= '' then
  local ended = tonumber(redis.call('GET', KEYS[2]) or '')
  if ended and tonumber(ARGV[4]) <= ended then return -1 end
end
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

/// Records that a user was logged out everywhere at a time, then lists the ids of their
/// sessions within their absolute lifetime. KEYS: the user's "log out everywhere" time, the
/// user set. ARGV: the time (Unix ms), how long to keep it (ms: the absolute lifetime, past
/// which no session created before it lives), now, and `1` to list the set (empty: record
/// only, return no ids, never touch `KEYS[2]`). A later time already recorded stays, with its
/// own time to live. Returns the ids.
///
/// Recorded before the set is read, in one script: a session written back from an instance's
/// copy ([`INDEX`] with its creation time) is either in the set read here or refused there.
/// Where the two keys cannot share a cluster slot, the caller records, then reads the set in
/// a second round trip, and a write-back adds to the set before it reads the time: in that
/// order the same holds.
pub static END_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local at = tonumber(ARGV[1])
local was = tonumber(redis.call('GET', KEYS[1]) or '')
if not was or was < at then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if ARGV[4] ~= '1' then return {} end
return redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[3], '+inf')
",
    )
});

/// Ends a session, leaves the marker and tells every instance, so they end their local copies
/// (not again for a logout written back twice, which finds its marker and no session).
/// KEYS: session, marker. ARGV: now, marker ttl ms when the session is unknown (0: an unknown
/// id is neither marked nor announced), the logout channel, the id, and for a rotation the new
/// id and until when a logout of this one ends it too (empty and 0 for a logout). Returns
/// `{existed, successor, published}`: 1 if the session existed, for a logout the new id its
/// marker names, if its rotation is recent enough (`''` otherwise): the caller ends that one
/// too; and 1 if the logout was announced: the caller records it in the stream.
///
/// A rotation's marker is `<new id> <until>` instead of `1`; a later logout keeps it as it is.
/// A rotation that finds the session gone (a logout came first) names nothing: its caller ends
/// the new id itself.
pub static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LAYOUT}{}",
        r"
local v, c, l, e, a = times(redis.pcall('GET', KEYS[1]))
local existed = redis.call('DEL', KEYS[1])
local mark = redis.call('GET', KEYS[2])
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if a then ttl = a - now end
local value = '1'
if ARGV[5] ~= '' and existed == 1 then
  value = ARGV[5] .. ' ' .. ARGV[6]
elseif mark then
  value = mark
end
if ttl > 0 then redis.call('SET', KEYS[2], value, 'PX', string.format('%.0f', ttl)) end
local published = 0
if existed == 1 or (not mark and ttl > 0) then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  published = 1
end
local successor = ''
if ARGV[5] == '' and mark then
  local id, upto = string.match(mark, '^(%S+) (%d+)$')
  if id and tonumber(upto) > now then successor = id end
end
return {existed, successor, published}
",
    ))
});

/// Writes back a session kept locally, unless Redis knows newer activity or a logout.
/// KEYS: session, marker. ARGV: the value to write (its `x` equal to its `e`), its `l`, its
/// `e`, now. Redis's later expiry, if it has one, is kept. Returns 1 if written.
pub static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LAYOUT}{}",
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = tonumber(ARGV[4])
local exp = tonumber(ARGV[3])
if exp <= now then return 0 end
local value = ARGV[1]
local v, c, l, e = times(redis.pcall('GET', KEYS[1]))
if v then
  if l >= tonumber(ARGV[2]) then return 0 end
  if e > exp then
    exp = e
    local at = struct.pack('>i5', e - struct.unpack('>i6', value, 2))
    value = string.sub(value, 1, 12) .. at .. string.sub(value, 18, 22) .. at .. string.sub(value, 28)
  end
end
redis.call('SET', KEYS[1], value, 'PX', string.format('%.0f', math.max(exp - now, 1)))
return 1
",
    ))
});
