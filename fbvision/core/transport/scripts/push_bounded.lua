-- Push frames, skipping those already pushed (once keys), trim the list to the cap and count what the trim
-- dropped - atomically. KEYS: list, stats hash, frames epoch marker, then one once key per message (or none).
-- ARGV: cap, counter field ('' = the caller counts: the stats hash lives in the other Redis), attempt token, once
-- TTL, epoch mark ('' = none), then the messages. Returns {dropped by the cap, own retries, duplicates, 1 when the
-- epoch marker had to be created (a fresh server), queue length after the push}.
local n = redis.call('LLEN', KEYS[1])
local own, dup, fresh = 0, 0, 0
if ARGV[5] ~= '' and redis.call('SET', KEYS[3], ARGV[5], 'NX') then fresh = 1 end
local with_once = #KEYS > 3
for i = 6, #ARGV do
  local write = true
  if with_once then
    local key = KEYS[i - 2]
    if not redis.call('SET', key, ARGV[3], 'NX', 'PX', ARGV[4]) then
      write = false
      if redis.call('GET', key) == ARGV[3] then own = own + 1 else dup = dup + 1 end
    end
  end
  if write then n = redis.call('RPUSH', KEYS[1], ARGV[i]) end
end
local cap = tonumber(ARGV[1])
local dropped = 0
if n > cap then
  dropped = n - cap
  n = cap
  redis.call('LTRIM', KEYS[1], -cap, -1)
  if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[2], dropped) end
end
return {dropped, own, dup, fresh, n}
