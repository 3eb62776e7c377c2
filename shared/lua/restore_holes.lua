-- restore_holes: take tickets out of the queue that nobody waits under: tickets whose session
-- finished (left while waiting), and tickets with no session at all (joins Kafka never received,
-- and the margin recovery skipped past them). A ticket whose session still waits is left alone.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. tickets.
-- A ticket already out of the queue (a hole, or behind the head) is left alone and not
-- counted: a second recovery, or one beside another, must not count the first one's holes (the
-- margin, the lost joins it already counted) as joins lost again.
-- Returns {holes (tickets made holes by this call), missing (of those, tickets with no session)}.
local h = head()

local function out_of_queue(ticket)
  local place = place_of(ticket)
  if place then return place < h or redis.call('ZSCORE', K.holes, place) ~= false end
  return redis.call('ZSCORE', K.draw_left, ticket) ~= false
end

local holes, missing = 0, 0
for i = 4, #ARGV do
  local ticket = tonumber(ARGV[i])
  local rec = load_record(ticket)
  if (rec == nil or (rec[1] ~= QUEUED and rec[1] ~= READY)) and not out_of_queue(ticket) then
    make_hole(ticket)
    holes = holes + 1
    if rec == nil then missing = missing + 1 end
  end
end
return { holes, missing }
