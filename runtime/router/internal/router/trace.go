package router

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// traceKeys are the W3C trace context: the Go router makes no span of its own, it passes the
// caller's context on to the upstream call, so the replica's span is the caller's child and a
// request stays one trace across the router.
var traceKeys = []string{"traceparent", "tracestate"}

// withTraceContext is ctx with the caller's traceparent and tracestate (read by get from the
// incoming metadata or HTTP headers) as outgoing metadata. Values that are not printable ASCII,
// or longer than the W3C limits allow, are dropped: gRPC would refuse the call for them.
func withTraceContext(ctx context.Context, get func(string) string) context.Context {
	var kv []string
	for _, key := range traceKeys {
		if v := get(key); v != "" && len(v) <= 1024 && printable(v) {
			kv = append(kv, key, v)
		}
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
