//! The key layout and the Lua scripts. Each script touches the keys of one call (one
//! hash tag) and its node's incarnation key. Every script answers an array whose first
//! element is a status: 1 done, 0 no such call, -1 not the owner (fencing), -2 exists
//! already, -3 ended (a tombstone). A refusal (-1, -2) carries next whether the call's
//! owner is this node's id (a newer process with the same id holds it): the node's set
//! then keeps the call.
//!
//! Fencing has two parts.
//! - Between processes with the same node id (a rolling update, a paused process that
//!   resumes): each process claims an incarnation of the node id (`sc:node:{<node>}:inc`,
//!   above its current value and above Redis's clock in ms), once, before its first
//!   write or at recovery. Every write carries it and is refused when
//!   the key holds a higher one, so the newest process of a node id fences out the
//!   older ones at once, for all their calls, with one command (recovery touches no
//!   call). A missing key (Redis restarted empty, or the id unused for the key's TTL)
//!   is set again by the first write that finds it missing.
//! - Between nodes: every write carries the node and its epoch for the call. The epoch
//!   only grows: `adopt` bumps it and records it in the call's fence key
//!   `sc:call:{<id>}:t` (a hash: `epoch`, `version`, `ended`), which `end` (and the
//!   last `leave`) also write, with a TTL of its own. A `put` or a `create` checks that
//!   key, so a call that ended or was taken over by another node is never recreated by
//!   a process that missed it, even after the call's own keys are gone.
//!
//! The incarnation key a script checks is in the call's hash slot on a Redis Cluster
//! (one key per slot, see `incarnation`), and the node's one key on one Redis: every
//! script is single-slot, so they run unchanged on a Cluster.

use secureconnect_redis_fallback::redis;

use crate::error::Error;

/// Key layout. Every key of one call carries the hash tag `{<call id>}`.
pub(super) fn call_key(id: &str) -> String {
    format!("sc:call:{{{id}}}")
}
pub(super) fn participants_key(id: &str) -> String {
    format!("sc:call:{{{id}}}:p")
}
pub(super) fn fence_key(id: &str) -> String {
    format!("sc:call:{{{id}}}:t")
}
pub(super) fn node_calls_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:calls")
}
pub(super) fn lease_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:lease")
}
pub(super) fn incarnation_key(node: &str) -> String {
    format!("sc:node:{{{node}}}:inc")
}

/// One script: its source (to load it after `NOSCRIPT`) and its SHA-1.
pub(super) struct Script {
    code: String,
    hash: String,
}

impl Script {
    /// A script as it is (not on a call's keys).
    fn plain(code: &str) -> Self {
        let hash = redis::Script::new(code).get_hash().to_owned();
        Self {
            code: code.to_owned(),
            hash,
        }
    }

    /// `EVALSHA` of a [`plain`](Self::plain) script on `keys`; the caller adds the
    /// arguments.
    pub(super) fn on_keys(&self, keys: &[String]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(keys.len()).arg(keys);
        cmd
    }

    /// A write script: the [`CURRENT`] prelude, then `body`.
    fn new(body: &str) -> Self {
        Self::fenced("", body)
    }

    /// A write script whose body may also call `fence` (the [`FENCE`] prelude).
    fn fenced(prelude: &str, body: &str) -> Self {
        let code = format!("{CURRENT}{prelude}{body}");
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    /// `EVALSHA` on the keys of `call` (call, participants, fence) and the node's
    /// incarnation key for it (in the call's slot on a Cluster), with the process's
    /// `incarnation` and the incarnation key's TTL as the first arguments; the caller
    /// adds the script's own.
    pub(super) fn on_call(
        &self,
        call: &str,
        incarnation_key: &str,
        incarnation: u64,
        ttl_ms: u64,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash)
            .arg(4)
            .arg(call_key(call))
            .arg(participants_key(call))
            .arg(fence_key(call))
            .arg(incarnation_key)
            .arg(incarnation)
            .arg(ttl_ms);
        cmd
    }
}

