-- Prelude prepended (by shared/scripts.py) to every script that works on one event.
-- KEYS, in this order for every event script (all share the event's hash tag):
--   1 config  2 seq  3 head  4 holes  5 sessions  6 users  7 checkout  8 bucket  9 outbox  10 done
--   11 draw  12 draw_order  13 draw_rank  14 draw_left  15 presence  16 ip_live
-- ARGV[1] event id, ARGV[2] notify channel, ARGV[3] base64url(event id), the session id suffix;
-- script arguments start at ARGV[4].
--
-- The queue is the ticket range [head, seq] minus `holes` (tickets that left while waiting):
-- no per-user queue entry, and a position is t - head + 1 - ZCOUNT(holes, head, t).
-- Sessions are keyed by ticket; a session id is `<nonce>.<ticket>.<suffix>`.
-- A session record is a JSON array:
--   [1 status, 2 user_id, 3 nonce, 4 queued_ms, 5 expires_ms, 6 admitted_ms,
--    7 checkout_deadline_ms, 8 finished_ms, 9 reason, 10 ip_address]
--   (6..9 absent while queued, unless 10 is there: the address a live-sessions-per-IP limit
--   counted, kept so the count goes down when the session ends)
-- Status numbers are the contract's SessionStatus values.
local QUEUED, READY, COMPLETED, FAILED, EXPIRED, CANCELLED = 1, 3, 5, 6, 7, 8
local K = {
  config = KEYS[1], seq = KEYS[2], head = KEYS[3], holes = KEYS[4], sessions = KEYS[5],
  users = KEYS[6], checkout = KEYS[7], bucket = KEYS[8], outbox = KEYS[9], done = KEYS[10],
  draw = KEYS[11], draw_order = KEYS[12], draw_rank = KEYS[13], draw_left = KEYS[14],
  presence = KEYS[15], ip_live = KEYS[16],
}
-- A script's own keys come after the event keys, from KEYS[EXTRA] on (shared.scripts passes
-- them after event_keys()).
local EXTRA = 17
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

-- A scheduled opening (config `opens_ms`, 0 or absent: none). Until the opening, joins go to
-- the pre-queue: tickets 1..n in join order, n fixed (draw `n`) by the first script that runs
-- at or after the opening. The draw writes a permutation in chunks: draw_order holds the
-- ticket at each place 1..n, draw_rank the place of each ticket 1..n (4-byte big-endian
-- integers at offset 4 * (i - 1)); tickets after n keep place = ticket. The queue is then the
-- range of places [head, seq] minus holes (places). Until the draw is done (draw `drawn_ms`),
-- pre-queue tickets have no place: those that leave wait in draw_left (tickets), and nobody
-- is admitted. Without a schedule, place = ticket and nothing here costs more than one HGET.
local DRAW = nil

local function draw_state()
  if DRAW then return DRAW end
  local opens = tonumber(redis.call('HGET', K.config, 'opens_ms') or '0') or 0
  DRAW = { opens = opens, n = nil, drawn_ms = 0, done = true }
  if opens > 0 then
    local d = redis.call('HMGET', K.draw, 'n', 'drawn_ms')
    DRAW.n = tonumber(d[1])
    DRAW.drawn_ms = tonumber(d[2]) or 0
    DRAW.done = DRAW.drawn_ms > 0
  end
  return DRAW
end

-- Whether `ticket` is a pre-queue entrant (drawn or to be drawn).
local function drawn_ticket(ticket)
  local d = draw_state()
  return d.opens > 0 and (d.n == nil or ticket <= d.n)
end

local function read_u32(key, index)
  local raw = redis.call('GETRANGE', key, 4 * (index - 1), 4 * index - 1)
  if #raw < 4 then return 0 end
  return (struct.unpack('>I4', raw))
end

-- The place of a ticket; nil for a pre-queue ticket while the draw is not done.
local function place_of(ticket)
  if not drawn_ticket(ticket) then return ticket end
  if not draw_state().done then return nil end
  return read_u32(K.draw_rank, ticket)
end

-- The ticket at a place (only asked once the draw is done).
local function ticket_at(place)
  local d = draw_state()
  if d.opens > 0 and d.n and place <= d.n then return read_u32(K.draw_order, place) end
  return place
end

