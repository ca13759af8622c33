//! The Lua scripts of the Express store: each operation on an Express application's session
//! is one round trip, and none changes the session's value.
//!
//! A session is connect-redis's: the JSON express-session wrote, under `{prefix}{sid}`
//! (`sess:` by default), with the TTL connect-redis set. keepalive's own key for it is the mark a
//! logout through keepalive leaves, `{keepalive prefix}{{prefix}{sid}}:ended`: the session's key
//! in braces is its hash tag, so in a cluster the mark shares the session's slot.

use std::sync::LazyLock;

use redis::Script;

/// express-session's `touch` through connect-redis, for each key: the key's TTL moves to
/// `ceil(cookie.originalMaxAge / 1000)` seconds when the session's cookie has an expiry (which
/// express-session has just moved to `now + maxAge`), to connect-redis's `ttl` otherwise;
/// the value stays. KEYS: the sessions. ARGV: for each key, connect-redis's `ttl` in seconds.
/// Returns for each key `{value, ttl}`, nil for none, or 0 for a key of another type.
///
/// The cookie is read from the head of the text when it is where express-session puts it
/// (`{"cookie":{"originalMaxAge":N,` then `expires` as a string, with `partitioned` and
/// `priority` between when the application sets them): that costs Redis the same for any size
/// of session. Anything else is decoded whole with `cjson`, which costs in proportion to the
/// session, and a batch of large sessions would hold the application's Redis several times
/// longer (docs/BENCHMARKS.md, the Express drop-in). The two agree on every text
/// `JSON.stringify` writes: it never repeats a key, so the head's `cookie` is the session's.
/// `originalMaxAge` is taken in whole ms, as the `Date` express-session computes `expires`
/// with keeps it.
pub static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function ttl_from_head(raw)
  local age, at = string.match(raw, '^{"cookie":{"originalMaxAge":(%d+),()')
  if not age then return nil end
  at = string.match(raw, '^"partitioned":%a+,()', at) or at
  at = string.match(raw, '^"priority":"%a*",()', at) or at
  if string.find(raw, '^"expires":"', at) then return math.ceil(tonumber(age) / 1000) end
  return nil
end
local function ttl_decoded(raw, ttl)
  local ok, session = pcall(cjson.decode, raw)
  if ok and type(session) == 'table' and type(session.cookie) == 'table' then
    local c = session.cookie
    if c.expires and c.expires ~= cjson.null and type(c.originalMaxAge) == 'number' then
      return math.ceil(math.floor(c.originalMaxAge) / 1000)
    end
  end
  return ttl
end
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = false
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' and raw.err then
    out[i] = 0
  elseif raw then
    local ttl = ttl_from_head(raw) or ttl_decoded(raw, tonumber(ARGV[i]))
    redis.call('EXPIRE', key, ttl)
    if ttl > 0 then out[i] = {raw, ttl} end
  end
end
return out
"#,
    )
});

/// A session and what is left of its TTL. KEYS: the session. Returns `{value, pttl}`, nil for
/// none, or 0 for a key of another type.
pub static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'table' and raw.err then return 0 end
if not raw then return false end
return {raw, redis.call('PTTL', KEYS[1])}
",
    )
});

/// `req.session.destroy()`: deletes the session, leaves keepalive's mark for as long as the
/// session could have lived (at least `ARGV[1]` ms), and announces the logout to every instance
/// (not again for a logout written back twice). KEYS: session, mark. ARGV: the mark's least
/// lifetime in ms, the channel, the id. Returns 1 if the session existed.
pub static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pttl = redis.call('PTTL', KEYS[1])
local existed = redis.call('DEL', KEYS[1])
local marked = redis.call('EXISTS', KEYS[2])
local ttl = tonumber(ARGV[1])
if pttl > ttl then ttl = pttl end
redis.call('SET', KEYS[2], '1', 'PX', string.format('%.0f', ttl))
if existed == 1 or marked == 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return existed
",
    )
});

/// Whether a session is over for keepalive: logged out through keepalive (its mark), or gone
/// from Redis (destroyed by the application, expired, or lost). KEYS: session, mark. Returns 1
/// if marked, 2 if gone without a mark, 0 otherwise.
pub static OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 2 end
return 0
",
    )
});

/// Gives back a session kept through an outage, never over what the application did
/// meanwhile: an existing session only gets its TTL moved later (its value stays); a missing
/// one is written (only if still missing) when `ARGV[4]` is 1, that is into a Redis that lost its
/// data, never over a session the application destroyed; a logout marked by keepalive wins.
/// KEYS: session, mark. ARGV: the value, the session's expiry (ms), now (ms), whether it may
/// be written anew. Returns 1 if written or extended.
pub static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local want = tonumber(ARGV[2]) - tonumber(ARGV[3])
if want <= 0 then return 0 end
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then
  if ARGV[4] == '1' then
    local set = redis.call('SET', KEYS[1], ARGV[1], 'PX', string.format('%.0f', want), 'NX')
    if set then return 1 end
  end
  return 0
end
if pttl >= 0 and want > pttl then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', want))
  return 1
end
return 0
",
    )
});
