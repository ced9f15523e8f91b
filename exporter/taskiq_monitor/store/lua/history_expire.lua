-- One bounded step of the history's retention (store/history_redis.py): at most ARGV[4] executions are deleted,
-- first those older than the retention (by age), then the oldest beyond the cap (by count). Returns
-- {deleted by age, deleted by count, 1 when more work is left}. Runs often and briefly, never in one long sweep.
local p = ARGV[1]
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local cutoff = now_ms - tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local rec = p .. ':h:rec'
local statuses = {'pending', 'running', 'success', 'failed', 'retried'}
local keys = {}
for _, t in ipairs(redis.call('SMEMBERS', p .. ':tasks')) do
  for _, s in ipairs(statuses) do keys[#keys + 1] = p .. ':h:' .. t .. ':' .. s end
end
local function drop(key, members)
  for j = 1, #members, 500 do
    local chunk = {unpack(members, j, math.min(j + 499, #members))}
    redis.call('HDEL', rec, unpack(chunk))
    redis.call('ZREM', key, unpack(chunk))
  end
end
local aged = 0
for _, key in ipairs(keys) do
  if aged >= budget then break end
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. cutoff, 'LIMIT', 0, budget - aged)
  if #old > 0 then
    drop(key, old)
    aged = aged + #old
  end
end
local counted = 0
local excess = redis.call('HLEN', rec) - cap
local left = budget - aged
if excess > 0 and left > 0 then
  -- The oldest `need` executions of all indexes, without reading them: binary search for the time x below which at
  -- most `need` executions lie (ZCOUNT is O(log n) per index), then delete everything older than x.
  local need = math.min(excess, left)
  local lo = nil
  for _, key in ipairs(keys) do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head[2] and (lo == nil or tonumber(head[2]) < lo) then lo = tonumber(head[2]) end
  end
  if lo ~= nil then
    local function older(x)
      local n = 0
      for _, key in ipairs(keys) do n = n + redis.call('ZCOUNT', key, '-inf', '(' .. x) end
      return n
    end
    local hi = now_ms + 1
    local low = lo + 1  -- older(lo + 1) >= 1: the oldest execution alone
    if older(hi) <= need then low = hi end
    while hi - low > 1 and low < hi do
      local mid = math.floor((low + hi) / 2)
      if older(mid) <= need then low = mid else hi = mid end
    end
    for _, key in ipairs(keys) do
      local old = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. low, 'LIMIT', 0, need - counted)
      if #old > 0 then
        drop(key, old)
        counted = counted + #old
      end
      if counted >= need then break end
    end
  end
end
if aged > 0 then redis.call('HINCRBY', p .. ':h:evicted', 'age', aged) end
if counted > 0 then redis.call('HINCRBY', p .. ':h:evicted', 'count', counted) end
local more = 0
if aged >= budget or (counted > 0 and excess > counted) then more = 1 end
return {aged, counted, more}
