#!lua flags=no-writes
-- queue_view: the shape of one event's queue, so a caller can place many waiting tickets itself.
-- A waiting session at place p (head <= p <= seq, not a hole; p = its ticket unless a draw
-- placed it) is at position p - head + 1 - (holes <= p), exactly what `status` reports, once
-- the draw (if any) is done; holes are few, so this is one small read per event.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix.
-- Returns {head, seq, queue_length, in_checkout, now_ms, opens_ms, rate, drawing, idle_ms,
--   hole_1, ..., hole_n}: rate is text (admissions per second to estimate waits with); drawing
--   is 1 while a scheduled draw is not done (positions must then be read with `status`);
--   idle_ms the event's idle timeout (0: off); the holes are places at or past the head,
--   ascending.
local cfg = redis.call('HMGET', K.config, 'rate', 'idle_timeout_ms')
local h = head()
local draw = draw_state()
local out = {
  h, tonumber(redis.call('GET', K.seq) or '0'), queue_length(), redis.call('ZCARD', K.checkout),
  now_ms(), draw.opens, estimate_rate(cfg[1]), draw.done and 0 or 1, tonumber(cfg[2]) or 0,
}
for _, t in ipairs(redis.call('ZRANGEBYSCORE', K.holes, h, '+inf')) do out[#out + 1] = t end
return out
