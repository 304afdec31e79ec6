package router

import "testing"

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
