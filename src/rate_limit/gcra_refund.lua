-- Gives back one request to a subject of a GCRA limit (see gcra.lua): its
-- theoretical arrival time moves back by one emission interval, never to
-- before now, which is where a subject with its whole burst stands. A
-- refund can therefore never grant more than the burst.
-- KEYS[1]: the subject's key, as in gcra.lua.
-- ARGV[1]: the limit's emission interval in ms.
-- Returns 1 when a request was given back, 0 when the subject already had
-- its whole burst.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat <= now then
  return 0
end
local new_tat = tat - tonumber(ARGV[1])
if new_tat <= now then
  -- The same state as no key at all.
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', new_tat - now))
end
return 1