/// The scripts of a store.
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) end: Script,
    pub(super) adopt: Script,
    pub(super) put: Script,
    pub(super) reassert: Script,
    pub(super) claim: Script,
    pub(super) claim_slot: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create: Script::new(CREATE),
            join: Script::new(JOIN),
            leave: Script::fenced(FENCE, LEAVE),
            end: Script::fenced(FENCE, END),
            adopt: Script::fenced(FENCE, ADOPT),
            put: Script::new(PUT),
            reassert: Script::plain(REASSERT),
            claim: Script::plain(CLAIM),
            claim_slot: Script::plain(CLAIM_SLOT),
        }
    }

    /// `SCRIPT LOAD` of every script, in one pipeline (after a `NOSCRIPT`: Redis
    /// restarted or its script cache was flushed).
    pub(super) fn load(&self) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for script in [
            &self.create,
            &self.join,
            &self.leave,
            &self.end,
            &self.adopt,
            &self.put,
            &self.reassert,
            &self.claim,
            &self.claim_slot,
        ] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(&script.code).ignore();
        }
        pipe
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
        Some(-1 | -3) => Err(Error::not_owner(call)),
        Some(-2) => Err(Error::already_exists(call)),
        _ => Err(Error::corrupt(
            call,
            format!("unexpected script reply {values:?}"),
        )),
    }
}

/// Whether a refused write found the call owned by this node's id (a newer process
/// with the same id): the node's set keeps the call then.
pub(super) fn owned_by_this_id(values: &[i64]) -> bool {
    values.get(1) == Some(&1)
}

/// Whether a write was refused because a newer process claimed this node's id.
pub(super) fn superseded(values: &[i64]) -> bool {
    values.first() == Some(&-1) && values.get(2) == Some(&1)
}

/// Lua prepended to every write script. Takes the process's incarnation and the
/// incarnation key's TTL off the front of ARGV (the script's own arguments follow), and
/// refuses a process that a newer one with the same node id superseded: `{-1, 1, 1}`
/// (not the owner; held by this node's id; superseded). A missing key is set again.
const CURRENT: &str = r"
local incarnation = tonumber(table.remove(ARGV, 1))
local incarnation_ttl = table.remove(ARGV, 1)
local newest = tonumber(redis.call('GET', KEYS[4]) or '0')
if newest > incarnation then return {-1, 1, 1} end
if newest < incarnation then
  redis.call('SET', KEYS[4], incarnation, 'PX', incarnation_ttl)
end
";

/// Claims an incarnation. KEYS: the node's incarnation key. ARGV: its TTL. The claim
/// is above the key's value and above Redis's clock in milliseconds, so a process
/// started later claims a higher one even after the key was lost (Redis restarted
/// empty): an older process that sets its own back cannot fence out the newer one.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local claimed = math.max(current, now) + 1
redis.call('SET', KEYS[1], string.format('%d', claimed), 'PX', ARGV[1])
return claimed
";

/// The heartbeat's hold on its incarnation and its node's lease. KEYS: the node's
/// incarnation key, its lease key (one hash tag, one slot). ARGV: this process's
/// incarnation, the incarnation key's TTL, the lease's value and TTL. Unless a newer
/// process claimed the node id, sets the incarnation key again (a lost key leaves an
/// older process no window) and the lease; a superseded process keeps neither alive.
/// Answers the newest incarnation found.
const REASSERT: &str = r"
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
if newest > tonumber(ARGV[1]) then return newest end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return newest
";

/// A slot's claim on a Cluster. KEYS: the node's incarnation key of one hash slot.
/// ARGV: this process's incarnation, the key's TTL. Raises the key to it (never lowers
/// it) and refreshes its TTL unless a newer process claimed it; answers the newest
/// incarnation found.
const CLAIM_SLOT: &str = r"
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
if newest <= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return newest
";

/// Lua prepended to the scripts that record a fence: `fence(epoch, version, ended,
/// ttl)` keeps in the fence key (KEYS[3]) the highest epoch and version issued, marks
/// the call ended if asked, and sets the key's TTL.
const FENCE: &str = r"
local function fence(epoch, version, ended, ttl)
  local t = redis.call('HMGET', KEYS[3], 'epoch', 'version')
  if tonumber(t[1] or '0') > epoch then epoch = tonumber(t[1]) end
  if tonumber(t[2] or '0') > version then version = tonumber(t[2]) end
  redis.call('HSET', KEYS[3], 'epoch', epoch, 'version', version)
  if ended then redis.call('HSET', KEYS[3], 'ended', 1) end
  redis.call('PEXPIRE', KEYS[3], ttl)
end
";

/// KEYS: call, participants, fence, incarnation. ARGV (after the [`CURRENT`] pair):
/// node, ttl_ms, now_ms, schema.
/// Refused (-2) if the call exists, or ended or was taken over within the fence's TTL.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.pcall('HGET', KEYS[1], 'owner') == ARGV[1] then return {-2, 1} end
  return {-2, 0}
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-2, 0} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', 1, 'version', 1, 'created', ARGV[3], 'schema', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 1, 1}
";

