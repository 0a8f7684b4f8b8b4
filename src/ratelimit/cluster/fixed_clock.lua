-- Test clock for the equivalence test with gcra::check: the two last ARGV are the time
-- (seconds, microseconds, like TIME's reply). Never used on the request path.
local now_s = tonumber(ARGV[#ARGV - 1])
local now_ns = tonumber(ARGV[#ARGV]) * 1000
-- Redis would expire keys on its real clock, not on this one, and drop buckets the model under
-- test still holds: no expiry here.
local expire_keys = false

