-- finish: record checkout outcomes of one event, in order: for each session free the slot, set
-- the final status, revoke the token. One call takes a whole batch of the event's outcomes, so
-- the consumer sends one command per event per poll rather than one per message (redis-py
-- packing one EVALSHA per message was 29% of the consumer's samples).
-- Idempotent: an outcome for a session that already finished changes nothing.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, then three lists of one item per
--   outcome, each packed as (the items concatenated, their byte lengths space-separated):
--   4, 5 session ids; 6, 7 final statuses (5 COMPLETED, 6 FAILED, 7 EXPIRED); 8, 9 reasons.
--   Packed rather than one argument each: redis-py took 3.4 ms to pack the 1,500 arguments of
--   500 outcomes, 0.17 ms to pack these six.
-- Returns one reply per outcome handled, in order: {'DONE', 3} when the slot was freed now;
--   {'ALREADY', status} when it had finished; {'NOT_ADMITTED', 1} for a session still queued
--   (nothing changes); {'UNKNOWN'} otherwise. If an outcome raises an error, its reply is
--   {'ERROR', message} and it is the last: the outcomes after it are not run (their order must
--   hold, so the caller runs them again once it has dealt with the error).
local function unpack_list(data, lengths)
  local items, at = {}, 1
  for n in string.gmatch(lengths, '%d+') do
    n = tonumber(n)
    items[#items + 1] = string.sub(data, at, at + n - 1)
    at = at + n
  end
  return items
end

local now = now_ms()
local freed = false

local function finish_one(sid, status, reason)
  local ticket, rec = lookup(sid)
  if not ticket then return { 'UNKNOWN' } end
  if rec[1] == READY then
    redis.call('ZREM', K.checkout, ticket)
    finish(ticket, rec, status, reason, now)
    freed = true
    return { 'DONE', READY }
  elseif rec[1] == QUEUED then
    return { 'NOT_ADMITTED', QUEUED }
  end
  return { 'ALREADY', rec[1] }
end

local sids = unpack_list(ARGV[4], ARGV[5])
local statuses = unpack_list(ARGV[6], ARGV[7])
local reasons = unpack_list(ARGV[8], ARGV[9])
local replies = {}
for i = 1, #sids do
  local ok, reply = pcall(finish_one, sids[i], tonumber(statuses[i]), reasons[i])
  if not ok then
    -- redis.call raises a table ({err = ...}); Lua's own errors are strings.
    local text = type(reply) == 'table' and reply.err or tostring(reply)
    replies[#replies + 1] = { 'ERROR', text }
    break
  end
  replies[#replies + 1] = reply
end
-- One wake-up for the admitter however many slots were freed.
if freed then notify() end
return replies
