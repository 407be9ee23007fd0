-- Shared by ingest.lua and get.lua: per-thread status counters and a JSON summary for Python.
-- wrk runs one Lua state per thread; done() runs in the main state and reads every thread's
-- counters through thread:get(), so the counters are plain globals of each thread.

threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

s2xx, s304, s4xx, s5xx, sother = 0, 0, 0, 0, 0

function count_status(status)
  if status >= 200 and status < 300 then s2xx = s2xx + 1
  elseif status == 304 then s304 = s304 + 1
  elseif status >= 400 and status < 500 then s4xx = s4xx + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else sother = sother + 1 end
end

-- Writes {"requests", "duration_s", "p50_ms"..., status counts, `extra` counters} to the file
-- named by $BENCH_OUT: done() runs in wrk's main Lua state, which never sees init()'s arguments.
function write_summary(summary, latency, extra)
  local path = os.getenv("BENCH_OUT")
  local totals = {s2xx = 0, s304 = 0, s4xx = 0, s5xx = 0, sother = 0}
  for _, name in ipairs(extra) do totals[name] = 0 end
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + (thread:get(name) or 0) end
  end
  local e = summary.errors
  local parts = {
    string.format('"requests": %d', summary.requests),
    string.format('"duration_s": %.6f', summary.duration / 1e6),
    string.format('"p50_ms": %.3f', latency:percentile(50) / 1000),
    string.format('"p95_ms": %.3f', latency:percentile(95) / 1000),
    string.format('"p99_ms": %.3f', latency:percentile(99) / 1000),
    string.format('"max_ms": %.3f', latency.max / 1000),
    string.format('"socket_errors": %d', e.connect + e.read + e.write + e.timeout),
  }
  for name, value in pairs(totals) do table.insert(parts, string.format('"%s": %d', name, value)) end
  local file = assert(io.open(path, "w"))
  file:write("{" .. table.concat(parts, ", ") .. "}\n")
  file:close()
end
