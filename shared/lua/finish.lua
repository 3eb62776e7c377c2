-- finish: record a checkout outcome: free the slot, set the final status, revoke the token.
-- Idempotent: an outcome for a session that already finished changes nothing.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 session id, 5 final status
--   (5 COMPLETED, 6 FAILED, 7 EXPIRED), 6 reason.
-- Returns {'DONE', 3} when the slot was freed now; {'ALREADY', status} when it had finished;
--   {'NOT_ADMITTED', 1} for a session still queued (nothing changes); {'UNKNOWN'} otherwise.
local ticket, rec = lookup(ARGV[4])
if not ticket then return { 'UNKNOWN' } end
if rec[1] == READY then
  redis.call('ZREM', K.checkout, ticket)
  finish(ticket, rec, tonumber(ARGV[5]), ARGV[6], now_ms())
  notify()
  return { 'DONE', READY }
elseif rec[1] == QUEUED then
  return { 'NOT_ADMITTED', QUEUED }
end
return { 'ALREADY', rec[1] }
