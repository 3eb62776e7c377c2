-- join_batch: the joins of many users of one event, in the given order, in one call: each
-- exactly what join.lua would do and answer for it, run one after the other (a user twice in
-- a batch gets one session; tickets follow the order). The new sessions are announced once.
-- KEYS: the event keys (see event_lib.lua), then from EXTRA on the join counters of the
--   distinct addresses of the batch (keys.ip_joins).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, then 4 values per user: user id,
--   a fresh random nonce, IP address ('' when unknown), and the 1-based index among the
--   counters of its address's counter (0 with no address).
-- Returns one reply per user, in order, each as join.lua documents it, or
--   {'ERR', 'SCRIPT', message} for a user whose join raised an error: the error ends that
--   user's join only (what a lone join had written by then stays, as it would), never the
--   batch. The caller validates ids and addresses before, so this is a bug, not bad input.
local ctx, refusal = join_begin()
local replies = {}
for at = 4, #ARGV - 3, 4 do
  if not ctx then
    replies[#replies + 1] = refusal
  else
    local counter = tonumber(ARGV[at + 3]) or 0
    local ip_key = nil
    if counter > 0 then ip_key = KEYS[EXTRA + counter - 1] end
    local ok, reply = pcall(join_user, ctx, ARGV[at], ARGV[at + 1], ARGV[at + 2], ip_key)
    if not ok then
      if type(reply) == 'table' then reply = reply.err end
      reply = { 'ERR', 'SCRIPT', tostring(reply) }
      ctx.length = nil -- it may have stopped between taking a ticket and counting it
    end
    replies[#replies + 1] = reply
  end
end
if ctx then join_end(ctx) end
return replies
