-- Test clock for the equivalence test with gcra::check: the two last ARGV are the time
-- (seconds, microseconds, like TIME's reply). Never used on the request path.
local now_s = tonumber(ARGV[#ARGV - 1])
local now_ns = tonumber(ARGV[#ARGV]) * 1000

