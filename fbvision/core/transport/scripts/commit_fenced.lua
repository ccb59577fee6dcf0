-- Commit one batch of a partition: ack its results, add its alerts to the outbox and save the touched cameras'
-- state - only while ARGV[1] still holds the lease, and all or nothing. KEYS: lease, result stream, outbox,
-- episodes hash, baselines hash, time budgets hash. ARGV: token, outbox maxlen, group, n ids, ids..., n alerts,
-- alerts..., n states, (camera, state) pairs..., n baselines, (camera, baseline) pairs..., then (camera, time
-- budget) pairs. XACK goes first: it is the only command that can fail on its input (a malformed id), and a script that
-- fails before its first write writes nothing (a full Redis refuses that first write too). Returns 1, or 0 when
-- the lease is not ours (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 4
local n_ids = tonumber(ARGV[i])
if n_ids > 0 then redis.call('XACK', KEYS[2], ARGV[3], unpack(ARGV, i + 1, i + n_ids)) end
i = i + n_ids + 1
local n_alerts = tonumber(ARGV[i])
for j = i + 1, i + n_alerts do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'a', ARGV[j])
end
i = i + n_alerts + 1
local n_states = tonumber(ARGV[i])
for j = i + 1, i + 2 * n_states, 2 do redis.call('HSET', KEYS[4], ARGV[j], ARGV[j + 1]) end
i = i + 2 * n_states + 1
local n_baselines = tonumber(ARGV[i])
for j = i + 1, i + 2 * n_baselines, 2 do redis.call('HSET', KEYS[5], ARGV[j], ARGV[j + 1]) end
for j = i + 2 * n_baselines + 1, #ARGV, 2 do redis.call('HSET', KEYS[6], ARGV[j], ARGV[j + 1]) end
return 1