-- Pre-queue tickets that left before their place was known: still counted out of the queue.
local function pending_left()
  if draw_state().done then return 0 end
  return redis.call('ZCARD', K.draw_left)
end

-- At or after the opening: fix the pre-queue's entrants as tickets 1..seq (idempotent).
local function close_prequeue(now)
  local d = draw_state()
  if d.opens > 0 and d.n == nil and now >= d.opens then
    d.n = tonumber(redis.call('GET', K.seq) or '0')
    redis.call('HSET', K.draw, 'n', d.n, 'closed_ms', now)
  end
end

local function head()
  return tonumber(redis.call('GET', K.head) or '1')
end

local function queue_length()
  local h = head()
  return tonumber(redis.call('GET', K.seq) or '0') - h + 1 - redis.call('ZCOUNT', K.holes, h, '+inf')
    - pending_left()
end

-- 1-based position of a waiting ticket, given the queue head (`h`, read once by callers that
-- place many tickets); 0 for a pre-queue ticket not drawn yet.
local function position(ticket, h)
  local place = place_of(ticket)
  if not place then return 0 end
  h = h or head()
  return place - h + 1 - redis.call('ZCOUNT', K.holes, h, place) - pending_left()
end

-- Take a waiting ticket out of the queue (the admitter skips holes when it reaches them).
local function make_hole(ticket)
  local place = place_of(ticket)
  if place then
    redis.call('ZADD', K.holes, place, place)
  else
    redis.call('ZADD', K.draw_left, ticket, ticket)
  end
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
  if rec[10] and rec[10] ~= '' then
    -- One live session fewer for its address; the field goes at zero, so the hash holds only
    -- addresses with live sessions.
    if redis.call('HINCRBY', K.ip_live, rec[10], -1) <= 0 then
      redis.call('HDEL', K.ip_live, rec[10])
    end
  end
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

-- The measured admission rate (users/s), for wait estimates: admissions and busy time (ms during
-- which someone waited and the event could admit), both decayed with a 60 s time constant and
-- kept in the bucket hash by admit.lua. nil until 5 s of busy time are behind it.
local RATE_TAU_MS = 60000
local RATE_MIN_BUSY_MS = 5000

local function measured_rate()
  local r = redis.call('HMGET', K.bucket, 'adm', 'busy')
  local adm, busy = tonumber(r[1]), tonumber(r[2])
  if not adm or not busy or busy < RATE_MIN_BUSY_MS then return nil end
  return adm * 1000 / busy
end

-- The rate to estimate waits with, as text (a Lua number returned to Redis loses its fraction).
local function estimate_rate(config_rate)
  return tostring(measured_rate() or tonumber(config_rate) or 0)
end

-- Presence: when a queued user was last seen (polling or streaming), in whole seconds of
-- Redis's clock, 4 bytes per ticket in one string (written by presence.lua, read by admit).
local function last_seen_ms(ticket)
  return read_u32(K.presence, ticket) * 1000
end

-- Joining, shared by join.lua (one user) and join_batch.lua (many users of one event in one
-- call): a batch runs exactly the lone joins, in order, in one script. What does not depend on
-- the user (the config, the recovery fence, the clock, the draw, the rate) is read once per
-- script by `join_begin`; the announcements are made once per script by `join_end`.

-- The event's side of a join, or nil and the refusal every join meets now: WTR006 (no event),
-- WTR009 (closed), WTR011 (recovering: Redis is not yet checked against Kafka, see `fenced`).
local function join_begin()
  local cfg = redis.call('HMGET', K.config, 'state', 'max_concurrent', 'session_ttl_ms',
    'max_queue', 'rate', 'ip_joins_per_minute', 'ip_live_sessions', 'generation', 'recovery')
  if not cfg[1] then return nil, { 'ERR', 'WTR006' } end
  if cfg[1] == 'closed' then return nil, { 'ERR', 'WTR009' } end
  if fenced(cfg[8], cfg[9]) then return nil, { 'ERR', 'WTR011' } end
  local now = now_ms()
  close_prequeue(now)
  return {
    cfg = cfg, now = now, draw = draw_state(), rate = estimate_rate(cfg[5]),
    per_minute = tonumber(cfg[6]) or 0, per_address = tonumber(cfg[7]) or 0,
    max_queue = tonumber(cfg[4]) or 0, ttl = tonumber(cfg[3]),
    -- The queue's length, kept while joins add to it; nil once a hole may have changed it.
    length = nil,
    created = 0,
    -- Whether the outbox was empty when the first session of this script was recorded.
    outbox_idle = nil,
  }
