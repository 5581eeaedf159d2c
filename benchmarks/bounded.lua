-- wrk -t1 -cC -dCAPs -s bounded.lua URL -- METHOD PATHPREFIX BODYFILE CONTENT_TYPE N
-- Sends METHOD to PATHPREFIX<run>_<n> (unique paths; end PATHPREFIX in "?n=" to keep a route
-- fixed) with BODYFILE as the body ("-": no body, no Content-Type) and stops after N
-- responses, so every run is bounded in count (N) and in time (-d). If the body holds MARK
-- (see multipart_body.py), each request gets it replaced by 32 digits of its own, so no two
-- uploads carry the same bytes (as with real clients; identical files would be duplicates).
-- Adapted from the wrk PUT script the nginx baseline was first measured with; done() adds
-- percentiles and errors.
local ffi = require("ffi")
ffi.cdef[[ int kill(int pid, int sig); int getpid(void);
  typedef struct { long tv_sec; long tv_nsec; } ts_t; int clock_gettime(int, ts_t*); ]]
local function now()
  local t = ffi.new("ts_t"); ffi.C.clock_gettime(1, t)
  return tonumber(t.tv_sec) + tonumber(t.tv_nsec) * 1e-9
end
local MARK = "@@@@KMFLOW-BENCH-UNIQUE-MARK@@@@"
local method, prefix, body, before, after, headers, N, run
local sent, got, bad, t0 = 0, 0, 0, nil
function init(args)
  method, prefix, N = args[1], args[2], tonumber(args[5])
  headers = {}
  if args[3] ~= "-" then
    local f = assert(io.open(args[3], "rb")); body = f:read("*a"); f:close()
    headers["Content-Type"] = args[4]
    local at = string.find(body, MARK, 1, true)
    if at then before, after = body:sub(1, at - 1), body:sub(at + #MARK) end
  end
  run = string.format("%d", now() * 1e6)
end
function request()
  if not t0 then t0 = now() end
  sent = sent + 1
  local payload = body
  if before then
    payload = before .. string.format("%016d%016d", tonumber(run:sub(-16)), sent) .. after
  end
  return wrk.format(method, prefix .. run .. "_" .. sent, headers, payload)
end
function response(status, hdrs, b)
  got = got + 1
  if status >= 300 then
    bad = bad + 1
    if bad == 1 then io.write(string.format("FIRST_ERROR: %d %s\n", status, b)) end
  end
  if got == N then
    local t1 = now()
    io.write(string.format("BOUNDED: %d responses (%d non-2xx) in %.3f s = %.1f req/s\n",
      got, bad, t1 - t0, got / (t1 - t0)))
    wrk.thread:stop(); ffi.C.kill(ffi.C.getpid(), 2)
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "DONE: requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
