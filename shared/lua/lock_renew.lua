-- lock_renew: extend a lock only if the caller still owns it.
-- KEYS: 1 lock key.  ARGV: 1 owner token, 2 lifetime (ms).
-- Returns 1 when renewed, 0 when the lock is gone or held by someone else.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
