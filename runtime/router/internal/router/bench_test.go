package router

import (
	"testing"

	"google.golang.org/grpc/codes"
)

// BenchmarkShardOf is the shard router's own work per request: unwrap, decode, key, hash.
func BenchmarkShardOf(b *testing.B) {
	message := wrap([]byte(`{"user": {"id": "u-12345", "name": "Ada"}, "items": [1, 2.5, "three", null, true], "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ShardOf(message, "user.id", 10, 1<<22, 64); err != nil {
			b.Fatal(err.Message)
		}
	}
}

// BenchmarkMetricsPerRequest is what the metrics add to one routed request: in flight up and down,
// the answer and its duration, the upstream call.
func BenchmarkMetricsPerRequest(b *testing.B) {
	m := NewMetrics("Spread", "api-router")
	b.ReportAllocs()
	for b.Loop() {
		m.InFlight.Inc()
		m.UpstreamCall("api-replica", codes.OK)
		m.InFlight.Dec()
		m.Answered(codes.OK, 0.0002)
	}
}
