//! The Lua scripts that keep the shared membership consistent: each runs
//! atomically in Redis, so two nodes never admit the ninth member of a
//! room of eight, and exactly one node reaps a dead node's members.
//!
//! Keys (under the prefix, `p2p:` by default):
//!
//! - `room:<room>`: a hash, peer id → `<node>\n<tail>`, the tail an
//!   optional flags line `+h\n` (the peer asks to hide its host addresses;
//!   absent, as older nodes write it: no flags) and an optional `=<name>`;
//!   also the room's pub/sub channel, which carries `J\n<peer>\n<node>\n<tail>`
//!   and `L\n<peer>\n<node>`;
//! - `node:<node>:members`: a set of `<room>\n<peer>` (what to reap);
//! - `nodes`: a sorted set, node → its last heartbeat (Redis time, ms);
//! - `node:<node>`: the node's channel: relayed messages, `<to>\n<json>`
//!   each, one or more in a payload joined by `\n` (see `outbox`);
//! - `load:<node>`: the node's TURN load (JSON), with an expiry;
//! - `resume-key`: the resume key of a cluster without a TURN REST secret.
//!
//! Room names and peer ids hold no control character, so `\n` separates.

/// Join: KEYS room hash, node set, room channel; ARGV peer, value, max,
/// room, event. Returns `{'full'}` or `{'ok', <HGETALL before>}`. A peer
/// already present (it resumed on this node) is taken over.
pub(super) const JOIN: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return {'full'}
end
local all = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4] .. '\n' .. ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[5])
return {'ok', all}
";

/// Leave: KEYS room hash, node set, room channel; ARGV peer, node, room,
/// event. Removes the member only if it is still this node's (it may have
/// resumed elsewhere).
pub(super) const LEAVE: &str = r"
redis.call('SREM', KEYS[2], ARGV[3] .. '\n' .. ARGV[1])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. '\n' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', KEYS[3], ARGV[4])
  return 1
end
return 0
";

/// Heartbeat and reap: KEYS nodes; ARGV node, expiry ms, reap (0/1),
/// prefix. Stamps this node with Redis's clock; with reap, every node
/// silent for the expiry loses its members (each room hears `L`) and is
/// forgotten. Returns the nodes reaped.
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local reaped = {}
if ARGV[3] == '1' then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
  for _, n in ipairs(dead) do
    local set = ARGV[4] .. 'node:' .. n .. ':members'
    for _, e in ipairs(redis.call('SMEMBERS', set)) do
      local nl = string.find(e, '\n', 1, true)
      if nl then
        local room = string.sub(e, 1, nl - 1)
        local peer = string.sub(e, nl + 1)
        local key = ARGV[4] .. 'room:' .. room
        local cur = redis.call('HGET', key, peer)
        if cur and string.sub(cur, 1, string.len(n) + 1) == n .. '\n' then
          redis.call('HDEL', key, peer)
          redis.call('PUBLISH', key, 'L\n' .. peer .. '\n' .. n)
        end
      end
    end
    redis.call('DEL', set)
    redis.call('DEL', ARGV[4] .. 'load:' .. n)
    redis.call('ZREM', KEYS[1], n)
    table.insert(reaped, n)
  end
end
return reaped
";
