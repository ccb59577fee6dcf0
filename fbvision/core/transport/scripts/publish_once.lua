-- XADD results, each unless its once key exists. KEYS: once keys (n), then the stream of each result (n).
-- ARGV: attempt token, once TTL, maxlen, then the payloads. Returns per result: the entry id, "=" (written by
-- this token's earlier attempt) or "!" (written by another write: a duplicate).
local n = #ARGV - 3
local out = {}
for i = 1, n do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = redis.call('XADD', KEYS[n + i], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[3 + i])
  elseif redis.call('GET', KEYS[i]) == ARGV[1] then
    out[i] = '='
  else
    out[i] = '!'
  end
end
return out
