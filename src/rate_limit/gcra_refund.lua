-- Gives back one request to each subject of a GCRA limit (see gcra.lua):
-- its theoretical arrival time moves back by one emission interval, never
-- to before now, which is where a subject with its whole burst stands. A
-- refund can therefore never grant more than the burst.
-- KEYS[i]: subject i's key, as in gcra.lua.
-- ARGV[i]: the emission interval in ms of subject i's limit.
-- Returns how many requests were given back: a subject that already had
-- its whole burst gets nothing.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local given_back = 0
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key))
  if tat and tat > now then
    local new_tat = tat - tonumber(ARGV[i])
    if new_tat <= now then
      -- The same state as no key at all.
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%d', new_tat), 'PX', string.format('%d', new_tat - now))
    end
    given_back = given_back + 1
  end
end
return given_back
