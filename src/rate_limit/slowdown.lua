-- Counts one more attempt in a fixed window, atomically in Redis.
-- KEYS[1]: the subject's counter; ARGV[1]: the window in ms.
-- Returns the count, this attempt included. The first attempt of a window
-- sets its expiry, so the counter starts again from nothing after it.
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
