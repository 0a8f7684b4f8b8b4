-- Tollgate cluster rate limiting: GCRA over several buckets, all-or-nothing, one round trip.
-- This body runs after a clock prelude (server_clock.lua in production) that defines
-- now_s (seconds) and now_ns (nanoseconds within the second).
--
-- KEYS[i]       bucket key (chosen and length-bounded by the caller)
-- ARGV[2i-1]    emission interval T of bucket i, in nanoseconds
-- ARGV[2i]      tolerance tau of bucket i (T x (burst - 1)), in nanoseconds
-- Returns a flat array, four integers per bucket:
--   allowed (1/0), remaining, reset (ns), retry_after (ns)
--
-- The arithmetic is gcra::check, written relative to "now": Lua numbers are doubles (exact
-- integers only up to 2^53 ns, about 104 days), so absolute nanosecond times never enter a
-- sum. A bucket's TAT is stored as "<seconds> <nanoseconds>" and only differences to now are
-- computed; the caller keeps T + tau below 2^52 ns.
--
local BILLION = 1000000000

-- Exact floor(a / b) for non-negative integers below 2^53 held in doubles: a / b alone can
-- round up to the next integer when b is large.
local function idiv(a, b)
  return (a - math.fmod(a, b)) / b
end

local n = #KEYS
local out = {}
local commit = {}
-- TATs decided earlier in this call (relative to now), so a key named twice is charged twice.
local pending = {}
local all_allowed = true

for i = 1, n do
  local key = KEYS[i]
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local rel = pending[key]
  if rel == nil then
    rel = 0
    local raw = redis.call('GET', key)
    if raw then
      local s, ns = string.match(raw, '^(%d+) (%d+)$')
      if s then
        rel = (tonumber(s) - now_s) * BILLION + (tonumber(ns) - now_ns)
      end
    end
  end
  -- tat = max(tat, now)
  if rel < 0 then
    rel = 0
  end
  -- rel is now "ahead": how far max(TAT, now) runs ahead of now.
  if rel > tau then
    all_allowed = false
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = rel
    out[#out + 1] = rel - tau
  else
    local new_rel = rel + t
    local remaining = 0
    if new_rel <= tau then
      remaining = idiv(tau - new_rel, t) + 1
    end
    out[#out + 1] = 1
    out[#out + 1] = remaining
    out[#out + 1] = new_rel
    out[#out + 1] = 0
    pending[key] = new_rel
    commit[#commit + 1] = { key, new_rel }
  end
end

if all_allowed then
  for _, c in ipairs(commit) do
    local total = now_ns + c[2]
    local carry = idiv(total, BILLION)
    local value = string.format('%d %d', now_s + carry, total - carry * BILLION)
    -- The bucket is full again (same as absent) once its TAT has passed: expire it then, so
    -- idle buckets leave Redis by themselves.
    if expire_keys then
      local ttl_ms = idiv(c[2], 1000000) + 1
      redis.call('SET', c[1], value, 'PX', ttl_ms)
    else
      redis.call('SET', c[1], value)
    end
  end
end

return out
