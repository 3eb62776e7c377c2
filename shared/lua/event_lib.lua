-- Prelude prepended (by shared/scripts.py) to every script that works on one event.
-- KEYS, in this order for every event script (all share the event's hash tag):
--   1 config  2 seq  3 queue  4 sessions  5 users  6 checkout  7 bucket  8 outbox  9 done
-- ARGV[1] event id, ARGV[2] notify channel; script arguments start at ARGV[3].
-- A session record is a JSON array:
--   [1 status, 2 user_id, 3 ticket, 4 queued_ms, 5 expires_ms, 6 admitted_ms,
--    7 checkout_deadline_ms, 8 finished_ms, 9 reason]
-- Status numbers are the contract's SessionStatus values.
local QUEUED, READY, COMPLETED, FAILED, EXPIRED, CANCELLED = 1, 3, 5, 6, 7, 8
local K = {
  config = KEYS[1], seq = KEYS[2], queue = KEYS[3], sessions = KEYS[4], users = KEYS[5],
  checkout = KEYS[6], bucket = KEYS[7], outbox = KEYS[8], done = KEYS[9],
}
local EVENT_ID, NOTIFY = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_record(sid)
  local raw = redis.call('HGET', K.sessions, sid)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function save_record(sid, rec)
  redis.call('HSET', K.sessions, sid, cjson.encode(rec))
end

-- Append a Kafka message to the outbox; `id` is stable so consumers can deduplicate.
local function record_message(topic, id, fields)
  redis.call('XADD', K.outbox, '*', 't', topic, 'k', id, 'p', cjson.encode(fields))
end

-- Give a session its final status and free the user's live place (they may join again).
local function finish(sid, rec, status, reason, now)
  rec[1] = status
  rec[8] = now
  rec[9] = reason
  save_record(sid, rec)
  if redis.call('HGET', K.users, rec[2]) == sid then
    redis.call('HDEL', K.users, rec[2])
  end
  redis.call('ZADD', K.done, now, sid)
end

local function record_left(sid, rec, reason, now)
  record_message('queue.left', sid .. ':left',
    { session_id = sid, user_id = rec[2], event_id = EVENT_ID, reason = reason, left_ms = now })
end

local function notify()
  redis.call('PUBLISH', NOTIFY, EVENT_ID)
end
