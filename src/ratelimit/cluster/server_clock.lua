-- The time is the Redis server's own (TIME), so gateways with skewed clocks share one budget.
-- TIME is non-deterministic: Redis 7 always replicates a script by its effects (the SETs), which
-- allows it; Redis 5 and 6 need replicate_commands() first, a no-op on 7.
if redis.replicate_commands then
  redis.replicate_commands()
end

local now = redis.call('TIME')
local now_s = tonumber(now[1])
local now_ns = tonumber(now[2]) * 1000
-- Expiry runs on the same clock as the buckets, so an expired key is exactly a full bucket.
local expire_keys = true

