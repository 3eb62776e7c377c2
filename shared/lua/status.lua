#!lua flags=no-writes
-- status: read sessions of one event with their queue positions, in one round trip.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. session ids.
-- Returns {queue_length, in_checkout, now_ms, record_1, rank_1, record_2, rank_2, ...}:
--   record_i is the raw JSON record or '' when unknown; rank_i is the 0-based queue rank or -1.
local h = head()
local out = { queue_length(), redis.call('ZCARD', K.checkout), now_ms() }
for i = 4, #ARGV do
  local ticket, rec, raw = lookup(ARGV[i])
  local rank = -1
  if ticket and rec[1] == QUEUED then rank = position(ticket, h) - 1 end
  out[#out + 1] = raw or ''
  out[#out + 1] = rank
end
return out
