-- leave: a user leaves the queue or gives up their checkout slot (revoking their token).
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id.
-- Returns {'ERR', 'WTR001'} for an unknown session; {'LEFT', previous_status} when it left now;
--   {'EXPIRED', 7} when its queue lifetime had already run out (it is closed as EXPIRED);
--   {'ALREADY', status} when it had already finished (leaving twice is harmless).
local sid = ARGV[3]
local rec = load_record(sid)
if not rec then return { 'ERR', 'WTR001' } end
local now = now_ms()
local previous = rec[1]
if previous == QUEUED then
  redis.call('ZREM', K.queue, sid)
  if now >= rec[5] then
    finish(sid, rec, EXPIRED, 'queue_expired', now)
    record_left(sid, rec, 'queue_expired', now)
    notify()
    return { 'EXPIRED', EXPIRED }
  end
elseif previous == READY then
  redis.call('ZREM', K.checkout, sid)
else
  return { 'ALREADY', previous }
end
finish(sid, rec, CANCELLED, 'user_left', now)
record_left(sid, rec, 'user_left', now)
notify()
return { 'LEFT', previous }
