local p = ARGV[1]
local batch_id = ARGV[2]
-- Idempotent batches: a batch retried after a timeout (Redis may have applied it already) is applied once.
if batch_id ~= '' and not redis.call('SET', p .. ':batch:' .. batch_id, '1', 'NX', 'EX', 600) then
  return {-1, 0}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local maxlen = ARGV[3]
local window = tonumber(ARGV[4])
local stats_ttl = tonumber(ARGV[5])
local worker = ARGV[6]
local worker_ttl = tonumber(ARGV[7])
local resync = ARGV[8] == '1'
local leaving = ARGV[9] == '1'
local max_names = tonumber(ARGV[10])
local n_ops, n_run, n_rem, n_tasks = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
-- The Loki relay's consumer group ('' when the exporter does not ship): see below.
local relay_group = ARGV[15]
local i = 16
local OP_ARGS = 12
local stream = p .. ':events'
-- A stream this batch creates gets the relay's group at its start, so the relay ships it whole: a group the relay
-- created itself would start at the end of what the workers wrote before it first read (relay_read.lua). Its position
-- (entries read or lost, of all ever added) starts at 0 with it.
-- Guarded: a Redis user not allowed XGROUP must not lose the batch (the relay then creates the group itself).
if relay_group ~= '' and n_ops > 0 and redis.call('EXISTS', stream) == 0 then
  if pcall(redis.call, 'XGROUP', 'CREATE', stream, relay_group, '0', 'MKSTREAM') then
    redis.call('SET', p .. ':loki:' .. relay_group .. ':pos', 0)
  end
end
local wrun = p .. ':wrun:' .. worker
local tasks_key = p .. ':tasks'
local unreg_key = p .. ':unregistered'
local touched = {}
local names = {}
-- Task names are bounded like the metrics' task_name label: names registered by workers always count; at most
-- max_names others are accepted, the rest fold into 'other'.
local function fold(task)
  local known = names[task]
  if known then return known end
  local out = task
  if redis.call('SISMEMBER', tasks_key, task) == 0 then
    if redis.call('SCARD', unreg_key) < max_names then
      redis.call('SADD', unreg_key, task)
      redis.call('SADD', tasks_key, task)
    else
      out = 'other'
      redis.call('SADD', tasks_key, out)
    end
  end
  names[task] = out
  return out
end
local rewrite = {}
for _ = 1, n_run do
  rewrite[#rewrite + 1] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]}
  i = i + 3
end
local ops_at = i
local rem_at = ops_at + OP_ARGS * n_ops
i = rem_at + 2 * n_rem
-- Registered task names first: the events of this batch may be the first of a newly registered task.
for _ = 1, n_tasks do
  redis.call('SADD', tasks_key, ARGV[i])
  touched[ARGV[i]] = true
  i = i + 1
end
if resync and worker ~= '' then redis.call('DEL', wrun) end
for _, r in ipairs(rewrite) do
  redis.call('HSET', wrun, r[1], r[3] .. '|' .. fold(r[2]))
end
-- The execution history (store/history.py): one record per attempt in the hash P:h:rec, and one index per task
-- type and status, P:h:<task>:<status> (score = the execution's first time in ms, which never changes).
local rec_key = p .. ':h:rec'
local rank = {pending = 0, running = 1, success = 2, failed = 2, retried = 2}
local code_status = {p = 'pending', r = 'running', s = 'success', f = 'failed', t = 'retried'}
local function history(task, status, hmember, blob, score)
  local ix = p .. ':h:' .. task .. ':'
  local old = redis.call('HGET', rec_key, hmember)
  if old then
    local ostatus = code_status[string.sub(old, 1, 1)] or status
    if rank[ostatus] > rank[status] then return end
    local okey = ix .. ostatus
    local oscore = redis.call('ZSCORE', okey, hmember)
    redis.call('HSET', rec_key, hmember, blob)
    if oscore then
      if ostatus == status then return end
      redis.call('ZREM', okey, hmember)
      score = oscore
    end
  else
    redis.call('HSET', rec_key, hmember, blob)
  end
  redis.call('ZADD', ix .. status, score, hmember)
end
local function apply(status, task, member, ts, enq, started, dur, payload, track, hmember, blob, score)
  task = fold(task)
  if hmember ~= '' then history(task, status, hmember, blob, score) end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 't', task, 's', status, 'r', payload)
  touched[task] = true
  local pending = p .. ':pending:' .. task
  local seen = p .. ':started:' .. task
  if status == 'pending' then
    if not redis.call('ZSCORE', seen, member) then redis.call('ZADD', pending, enq, member) end
    return
  end
  redis.call('ZREM', pending, member)
  redis.call('ZADD', seen, now, member)
  if status == 'running' then
    if track and worker ~= '' then redis.call('HSET', wrun, member, started .. '|' .. task) end
    return
  end
  if track and worker ~= '' then redis.call('HDEL', wrun, member) end
  local totals = p .. ':totals:' .. task
  local bucket = p .. ':stats:' .. task .. ':' .. math.floor(ts / 60)
  -- Hourly buckets too: a 24 h window reads 24 of them plus the minutes at its edges, not 1,440 minutes.
  local hour = p .. ':stats:' .. task .. ':h' .. math.floor(ts / 3600)
  redis.call('HINCRBY', totals, status, 1)
  redis.call('HINCRBY', bucket, status, 1)
  redis.call('HINCRBY', hour, status, 1)
  -- FR-013: average duration = sum(duration) / count(success), as the dashboards' mean_duration.
  if dur ~= '' and status == 'success' then
    redis.call('HINCRBYFLOAT', totals, 'dur_sum', dur)
    redis.call('HINCRBY', totals, 'dur_n', 1)
    redis.call('HINCRBYFLOAT', bucket, 'dur_sum', dur)
    redis.call('HINCRBY', bucket, 'dur_n', 1)
    redis.call('HINCRBYFLOAT', hour, 'dur_sum', dur)
    redis.call('HINCRBY', hour, 'dur_n', 1)
  end
  redis.call('EXPIRE', bucket, stats_ttl)
  redis.call('EXPIRE', hour, stats_ttl + 3600)
end
-- One bad event (e.g. a key of the wrong type) is skipped and reported; it must not stall the others.
local failed = 0
i = ops_at
for _ = 1, n_ops do
  local ok = pcall(apply, ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5],
    ARGV[i + 6], ARGV[i + 7], ARGV[i + 8] == '1', ARGV[i + 9], ARGV[i + 10], tonumber(ARGV[i + 11]))
  if not ok then failed = failed + 1 end
  i = i + OP_ARGS
end
i = rem_at
for _ = 1, n_rem do
  local task, member = fold(ARGV[i]), ARGV[i + 1]
  i = i + 2
  pcall(function()
    redis.call('ZREM', p .. ':pending:' .. task, member)
    redis.call('ZADD', p .. ':started:' .. task, now, member)
  end)
  touched[task] = true
end
for task, _ in pairs(touched) do
  pcall(redis.call, 'ZREMRANGEBYSCORE', p .. ':started:' .. task, '-inf', '(' .. (now - window))
end
if worker ~= '' then
  if leaving then
    redis.call('ZREM', p .. ':workers', worker)
    redis.call('DEL', wrun)
  else
    redis.call('ZADD', p .. ':workers', now, worker)
    redis.call('EXPIRE', wrun, math.ceil(worker_ttl))
  end
end
return {n_ops - failed, failed}
