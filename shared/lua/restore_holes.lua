-- restore_holes: take tickets out of the queue that nobody waits under: tickets whose session
-- finished (left while waiting), and tickets with no session at all (joins Kafka never received,
-- and the margin recovery skipped past them). A ticket whose session still waits is left alone.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. tickets.
-- Returns {holes (tickets now holes), missing (of those, tickets with no session)}.
local holes, missing = 0, 0
for i = 4, #ARGV do
  local ticket = tonumber(ARGV[i])
  local rec = load_record(ticket)
  if rec == nil or (rec[1] ~= QUEUED and rec[1] ~= READY) then
    make_hole(ticket)
    holes = holes + 1
    if rec == nil then missing = missing + 1 end
  end
end
return { holes, missing }
