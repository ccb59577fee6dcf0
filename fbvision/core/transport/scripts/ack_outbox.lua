-- Settle outbox entries for one sink's group and drop what no group needs any more, atomically.
-- KEYS: the outbox stream. ARGV: group, then the entry ids. An entry is still needed by a group while it is
-- pending there (delivered, not settled) or not delivered to it yet (after the group's last-delivered-id).
-- XACKs the ids in ARGV[1]; XDELs those of them no group needs; then XTRIM MINID to the oldest entry any group
-- still needs (its smallest pending id, else the entry after its last-delivered-id). Returns {acked, deleted,
-- trimmed}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local function field(flat, name)
  for k = 1, #flat, 2 do if flat[k] == name then return flat[k + 1] end end
  return nil
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  groups[#groups + 1] = {name = field(g, 'name'), pending = field(g, 'pending'),
                         last = field(g, 'last-delivered-id')}
end
local function needed(id)
  for _, g in ipairs(groups) do
    if less(g.last, id) then return true end
    if g.pending > 0 and #redis.call('XPENDING', KEYS[1], g.name, id, id, 1) > 0 then return true end
  end
  return false
end
local gone = {}
for i = 2, #ARGV do
  if not needed(ARGV[i]) then gone[#gone + 1] = ARGV[i] end
end
local deleted = 0
if #gone > 0 then deleted = redis.call('XDEL', KEYS[1], unpack(gone)) end
-- The oldest entry still needed by any group; nothing older is (a new sink's group starts at 0: it needs all).
local oldest = nil
for _, g in ipairs(groups) do
  local need
  if g.pending > 0 then
    need = redis.call('XPENDING', KEYS[1], g.name)[2]
  else
    local ms, seq = parse(g.last)
    need = string.format('%d-%d', ms, seq + 1)
  end
  if oldest == nil or less(need, oldest) then oldest = need end
end
local trimmed = 0
if oldest ~= nil then trimmed = redis.call('XTRIM', KEYS[1], 'MINID', oldest) end
return {acked, deleted, trimmed}
