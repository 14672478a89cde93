package cluster

import "github.com/redis/go-redis/v9"

// The registry's keys. Every key carries the hash tag {bridge}, so in a
// Redis Cluster they all live in one slot: the scripts below touch a
// claim and its index together, which Redis Cluster allows only within a
// slot. The registry is small (a few keys per node and per live stream),
// so one shard holds it easily.
const (
	keyNodes     = "{bridge}:nodes"   // sorted set: node name -> expiry (Unix ms)
	keyStreams   = "{bridge}:streams" // sorted set: path -> expiry (Unix ms)
	prefixNode   = "{bridge}:node:"   // + node name: NodeInfo JSON, with a TTL
	prefixStream = "{bridge}:stream:" // + path: claim JSON, with a TTL
	prefixLease  = "{bridge}:lease:"  // + lease name: owner node name, with a TTL
)

func nodeKey(name string) string   { return prefixNode + name }
func streamKey(path string) string { return prefixStream + path }
func leaseKey(name string) string  { return prefixLease + name }

// Claim modes (the claim script's ARGV[5]): who may take a path another
// node holds.
const (
	// modeClaim: a new publisher here. It takes a free path or one whose
	// owner's publisher is in grace; a live owner keeps it (a conflict).
	modeClaim = "claim"
	// modeRefresh: the heartbeat of a claim this node holds. Another owner
	// means this node lost the path (taken over in grace, or by an earlier
	// publisher after an outage): it takes nothing.
	modeRefresh = "refresh"
	// modeReassert: re-registration after a failed step (Redis away or
	// restarted). As modeClaim, and if the claimant's publisher is live, a
	// live owner whose publisher started later (since) loses: two nodes
	// that both accepted a publisher while Redis was away agree on the
	// earlier one. A claimant in grace takes nothing a live one holds.
	modeReassert = "reassert"
)

// claimScript sets KEYS[1] (a stream claim) to ARGV[2] for ARGV[3] ms on
// behalf of node ARGV[1] and indexes path ARGV[7] in KEYS[2] with score
// ARGV[6], unless another node holds it and mode ARGV[5] may not take it
// (see the modes; ARGV[4] is the claimant's since, in Unix ms; equal since
// is broken by the smaller node name, so both sides agree). It returns
// {1, previous value or ""} when set, {0, the holder's value} when not.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and c.node ~= ARGV[1] then
    local mode = ARGV[5]
    local take = false
    if mode ~= 'refresh' and c.state == 'grace' then
      take = true
    elseif mode == 'reassert' and ARGV[8] == 'live' then
      local theirs, mine = tonumber(c.since) or 0, tonumber(ARGV[4])
      take = mine < theirs or (mine == theirs and ARGV[1] < tostring(c.node))
    end
    if not take then
      return {0, cur}
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
return {1, cur or ''}
`)

// releaseScript deletes KEYS[1] (a stream claim) and its index entry
// ARGV[2] in KEYS[2] if node ARGV[1] holds it; 1 when deleted.
var releaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 0
end
local ok, c = pcall(cjson.decode, cur)
if ok and type(c) == 'table' and c.node == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
`)

// leaseScript takes or renews lease KEYS[1] for node ARGV[1] for ARGV[2]
// ms when it is free or already the node's; 1 when held, 0 when another
// node holds it.
var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// unleaseScript deletes lease KEYS[1] if node ARGV[1] holds it.
var unleaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)
