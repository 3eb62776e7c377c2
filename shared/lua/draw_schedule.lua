-- draw_schedule: give an event an opening time (a pre-queue and a draw), move it, or remove it.
-- The seed's commitment is published (waitroom.draws, kind `committed`) in the same step, so
-- it is out before anyone can be in the pre-queue; a moved opening keeps the first seed.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 opening (ms; 0 removes it),
--   5 a fresh seed (hex; kept only if the event has none yet), 6 its commitment (the SHA-256
--   of the seed's bytes, hex).
-- Returns {'OK', commitment} ('' once removed), or {'ERR', why}: 'WTR008' no such event;
--   'CLOSED' the opening has passed (the pre-queue is closed: the draw is due or done);
--   'STARTED' users joined the queue without a pre-queue (a draw would reorder them);
--   'ENTRANTS' removing the opening while users wait in the pre-queue.
local opens = tonumber(ARGV[4])
if redis.call('EXISTS', K.config) == 0 then return { 'ERR', 'WTR008' } end
local draw = draw_state()
local now = now_ms()
if draw.n ~= nil or (draw.opens > 0 and now >= draw.opens) then return { 'ERR', 'CLOSED' } end
local issued = tonumber(redis.call('GET', K.seq) or '0')
if draw.opens == 0 and issued > 0 then return { 'ERR', 'STARTED' } end
if opens == 0 then
  if issued > 0 then return { 'ERR', 'ENTRANTS' } end
  redis.call('HDEL', K.config, 'opens_ms')
  redis.call('DEL', K.draw)
  notify()
  return { 'OK', '' }
end
redis.call('HSET', K.config, 'opens_ms', opens)
local commitment = redis.call('HGET', K.draw, 'commitment')
if not commitment then
  commitment = ARGV[6]
  redis.call('HSET', K.draw, 'seed', ARGV[5], 'commitment', commitment)
end
record_message('waitroom.draws', EVENT_ID .. ':draw:committed:' .. opens,
  { event_id = EVENT_ID, kind = 'committed', commitment = commitment, opens_ms = opens,
    recorded_ms = now })
notify()
return { 'OK', commitment }
