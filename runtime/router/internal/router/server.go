package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"

	"metaparticle/router/internal/pyjson"
)

const (
	serviceName = "metaparticle.v1.Function" // pb.Function_ServiceDesc.ServiceName
	callIDKey   = "mp-call-id"               // a hedgeable call's id
	hedgeKey    = "mp-hedge"                 // marks the hedge of that call
	// How much earlier than the caller's deadline a gRPC call gives up, so that its answer is on
	// the caller's side before the caller's own timer fires: a twentieth of the time left, within
	// these bounds (a loaded machine can delay a wake-up by several milliseconds).
	minDeadlineMargin = 5 * time.Millisecond
	maxDeadlineMargin = 50 * time.Millisecond
)

// Runtime serves one router role: admission (in-flight bound), deadlines and error documents
// around Role.Call, health, the HTTP entry and the graceful stop (server.Runtime).
type Runtime struct {
	cfg      *Config
	role     Role
	log      *Logger
	inFlight atomic.Int64
	ready    atomic.Bool
	stopping atomic.Bool
	health   *healthServer
	grpc     *grpc.Server
	http     *http.Server
	httpLis  net.Listener // the HTTP entry's listener, closed by Stop before http.Shutdown
	httpConn atomic.Int64 // HTTP connections open (accepted, not yet closed)
	ops      *http.Server // MP_METRICS_PORT
	metrics  *Metrics
	idsMu    sync.Mutex
	callIDs  map[string]bool // ids of hedgeable calls running here (metadata mp-call-id)
}

// NewRuntime connects the role's upstreams (lazily: nothing blocks here).
func NewRuntime(cfg *Config, log *Logger) (*Runtime, error) {
	role, err := BuildRole(cfg)
	if err != nil {
		return nil, err
	}
	metrics := NewMetrics(cfg.Pattern, cfg.RoleName)
	for _, up := range role.Upstreams() {
		up.metrics = metrics
	}
	return &Runtime{cfg: cfg, role: role, log: log, health: newHealthServer(), metrics: metrics, callIDs: map[string]bool{}}, nil
}

// Dispatch runs one request through the role, refusing it fast when this router is saturated.
func (rt *Runtime) Dispatch(ctx context.Context, message []byte, deadline time.Time) (reply []byte, rerr *RoleError) {
	if rt.inFlight.Add(1) > int64(rt.cfg.MaxInFlight) {
		rt.inFlight.Add(-1)
		rt.metrics.Refused()
		rt.metrics.Answered(codes.ResourceExhausted, 0)
		msg := fmt.Sprintf("%s is at its limit of %d requests in flight; retry later", rt.cfg.RoleName, rt.cfg.MaxInFlight)
		return nil, newError(codes.ResourceExhausted, msg).with("role", pyjson.Str(rt.cfg.RoleName)).with("replica", pyjson.Str(rt.cfg.Replica))
	}
	rt.metrics.InFlight.Inc()
	started := time.Now()
	defer func() {
		// A bug must still answer a JSON error, not end the process (server.Runtime.dispatch).
		if p := recover(); p != nil {
			rt.log.Error(fmt.Sprintf("%s failed: %v", rt.cfg.RoleName, p))
			reply, rerr = nil, newError(codes.Internal, fmt.Sprintf("%s failed: %T", rt.cfg.RoleName, p)).
				with("role", pyjson.Str(rt.cfg.RoleName)).with("replica", pyjson.Str(rt.cfg.Replica))
		}
		code := codes.OK
		if rerr != nil {
			code = rerr.Code
		}
		rt.inFlight.Add(-1)
		rt.metrics.InFlight.Dec()
		rt.metrics.Answered(code, time.Since(started).Seconds())
	}()
	return rt.role.Call(ctx, message, deadline)
}

// claimCallID records a hedgeable call's id and refuses, before it runs, a hedge of a call that
// runs here already, so that the caller sends it elsewhere (server.Runtime._claim_call_id).
func (rt *Runtime) claimCallID(ctx context.Context) (string, *RoleError) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get(callIDKey)
	if len(ids) == 0 {
		return "", nil
	}
	id, hedge := ids[len(ids)-1], len(md.Get(hedgeKey)) > 0
	rt.idsMu.Lock()
	defer rt.idsMu.Unlock()
	if rt.callIDs[id] {
		if hedge {
			return "", newError(codes.Aborted, rt.cfg.RoleName+": the hedged call already runs on this replica").
				with("hedge", pyjson.Str("same-replica")).with("replica", pyjson.Str(rt.cfg.Replica))
		}
		return "", nil // the same id twice: keep the first claim
	}
	rt.callIDs[id] = true
	return id, nil
}

