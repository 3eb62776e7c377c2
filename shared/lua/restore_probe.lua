#!lua flags=no-writes
-- restore_probe: what recovery compares with the event's watermark on Kafka, and what the relay
-- writes into that watermark, in one consistent read.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix.
-- Returns {run_id, generation, recovery, seq, head, max_deleted_id, recovered_through,
--   outbox_length, last_id, field_1, value_1, ...}: the config's fields and values last (none
--   when the event has no config); generation, recovery and recovered_through are '' when
--   unset; max_deleted_id is the outbox's highest deleted (relayed) record id and last_id the
--   highest it ever held, '0-0' when none.
local cfg = redis.call('HMGET', K.config, 'generation', 'recovery', 'recovered_through')
local max_deleted, last_id = '0-0', '0-0'
if redis.call('EXISTS', K.outbox) == 1 then
  local info = redis.call('XINFO', 'STREAM', K.outbox)
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then max_deleted = info[i + 1] end
    if info[i] == 'last-generated-id' then last_id = info[i + 1] end
  end
end
local out = {
  run_id(), cfg[1] or '', cfg[2] or '', tonumber(redis.call('GET', K.seq) or '0'), head(),
  max_deleted, cfg[3] or '', redis.call('XLEN', K.outbox), last_id,
}
for _, v in ipairs(redis.call('HGETALL', K.config)) do out[#out + 1] = v end
return out
