-- join: put a user in an event's queue, or give back the live session they already hold.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 user id, 5 a fresh random nonce.
-- Returns {'ERR', code} for WTR006 (no event), WTR009 (closed), WTR005 (queue full), WTR011
--   (recovering: Redis is not yet checked against Kafka, see `fenced`); else
--   {'OK', session_id, position, queue_length, queued_ms, expires_ms, status, created(0|1)}.
--   position is 0 for a session already admitted to checkout.
local user_id, nonce = ARGV[4], ARGV[5]
local cfg = redis.call('HMGET', K.config, 'state', 'max_concurrent', 'session_ttl_ms', 'max_queue',
  'generation', 'recovery')
if not cfg[1] then return { 'ERR', 'WTR006' } end
if cfg[1] == 'closed' then return { 'ERR', 'WTR009' } end
if fenced(cfg[5], cfg[6]) then return { 'ERR', 'WTR011' } end
local now = now_ms()

local existing = tonumber(redis.call('HGET', K.users, user_id))
if existing then
  local rec = load_record(existing)
  if rec and rec[1] == READY then
    return { 'OK', session_id(existing, rec), 0, queue_length(), rec[4], rec[5], READY, 0 }
  elseif rec and rec[1] == QUEUED then
    if now < rec[5] then
      return { 'OK', session_id(existing, rec), position(existing), queue_length(), rec[4],
        rec[5], QUEUED, 0 }
    end
    -- Their place ran out: close it properly, then give them a new one at the back.
    make_hole(existing)
    finish_left(existing, rec, EXPIRED, 'queue_expired', now)
  end
  redis.call('HDEL', K.users, user_id)
end

local length = queue_length()
local max_queue = tonumber(cfg[4]) or 0
if max_queue > 0 and length >= max_queue then return { 'ERR', 'WTR005' } end

local ticket = redis.call('INCR', K.seq)
local expires = now + tonumber(cfg[3])
local rec = { QUEUED, user_id, nonce, now, expires }
save_record(ticket, rec)
redis.call('HSET', K.users, user_id, ticket)
length = length + 1
local sid = session_id(ticket, rec)
-- Only what reached Kafka can be rebuilt if Redis loses its last second, so the join is relayed
-- at once: the first record of an idle outbox wakes the relay (a relay that finds more records
-- after a batch goes on by itself), without an admission step: the payload is the event id and
-- a newline (keys.RELAY_ONLY_SUFFIX), which no event id holds.
local outbox_idle = redis.call('XLEN', K.outbox) == 0
record_message('queue.joined', sid .. ':joined',
  { session_id = sid, user_id = user_id, event_id = EVENT_ID, position = length, joined_ms = now })
-- Wake the admitter's admission only when it could admit someone now.
if cfg[1] == 'open' and redis.call('ZCARD', K.checkout) < tonumber(cfg[2]) then
  notify()
elseif outbox_idle then
  redis.call('PUBLISH', NOTIFY, EVENT_ID .. '\n')
end
-- Tickets only grow, so the newcomer is last: position = queue length.
return { 'OK', sid, length, length, now, expires, QUEUED, 1 }
