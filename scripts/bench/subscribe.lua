-- wrk: POST /subscriptions with a new address on every request.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local counter = 0
local run = os.getenv("BENCH_RUN") or tostring(os.time())
function request()
  counter = counter + 1
  local body = "name=Reader&email=r" .. run .. "-" .. id .. "-" .. counter .. "%40example.com"
  return wrk.format("POST", "/subscriptions",
    { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end