func (rt *Runtime) releaseCallID(id string) {
	if id != "" {
		rt.idsMu.Lock()
		delete(rt.callIDs, id)
		rt.idsMu.Unlock()
	}
}

// answerWithin is the time a call may take when its caller's deadline is `left` away.
func answerWithin(left time.Duration) time.Duration {
	return left - min(max(left/20, minDeadlineMargin), maxDeadlineMargin)
}

func (rt *Runtime) grpcCall(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in frame
	if err := dec(&in); err != nil {
		return nil, err
	}
	timeout := rt.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		// grpc-go resets the stream (RST_STREAM CANCEL, which callers may read as CANCELLED) the
		// moment the caller's deadline passes: answer DEADLINE_EXCEEDED, with its document, just before.
		timeout = min(answerWithin(time.Until(dl)), timeout)
	}
	id, rerr := rt.claimCallID(ctx)
	defer rt.releaseCallID(id)
	var out []byte
	if rerr == nil {
		md, _ := metadata.FromIncomingContext(ctx)
		if len(md.Get("grpc-previous-rpc-attempts")) > 0 {
			rt.metrics.Retried()
		}
		ctx = withTraceContext(ctx, func(key string) string {
			if v := md.Get(key); len(v) > 0 {
				return v[len(v)-1]
			}
			return ""
		})
		out, rerr = rt.Dispatch(ctx, in.b, time.Now().Add(timeout))
	}
	if rerr != nil {
		st, trailer := rerr.GRPC()
		grpc.SetTrailer(ctx, trailer)
		return nil, st
	}
	return &frame{out}, nil
}

// serviceDesc is metaparticle.v1.Function with a handler over raw frames: the request bytes are
// forwarded as they came, never decoded and re-encoded.
func (rt *Runtime) serviceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: serviceName,
		HandlerType: (*any)(nil), // the handler is Runtime.grpcCall, over raw frames
		Methods:     []grpc.MethodDesc{{MethodName: "Call", Handler: rt.grpcCall}},
		Metadata:    "metaparticle/v1/runtime.proto",
	}
}

// TopologyHealth is Runtime.topology_health: whether this role and every group behind it serves.
func (rt *Runtime) TopologyHealth(ctx context.Context) (bool, *pyjson.Obj) {
	ups := rt.role.Upstreams()
	serving := make([]bool, len(ups))
	var wg sync.WaitGroup
	for i, up := range ups {
		wg.Add(1)
		go func() { defer wg.Done(); serving[i] = up.Check(ctx, time.Second) }()
	}
	wg.Wait()
	var down []pyjson.Value
	for i, up := range ups {
		if !serving[i] {
			down = append(down, pyjson.Str(up.RoleName))
		}
	}
	detail := pyjson.NewObj().Set("role", pyjson.Str(rt.cfg.RoleName))
	if len(down) > 0 {
		detail.Set("down", pyjson.Value{Kind: pyjson.Array, Items: down})
	}
	return rt.ready.Load() && !rt.stopping.Load() && len(down) == 0, detail
}

func (rt *Runtime) serverTLS() (credentials.TransportCredentials, error) {
	if rt.cfg.TLSCert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(rt.cfg.TLSCert, rt.cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(rt.cfg.TLSCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", rt.cfg.TLSCA)
	}
	// Always mutual: clients must present a certificate the CA signed.
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}), nil
}

