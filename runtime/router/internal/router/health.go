package router

import (
	"context"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthServer is grpc's health service with Watch streams that end on closeWatches (after the
// last status was sent), like healthwatch.HealthServicer: grpc's own never end, so a graceful stop
// would wait its whole grace period for them or cut calls in flight to end them.
type healthServer struct {
	*health.Server
	once    sync.Once
	closing chan struct{}
}

func newHealthServer() *healthServer {
	return &healthServer{Server: health.NewServer(), closing: make(chan struct{})}
}

// watchStream is a Watch stream whose context also ends when the watches are closed.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }

func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.Server.Watch(req, watchStream{stream, ctx})
	select {
	case <-h.closing:
		return nil // ended by the stop: a clean end of the stream
	default:
		return err
	}
}

// closeWatches ends every Watch stream, now and from now on.
func (h *healthServer) closeWatches() { h.once.Do(func() { close(h.closing) }) }

// Serving is whether this router's gRPC health (service "") says SERVING now.
func (rt *Runtime) Serving() bool {
	reply, err := rt.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: ""})
	return err == nil && reply.Status == healthpb.HealthCheckResponse_SERVING
}
