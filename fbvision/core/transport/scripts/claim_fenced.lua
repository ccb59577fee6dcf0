-- Take over a partition's unfinished work on acquiring its lease: move every pending entry of the partition's
-- stream (read, never acked, by whichever consumer) to the new owner's consumer, then delete the consumers left
-- with nothing pending (each owner process reads under a name of its own). KEYS: lease, stream. ARGV: token,
-- group, consumer. Returns {claimed, trimmed (pending but no longer in the stream), consumers deleted}, or false
-- when the lease is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local cursor, claimed, trimmed = '0-0', 0, 0
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, cursor, 'COUNT', 1000, 'JUSTID')
  cursor = r[1]
  claimed = claimed + #r[2]
  if r[3] then trimmed = trimmed + #r[3] end
until cursor == '0-0'
local deleted = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
  local name, pending
  for k = 1, #c, 2 do
    if c[k] == 'name' then name = c[k + 1] elseif c[k] == 'pending' then pending = c[k + 1] end
  end
  if name ~= ARGV[3] and pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], name)
    deleted = deleted + 1
  end
end
return {claimed, trimmed, deleted}
