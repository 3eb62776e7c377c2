-- event_sync: apply what TicketBottle's event service says to an event configured from it.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 the state the service implies
--   (open, paused or closed), 5.. field, value pairs recording the service's answer.
-- Returns {'OK', changed (1 when the state changed)}, {'ERR', 'GONE'} when the event has no
--   configuration, or {'ERR', 'NOT_OURS'} when it was not configured from the service.
-- The state is left alone when an operator set it (`operator_set` lists the fields an
-- operator changed with `waitroom event update`, pause, resume or close): the operator wins.
-- Checked here, in one step with the write, so an operator's change racing a refresh is kept.
local cfg = redis.call('HMGET', K.config, 'state', 'source', 'operator_set')
if not cfg[1] then return { 'ERR', 'GONE' } end
if cfg[2] ~= 'event-service' then return { 'ERR', 'NOT_OURS' } end
for i = 5, #ARGV, 2 do
  redis.call('HSET', K.config, ARGV[i], ARGV[i + 1])
end
local operator_set = ',' .. (cfg[3] or '') .. ','
local changed = 0
if cfg[1] ~= ARGV[4] and not string.find(operator_set, ',state,', 1, true) then
  redis.call('HSET', K.config, 'state', ARGV[4], 'updated_ms', now_ms())
  notify()
  changed = 1
end
return { 'OK', changed }
