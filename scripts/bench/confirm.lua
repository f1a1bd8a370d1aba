-- wrk: GET /subscriptions/confirm with real tokens, read from the file the
-- email API stand-in wrote. Each thread walks its own share of the tokens;
-- once through, it starts again (second clicks: "already confirmed").
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local tokens = {}
local next_token = 1
function init(args)
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if #line == 32 then tokens[#tokens + 1] = line end
  end
  next_token = math.floor((id - 1) * #tokens / 2) + 1
end

function request()
  if next_token > #tokens then next_token = 1 end
  local path = "/subscriptions/confirm?subscription_token=" .. tokens[next_token]
  next_token = next_token + 1
  return wrk.format("GET", path)
end
