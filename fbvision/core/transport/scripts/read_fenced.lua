-- Read new results of the partitions whose lease ARGV still holds (a lease lost since the last renewal is not
-- read from, so a zombie cannot take entries the new owner would never see). KEYS: leases (n), then their
-- streams (n). ARGV: group, consumer, count, then the n tokens. Returns {XREADGROUP reply or false, lost lease
-- indexes (1-based), last entry id of each stream read} - the ids to block on (XREAD) when nothing was new.
local n = #KEYS / 2
local streams, ids, lost, last = {}, {}, {}, {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[3 + i] then
    streams[#streams + 1] = KEYS[n + i]
    ids[#ids + 1] = '>'
    local top = redis.call('XREVRANGE', KEYS[n + i], '+', '-', 'COUNT', 1)
    last[#last + 1] = top[1] and top[1][1] or '0-0'
  else
    lost[#lost + 1] = i
  end
end
if #streams == 0 then return {false, lost, last} end
local args = {'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
for _, s in ipairs(streams) do args[#args + 1] = s end
for _, s in ipairs(ids) do args[#args + 1] = s end
return {redis.call('XREADGROUP', unpack(args)), lost, last}
