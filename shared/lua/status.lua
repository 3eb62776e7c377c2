#!lua flags=no-writes
-- status: read sessions of one event with their queue positions, in one round trip.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. session ids.
-- Returns {queue_length, in_checkout, now_ms, opens_ms, rate, drawing,
--          record_1, rank_1, place_1, touch_1, record_2, ...}:
--   opens_ms is the scheduled opening (0: none), rate the admissions per second to estimate
--   waits with (text), drawing 1 while a scheduled event's draw is not done;
--   record_i is the raw JSON record or '' when unknown; rank_i is the 0-based queue rank or -1
--   (not waiting, or in the pre-queue before the draw); place_i the session's place in the
--   queue (0: not waiting or not drawn yet); touch_i 1 when the event has an idle timeout and
--   this queued session's presence was last recorded a quarter of it ago or more (the caller
--   then records it with presence.lua: one write per quarter timeout, not one per poll).
-- {'ERR', 'WTR011'} when sessions are asked for while the event is fenced (`fenced`: Redis
-- restarted or failed over and is not yet checked against Kafka, or is being rebuilt): what it
-- holds may be behind what users were already told (a READY session read as QUEUED), so no
-- session is read from it meanwhile. The event's own figures (no session ids) are still given.
local cfg = redis.call('HMGET', K.config, 'rate', 'idle_timeout_ms', 'generation', 'recovery')
if #ARGV >= 4 and fenced(cfg[3], cfg[4]) then return { 'ERR', 'WTR011' } end
local idle = tonumber(cfg[2]) or 0
local h = head()
local now = now_ms()
local draw = draw_state()
local out = {
  queue_length(), redis.call('ZCARD', K.checkout), now, draw.opens, estimate_rate(cfg[1]),
  draw.done and 0 or 1,
}
for i = 4, #ARGV do
  local ticket, rec, raw = lookup(ARGV[i])
  local rank, place, touch = -1, 0, 0
  if ticket and rec[1] == QUEUED then
    place = place_of(ticket) or 0
    if place > 0 then rank = position(ticket, h) - 1 end
    if idle > 0 and now - last_seen_ms(ticket) >= idle / 4 then touch = 1 end
  end
  out[#out + 1] = raw or ''
  out[#out + 1] = rank
  out[#out + 1] = place
  out[#out + 1] = touch
end
return out
