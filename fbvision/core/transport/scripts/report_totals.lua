-- Add a writer's running totals to a stage's counters: the hash gets (new total - last reported total) of each
-- field, so a report repeated after a lost reply adds nothing. KEYS: stage hash, writer hash. ARGV: writer TTL,
-- then (field, total, "i" | "f") triples.
for i = 2, #ARGV, 3 do
  local field, total = ARGV[i], ARGV[i + 1]
  -- "or 0" and pcall: a value someone overwrote with garbage must not fail every report of every stage
  -- (a script error crash-loops them); the writer's last total is then taken as 0, the field restarts from it.
  local delta = tonumber(total) - (tonumber(redis.call('HGET', KEYS[2], field) or '0') or 0)
  if delta ~= 0 then
    local ok
    if ARGV[i + 2] == 'i' then
      ok = redis.pcall('HINCRBY', KEYS[1], field, string.format('%d', delta))
    else
      ok = redis.pcall('HINCRBYFLOAT', KEYS[1], field, string.format('%.17g', delta))
    end
    if type(ok) == 'table' and ok.err then
      redis.call('HSET', KEYS[1], field, total)
      redis.call('HINCRBY', KEYS[1], 'invalid:stats_value', 1)
    end
    redis.call('HSET', KEYS[2], field, total)
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
