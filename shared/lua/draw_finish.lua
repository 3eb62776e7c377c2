-- draw_finish: once the permutation is written, place the pre-queue's leavers (their places
-- become holes, a bounded number per call) and then mark the draw done, reveal the seed
-- (waitroom.draws, kind `revealed`) and wake admitters and stream watchers: positions appear.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 most leavers to place in this call.
-- Returns {'WRITING', written} while the permutation is not written; {'MORE', leavers left};
--   {'DONE', n} when the draw is done (by this call or an earlier one: revealed once).
local r = redis.call('HMGET', K.draw, 'n', 'written', 'drawn_ms', 'seed', 'commitment')
local n, written = tonumber(r[1]), tonumber(r[2]) or 0
if r[3] then return { 'DONE', n } end
if not n or written < n then return { 'WRITING', written } end
local popped = redis.call('ZPOPMIN', K.draw_left, tonumber(ARGV[4]))
for i = 1, #popped, 2 do
  local place = read_u32(K.draw_rank, tonumber(popped[i]))
  redis.call('ZADD', K.holes, place, place)
end
local left = redis.call('ZCARD', K.draw_left)
if left > 0 then return { 'MORE', left } end
local now = now_ms()
redis.call('HSET', K.draw, 'drawn_ms', now)
record_message('waitroom.draws', EVENT_ID .. ':draw:revealed',
  { event_id = EVENT_ID, kind = 'revealed', commitment = r[5], seed = r[4], entrants = n,
    opens_ms = draw_state().opens, drawn_ms = now })
notify()
return { 'DONE', n }
