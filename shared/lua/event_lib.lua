-- Prelude prepended (by shared/scripts.py) to every script that works on one event.
-- KEYS, in this order for every event script (all share the event's hash tag):
--   1 config  2 seq  3 head  4 holes  5 sessions  6 users  7 checkout  8 bucket  9 outbox  10 done
-- ARGV[1] event id, ARGV[2] notify channel, ARGV[3] base64url(event id), the session id suffix;
-- script arguments start at ARGV[4].
--
-- The queue is the ticket range [head, seq] minus `holes` (tickets that left while waiting):
-- no per-user queue entry, and a position is t - head + 1 - ZCOUNT(holes, head, t).
-- Sessions are keyed by ticket; a session id is `<nonce>.<ticket>.<suffix>`.
-- A session record is a JSON array:
--   [1 status, 2 user_id, 3 nonce, 4 queued_ms, 5 expires_ms, 6 admitted_ms,
--    7 checkout_deadline_ms, 8 finished_ms, 9 reason]   (6..9 absent while queued)
-- Status numbers are the contract's SessionStatus values.
local QUEUED, READY, COMPLETED, FAILED, EXPIRED, CANCELLED = 1, 3, 5, 6, 7, 8
local K = {
  config = KEYS[1], seq = KEYS[2], head = KEYS[3], holes = KEYS[4], sessions = KEYS[5],
  users = KEYS[6], checkout = KEYS[7], bucket = KEYS[8], outbox = KEYS[9], done = KEYS[10],
}
local EVENT_ID, NOTIFY, SUFFIX = ARGV[1], ARGV[2], ARGV[3]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_record(ticket)
  local raw = redis.call('HGET', K.sessions, ticket)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function save_record(ticket, rec)
  redis.call('HSET', K.sessions, ticket, cjson.encode(rec))
end

local function session_id(ticket, rec)
  return rec[3] .. '.' .. ticket .. '.' .. SUFFIX
end

-- The ticket, record and raw record of a session id; nil when it is not an id of this event.
local function lookup(sid)
  local nonce, ticket = string.match(sid, '^([%w_-]+)%.(%d+)%.')
  if not ticket then return nil end
  ticket = tonumber(ticket)
  local raw = redis.call('HGET', K.sessions, ticket)
  if not raw then return nil end
  local rec = cjson.decode(raw)
  if rec[3] ~= nonce or session_id(ticket, rec) ~= sid then return nil end
  return ticket, rec, raw
end

local function head()
  return tonumber(redis.call('GET', K.head) or '1')
end

local function queue_length()
  local h = head()
  return tonumber(redis.call('GET', K.seq) or '0') - h + 1 - redis.call('ZCOUNT', K.holes, h, '+inf')
end

-- 1-based position of a waiting ticket, given the queue head (`h`, read once by callers that
-- place many tickets).
local function position(ticket, h)
  h = h or head()
  return ticket - h + 1 - redis.call('ZCOUNT', K.holes, h, ticket)
end

-- Take a waiting ticket out of the queue (the admitter skips holes when it reaches them).
local function make_hole(ticket)
  redis.call('ZADD', K.holes, ticket, ticket)
end

-- Append a Kafka message to the outbox; `id` is stable so consumers can deduplicate.
local function record_message(topic, id, fields)
  redis.call('XADD', K.outbox, '*', 't', topic, 'k', id, 'p', cjson.encode(fields))
end

-- Give a session its final status and free the user's live place (they may join again).
local function finish(ticket, rec, status, reason, now)
  rec[1] = status
  rec[6] = rec[6] or 0
  rec[7] = rec[7] or 0
  rec[8] = now
  rec[9] = reason
  save_record(ticket, rec)
  if tonumber(redis.call('HGET', K.users, rec[2])) == ticket then
    redis.call('HDEL', K.users, rec[2])
  end
  redis.call('ZADD', K.done, now, ticket)
end

-- `finish`, and record `queue.left` with the same reason: how a session leaves the waitroom
-- other than through a checkout outcome (the user left, or a lifetime ran out).
local function finish_left(ticket, rec, status, reason, now)
  finish(ticket, rec, status, reason, now)
  local sid = session_id(ticket, rec)
  record_message('queue.left', sid .. ':left',
    { session_id = sid, user_id = rec[2], event_id = EVENT_ID, reason = reason, left_ms = now })
end

local function notify()
  redis.call('PUBLISH', NOTIFY, EVENT_ID)
end

-- Recovery (docs/reliability.md). The config's `generation` is the run id of the Redis server
-- that last checked the event's state against Kafka; `recovery` is set while the state is
-- rebuilt from Kafka. A Redis that restarted or failed over has another run id and may have
-- gone back in time, so joins and admissions wait until an admitter has checked it: otherwise
-- a join could take a ticket Kafka already holds, and an admission could admit someone again.
local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
end

local function fenced(generation, recovery)
  if recovery then return true end
  return generation ~= nil and generation ~= false and generation ~= run_id()
end
