-- draw_write: write one chunk of the draw's permutation, in order, once.
-- Entries first..first+k-1 of both arrays: the tickets at places first.. (draw_order) and the
-- places of tickets first.. (draw_rank), 4-byte big-endian each. Two SETRANGEs of at most a
-- few hundred KB: the call stays short whatever the number of entrants. (Creating both strings
-- at their final size in the first call saved Redis's growth slack, +9 B per entrant at
-- 100,000 entrants and +2 B at 1,000,000, but made that call take 167 ms at 1,000,000.)
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 first (1-based), 5 tickets at
--   those places (packed), 6 places of those tickets (packed, the same length).
-- Returns {written}: entries written so far. A chunk that does not start where the written part
--   ends (another admitter wrote it, or the draw is done) changes nothing.
local first, order, rank = tonumber(ARGV[4]), ARGV[5], ARGV[6]
if #order ~= #rank or #order % 4 ~= 0 then
  return redis.error_reply('draw_write: the two chunks must be whole 4-byte entries, equally many')
end
local r = redis.call('HMGET', K.draw, 'n', 'written', 'drawn_ms')
local n, written = tonumber(r[1]), tonumber(r[2]) or 0
local k = #order / 4
if not n or r[3] or written ~= first - 1 or written + k > n then return { written } end
redis.call('SETRANGE', K.draw_order, 4 * written, order)
redis.call('SETRANGE', K.draw_rank, 4 * written, rank)
written = written + k
redis.call('HSET', K.draw, 'written', written)
return { written }
