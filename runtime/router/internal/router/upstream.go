package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking (healthCheckConfig)
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"metaparticle/router/internal/pb"
	"metaparticle/router/internal/pyjson"
)

// serviceConfig is upstream.service_config: round robin per call over replicas whose health says
// SERVING; with retries, a call that failed UNAVAILABLE goes to another replica (throttled).
func serviceConfig(retries, burst int) string {
	cfg := map[string]any{
		"loadBalancingConfig": []any{map[string]any{"round_robin": map[string]any{}}},
		"healthCheckConfig":   map[string]any{"serviceName": ""},
	}
	if retries > 0 {
		cfg["methodConfig"] = []any{map[string]any{
			"name": []any{map[string]any{"service": "metaparticle.v1.Function"}},
			"retryPolicy": map[string]any{
				"maxAttempts": min(retries+1, 5), "initialBackoff": "0.01s", "maxBackoff": "0.2s",
				"backoffMultiplier": 2, "retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}}
		cfg["retryThrottling"] = map[string]any{"maxTokens": min(1000, 2*max(burst, 10)+20), "tokenRatio": 0.1}
	}
	out, _ := json.Marshal(cfg)
	return string(out)
}

// flowWindow is the HTTP/2 flow-control window for messages of up to maxBytes (plus the Payload
// envelope), within 64 KiB..16 MiB (grpc-go's floor and its dynamic window's ceiling): a whole
// message fits, so no sender waits for a window update, as with grpc-go's dynamic windows once
// grown. Dynamic windows cost a BDP ping (a write, a read and a wake-up on each side) on nearly
// every call at moderate load; static ones cost none.
func flowWindow(maxBytes int) int32 {
	return int32(min(max(maxBytes+1024, 64<<10), 16<<20))
}

// staticResolver serves targets that list their replicas: ipv4:127.0.0.1:5001,127.0.0.1:5002.
type staticResolver struct{ scheme string }

func (s staticResolver) Scheme() string { return s.scheme }

func (s staticResolver) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	var addrs []resolver.Address
	for _, a := range strings.Split(t.Endpoint(), ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("bad address %q in target: %v", a, err)
		}
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	return nopResolver{}, cc.UpdateState(resolver.State{Addresses: addrs})
}

type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}

// tlsServerName is upstream.tls_server_name: for address lists, the host of the first address.
func tlsServerName(target string) string {
	for _, scheme := range []string{"ipv4:", "ipv6:"} {
		if strings.HasPrefix(target, scheme) {
			first := strings.Split(target[len(scheme):], ",")[0]
			host := first
			if strings.Count(first, ":") == 1 || strings.HasPrefix(first, "[") {
				host = first[:strings.LastIndex(first, ":")]
			}
			return strings.Trim(host, "[]")
		}
	}
	return ""
}

// clientTLS is tls.channel_credentials: trust the CA, present our certificate when we have one.
func clientTLS(cfg *Config, serverName string) (credentials.TransportCredentials, error) {
	if cfg.TLSCA == "" && cfg.TLSCert == "" {
		return nil, nil
	}
	tc := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", cfg.TLSCA)
		}
	}
	if cfg.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(tc), nil
}

// Upstream is one downstream group (a replica set or a shard) that the router calls.
type Upstream struct {
	Target, Label, RoleName string
	details                 []detail
	maxResponse             int
	conn                    *grpc.ClientConn
	health                  healthpb.HealthClient
	metrics                 *Metrics // counts calls by outcome (the runtime's, set once before serving)
}

func newUpstream(cfg *Config, target, label, roleName string, details []detail) (*Upstream, error) {
	opts := []grpc.DialOption{
		grpc.WithResolvers(staticResolver{"ipv4"}, staticResolver{"ipv6"}),
		grpc.WithDefaultServiceConfig(serviceConfig(cfg.Retries, cfg.MaxInFlight)),
		// Requests up to max_request_bytes, replies up to max_response_bytes (each plus the Payload envelope).
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxResponseBytes+1024), grpc.MaxCallSendMsgSize(cfg.MaxRequestBytes+1024), grpc.ForceCodecV2(newRawCodec())),
		// Static flow-control windows (see flowWindow): no BDP ping per call.
		grpc.WithStaticStreamWindowSize(flowWindow(cfg.MaxResponseBytes)),
		grpc.WithStaticConnWindowSize(flowWindow(cfg.MaxResponseBytes)),
		// A restarted replica must take traffic again within a second, not after a long backoff.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}, MinConnectTimeout: 20 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 20 * time.Second}),
	}
	name := tlsServerName(target)
	creds, err := clientTLS(cfg, name)
	if err != nil {
		return nil, fmt.Errorf("TLS for %s: %w", label, err)
	}
	if creds != nil {
		opts = append(opts, grpc.WithTransportCredentials(creds))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if creds == nil && (strings.HasPrefix(target, "ipv4:") || strings.HasPrefix(target, "ipv6:")) {
		// With TLS the authority is the certificate's host (tlsServerName); without, the first address.
		first := strings.Split(strings.SplitN(target, ":", 2)[1], ",")[0]
		opts = append(opts, grpc.WithAuthority(first))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s (%s): %w", label, target, err)
	}
	conn.Connect()
	return &Upstream{Target: target, Label: label, RoleName: roleName, details: details, maxResponse: cfg.MaxResponseBytes, conn: conn, health: healthpb.NewHealthClient(conn)}, nil
}

// Call is Upstream.call: forwards the request bytes, answers the reply bytes, within the deadline.
func (u *Upstream) Call(ctx context.Context, message []byte, deadline time.Time) ([]byte, *RoleError) {
	if !time.Now().Before(deadline) {
		e := newError(codes.DeadlineExceeded, u.Label+": deadline exceeded")
		for _, d := range u.details {
			e.Details.Set(d.key, d.val)
		}
		return nil, e
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var trailer metadata.MD
	var reply frame
	err := u.conn.Invoke(cctx, pb.Function_Call_FullMethodName, &frame{message}, &reply, grpc.Trailer(&trailer))
	if u.metrics != nil {
		u.metrics.UpstreamCall(u.RoleName, status.Code(err))
	}
	if err != nil {
		if st := status.Convert(err); st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max") {
			// gRPC's own refusal of a reply over this channel's limit: name the limit and the group.
			e := newError(codes.ResourceExhausted, fmt.Sprintf("%s: its result is larger than max_response_bytes (%d)", u.Label, u.maxResponse)).
				with("response_too_large", pyjson.BoolV(true)).with("limit", intV(u.maxResponse))
			for _, d := range u.details {
				e.Details.Set(d.key, d.val)
			}
			return nil, e
		}
		return nil, fromRPCError(err, trailer, u.Label, u.details)
	}
	return reply.b, nil
}

// Check is Upstream.check: whether a replica of this group answers SERVING.
func (u *Upstream) Check(ctx context.Context, timeout time.Duration) bool {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := u.health.Check(cctx, &healthpb.HealthCheckRequest{Service: ""})
	return err == nil && reply.Status == healthpb.HealthCheckResponse_SERVING
}

func (u *Upstream) Close() { u.conn.Close() }
