//! The key layout and the Lua scripts. Each script touches only the keys of one call
//! (one hash tag), so it runs on a single Redis and on a Redis Cluster alike. Every
//! script answers an array whose first element is a status: 1 done, 0 no such call,
//! -1 not the owner (fencing), -2 exists already.

use secureconnect_redis_fallback::redis;

use crate::error::Error;

/// Key layout. Every key of one call carries the hash tag `{<call id>}`.
pub(super) fn call_key(id: &str) -> String {
    format!("sc:call:{{{id}}}")
}
pub(super) fn participants_key(id: &str) -> String {
    format!("sc:call:{{{id}}}:p")
}
pub(super) fn node_calls_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:calls")
}
pub(super) fn lease_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:lease")
}

/// The scripts, loaded once per store.
pub(super) struct Scripts {
    pub(super) create: redis::Script,
    pub(super) join: redis::Script,
    pub(super) leave: redis::Script,
    pub(super) end: redis::Script,
    pub(super) adopt: redis::Script,
    pub(super) put: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create: redis::Script::new(CREATE),
            join: redis::Script::new(JOIN),
            leave: redis::Script::new(LEAVE),
            end: redis::Script::new(END),
            adopt: redis::Script::new(ADOPT),
            put: redis::Script::new(PUT),
        }
    }
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}

/// The status that opens every script's reply, as a result.
pub(super) fn status(values: &[i64], call: &str) -> Result<(), Error> {
    match values.first() {
        Some(1) => Ok(()),
        Some(0) => Err(Error::not_found(call)),
        Some(-1) => Err(Error::not_owner(call)),
        Some(-2) => Err(Error::already_exists(call)),
        _ => Err(Error::corrupt(
            call,
            format!("unexpected script reply {values:?}"),
        )),
    }
}

/// KEYS: call, participants. ARGV: node, ttl_ms, now_ms, schema.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {-2} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', 1, 'version', 1, 'created', ARGV[3], 'schema', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 1, 1}
";

/// KEYS: call, participants. ARGV: node, epoch, participant id, participant JSON, ttl_ms.
const JOIN: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {0} end
if owner ~= ARGV[1] or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return {-1} end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, version}
";

/// KEYS: call, participants. ARGV: node, epoch, participant id.
/// Answers {1, version, removed, call_ended}. A participant who is not there changes
/// nothing (a duplicate leave does not bump the version).
const LEAVE: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {0} end
if owner ~= ARGV[1] or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return {-1} end
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then
  return {1, tonumber(redis.call('HGET', KEYS[1], 'version')), 0, 0}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {1, version, 1, 1}
end
return {1, version, 1, 0}
";

/// KEYS: call, participants. ARGV: node, epoch.
const END: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {0} end
if owner ~= ARGV[1] or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return {-1} end
redis.call('DEL', KEYS[1], KEYS[2])
return {1}
";

/// KEYS: call, participants. ARGV: new owner, dead owner, ttl_ms. Answers
/// {1, epoch, version}.
const ADOPT: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {0} end
if owner ~= ARGV[2] then return {-1} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, epoch, version}
";

/// Writes a whole call back (after Redis was away). KEYS: call, participants.
/// ARGV: node, epoch, version, created, schema, ttl_ms, then participant id/JSON pairs.
/// Refused if another node owns the call now; the version never goes down.
const PUT: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return {-1} end
local version = tonumber(ARGV[3])
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current and current >= version then version = current + 1 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', ARGV[2], 'version', version, 'created', ARGV[4], 'schema', ARGV[5])
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if #ARGV >= 7 then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
return {1, version}
";
