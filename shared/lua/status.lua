#!lua flags=no-writes
-- status: read sessions of one event with their queue positions, in one round trip.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. session ids.
-- Returns {queue_length, in_checkout, now_ms, record_1, rank_1, record_2, rank_2, ...}:
--   record_i is the raw JSON record or '' when unknown; rank_i is the 0-based queue rank or -1.
local out = { queue_length(), redis.call('ZCARD', K.checkout), now_ms() }
for i = 4, #ARGV do
  local ticket, rec = lookup(ARGV[i])
  local raw, rank = '', -1
  if ticket then
    raw = redis.call('HGET', K.sessions, ticket)
    if rec[1] == QUEUED then rank = position(ticket) - 1 end
  end
  out[#out + 1] = raw
  out[#out + 1] = rank
end
return out
