-- Generic cell rate algorithm, atomically in Redis.
-- KEYS[1]: the subject's key, holding its theoretical arrival time (ms).
-- ARGV[1]: emission interval in ms (the period divided by the sustained count).
-- ARGV[2]: burst, how many requests may come at once.
-- Returns {1, 0} when allowed, {0, retry_after_ms} when not.
-- Redis' own clock is used so that every replica agrees on "now". The key
-- expires when its state would equal an empty one, so nothing is left behind.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local allowed_from = tat - (burst - 1) * interval
if allowed_from > now then
  return {0, allowed_from - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', new_tat - now))
return {1, 0}
