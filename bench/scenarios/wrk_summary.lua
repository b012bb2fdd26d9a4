-- wrk's summary as one JSON line (latencies in microseconds), for bench/scenarios/real_servers.py.
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '\nBENCH {"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
