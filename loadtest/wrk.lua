-- wrk script of the Courier Gateway load test (driven by loadtest/engine.py).
--
-- Arguments after `--` are key=value:
--   file=PATH      Lua file returning a table of raw HTTP requests (loadtest/requests.py)
--   threads=N      the -t given to wrk; thread i keeps requests i, i+N, i+2N, ...
--   limit=N        optional: send N requests in all (each thread its share), then stop
--   rate=R         optional: target requests per second over all threads (paced by delay())
--   markers=DIR    a directory for marker files: DIR/ready when the last thread has loaded its
--                  requests, and with limit DIR/<id> when a thread's share is answered, so the
--                  engine can end wrk at once instead of waiting for -d
--
-- wrk starts each thread as soon as its init() returns, and init() of the next thread (loading
-- the file again) runs after that: the first threads would run alone for a while. So every thread
-- but the last holds its first request until DIR/ready exists (written by the last init()).
--
-- Each thread cycles its share; response() counts statuses, error codes and 202 bodies with
-- "duplicate":true; done() aggregates every thread and prints one line `WRK_JSON {...}`.
-- wrk calls request() once on the first thread before it starts, to check pipelining: that
-- call is answered without counting it.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } loadtest_timespec;
int clock_gettime(int clock_id, loadtest_timespec *tp);
int poll(void *fds, unsigned long nfds, int timeout);
]])
local clock = ffi.new("loadtest_timespec")
local CLOCK_MONOTONIC = 1

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) / 1e9
end

-- Main state: number the threads as wrk creates them; done() reads their counters.
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

-- Thread state.
local list, count, index = {}, 0, 0
local share, interval, next_slot, markers = nil, nil, nil, nil
local granted, finished, verify_pending, gated = 0, false, false, false
local GATE_TIMEOUT_S = 300

local function options(args)
  local found = {}
  for _, arg in ipairs(args) do
    local key, value = string.match(arg, "^([%w_]+)=(.*)$")
    if key == nil then
      error("wrk.lua: arguments are key=value, got " .. arg)
    end
    found[key] = value
  end
  return found
end

function init(args)
  local opts = options(args)
  local stride = tonumber(opts.threads or "1")
  local all = dofile(opts.file)
  for i = id, #all, stride do
    count = count + 1
    list[count] = all[i]
  end
  all = nil
  collectgarbage()
  if count == 0 then
    error("wrk.lua: thread " .. id .. " has no requests; use fewer threads")
  end
  local limit = tonumber(opts.limit or "0")
  if limit > 0 then
    share = 0
    if limit >= id then
      share = math.floor((limit - id) / stride) + 1
    end
  end
  local rate = tonumber(opts.rate or "0")
  if rate > 0 then
    interval = stride / rate
  end
  markers = opts.markers
  verify_pending = (id == 1)
  if markers ~= nil then
    if id == stride then
      local ready = assert(io.open(markers .. "/ready", "w"))
      ready:close()
    else
      gated = true
    end
  end
  -- Counters, read by done() through thread:get.
  kept, sent, received, duplicates = count, 0, 0, 0
  statuses, codes = {}, {}
  first_at, last_at = 0, 0
  if share == nil and interval == nil then
    delay = nil -- wrk checks for delay() after the first init: no timer per request
  end
end

local function finish()
  if finished then
    return
  end
  finished = true
  if markers ~= nil then
    local marker = io.open(markers .. "/" .. id, "w")
    if marker ~= nil then
      marker:write(tostring(received))
      marker:close()
    end
  end
  wrk.thread:stop()
end

function delay()
  if share ~= nil then
    if granted >= share then
      if received >= share then
        finish()
      end
      return 3600000 -- this connection is done: park it
    end
    granted = granted + 1
  end
  if interval ~= nil then
    local moment = now()
    if next_slot == nil or next_slot < moment then
      next_slot = moment
    end
    local wait = next_slot - moment
    next_slot = next_slot + interval
    return math.floor(wait * 1000)
  end
  return 0
end

local function wait_for_ready()
  gated = false
  local deadline = now() + GATE_TIMEOUT_S
  while now() < deadline do
    local ready = io.open(markers .. "/ready", "r")
    if ready ~= nil then
      ready:close()
      return
    end
    ffi.C.poll(nil, 0, 10)
  end
end

