-- The next entries of the event stream for the exporter's Loki relay (service/loki_relay.py), read by consumer group.
-- ARGV: prefix, group, consumer, count, claim_min_idle_ms, last_id, last_pos, prune ('1': forget dead consumers)
-- last_id, last_pos: the group's last delivered id and position as this relay last saw them ('' if it never read
-- through the group): what tells a group lost with Redis's data from a group that is new.
-- Returns {lost, entries, last_id, pos, skipped}: entries as XREADGROUP returns them ({id, {field, value, ...}},
-- ...); lost = entries the group will never ship: trimmed off the capped stream before any relay read them, or read
-- by a relay that died and trimmed before another could claim them; last_id, pos: the group's, after this read;
-- skipped = the entries a new group leaves behind (in the stream when it was created at its end).
--
-- Why a script: the stream is capped (MAXLEN ~), so a relay that falls behind (Loki down for long) loses its oldest
-- entries, and that must be counted, not silent. Redis cannot say how many a group skipped, so the group's position
-- in the all-time sequence of entries (entries-added counts them; only the head is ever trimmed) is kept in
-- <prefix>:loki:<group>:pos and moved in the same atomic step as the read: several exporters share one group and
-- never count a loss twice.
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local count, min_idle = tonumber(ARGV[4]), ARGV[5]
local seen_id, seen_pos = ARGV[6], tonumber(ARGV[7])
local prune = ARGV[8] == '1'
local stream = prefix .. ':events'
local pos_key = prefix .. ':loki:' .. group .. ':pos'

local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

if redis.call('EXISTS', stream) == 0 then
  -- No stream yet: the group starts at its beginning.
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  redis.call('SET', pos_key, 0)
  return {0, {}, '0-0', 0, 0}
end
local info = fields(redis.call('XINFO', 'STREAM', stream))
local added, length = tonumber(info['entries-added']), tonumber(info['length'])
local last_id = nil
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local g = fields(raw)
  if g['name'] == group then last_id = g['last-delivered-id'] end
end

-- Stream ids are "<ms>-<seq>", compared as such.
local function after(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams > bms or (ams == bms and tonumber(aseq) > tonumber(bseq))
end

if not last_id then
  if seen_id == '' then
    -- A new group ships from now on: what is already in the stream was written by workers not configured for the
    -- relay (they shipped it themselves, or nobody did); workers configured for it create the group with the
    -- stream (apply.lua).
    redis.call('XGROUP', 'CREATE', stream, group, '$')
    redis.call('SET', pos_key, added)
    return {0, {}, info['last-generated-id'], added, length}
  end
  -- This relay read through the group, which is gone: Redis lost its data (restarted without persistence, flushed)
  -- and a worker wrote to the stream again before this read. A stream that began anew (its count of entries ever
  -- added is below the group's old position, or its first entry is newer than the last one the group delivered)
  -- holds only records written since: all of them are shipped, from its start. Otherwise it is the stream the
  -- group read (the group alone was removed): shipping resumes after what the group had delivered, as this relay
  -- last saw it (what other relays delivered since then may go to Loki once more: Loki keeps one).
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if added < seen_pos or (first and after(first[1], seen_id)) then
    last_id = '0-0'
    redis.call('SET', pos_key, 0)
  else
    last_id = seen_id
    redis.call('SET', pos_key, seen_pos)
  end
  redis.call('XGROUP', 'CREATE', stream, group, last_id)
end

local pos = tonumber(redis.call('GET', pos_key) or added)
local lost = 0
local removed = added - length
if pos < removed then
  lost = removed - pos
  pos = removed
end
-- Entries a relay read and never acknowledged (it died): taken over once idle for long enough.
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, '0-0', 'COUNT', count)
local entries = claimed[2]
lost = lost + #claimed[3]  -- claimed, but trimmed meanwhile
-- A consumer is an exporter process (host:pid): one that was killed stays in the group, and a restarted exporter is a
-- new one, so the group would grow with every restart. One that holds nothing and has not read for as long as a
-- takeover waits is forgotten. Atomic with the check: it cannot have read meanwhile (a live relay that was
-- forgotten, idle in an error pause, is made anew by its next read).
if prune then
  for _, raw in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local c = fields(raw)
    if c['name'] ~= consumer and tonumber(c['pending']) == 0 and tonumber(c['idle']) >= tonumber(min_idle) then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, c['name'])
    end
  end
end
if #entries == 0 then
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
  if reply then
    entries = reply[1][2]
    pos = pos + #entries
    if #entries > 0 then last_id = entries[#entries][1] end
  end
end
redis.call('SET', pos_key, pos)
return {lost, entries, last_id, pos, 0}
