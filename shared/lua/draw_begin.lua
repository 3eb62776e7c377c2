-- draw_begin: at or after a scheduled opening, close the pre-queue (if no join did yet) and say
-- how far the draw is, so an admitter can start it or finish what a dead one started.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix.
-- Returns {'NONE'} no scheduled opening; {'EARLY', opens_ms} before it; {'DONE', n} drawn;
--   {'DRAW', n, written, seed}: n entrants (tickets 1..n), written the places written so far.
local draw = draw_state()
if draw.opens == 0 then return { 'NONE' } end
if draw.done then return { 'DONE', draw.n } end
local now = now_ms()
if now < draw.opens then return { 'EARLY', draw.opens } end
close_prequeue(now)
local r = redis.call('HMGET', K.draw, 'written', 'seed')
return { 'DRAW', draw.n, tonumber(r[1]) or 0, r[2] }
