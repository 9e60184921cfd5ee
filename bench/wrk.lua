-- The request of a bench run, from the environment; a JSON summary line when done,
-- with the latency histogram (the same counts wrk's own percentiles come from).
-- BENCH_METHOD (GET), BENCH_BODY (none), BENCH_TOKEN (no Authorization header),
-- BENCH_PORTS (none: the URL's port; else "p1,p2,...": thread i keeps to port i mod n,
-- on the URL's host).

local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local token = os.getenv("BENCH_TOKEN")
local ports = os.getenv("BENCH_PORTS")

if ports ~= nil and ports ~= "" then
  local addrs = nil
  local next_thread = 0
  setup = function(thread)
    if addrs == nil then
      addrs = {}
      for port in string.gmatch(ports, "[^,]+") do
        table.insert(addrs, wrk.lookup(wrk.host, port)[1])
      end
    end
    thread.addr = addrs[next_thread % #addrs + 1]
    next_thread = next_thread + 1
  end
end

wrk.method = method
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- Every latency wrk recorded (us) and how often, so that runs can be merged exactly.
-- wrk finds the i-th latency by walking its histogram from the start, so a wide and
-- dense one (a server that stalled for a second) would take minutes that way: it is
-- described by its percentiles instead, each share of the requests placed at the top
-- of its range (so a merged percentile can come out higher, never lower).
local EXACT_WALK_LIMIT = 4e8

local function histogram(latency, requests)
  local buckets = {}
  local distinct = #latency
  if distinct * (latency.max - latency.min) <= EXACT_WALK_LIMIT then
    for i = 1, distinct do
      local value, count = latency(i)
      buckets[i] = string.format("[%d,%d]", value, count)
    end
    return buckets, true
  end
  local before = 0
  local function share_up_to(p)
    local value = p < 100 and latency:percentile(p) or latency.max
    local upto = math.floor(requests * p / 100 + 0.5)
    if upto > before then
      table.insert(buckets, string.format("[%d,%d]", value, upto - before))
      before = upto
    end
  end
  for p = 1, 95 do share_up_to(p) end
  for step = 9501, 10000 do share_up_to(step / 100) end
  return buckets, false
end

done = function(summary, latency, requests)
  local e = summary.errors
  local buckets, exact = histogram(latency, summary.requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},'
      .. '"histogram_us":[%s],"histogram_exact":%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, table.concat(buckets, ","), tostring(exact)))
end