function request()
  if verify_pending then
    verify_pending = false
    return list[1]
  end
  if gated then
    wait_for_ready()
  end
  index = index + 1
  if index > count then
    index = 1
  end
  sent = sent + 1
  if first_at == 0 then
    first_at = now()
  end
  return list[index]
end

function response(status, headers, body)
  received = received + 1
  last_at = now()
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 202 then
    if body ~= nil and string.find(body, '"duplicate":true', 1, true) then
      duplicates = duplicates + 1
    end
  elseif body ~= nil then
    local code = string.match(body, '"errorCode":"([%w_]+)"') or "none"
    codes[key .. " " .. code] = (codes[key .. " " .. code] or 0) + 1
  end
  if share ~= nil and received >= share then
    finish()
  end
end

-- Main state again: aggregate and print.
local function encode(value)
  local kind = type(value)
  if kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      return "null"
    end
    if value == math.floor(value) and math.abs(value) < 1e15 then
      return string.format("%d", value)
    end
    return string.format("%.10g", value)
  elseif kind == "string" then
    return '"' .. string.gsub(value, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
    end) .. '"'
  elseif kind == "boolean" then
    return tostring(value)
  elseif kind == "table" then
    local parts = {}
    if #value > 0 then
      for _, item in ipairs(value) do
        parts[#parts + 1] = encode(item)
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for key in pairs(value) do
      keys[#keys + 1] = tostring(key)
    end
    table.sort(keys)
    for _, key in ipairs(keys) do
      parts[#parts + 1] = encode(key) .. ":" .. encode(value[key])
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end

local function add_counts(into, from)
  for key, value in pairs(from or {}) do
    into[key] = (into[key] or 0) + value
  end
end

function done(summary, latency, requests)
  local total = {
    kept = 0, sent = 0, received = 0, duplicates = 0, statuses = {}, codes = {}, cycled = false
  }
  local first, last = nil, nil
  for _, thread in ipairs(threads) do
    local kept_here, sent_here = thread:get("kept") or 0, thread:get("sent") or 0
    total.kept = total.kept + kept_here
    total.sent = total.sent + sent_here
    total.received = total.received + (thread:get("received") or 0)
    total.duplicates = total.duplicates + (thread:get("duplicates") or 0)
    total.cycled = total.cycled or sent_here > kept_here
    add_counts(total.statuses, thread:get("statuses"))
    add_counts(total.codes, thread:get("codes"))
    local started, ended = thread:get("first_at") or 0, thread:get("last_at") or 0
    if started > 0 and (first == nil or started < first) then
      first = started
    end
    if ended > 0 and (last == nil or ended > last) then
      last = ended
    end
  end
  local errors = summary.errors
  local ms = function(us)
    return us / 1000
  end
  local percentiles = {}
  for p = 1, 99 do
    percentiles[#percentiles + 1] = { p, ms(latency:percentile(p)) }
  end
  percentiles[#percentiles + 1] = { 99.9, ms(latency:percentile(99.9)) }
  percentiles[#percentiles + 1] = { 99.99, ms(latency:percentile(99.99)) }
  local result = {
    requests = summary.requests,
    bytes = summary.bytes,
    wrk_duration_s = summary.duration / 1e6,
    active_s = (first ~= nil and last ~= nil) and (last - first) or 0,
    errors = {
      connect = errors.connect,
      read = errors.read,
      write = errors.write,
      timeout = errors.timeout,
      status = errors.status,
    },
    socket_errors = errors.connect + errors.read + errors.write + errors.timeout,
    threads = #threads,
    kept = total.kept,
    sent = total.sent,
    received = total.received,
    cycled = total.cycled,
    statuses = total.statuses,
    codes = total.codes,
    duplicates = total.duplicates,
    latency_ms = {
      min = ms(latency.min),
      mean = ms(latency.mean),
      max = ms(latency.max),
      stdev = ms(latency.stdev),
      p50 = ms(latency:percentile(50)),
      p75 = ms(latency:percentile(75)),
      p90 = ms(latency:percentile(90)),
      p95 = ms(latency:percentile(95)),
      p99 = ms(latency:percentile(99)),
      ["p99.9"] = ms(latency:percentile(99.9)),
    },
    percentiles_ms = percentiles,
  }
  io.write("WRK_JSON " .. encode(result) .. "\n")
end
