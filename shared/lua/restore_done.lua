-- restore_done: finish a recovery (or a check that found nothing lost): move the queue head to
-- at least `head`, forget holes behind it, record which relayed outbox record Redis is now
-- known to hold everything up to, stamp this server's run id as the event's generation and
-- clear `recovery` (and the counter it started from), so joins and admission go on; wakes the admitter.
-- A recovery that skipped tickets lists their range in the config's `skipped` ("a-b,c-d") in
-- the same step, so no crash can leave the event stamped without it (a later recovery would
-- count those tickets as lost joins again) or list it twice.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 lowest head, 5 recovered-through
--   outbox record id ('' to keep it), 6 skipped ticket range "low-high" ('' for none).
-- Returns {run_id, head}; {'NOEVENT'} when the event has no config.
if redis.call('EXISTS', K.config) == 0 then return { 'NOEVENT' } end
local h = math.max(head(), tonumber(ARGV[4]))
redis.call('SET', K.head, h)
redis.call('ZREMRANGEBYSCORE', K.holes, '-inf', '(' .. h)
if ARGV[5] ~= '' then redis.call('HSET', K.config, 'recovered_through', ARGV[5]) end
if ARGV[6] ~= '' then
  local listed = redis.call('HGET', K.config, 'skipped') or ''
  local known = false
  for part in string.gmatch(listed, '[^,]+') do known = known or part == ARGV[6] end
  if not known then
    redis.call('HSET', K.config, 'skipped', listed == '' and ARGV[6] or (listed .. ',' .. ARGV[6]))
  end
end
local id = run_id()
redis.call('HSET', K.config, 'generation', id)
redis.call('HDEL', K.config, 'recovery', 'recovery_from')
notify()
return { id, h }
