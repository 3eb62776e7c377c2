-- admit: one admission step for one event, atomically.
--   1. reclaim checkout slots whose lease ran out (session -> EXPIRED, queue.left recorded);
--   2. room = max_concurrent - users in checkout; refill the token bucket (rate per second,
--      capacity a tenth of a second's worth, at least 1);
--   3. take places from the queue head, skipping holes: expired sessions are closed as EXPIRED;
--      with an idle timeout, sessions not seen for longer are closed as CANCELLED (reason
--      `abandoned`) without using a token, so the next present user takes the slot; the
--      others become READY with a checkout deadline, hold a lease in the checkout set scored
--      by that deadline, and get queue.ready recorded in the outbox;
--   4. keep the measured admission rate (decayed admissions and busy time, in the bucket).
-- A paused event reclaims leases but admits nobody; a closed one still drains its queue; a
-- scheduled one admits nobody until its draw is done (draw_due says when to run it).
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 most users to admit in this call.
-- Returns {admitted, expired, reclaimed, queue_length, in_checkout, retry_ms, next_lease_ms,
--   abandoned, draw_due, wait_ms_1, ..., wait_ms_n}: retry_ms is when admitting more could
--   succeed (-1: only when something changes; before a scheduled opening, the opening),
--   next_lease_ms the earliest lease deadline (-1: none); abandoned how many were dropped as
--   absent; draw_due 1 when the opening has passed and the draw is not done (the caller runs
--   it); wait_ms_i is each admitted user's time in the queue. {'NOEVENT'} when the event has
--   no config.
local limit = tonumber(ARGV[4])
-- One call looks at no more than SCAN_FACTOR tickets per user it may admit. Tickets of users
-- who left (holes) or whose place expired are skipped on the way, and a long run of them must
-- not make one call block Redis; when the bound stops a call early, retry_ms is 0 and the
-- admitter calls again at once, so a run of holes costs more calls, never a stall.
local SCAN_FACTOR = 4
local cfg = redis.call('HMGET', K.config, 'state', 'max_concurrent', 'rate', 'checkout_ttl_ms',
  'idle_timeout_ms', 'idle_since_ms', 'generation', 'recovery')
if not cfg[1] then return { 'NOEVENT' } end
local state, max_concurrent = cfg[1], tonumber(cfg[2])
-- Until an admitter has checked this Redis against Kafka, admitting could admit again someone
-- whose admission Redis lost: admit nobody meanwhile, as if paused (see `fenced`).
if fenced(cfg[7], cfg[8]) then state = 'paused' end
local rate, checkout_ttl = tonumber(cfg[3]), tonumber(cfg[4])
local idle, idle_since = tonumber(cfg[5]) or 0, tonumber(cfg[6]) or 0
local now = now_ms()
local draw = draw_state()
local admissible = state ~= 'paused' and draw.done

-- Absent: not seen (polling, streaming) for longer than the idle timeout. Everyone counts as
-- seen when they joined, when the timeout was turned on, and (pre-queue entrants) at the draw.
local function abandoned_by(ticket, rec)
  if idle <= 0 then return false end
  local seen = math.max(last_seen_ms(ticket), rec[4], idle_since)
  if drawn_ticket(ticket) then seen = math.max(seen, draw.drawn_ms) end
  return now - seen > idle
end

local reclaimed = 0
for _, t in ipairs(redis.call('ZRANGEBYSCORE', K.checkout, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.checkout, t)
  local ticket = tonumber(t)
  local rec = load_record(ticket)
  if rec and rec[1] == READY then
    finish_left(ticket, rec, EXPIRED, 'checkout_expired', now)
  end
  reclaimed = reclaimed + 1
end

local in_checkout = redis.call('ZCARD', K.checkout)
local room = max_concurrent - in_checkout
local capacity = math.max(1, rate / 10)
local bucket = redis.call('HMGET', K.bucket, 'tokens', 'ts', 'adm', 'busy', 'waiting')
local tokens = tonumber(bucket[1]) or capacity
local last = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate / 1000)

local admitted, expired, abandoned, waits = 0, 0, 0, {}
if admissible and room > 0 then
  local want = math.min(room, math.floor(tokens), limit)
  local h, seq = head(), tonumber(redis.call('GET', K.seq) or '0')
  local examined = 0
  while admitted < want and examined < limit * SCAN_FACTOR and h <= seq do
    local place = h
    h = h + 1
    examined = examined + 1
    if redis.call('ZREM', K.holes, place) == 0 then
      local ticket = ticket_at(place)
      local rec = load_record(ticket)
      if rec and rec[1] == QUEUED then
        if now >= rec[5] then
          finish_left(ticket, rec, EXPIRED, 'queue_expired', now)
          expired = expired + 1
        elseif abandoned_by(ticket, rec) then
          finish_left(ticket, rec, CANCELLED, 'abandoned', now)
          abandoned = abandoned + 1
        else
          rec[1] = READY
          rec[6] = now
          rec[7] = now + checkout_ttl
          save_record(ticket, rec)
          redis.call('ZADD', K.checkout, rec[7], ticket)
          local sid = session_id(ticket, rec)
          record_message('queue.ready', sid .. ':ready',
            { session_id = sid, user_id = rec[2], event_id = EVENT_ID, admitted_ms = now,
              expires_ms = rec[7] })
          admitted = admitted + 1
          waits[admitted] = now - rec[4]
        end
      end
    end
  end
  redis.call('SET', K.head, h)
  tokens = tokens - admitted
end
local length = queue_length()
-- The measured rate: time counts as busy when the previous call left users waiting in an event
-- that admits, so an empty or paused queue does not read as a slow one.
local adm, busy = tonumber(bucket[3]) or 0, tonumber(bucket[4]) or 0
local elapsed = math.max(0, now - last)
local decay = math.exp(-elapsed / RATE_TAU_MS)
adm, busy = adm * decay + admitted, busy * decay
if bucket[5] == '1' then busy = busy + elapsed end
redis.call('HSET', K.bucket, 'tokens', tostring(tokens), 'ts', now, 'adm', tostring(adm),
  'busy', tostring(busy), 'waiting', (admissible and length > 0) and '1' or '0')

in_checkout = in_checkout + admitted
local retry_ms = -1
if admissible and length > 0 and in_checkout < max_concurrent then
  if tokens >= 1 then
    retry_ms = 0
  else
    retry_ms = math.ceil((1 - tokens) * 1000 / rate)
  end
elseif draw.opens > now then
  retry_ms = draw.opens - now
end
local draw_due = 0
if not draw.done and now >= draw.opens then draw_due = 1 end
local next_lease = -1
local first = redis.call('ZRANGE', K.checkout, 0, 0, 'WITHSCORES')
if #first > 0 then next_lease = tonumber(first[2]) end
if admitted + expired + reclaimed + abandoned > 0 then notify() end

local out = { admitted, expired, reclaimed, length, in_checkout, retry_ms, next_lease, abandoned,
  draw_due }
for i = 1, admitted do out[#out + 1] = waits[i] end
return out
