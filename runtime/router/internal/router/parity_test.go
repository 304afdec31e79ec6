package router

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func baseEnv(extra map[string]string) map[string]string {
	env := map[string]string{"MP_ROLE": "spread", "MP_UPSTREAMS": `["ipv4:127.0.0.1:1"]`}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func TestRuntimeSettingsOfTheLocalTargetAreRead(t *testing.T) {
	cfg, err := FromEnv(envOf(baseEnv(map[string]string{"MP_REUSE_PORT": "true", "MP_PARENT_PID": "42", "MP_METRICS_PORT": "9100", "MP_IDEMPOTENT": "0"})))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.ReusePort || cfg.ParentPID != 42 || cfg.MetricsPort != 9100 || cfg.Idempotent {
		t.Fatalf("got %+v", cfg)
	}
	cfg, _ = FromEnv(envOf(baseEnv(nil)))
	if cfg.ReusePort || cfg.ParentPID != 0 || cfg.MetricsPort != 0 || !cfg.Idempotent {
		t.Fatalf("defaults: got %+v", cfg)
	}
}

func TestValuesThePythonRuntimeRefusesAreRefusedWithItsMessage(t *testing.T) {
	cases := map[string]string{
		"MP_REUSE_PORT":   "MP_REUSE_PORT must be true or false, got 'yes'",
		"MP_PARENT_PID":   "MP_PARENT_PID must be a int, got 'yes'",
		"MP_METRICS_PORT": "MP_METRICS_PORT must be a int, got 'yes'",
		"MP_INDEX":        "MP_INDEX must be a int, got 'yes'",
		"MP_HEDGE_AFTER":  "MP_HEDGE_AFTER must be a float, got 'yes'",
		"MP_EVENT_LOOP":   "MP_EVENT_LOOP must be auto, asyncio or uvloop, got 'yes'",
		"MP_ON_MISSING":   "MP_ON_MISSING must be fail or partial, got 'yes'",
	}
	for name, want := range cases {
		_, err := FromEnv(envOf(baseEnv(map[string]string{name: "yes"})))
		if err == nil || err.Error() != want {
			t.Errorf("%s=yes: got %v, want %q", name, err, want)
		}
	}
}

// hold binds port 0 like metaparticle_pulumi/_ports.py: SO_REUSEPORT, bound, never listening.
func hold(t *testing.T) (int, func()) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	return sa.(*unix.SockaddrInet4).Port, func() { unix.Close(fd) }
}

func TestAHeldPortIsBoundWithReusePortAndRefusedWithout(t *testing.T) {
	port, release := hold(t)
	defer release()
	address := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if l, err := listen(address, false); err == nil {
		l.Close()
		t.Fatal("a listener without SO_REUSEPORT bound a held port")
	} else if !strings.Contains(err.Error(), syscall.EADDRINUSE.Error()) {
		t.Fatalf("want address in use, got %v", err)
	}
	l, err := listen(address, true)
	if err != nil {
		t.Fatalf("with SO_REUSEPORT: %v", err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatalf("the listener next to the held socket takes connections: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hi" {
		t.Fatalf("got %q", got)
	}
}

func TestTheCallersTraceContextBecomesTheUpstreamCallsMetadata(t *testing.T) {
	in := map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "a=b", "other": "x"}
	ctx := withTraceContext(context.Background(), func(k string) string { return in[k] })
	md, _ := metadata.FromOutgoingContext(ctx)
	if got := md.Get("traceparent"); len(got) != 1 || got[0] != in["traceparent"] {
		t.Fatalf("traceparent: %v", md)
	}
	if got := md.Get("tracestate"); len(got) != 1 || got[0] != "a=b" {
		t.Fatalf("tracestate: %v", md)
	}
	if len(md.Get("other")) != 0 {
		t.Fatalf("only the trace context is passed on: %v", md)
	}
	bad := withTraceContext(context.Background(), func(k string) string { return "\x00\xff" })
	if md, ok := metadata.FromOutgoingContext(bad); ok && len(md) != 0 {
		t.Fatalf("unprintable values are dropped: %v", md)
	}
}

func TestMetricsHaveThePythonRuntimesNamesAndLabels(t *testing.T) {
	m := NewMetrics("Spread", "api-router")
	m.Answered(codes.OK, 0.003)
	m.Answered(codes.ResourceExhausted, 0)
	m.Refused()
	m.Retried()
	m.UpstreamCall("api-replica", codes.Unavailable)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`metaparticle_requests_total{code="OK",pattern="Spread",role="api-router"} 1`,
		`metaparticle_requests_total{code="RESOURCE_EXHAUSTED",pattern="Spread",role="api-router"} 1`,
		`metaparticle_request_duration_seconds_bucket{pattern="Spread",role="api-router",le="0.005"} 2`,
		`metaparticle_request_duration_seconds_bucket{pattern="Spread",role="api-router",le="0.0025"} 1`,
		`metaparticle_in_flight{pattern="Spread",role="api-router"} 0`,
		`metaparticle_refused_total{pattern="Spread",role="api-router"} 1`,
		`metaparticle_retries_total{pattern="Spread",role="api-router"} 1`,
		`metaparticle_upstream_calls_total{outcome="UNAVAILABLE",pattern="Spread",role="api-router",upstream="api-replica"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in\n%s", want, body)
		}
	}
}
