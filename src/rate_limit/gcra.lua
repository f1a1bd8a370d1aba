-- Generic cell rate algorithm, atomically in Redis, for one or more limits
-- checked in order (a subscription checks the client's IP, then the address).
-- KEYS[i]: the subject's key for limit i, holding its theoretical arrival
--   time (ms).
-- ARGV[2i-1]: limit i's emission interval in ms (the period divided by the
--   sustained count); ARGV[2i]: its burst, how many requests may come at once.
-- Returns {1, 0, 0} when every limit allows the request, each then charged;
-- {0, retry_after_ms, i} when limit i refuses it: limits before i are
-- charged, i and the ones after are not.
-- Redis' own clock is used so that every replica agrees on "now". A key
-- expires when its state would equal an empty one, so nothing is left behind.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  local allowed_from = tat - (burst - 1) * interval
  if allowed_from > now then
    return {0, allowed_from - now, i}
  end
  local new_tat = tat + interval
  redis.call('SET', key, string.format('%d', new_tat), 'PX', string.format('%d', new_tat - now))
end
return {1, 0, 0}
