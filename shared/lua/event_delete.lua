-- event_delete: forget an event: its configuration, queue, sessions, outbox, audit and lock.
-- KEYS: the event keys (see event_lib.lua), then the audit stream and the admitter lock.
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 '1' to delete even while users
--   wait or hold checkout slots. Outbox messages not yet relayed are dropped either way (the
--   caller shows how many): an event with Kafka turned off would otherwise never go.
-- Returns {'OK', waiting, in_checkout, outbox} (what was dropped), {'BUSY', waiting,
--   in_checkout, outbox} when refused, or {'ERR', 'WTR006'} when there is no such event.
-- The listing set `wr:events` is in another hash slot; the caller removes the id from it.
if redis.call('EXISTS', K.config) == 0 then return { 'ERR', 'WTR006' } end
local waiting = queue_length()
local in_checkout = redis.call('ZCARD', K.checkout)
local outbox = redis.call('XLEN', K.outbox)
if ARGV[4] ~= '1' and (waiting > 0 or in_checkout > 0) then
  return { 'BUSY', waiting, in_checkout, outbox }
end
for _, key in ipairs(KEYS) do
  redis.call('DEL', key)
end
-- Streams of this event's users get their final update from the API's next pass.
notify()
return { 'OK', waiting, in_checkout, outbox }
