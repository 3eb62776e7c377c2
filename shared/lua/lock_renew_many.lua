-- lock_renew_many: extend each of many locks only if the caller still owns it (lock_renew for
-- a list, in one round trip). Renewing 10,000 locks one script call each cost the admitter
-- 9.6 us of CPU a lock; tokens packed in two arguments and a reply naming only the failures
-- keep redis-py's packing and parsing to the keys. In a cluster all keys of a call share a slot.
-- KEYS: the lock keys.  ARGV: 1 lifetime (ms), 2 the owner tokens in KEYS order concatenated,
--   3 their byte lengths, space-separated.
-- Returns the positions (1-based) of the keys not renewed: gone, or held by someone else.
local lost, at, i = {}, 1, 0
for n in string.gmatch(ARGV[3], '%d+') do
  i = i + 1
  n = tonumber(n)
  local token = string.sub(ARGV[2], at, at + n - 1)
  at = at + n
  if redis.call('GET', KEYS[i]) ~= token or redis.call('PEXPIRE', KEYS[i], ARGV[1]) == 0 then
    lost[#lost + 1] = i
  end
end
return lost
