#!lua flags=no-writes
-- queue_view: the shape of one event's queue, so a caller can place many waiting tickets itself.
-- A waiting ticket t (head <= t <= seq, not a hole) is at position t - head + 1 - (holes <= t),
-- exactly what `status` reports; holes are few, so this is one small read per event.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix.
-- Returns {head, seq, queue_length, in_checkout, now_ms, hole_1, ..., hole_n}: the holes at or
--   past the head, ascending.
local h = head()
local out = {
  h, tonumber(redis.call('GET', K.seq) or '0'), queue_length(), redis.call('ZCARD', K.checkout),
  now_ms(),
}
for _, t in ipairs(redis.call('ZRANGEBYSCORE', K.holes, h, '+inf')) do out[#out + 1] = t end
return out
