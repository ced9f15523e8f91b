local p = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local horizon = tonumber(ARGV[2])
local worker_ttl = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local with_stats = ARGV[5] == '1'
local last_minute = math.floor(now / 60)
local first_minute = last_minute - math.max(1, math.ceil(window / 60)) + 1
local workers_key = p .. ':workers'
redis.call('ZREMRANGEBYSCORE', workers_key, '-inf', '(' .. (now - worker_ttl))
local workers = redis.call('ZRANGE', workers_key, 0, -1)
local running = {}
for _, w in ipairs(workers) do
  for _, v in ipairs(redis.call('HVALS', p .. ':wrun:' .. w)) do
    local sep = string.find(v, '|', 1, true)
    if sep then
      local t = string.sub(v, sep + 1)
      running[t] = (running[t] or 0) + 1
    end
  end
end
local function hash(key)
  local flat = redis.call('HGETALL', key)
  local out = {}
  for j = 1, #flat, 2 do out[flat[j]] = tonumber(flat[j + 1]) end
  return out
end
local expired = hash(p .. ':expired')
local tasks = {}
local function task_entry(t)
  local pk = p .. ':pending:' .. t
  local n = redis.call('ZREMRANGEBYSCORE', pk, '-inf', '(' .. (now - horizon))
  if n > 0 then
    expired[t] = redis.call('HINCRBY', p .. ':expired', t, n)
  end
  local oldest = redis.call('ZRANGE', pk, 0, 0, 'WITHSCORES')
  local entry = {
    pending = redis.call('ZCARD', pk),
    oldest = oldest[2] or '',
    running = running[t] or 0,
    expired = expired[t] or 0,
  }
  if with_stats then
    entry.totals = hash(p .. ':totals:' .. t)
    local win = {}
    -- Whole hours from their hourly bucket, the minutes at the window's edges one by one.
    local m = first_minute
    while m <= last_minute do
      local key, step = p .. ':stats:' .. t .. ':' .. m, 1
      if m % 60 == 0 and m + 59 <= last_minute then
        key, step = p .. ':stats:' .. t .. ':h' .. (m / 60), 60
      end
      for k, v in pairs(hash(key)) do win[k] = (win[k] or 0) + v end
      m = m + step
    end
    entry.window = win
  end
  return entry
end
-- A task whose keys are unusable (e.g. overwritten with another type) is left out; the others are still reported.
for _, t in ipairs(redis.call('SMEMBERS', p .. ':tasks')) do
  local ok, entry = pcall(task_entry, t)
  if ok then tasks[t] = entry end
end
return cjson.encode({now = now, workers = #workers, tasks = tasks})
