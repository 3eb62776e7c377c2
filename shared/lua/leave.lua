-- leave: a user leaves the queue or gives up their checkout slot (revoking their token).
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 session id.
-- Returns {'ERR', 'WTR001'} for an unknown session; {'LEFT', previous_status} when it left now;
--   {'EXPIRED', 7} when its queue lifetime had already run out (it is closed as EXPIRED);
--   {'ALREADY', status} when it had already finished (leaving twice is harmless).
local ticket, rec = lookup(ARGV[4])
if not ticket then return { 'ERR', 'WTR001' } end
local now = now_ms()
local previous = rec[1]
if previous == QUEUED then
  make_hole(ticket)
  if now >= rec[5] then
    finish_left(ticket, rec, EXPIRED, 'queue_expired', now)
    notify()
    return { 'EXPIRED', EXPIRED }
  end
elseif previous == READY then
  redis.call('ZREM', K.checkout, ticket)
else
  return { 'ALREADY', previous }
end
finish_left(ticket, rec, CANCELLED, 'user_left', now)
notify()
return { 'LEFT', previous }
