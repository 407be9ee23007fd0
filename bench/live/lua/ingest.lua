-- POST /api/v1/driver/locations/ as fast as the server answers, `batch` fixes a request.
-- Arguments after `--`: tokens_file batch start_epoch interval_s nonce nthreads.
-- Each wrk thread owns the drivers i with i % nthreads == tid and takes them in turn, so one
-- driver's fixes go out in device-time order. Fix n of driver i is taken at start + n*interval
-- on a 400 m circle driven at 8 m/s (the same track as bench/live/fixes.py): unique, near now,
-- and never a speed jump. uuids are nonce-tid-counter, unique without relying on randomness.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local tokens, mine, fixes_sent = {}, {}, {}
local batch, start, interval, nonce, nthreads
local turn, counter = 0, 0
-- sent counts fixes put on the wire; those of requests unanswered at the stop are in flight.
acked, flagged, rejected, sent = 0, 0, 0, 0

function init(args)
  batch, start, interval = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  nonce, nthreads = tonumber(args[5]), tonumber(args[6])
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == tid then
      table.insert(tokens, line)
      table.insert(mine, i)
      fixes_sent[#mine] = 0
    end
    i = i + 1
  end
end

local R, SPEED = 400.0, 8.0

local function fix(i, t)
  local lat0 = 52.52 + ((i * 7919) % 1000 / 1000 - 0.5) * 0.12
  local lng0 = 13.405 + ((i * 104729) % 1000 / 1000 - 0.5) * 0.2
  local a = SPEED / R * t + i
  local lat = lat0 + R * math.cos(a) / 111320
  local lng = lng0 + R * math.sin(a) / (111320 * math.cos(math.rad(lat0)))
  local heading = math.deg(math.atan2(math.cos(a), -math.sin(a))) % 360
  local whole = math.floor(t)
  local at = os.date("!%Y-%m-%dT%H:%M:%S", whole) .. string.format(".%03dZ", math.floor((t - whole) * 1000))
  counter = counter + 1
  return string.format(
    '{"uuid":"%08x-%04x-4000-8000-%012x","recorded_at":"%s","lat":%.7f,"lng":%.7f,'
      .. '"accuracy":%d,"speed":%.1f,"heading":%.1f}',
    nonce, tid, counter, at, lat, lng, 5 + counter % 10, SPEED, heading
  )
end

function request()
  turn = turn % #mine + 1
  local parts = {}
  for _ = 1, batch do
    local t = start + fixes_sent[turn] * interval
    fixes_sent[turn] = fixes_sent[turn] + 1
    table.insert(parts, fix(mine[turn], t))
  end
  sent = sent + batch
  local body = '{"source":"browser","fixes":[' .. table.concat(parts, ",") .. "]}"
  return wrk.format("POST", "/api/v1/driver/locations/", {
    ["Authorization"] = "Token " .. tokens[turn],
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  count_status(status)
  if status == 200 then
    acked = acked + tonumber(body:match('"accepted":%s*(%d+)'))
    flagged = flagged + tonumber(body:match('"flagged":%s*(%d+)'))
    if not body:find('"rejected":%s*%[%]') then rejected = rejected + 1 end
  end
end

function done(summary, latency, requests)
  write_summary(summary, latency, {"acked", "flagged", "rejected", "sent"})
end