// Start listens (gRPC, then HTTP when configured) and turns SERVING once every upstream group has
// a serving replica.
func (rt *Runtime) Start() error {
	cfg := rt.cfg
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newRawCodec()),
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes + 1024),
		grpc.MaxSendMsgSize(cfg.MaxResponseBytes + 1024),
		// Static flow-control windows (see flowWindow): no BDP ping per request.
		grpc.StaticStreamWindowSize(flowWindow(cfg.MaxRequestBytes)),
		grpc.StaticConnWindowSize(flowWindow(cfg.MaxRequestBytes)),
		// Clients reconnect (and re-resolve DNS) now and then, so new replicas of a scaled-up router take traffic.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 30 * time.Second, MaxConnectionAgeGrace: cfg.Timeout + time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	creds, err := rt.serverTLS()
	if err != nil {
		return &ConfigError{fmt.Sprintf("TLS: %v", err)}
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	rt.grpc = grpc.NewServer(opts...)
	rt.grpc.RegisterService(rt.serviceDesc(), rt)
	healthpb.RegisterHealthServer(rt.grpc, rt.health)
	reflection.Register(rt.grpc)
	address := net.JoinHostPort(cfg.BindHost, fmt.Sprint(cfg.GRPCPort))
	lis, err := listen(address, cfg.ReusePort)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", address, err)
	}
	rt.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	rt.health.SetServingStatus(serviceName, healthpb.HealthCheckResponse_NOT_SERVING)
	go rt.grpc.Serve(lis)
	if cfg.HTTPPort != 0 {
		hl, err := httpListener(cfg)
		if err != nil {
			rt.grpc.Stop()
			return fmt.Errorf("cannot listen on HTTP port %d: %w", cfg.HTTPPort, err)
		}
		rt.http = &http.Server{
			Handler: rt.httpHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
			ConnState: rt.countConn,
		}
		rt.httpLis = hl
		go rt.http.Serve(hl)
	}
	if cfg.MetricsPort != 0 {
		// With SO_REUSEPORT under MP_REUSE_PORT: the local target holds this port until it binds.
		ol, err := listen(net.JoinHostPort(cfg.BindHost, fmt.Sprint(cfg.MetricsPort)), cfg.ReusePort)
		if err != nil {
			rt.grpc.Stop()
			if rt.http != nil {
				rt.http.Close()
			}
			return fmt.Errorf("cannot listen on metrics port %d: %w", cfg.MetricsPort, err)
		}
		rt.ops = &http.Server{Handler: rt.opsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go rt.ops.Serve(ol)
	}
	go rt.awaitUpstreams()
	rt.log.Info("listening", "grpc", address, "http", cfg.HTTPPort, "pattern", cfg.Pattern, "name", cfg.Name, "router", "go", "procs", runtime.GOMAXPROCS(0))
	return nil
}

func (rt *Runtime) awaitUpstreams() {
	for !rt.stopping.Load() {
		ok := true
		for _, up := range rt.role.Upstreams() {
			if !up.Check(context.Background(), time.Second) {
				ok = false
				break
			}
		}
		if ok && !rt.stopping.Load() {
			rt.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			rt.health.SetServingStatus(serviceName, healthpb.HealthCheckResponse_SERVING)
			rt.ready.Store(true)
			rt.log.Info("serving: every upstream answers")
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Stop is the graceful stop (SIGTERM): NOT_SERVING at once, so routers in front send no new calls;
// keep accepting for drain_seconds; then refuse new calls and finish those in flight within the
// request deadline.
func (rt *Runtime) Stop() {
	if rt.stopping.Swap(true) {
		return
	}
	rt.log.Info("stopping: draining in-flight requests", "in_flight", rt.inFlight.Load())
	rt.health.Shutdown()
	time.Sleep(rt.cfg.DrainSeconds)
	grace, cancel := context.WithTimeout(context.Background(), rt.cfg.Timeout)
	defer cancel()
	// Refuse new calls on both entries at once and let those in flight finish (within the request
	// deadline); health watches end first, or GracefulStop would wait for them.
	rt.health.closeWatches()
	stopped := make(chan struct{})
	go func() { rt.grpc.GracefulStop(); close(stopped) }()
	if rt.http != nil {
		rt.stopAcceptingHTTP(grace)
		rt.http.Shutdown(grace)
	}
	select {
	case <-stopped:
	case <-grace.Done():
		rt.grpc.Stop()
	}
	for _, up := range rt.role.Upstreams() {
		up.Close()
	}
	if rt.ops != nil {
		rt.ops.Close()
	}
	rt.log.Info("stopped")
}

// countConn keeps the number of open HTTP connections (http.Server's ConnState hook).
func (rt *Runtime) countConn(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		rt.httpConn.Add(1)
	case http.StateClosed, http.StateHijacked:
		rt.httpConn.Add(-1)
	}
}

// stopAcceptingHTTP closes the HTTP listener, then waits (up to drain_seconds, at least 100 ms,
// within ctx) for the connections accepted so far to be answered and closed: every answer says
// "Connection: close" since the stop began, so keep-alive clients move to a new connection, which
// the successor sharing the listening socket accepts. http.Server.Shutdown, which comes next,
// drops a request it reads once it has begun and closes idle connections as a client may be
// sending on them: only connections idle for that whole wait are left to it.
func (rt *Runtime) stopAcceptingHTTP(ctx context.Context) {
	rt.httpLis.Close()
	settle := rt.cfg.DrainSeconds
	if settle < 100*time.Millisecond {
		settle = 100 * time.Millisecond
	}
	deadline := time.NewTimer(settle)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for rt.httpConn.Load() > 0 {
		select {
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Serve runs until SIGTERM or SIGINT, then stops gracefully.
func Serve(cfg *Config, log *Logger) error {
	rt, err := NewRuntime(cfg, log)
	if err != nil {
		return err
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	if err := rt.Start(); err != nil {
		return err
	}
	<-signals
	rt.Stop()
	return nil
}
