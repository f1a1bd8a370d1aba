-- Books the next `cost` microseconds of a shared sending schedule, unless
-- the caller's turn would come too late for it.
-- KEYS[1]: the moment (µs, Redis' clock) from which the schedule is free.
-- ARGV[1]: the cost, in µs of schedule: messages times the interval
--   between two messages at the cap.
-- ARGV[2]: how far back an idle schedule may be booked, in µs: a burst of
--   that much sending may go at once after a quiet spell.
-- ARGV[3]: the longest the caller can wait for its turn, in µs.
-- Returns {1, wait}: booked, send after `wait` µs; or {0, wait}: nothing
-- booked, the schedule is full for `wait` µs. Refusing rather than booking
-- far ahead matters: a booking its sender cannot use is capacity lost, and
-- senders that kept booking past each other would never catch up. Redis'
-- clock is the one every process shares; the key expires once the schedule
-- is free.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cost = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local patience = tonumber(ARGV[3])
local free_from = tonumber(redis.call('GET', KEYS[1])) or 0
local start = math.max(free_from, now - burst)
local wait = math.max(0, math.floor(start - now))
if wait > patience then
  return {0, wait}
end
local booked_until = start + cost
redis.call('SET', KEYS[1], string.format('%d', booked_until),
  'PX', string.format('%d', math.floor(math.max(0, booked_until - now) / 1000) + 1000))
return {1, wait}
