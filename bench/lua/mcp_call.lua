-- wrk script for bench/bench_http.py: one MCP tools/call per request, protocol 2026-07-28.
--
--   wrk -t1 -c10 -d10s -s bench/lua/mcp_call.lua http://127.0.0.1:8000 -- /mcp query \
--       "SELECT * FROM orders WHERE customer_id = {id}" 50000
--
-- Arguments after `--`: endpoint path, tool name, SQL (empty for a tool without arguments; every
-- `{id}` becomes a random integer in 1..id_max, drawn per request), id_max.
-- Each request is what fastmcp.Client 4.1.2 sends to a stateless server (captured, see
-- bench/README.md): the Mcp-Protocol-Version / Mcp-Method / Mcp-Name headers and the _meta keys.
-- Every response is checked: HTTP 200, a JSON-RPC result (not an error), isError not true. With an
-- SSE response (text/event-stream) the last `data:` line is the JSON-RPC message. done() prints
-- one line `WRKRESULT {json}` that bench_http.py parses; it fails the run on any bad response.

local path, tool, sql, id_max
local next_id = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
ok_count, bad_status, rpc_error, tool_error, unparsed, sse_count = 0, 0, 0, 0, 0, 0
first_bad = ""
local threads = {}

local function json_string(s)
  s = s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', '\\n')
  return '"' .. s .. '"'
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  path = args[1] or "/mcp"
  tool = args[2] or "query"
  sql = args[3] or ""
  id_max = tonumber(args[4] or "50000")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["Mcp-Protocol-Version"] = "2026-07-28",
  ["Mcp-Method"] = "tools/call",
}

local meta_tail = '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
  .. '"io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},'
  .. '"io.modelcontextprotocol/clientCapabilities":{},'
  .. '"io.modelcontextprotocol/logLevel":"debug"'

function request()
  next_id = next_id + 1
  headers["Mcp-Name"] = tool
  local arguments = "{}"
  if sql ~= "" then
    local text = sql:gsub("{id}", function() return tostring(math.random(1, id_max)) end)
    arguments = '{"sql":' .. json_string(text) .. '}'
  end
  local body = '{"jsonrpc":"2.0","id":' .. next_id .. ',"method":"tools/call","params":{"name":'
    .. json_string(tool) .. ',"arguments":' .. arguments .. ',"_meta":{' .. meta_tail
    .. ',"progressToken":' .. next_id .. '}}}'
  return wrk.format("POST", path, headers, body)
end

local function remember(kind, status, body)
  if first_bad == "" then
    first_bad = kind .. " (HTTP " .. status .. "): " .. body:sub(1, 400)
  end
end

function response(status, hdrs, body)
  if status ~= 200 then
    bad_status = bad_status + 1
    remember("status", status, body)
    return
  end
  local ctype = hdrs["Content-Type"] or hdrs["content-type"] or ""
  local message = body
  if ctype:find("text/event-stream", 1, true) then
    sse_count = sse_count + 1
    message = nil
    for line in body:gmatch("[^\r\n]+") do
      local data = line:match("^data:%s?(.*)$")
      if data and data ~= "" then message = data end
    end
    if message == nil then
      unparsed = unparsed + 1
      remember("no data line", status, body)
      return
    end
  end
  if message:find('"error"%s*:%s*{') and not message:find('"result"%s*:') then
    rpc_error = rpc_error + 1
    remember("JSON-RPC error", status, message)
  elseif not message:find('"result"%s*:') then
    unparsed = unparsed + 1
    remember("no result", status, message)
  elseif message:find('"isError"%s*:%s*true') then
    tool_error = tool_error + 1
    remember("tool error", status, message)
  else
    ok_count = ok_count + 1
  end
end

function done(summary, latency, requests)
  local t = { ok = 0, bad_status = 0, rpc_error = 0, tool_error = 0, unparsed = 0, sse = 0 }
  local sample = ""
  for _, thread in ipairs(threads) do
    t.ok = t.ok + thread:get("ok_count")
    t.bad_status = t.bad_status + thread:get("bad_status")
    t.rpc_error = t.rpc_error + thread:get("rpc_error")
    t.tool_error = t.tool_error + thread:get("tool_error")
    t.unparsed = t.unparsed + thread:get("unparsed")
    t.sse = t.sse + thread:get("sse_count")
    local fb = thread:get("first_bad")
    if sample == "" and fb ~= nil then sample = fb end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKRESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"ok":%d,"bad_status":%d,"rpc_error":%d,"tool_error":%d,"unparsed":%d,'
      .. '"sse":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
      .. '"status_errors":%d,"first_bad":%s}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, t.ok, t.bad_status, t.rpc_error, t.tool_error,
    t.unparsed, t.sse, e.connect, e.read, e.write, e.timeout, e.status, json_string(sample)))
end
