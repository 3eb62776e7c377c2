-- restore_begin: start rebuilding an event from Kafka. Marks it recovering (joins answer WTR011,
-- admission waits) and moves the ticket counter past every ticket recovery may restore, before
-- anything else, so no join can ever take one of them.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 why (kept in `recovery`),
--   5 lowest ticket counter after this call, 6.. config field, value pairs: written only when
--   the event has no config (Redis lost it), as the last watermark on Kafka recorded it.
-- Returns {created (1 when the config was rebuilt), seq_before, seq_after}. seq_before is the
--   counter before any recovery moved it: while another recovery of the event is under way (or
--   died half-way) the counter holds that recovery's margin, and joins are refused until it is
--   done, so the counter it found (`recovery_from`) is still the tickets really handed out.
--   Otherwise a second admitter rebuilding beside the first took the margin for lost joins.
local created = 0
if redis.call('EXISTS', K.config) == 0 then
  if #ARGV < 7 then return redis.error_reply('restore_begin: the event has no config to rebuild') end
  for i = 6, #ARGV, 2 do redis.call('HSET', K.config, ARGV[i], ARGV[i + 1]) end
  created = 1
end
local before = tonumber(redis.call('GET', K.seq) or '0')
local from = tonumber(redis.call('HGET', K.config, 'recovery_from') or '')
if redis.call('HEXISTS', K.config, 'recovery') == 1 and from then
  before = math.min(before, from)
else
  redis.call('HSET', K.config, 'recovery_from', before)
end
redis.call('HSET', K.config, 'recovery', ARGV[4])
local seq = tonumber(redis.call('GET', K.seq) or '0')
local after = math.max(seq, tonumber(ARGV[5]))
if after > seq then redis.call('SET', K.seq, after) end
return { created, before, after }
