-- restore_sessions: merge sessions rebuilt from Kafka into Redis. A session only ever moves
-- forward (queued, then admitted, then finished), so a record Redis holds that is as far or
-- further along (a leave the API took meanwhile, a newer outcome) is kept: running a restore
-- twice, or beside a running API, gives the same state.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4.. ticket, record (JSON array as
--   event_lib.lua describes) pairs.
-- Two endings: the first wins, as the history folds it. A Redis that lost its last second and
-- was not yet checked can end a session again later (a lease it runs out, while Kafka holds
-- the purchase completed before): Kafka's earlier ending is the truth, and the slot was free
-- from then on.
-- Returns {written (no record before), advanced (an older record moved forward), kept (Redis's
--   was as far along), conflicts (Redis holds another session under the ticket: kept)}.
local function rank(status)
  if status == QUEUED then return 1 elseif status == READY then return 2 end
  return 3
end

local function live(ticket)
  local rec = load_record(ticket)
  return rec ~= nil and (rec[1] == QUEUED or rec[1] == READY)
end

-- Whether `rec` ended before `have` did (both final).
local function ended_first(have, rec)
  return rank(have[1]) == 3 and rank(rec[1]) == 3 and tonumber(rec[8]) < tonumber(have[8])
end

local written, advanced, kept, conflicts = 0, 0, 0, 0
for i = 4, #ARGV, 2 do
  local ticket = tonumber(ARGV[i])
  local rec = cjson.decode(ARGV[i + 1])
  local have = load_record(ticket)
  if have and have[3] ~= rec[3] then
    conflicts = conflicts + 1
  elseif have and rank(have[1]) >= rank(rec[1]) and not ended_first(have, rec) then
    kept = kept + 1
  else
    if have then advanced = advanced + 1 else written = written + 1 end
    save_record(ticket, rec)
    local holder = tonumber(redis.call('HGET', K.users, rec[2]))
    if rec[1] == QUEUED or rec[1] == READY then
      if rec[1] == READY then redis.call('ZADD', K.checkout, rec[7], ticket) end
      -- One live place per user: a live session of theirs under another ticket keeps it.
      if holder ~= ticket and (holder == nil or not live(holder)) then
        redis.call('HSET', K.users, rec[2], ticket)
      end
    else
      redis.call('ZREM', K.checkout, ticket)
      if holder == ticket then redis.call('HDEL', K.users, rec[2]) end
      redis.call('ZADD', K.done, rec[8], ticket)
    end
  end
end
return { written, advanced, kept, conflicts }
