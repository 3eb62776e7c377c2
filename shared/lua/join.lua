-- join: put a user in an event's queue, or give back the live session they already hold.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 user id, 4 a fresh session id (used only if needed).
-- Returns {'ERR', code} for WTR006 (no event), WTR009 (closed), WTR005 (queue full); else
--   {'OK', session_id, position, queue_length, queued_ms, expires_ms, status, created(0|1)}.
--   position is 0 for a session already admitted to checkout.
local user_id, new_sid = ARGV[3], ARGV[4]
local cfg = redis.call('HMGET', K.config, 'state', 'max_concurrent', 'session_ttl_ms', 'max_queue')
if not cfg[1] then return { 'ERR', 'WTR006' } end
if cfg[1] == 'closed' then return { 'ERR', 'WTR009' } end
local now = now_ms()

local existing = redis.call('HGET', K.users, user_id)
if existing then
  local rec = load_record(existing)
  if rec and rec[1] == READY then
    return { 'OK', existing, 0, redis.call('ZCARD', K.queue), rec[4], rec[5], READY, 0 }
  elseif rec and rec[1] == QUEUED then
    local rank = redis.call('ZRANK', K.queue, existing)
    if rank and now < rec[5] then
      return { 'OK', existing, rank + 1, redis.call('ZCARD', K.queue), rec[4], rec[5], QUEUED, 0 }
    end
    -- Their place ran out: close it properly, then give them a new one at the back.
    redis.call('ZREM', K.queue, existing)
    finish(existing, rec, EXPIRED, 'queue_expired', now)
    record_left(existing, rec, 'queue_expired', now)
  end
  redis.call('HDEL', K.users, user_id)
end

local queue_length = redis.call('ZCARD', K.queue)
local max_queue = tonumber(cfg[4]) or 0
if max_queue > 0 and queue_length >= max_queue then return { 'ERR', 'WTR005' } end

local ticket = redis.call('INCR', K.seq)
local expires = now + tonumber(cfg[3])
save_record(new_sid, { QUEUED, user_id, ticket, now, expires, 0, 0, 0, '' })
redis.call('HSET', K.users, user_id, new_sid)
redis.call('ZADD', K.queue, ticket, new_sid)
queue_length = queue_length + 1
record_message('queue.joined', new_sid .. ':joined',
  { session_id = new_sid, user_id = user_id, event_id = EVENT_ID, position = queue_length,
    joined_ms = now })
-- Wake the admitter only when it could admit someone now; otherwise its sweep suffices.
if cfg[1] == 'open' and redis.call('ZCARD', K.checkout) < tonumber(cfg[2]) then notify() end
-- Tickets only grow, so the newcomer is last: position = queue length.
return { 'OK', new_sid, queue_length, queue_length, now, expires, QUEUED, 1 }
