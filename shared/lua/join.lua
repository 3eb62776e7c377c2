-- join: put a user in an event's queue, or give back the live session they already hold.
-- KEYS: the event keys (see event_lib.lua), then EXTRA: the join counter of ARGV[6]'s address.
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 user id, 5 a fresh random nonce,
--   6 the caller's IP address ('' when unknown: no per-address limit applies to it).
-- Returns {'ERR', code} for WTR006 (no event), WTR009 (closed), WTR005 (queue full), WTR011
--   (recovering: Redis is not yet checked against Kafka, see `fenced`), and
--   {'ERR', 'WTR010', limit} over a per-address limit ('joins_per_minute' or 'live_sessions'),
--   having written nothing; else
--   {'OK', session_id, position, queue_length, queued_ms, expires_ms, status, created(0|1),
--    opens_ms, rate}: position is 0 for a session already admitted to checkout and for a
--   pre-queue session until the draw; opens_ms the scheduled opening (0: none); rate the
--   admissions per second to estimate waits with (text).
local user_id, nonce, ip = ARGV[4], ARGV[5], ARGV[6] or ''
local cfg = redis.call('HMGET', K.config, 'state', 'max_concurrent', 'session_ttl_ms', 'max_queue',
  'rate', 'ip_joins_per_minute', 'ip_live_sessions', 'generation', 'recovery')
if not cfg[1] then return { 'ERR', 'WTR006' } end
if cfg[1] == 'closed' then return { 'ERR', 'WTR009' } end
if fenced(cfg[8], cfg[9]) then return { 'ERR', 'WTR011' } end
local now = now_ms()
close_prequeue(now)
local draw = draw_state()

-- Joins per address per minute: a counter that starts its own minute and expires with it, so
-- a million addresses leave a million short-lived keys, never a growing structure.
local per_minute, ip_key = tonumber(cfg[6]) or 0, KEYS[EXTRA]
local limit_joins = ip ~= '' and per_minute > 0
if limit_joins and (tonumber(redis.call('GET', ip_key)) or 0) >= per_minute then
  return { 'ERR', 'WTR010', 'joins_per_minute' }
end
local function count_join()
  if limit_joins and redis.call('INCR', ip_key) == 1 then redis.call('PEXPIRE', ip_key, 60000) end
end

local existing = tonumber(redis.call('HGET', K.users, user_id))
if existing then
  local rec = load_record(existing)
  if rec and rec[1] == READY then
    count_join()
    return { 'OK', session_id(existing, rec), 0, queue_length(), rec[4], rec[5], READY, 0,
      draw.opens, estimate_rate(cfg[5]) }
  elseif rec and rec[1] == QUEUED then
    if now < rec[5] then
      count_join()
      return { 'OK', session_id(existing, rec), position(existing), queue_length(), rec[4],
        rec[5], QUEUED, 0, draw.opens, estimate_rate(cfg[5]) }
    end
    -- Their place ran out: close it properly, then give them a new one at the back.
    make_hole(existing)
    finish_left(existing, rec, EXPIRED, 'queue_expired', now)
  end
  redis.call('HDEL', K.users, user_id)
end

local per_address = tonumber(cfg[7]) or 0
local limit_live = ip ~= '' and per_address > 0
if limit_live and (tonumber(redis.call('HGET', K.ip_live, ip)) or 0) >= per_address then
  return { 'ERR', 'WTR010', 'live_sessions' }
end
local length = queue_length()
local max_queue = tonumber(cfg[4]) or 0
if max_queue > 0 and length >= max_queue then return { 'ERR', 'WTR005' } end

local ticket = redis.call('INCR', K.seq)
-- A pre-queue place lasts from the opening, not from the join.
local expires = math.max(now, draw.opens) + tonumber(cfg[3])
local rec = { QUEUED, user_id, nonce, now, expires }
if limit_live then
  rec = { QUEUED, user_id, nonce, now, expires, 0, 0, 0, '', ip }
  redis.call('HINCRBY', K.ip_live, ip, 1)
end
count_join()
save_record(ticket, rec)
redis.call('HSET', K.users, user_id, ticket)
length = length + 1
-- Tickets only grow, so the newcomer is last (position = queue length), unless it waits in the
-- pre-queue for the draw (position 0).
local place = length
if not place_of(ticket) then place = 0 end
local sid = session_id(ticket, rec)
-- Only what reached Kafka can be rebuilt if Redis loses its last second, so the join is relayed
-- at once: the first record of an idle outbox wakes the relay (a relay that finds more records
-- after a batch goes on by itself), without an admission step: the payload is the event id and
-- a newline (keys.RELAY_ONLY_SUFFIX), which no event id holds.
local outbox_idle = redis.call('XLEN', K.outbox) == 0
record_message('queue.joined', sid .. ':joined',
  { session_id = sid, user_id = user_id, event_id = EVENT_ID, position = place, joined_ms = now })
-- Wake the admitter's admission only when it could admit someone now.
if cfg[1] == 'open' and draw.done and redis.call('ZCARD', K.checkout) < tonumber(cfg[2]) then
  notify()
elseif outbox_idle then
  redis.call('PUBLISH', NOTIFY, EVENT_ID .. '\n')
end
return { 'OK', sid, place, length, now, expires, QUEUED, 1, draw.opens, estimate_rate(cfg[5]) }
