-- Renew several leases in one round trip. KEYS: leases. ARGV: ttl ms, then one token per lease. Returns 1/0 each.
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    out[i] = redis.call('PEXPIRE', KEYS[i], ARGV[1])
  else
    out[i] = 0
  end
end
return out