end

local function join_length(ctx)
  if not ctx.length then ctx.length = queue_length() end
  return ctx.length
end

-- Join one user (`ip`: canonical address, '' when unknown; `ip_key`: its joins counter).
-- Returns the reply join.lua documents for it.
local function join_user(ctx, user_id, nonce, ip, ip_key)
  local cfg, now, draw = ctx.cfg, ctx.now, ctx.draw
  -- Joins per address per minute: a counter that starts its own minute and expires with it,
  -- so a million addresses leave a million short-lived keys, never a growing structure.
  local limit_joins = ip ~= '' and ctx.per_minute > 0
  if limit_joins and (tonumber(redis.call('GET', ip_key)) or 0) >= ctx.per_minute then
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
      return { 'OK', session_id(existing, rec), 0, join_length(ctx), rec[4], rec[5], READY, 0,
        draw.opens, ctx.rate }
    elseif rec and rec[1] == QUEUED then
      if now < rec[5] then
        count_join()
        return { 'OK', session_id(existing, rec), position(existing), join_length(ctx), rec[4],
          rec[5], QUEUED, 0, draw.opens, ctx.rate }
      end
      -- Their place ran out: close it properly, then give them a new one at the back.
      make_hole(existing)
      ctx.length = nil
      finish_left(existing, rec, EXPIRED, 'queue_expired', now)
    end
    redis.call('HDEL', K.users, user_id)
  end

  local limit_live = ip ~= '' and ctx.per_address > 0
  if limit_live and (tonumber(redis.call('HGET', K.ip_live, ip)) or 0) >= ctx.per_address then
    return { 'ERR', 'WTR010', 'live_sessions' }
  end
  local length = join_length(ctx)
  if ctx.max_queue > 0 and length >= ctx.max_queue then return { 'ERR', 'WTR005' } end

  local ticket = redis.call('INCR', K.seq)
  -- A pre-queue place lasts from the opening, not from the join.
  local expires = math.max(now, draw.opens) + ctx.ttl
  local rec = { QUEUED, user_id, nonce, now, expires }
  if limit_live then
    rec = { QUEUED, user_id, nonce, now, expires, 0, 0, 0, '', ip }
    redis.call('HINCRBY', K.ip_live, ip, 1)
  end
  count_join()
  save_record(ticket, rec)
  redis.call('HSET', K.users, user_id, ticket)
  length = length + 1
  ctx.length = length
  -- Tickets only grow, so the newcomer is last (position = queue length), unless it waits in
  -- the pre-queue for the draw (position 0).
  local place = length
  if not place_of(ticket) then place = 0 end
  local sid = session_id(ticket, rec)
  if ctx.outbox_idle == nil then ctx.outbox_idle = redis.call('XLEN', K.outbox) == 0 end
  record_message('queue.joined', sid .. ':joined',
    { session_id = sid, user_id = user_id, event_id = EVENT_ID, position = place, joined_ms = now })
  ctx.created = ctx.created + 1
  return { 'OK', sid, place, length, now, expires, QUEUED, 1, draw.opens, ctx.rate }
end

-- The announcements of the script's new sessions, once however many there were.
local function join_end(ctx)
  if ctx.created == 0 then return end
  local cfg = ctx.cfg
  -- Wake the admitter's admission only when it could admit someone now.
  if cfg[1] == 'open' and ctx.draw.done
    and redis.call('ZCARD', K.checkout) < tonumber(cfg[2]) then
    notify()
  elseif ctx.outbox_idle then
    -- Only what reached Kafka can be rebuilt if Redis loses its last second, so joins are
    -- relayed at once: the first record of an idle outbox wakes the relay (a relay that finds
    -- more records after a batch goes on by itself), without an admission step: the payload is
    -- the event id and a newline (keys.RELAY_ONLY_SUFFIX), which no event id holds.
    redis.call('PUBLISH', NOTIFY, EVENT_ID .. '\n')
  end
end
