-- wrk: the steady load of a rolling update. Requests cycle through a
-- subscription (a new address each time), a confirmation (tokens issued
-- before the load started, read from ROLLING_TOKENS) and a health check.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local tokens = {}
local sent = 0
function init(args)
  for line in io.lines(os.getenv("ROLLING_TOKENS")) do
    if #line == 32 then tokens[#tokens + 1] = line end
  end
end

local run = os.getenv("ROLLING_RUN") or tostring(os.time())
function request()
  sent = sent + 1
  local kind = sent % 3
  if kind == 0 then
    local body = "name=Reader&email=roll" .. run .. "-" .. id .. "-" .. sent .. "%40example.com"
    return wrk.format("POST", "/subscriptions",
      { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
  elseif kind == 1 and #tokens > 0 then
    local token = tokens[(sent + id * 7919) % #tokens + 1]
    return wrk.format("GET", "/subscriptions/confirm?subscription_token=" .. token)
  end
  return wrk.format("GET", "/health_check")
end
