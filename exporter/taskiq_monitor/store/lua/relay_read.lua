-- The next entries of the event stream for the exporter's Loki relay (service/loki_relay.py), read by consumer group.
-- ARGV: prefix, group, consumer, count, claim_min_idle_ms
-- Returns {lost, entries}: entries as XREADGROUP returns them ({id, {field, value, ...}}, ...); lost = entries
-- the group will never ship: trimmed off the capped stream before any relay read them, or read by a relay that died
-- and trimmed before another could claim them.
--
-- Why a script: the stream is capped (MAXLEN ~), so a relay that falls behind (Loki down for long) loses its oldest
-- entries, and that must be counted, not silent. Redis cannot say how many a group skipped, so the group's position
-- in the all-time sequence of entries (entries-added counts them; only the head is ever trimmed) is kept in
-- <prefix>:loki:<group>:pos and moved in the same atomic step as the read: several exporters share one group and
-- never count a loss twice.
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local count, min_idle = tonumber(ARGV[4]), ARGV[5]
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
  return {0, {}}
end
local info = fields(redis.call('XINFO', 'STREAM', stream))
local added, length = tonumber(info['entries-added']), tonumber(info['length'])
local known = false
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  if fields(raw)['name'] == group then known = true end
end
if not known then
  -- A new group ships from now on: what is already in the stream was recorded before the relay was set up.
  redis.call('XGROUP', 'CREATE', stream, group, '$')
  redis.call('SET', pos_key, added)
  return {0, {}}
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
if #entries == 0 then
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
  if reply then
    entries = reply[1][2]
    pos = pos + #entries
  end
end
redis.call('SET', pos_key, pos)
return {lost, entries}
