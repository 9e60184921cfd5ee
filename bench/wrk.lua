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

done = function(summary, latency, requests)
  local e = summary.errors
  -- Every latency seen (us) and how often, so that runs can be merged exactly.
  local buckets = {}
  for i = 1, #latency do
    local value, count = latency(i)
    buckets[i] = string.format("[%d,%d]", value, count)
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},'
      .. '"histogram_us":[%s]}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, table.concat(buckets, ",")))
end
