-- presence: record that queued users are here now (they poll GetQueueStatus or hold a stream).
-- One 4-byte write per ticket (seconds of Redis's clock); callers write at most once per
-- quarter idle timeout per user (status.lua says when), never once per poll.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. tickets.
-- Returns how many tickets were recorded (tickets never issued are ignored: no offset beyond
--   the event's tickets is ever written).
local issued = tonumber(redis.call('GET', K.seq) or '0')
local stamp = struct.pack('>I4', math.floor(now_ms() / 1000))
local recorded = 0
for i = 4, #ARGV do
  local t = tonumber(ARGV[i])
  if t and t >= 1 and t <= issued and t == math.floor(t) then
    redis.call('SETRANGE', K.presence, 4 * (t - 1), stamp)
    recorded = recorded + 1
  end
end
return recorded
