-- GET one path, optionally as a logged-in dispatcher's htmx poll.
-- Arguments after `--`: path session_cookie etag ("-" for none).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local path, headers

function init(args)
  -- Every browser accepts gzip; the dashboard's poll is sent compressed to one that does.
  path, headers = args[1], {["Accept-Encoding"] = "gzip"}
  if args[2] ~= "-" then
    headers["Cookie"] = "sessionid=" .. args[2]
    headers["HX-Request"] = "true"
  end
  if args[3] ~= "-" then headers["If-None-Match"] = args[3] end
end

function request()
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  count_status(status)
end

function done(summary, latency, requests)
  write_summary(summary, latency, {})
end
