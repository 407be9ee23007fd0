-- GET the customer tracking page of every token in turn, as a customer's browser polls it.
-- Arguments after `--`: tokens_file mode nthreads. Each line of tokens_file is a token, or a
-- token and its partial's ETag (then sent as If-None-Match). mode: "partial" (GET /t/<token>/
-- with HX-Request: true, the htmx poll), "page" (the full page) or "json" (/api/v1/track/...).
-- Thread tid starts at its own share of the tokens, so the threads do not ask in lockstep.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local paths, etags, headers = {}, {}, {}
local mode, turn = "partial", 0

function init(args)
  mode = args[2]
  for line in io.lines(args[1]) do
    local token, etag = line:match("^(%S+)%s*(.*)$")
    if mode == "json" then
      table.insert(paths, "/api/v1/track/" .. token .. "/")
    else
      table.insert(paths, "/t/" .. token .. "/")
    end
    table.insert(etags, etag ~= "" and etag or nil)
  end
  turn = math.floor(#paths * tid / tonumber(args[3]))
end

function request()
  turn = turn % #paths + 1
  local h = {}
  if mode == "partial" then h["HX-Request"] = "true" end
  if etags[turn] then h["If-None-Match"] = etags[turn] end
  return wrk.format("GET", paths[turn], h)
end

function response(status, headers, body)
  count_status(status)
end

function done(summary, latency, requests)
  write_summary(summary, latency, {})
end
