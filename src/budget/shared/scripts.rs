//! The Lua scripts that make each shared-store operation atomic in Redis:
//! reserve (check and hold), settle (release and add spent, tombstoned),
//! seed (add back spend a counter lost). Keys and arguments are built in
//! `super`; these must stay in step with it.

pub(super) const RESERVE: &str = r#"
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local member = ARGV[3]
local n, t, r = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local reserve = ARGV[7] == '1'
local id = ARGV[8]
local cand = ARGV[9]
local nb = #KEYS / 2
local out = {0}
local blocked = false
local released = false
for i = 1, nb do
  local c, h = KEYS[2*i-1], KEYS[2*i]
  local old = redis.call('ZRANGEBYSCORE', h, '-inf', now)
  for _, m in ipairs(old) do
    local _, on, ot, orr = string.match(m, '^(.*)|(%d+)|(%d+)|(%d+)$')
    if on then
      redis.call('HINCRBY', c, 'rn', -tonumber(on))
      redis.call('HINCRBY', c, 'rt', -tonumber(ot))
      redis.call('HINCRBY', c, 'rr', -tonumber(orr))
    end
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', h, '-inf', now) end
  if reserve and redis.call('ZSCORE', h, '!' .. id) then released = true end
  local v = redis.call('HMGET', c, 'sn', 'st', 'sr', 'rn', 'rt', 'rr', 'ep')
  local base = 9 + (i-1)*5
  local ln, lt, lr = tonumber(ARGV[base+1]), tonumber(ARGV[base+2]), tonumber(ARGV[base+3])
  local s = {}
  for j = 1, 6 do
    s[j] = math.max(tonumber(v[j]) or 0, 0)
    out[#out+1] = s[j]
  end
  out[#out+1] = tonumber(v[7]) or 0
  local over = (ln >= 0 and s[1] + s[4] + n > ln) or (lt >= 0 and s[2] + s[5] + t > lt) or (lr >= 0 and s[3] + s[6] + r > lr)
  if over and ARGV[base+4] == '1' then blocked = true end
end
if blocked then out[1] = 1 end
-- Released before it arrived (its caller gave up waiting): do nothing.
if released then out[1] = 2 end
if reserve and not blocked and not released then
  for i = 1, nb do
    local c, h = KEYS[2*i-1], KEYS[2*i]
    local at = tonumber(ARGV[9 + (i-1)*5 + 5])
    redis.call('HINCRBY', c, 'rn', n)
    redis.call('HINCRBY', c, 'rt', t)
    redis.call('HINCRBY', c, 'rr', r)
    redis.call('HSETNX', c, 'ep', cand)
    out[1 + i*7] = tonumber(redis.call('HGET', c, 'ep'))
    redis.call('ZADD', h, expiry, member)
    redis.call('EXPIREAT', c, at)
    redis.call('EXPIREAT', h, at)
  end
end
return out
"#;

pub(super) const SETTLE: &str = r#"
local id, member = ARGV[1], ARGV[2]
local hn, ht, hr = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local an, at, ar = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local tomb = tonumber(ARGV[9])
local cand = ARGV[10]
local out = {}
for i = 1, #KEYS / 2 do
  local c, h = KEYS[2*i-1], KEYS[2*i]
  -- A tombstone: this hold was settled or released already (a replay).
  if id == '' or not redis.call('ZSCORE', h, '!' .. id) then
    if member ~= '' and redis.call('ZREM', h, member) == 1 then
      redis.call('HINCRBY', c, 'rn', -hn)
      redis.call('HINCRBY', c, 'rt', -ht)
      redis.call('HINCRBY', c, 'rr', -hr)
    end
    if an > 0 then redis.call('HINCRBY', c, 'sn', an) end
    if at > 0 then redis.call('HINCRBY', c, 'st', at) end
    if ar > 0 then redis.call('HINCRBY', c, 'sr', ar) end
    if redis.call('EXISTS', c) == 1 then redis.call('HSETNX', c, 'ep', cand) end
    if id ~= '' then redis.call('ZADD', h, tomb, '!' .. id) end
  end
  local exp = tonumber(ARGV[10 + i])
  redis.call('EXPIREAT', c, exp)
  redis.call('EXPIREAT', h, exp)
  local v = redis.call('HMGET', c, 'sn', 'st', 'sr', 'rn', 'rt', 'rr', 'ep')
  for j = 1, 6 do out[#out+1] = math.max(tonumber(v[j]) or 0, 0) end
  out[#out+1] = tonumber(v[7]) or 0
end
return out
"#;

/// Add this process's spend back into a counter that lost it: only into
/// the epoch the caller saw (0: the hash is gone; it is created), and once
/// per process and epoch. Answers {applied, epoch now}.
pub(super) const SEED: &str = r#"
local c, h = KEYS[1], KEYS[2]
local cur = tonumber(redis.call('HGET', c, 'ep') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
if cur == 0 then
  cur = tonumber(ARGV[2])
  redis.call('HSET', c, 'ep', ARGV[2])
end
if redis.call('HSETNX', c, 'sd:' .. ARGV[3], 1) == 1 then
  local n, t, r = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  if n > 0 then redis.call('HINCRBY', c, 'sn', n) end
  if t > 0 then redis.call('HINCRBY', c, 'st', t) end
  if r > 0 then redis.call('HINCRBY', c, 'sr', r) end
end
redis.call('EXPIREAT', c, tonumber(ARGV[7]))
return {1, cur}
"#;
