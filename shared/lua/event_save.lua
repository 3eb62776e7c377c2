-- event_save: create or update an event's configuration, and record who changed what.
-- KEYS: the event keys (see event_lib.lua), then EXTRA: the event's audit stream.
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 mode ('create' or 'update'),
--   5 audit JSON ({action, by, host, publish}: publish false records without publishing),
--   6 audit retention (ms), 7 most audit entries kept,
--   8 '1' when a closed event may be opened or paused again (else it is refused),
--   9.. field, value pairs.
-- Returns {'OK', n} with n the number of fields that changed (an update that changes nothing
--   writes nothing), {'ERR', 'EXISTS'} when creating an event that exists, {'ERR', 'WTR008'}
--   when updating one that does not, {'ERR', 'CLOSED'} when reopening a closed event without
--   ARGV[8]. A change is recorded, in the same step, in the audit stream (trimmed to the
--   retention and the cap) and in the outbox for `waitroom.audit`; admitters are notified so
--   they apply it at once.
local AUDIT = KEYS[EXTRA]
local mode = ARGV[4]
local exists = redis.call('EXISTS', K.config) == 1
if mode == 'create' and exists then return { 'ERR', 'EXISTS' } end
if mode == 'update' and not exists then return { 'ERR', 'WTR008' } end

-- Bookkeeping fields (which fields an operator set, so the event service's refresh leaves
-- them alone) are written with a change but are not one: not counted, not in the audit.
local BOOKKEEPING = { operator_set = true }
local changes, changed, kept = {}, 0, {}
for i = 9, #ARGV, 2 do
  local name, new = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', K.config, name)
  if BOOKKEEPING[name] then
    kept[name] = new
  elseif old ~= new then
    if name == 'state' and old == 'closed' and ARGV[8] ~= '1' then return { 'ERR', 'CLOSED' } end
    changes[name] = { old or cjson.null, new }
    changed = changed + 1
  end
end
if changed == 0 then return { 'OK', 0 } end

local now = now_ms()
for name, pair in pairs(changes) do
  redis.call('HSET', K.config, name, pair[2])
end
for name, value in pairs(kept) do
  redis.call('HSET', K.config, name, value)
end
if mode == 'create' then redis.call('HSET', K.config, 'created_ms', now) end
redis.call('HSET', K.config, 'updated_ms', now)

local entry = cjson.decode(ARGV[5])
local publish = entry.publish
entry.publish = nil
entry.event_id = EVENT_ID
entry.changes = changes
entry.at_ms = now
local body = cjson.encode(entry)
local oldest = string.format('%d', math.max(0, now - tonumber(ARGV[6])))
local id = redis.call('XADD', AUDIT, 'MINID', '~', oldest, '*', 'a', body)
redis.call('XTRIM', AUDIT, 'MAXLEN', '~', tonumber(ARGV[7]))
if publish then record_message('waitroom.audit', EVENT_ID .. ':audit:' .. id, entry) end
notify()
return { 'OK', changed }
