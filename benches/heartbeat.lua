-- wrk script: native heartbeats, round robin over 10,000 instances, hb-N of
-- service hb(N % 1000), which the calling script registers first
-- (benches/heartbeat-cpu.sh, benches/etcd-cluster.sh).
local n = -1
wrk.method = "PUT"
function request()
  n = (n + 1) % 10000
  return wrk.format(nil, "/v1/services/hb" .. (n % 1000) .. "/instances/hb-" .. n .. "/heartbeat")
end
