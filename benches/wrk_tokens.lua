-- wrk script for benches/load.sh.
--
-- Every request is `GET /` with `Authorization: Bearer <token>`, tokens taken round-robin from the
-- file named by the first script argument (one per line); each thread starts at a different
-- offset. Every row of the load table uses this script, so the client does the same work for all.
-- Counts non-2xx responses (wrk's own summary only counts status >= 400) and prints one
-- machine-readable RESULT line at the end.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local requests = {}
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. line })
    end
  end
  assert(#requests > 0, "no tokens in " .. args[1])
  prepared = requests
  count = #requests
  position = (id * math.floor(count / 2)) % count
  non2xx = 0
end

function request()
  position = position % count + 1
  return prepared[position]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad,
    e.connect + e.read + e.write + e.timeout))
end
