-- purge: forget sessions that finished longer ago than the retention period.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 retention (ms), 5 most to purge.
-- Returns the number of session records removed.
local cutoff = now_ms() - tonumber(ARGV[4])
local old = redis.call('ZRANGEBYSCORE', K.done, '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[5]))
for _, ticket in ipairs(old) do
  redis.call('HDEL', K.sessions, ticket)
  redis.call('ZREM', K.done, ticket)
end
return #old
