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
-- The join itself is `join_user` in event_lib.lua, which join_batch.lua runs for many users.
local ctx, refusal = join_begin()
if not ctx then return refusal end
local reply = join_user(ctx, ARGV[4], ARGV[5], ARGV[6] or '', KEYS[EXTRA])
join_end(ctx)
return reply
