-- purge: forget sessions that finished longer ago than the retention period.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 retention (ms), 4 most sessions to purge.
-- Returns the number of session records removed.
local cutoff = now_ms() - tonumber(ARGV[3])
local old = redis.call('ZRANGEBYSCORE', K.done, '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[4]))
for _, sid in ipairs(old) do
  redis.call('HDEL', K.sessions, sid)
  redis.call('ZREM', K.done, sid)
end
return #old