/// KEYS: call, participants, fence, incarnation. ARGV (after the [`CURRENT`] pair):
/// node, epoch, participant id, participant JSON, ttl_ms.
const JOIN: &str = r"
local call = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if not call[1] then return {0} end
if call[1] ~= ARGV[1] or call[2] ~= ARGV[2] then
  if call[1] == ARGV[1] then return {-1, 1} end
  return {-1, 0}
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, version}
";

/// KEYS: call, participants, fence, incarnation. ARGV (after the [`CURRENT`] pair):
/// node, epoch, participant id, fence_ttl_ms.
/// Answers {1, version, removed, call_ended}. A participant who is not there changes
/// nothing (a duplicate leave does not bump the version). The last leave ends the call
/// and leaves a tombstone.
const LEAVE: &str = r"
local call = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'version')
if not call[1] then return {0} end
if call[1] ~= ARGV[1] or call[2] ~= ARGV[2] then
  if call[1] == ARGV[1] then return {-1, 1} end
  return {-1, 0}
end
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then
  return {1, tonumber(call[3]), 0, 0}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  fence(tonumber(call[2]), version, true, ARGV[4])
  return {1, version, 1, 1}
end
return {1, version, 1, 0}
";

/// KEYS: call, participants, fence, incarnation. ARGV (after the [`CURRENT`] pair):
/// node, epoch, fence_ttl_ms. Leaves a tombstone, also when the call's keys are gone
/// already (expired, or a Redis that restarted empty), unless the call was taken over
/// since. Epoch 0: the process holds no epoch for the call (its create's reply was
/// lost, or it never held it): the call is ended if this node owns it (the
/// incarnation check makes this process its only writer).
const END: &str = r"
local epoch = tonumber(ARGV[2])
local call = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'version')
if not call[1] then
  if tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0') <= epoch then
    fence(epoch, 0, true, ARGV[3])
  end
  return {0}
end
if call[1] ~= ARGV[1] or (epoch ~= 0 and call[2] ~= ARGV[2]) then
  if call[1] == ARGV[1] then return {-1, 1} end
  return {-1, 0}
end
if epoch == 0 then epoch = tonumber(call[2] or '0') end
redis.call('DEL', KEYS[1], KEYS[2])
fence(epoch, tonumber(call[3] or '0'), true, ARGV[3])
return {1}
";

/// KEYS: call, participants, fence, incarnation. ARGV (after the [`CURRENT`] pair): new
/// owner, dead owner, ttl_ms,
/// fence_ttl_ms. Answers {1, epoch, version}; the epoch is bumped and recorded.
const ADOPT: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {0} end
if owner ~= ARGV[2] then
  if owner == ARGV[1] then return {-1, 1} end
  return {-1, 0}
end
local floor = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0')
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if floor > epoch then epoch = floor end
epoch = epoch + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch)
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
fence(epoch, version, false, ARGV[4])
return {1, epoch, version}
";

/// Writes a whole call back (after Redis was away). KEYS: call, participants, fence,
/// incarnation. ARGV (after the [`CURRENT`] pair): node, epoch, version, created,
/// schema, ttl_ms, then participant id/JSON pairs. Refused (-1) if another node owns
/// the call now or the call's epoch (or its fence's) is above the one given; refused
/// (-3) if the call ended (a tombstone). The epoch and the version never go down.
const PUT: &str = r"
local t = redis.call('HMGET', KEYS[3], 'epoch', 'version', 'ended')
if t[3] then return {-3, 0} end
local floor = tonumber(t[1] or '0')
local current = tonumber(t[2] or '0')
local call = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'version')
if call[1] then
  if call[1] ~= ARGV[1] then return {-1, 0} end
  if tonumber(call[2] or '0') > floor then floor = tonumber(call[2]) end
  if tonumber(call[3] or '0') > current then current = tonumber(call[3]) end
end
local epoch = tonumber(ARGV[2])
if floor > epoch then
  if call[1] then return {-1, 1} end
  return {-1, 0}
end
local version = tonumber(ARGV[3])
if current >= version then version = current + 1 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch, 'version', version, 'created', ARGV[4], 'schema', ARGV[5])
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if #ARGV >= 7 then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
return {1, version}
";
