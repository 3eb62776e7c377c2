-- event_save: create or update an event's configuration.
-- KEYS: the event keys (see event_lib.lua).
-- ARGV: 1 event id, 2 notify channel, 3 session id suffix, 4 mode ('create' or 'update'),
--   5.. field, value pairs.
-- Returns {'OK'}, {'ERR', 'EXISTS'} when creating an event that exists, or {'ERR', 'WTR008'}
--   when updating one that does not. Notifies so admitters apply the change at once.
local mode = ARGV[4]
local exists = redis.call('EXISTS', K.config) == 1
if mode == 'create' and exists then return { 'ERR', 'EXISTS' } end
if mode == 'update' and not exists then return { 'ERR', 'WTR008' } end
local now = now_ms()
for i = 5, #ARGV, 2 do
  redis.call('HSET', K.config, ARGV[i], ARGV[i + 1])
end
if mode == 'create' then redis.call('HSET', K.config, 'created_ms', now) end
redis.call('HSET', K.config, 'updated_ms', now)
notify()
return { 'OK' }
