-- finish: record a checkout outcome: free the slot, set the final status, revoke the token.
-- Idempotent: an outcome for a session that already finished changes nothing.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id, 4 final status (5 COMPLETED, 6 FAILED,
--   7 EXPIRED), 5 reason.
-- Returns {'DONE', 3} when the slot was freed now; {'ALREADY', status} when it had finished;
--   {'NOT_ADMITTED', 1} for a session still queued (nothing changes); {'UNKNOWN'} otherwise.
local sid, status, reason = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local rec = load_record(sid)
if not rec then return { 'UNKNOWN' } end
if rec[1] == READY then
  redis.call('ZREM', K.checkout, sid)
  finish(sid, rec, status, reason, now_ms())
  notify()
  return { 'DONE', READY }
elseif rec[1] == QUEUED then
  return { 'NOT_ADMITTED', QUEUED }
end
return { 'ALREADY', rec[1] }
