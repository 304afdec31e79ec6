package router

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

// buckets are metrics.BUCKETS: request durations in seconds.
var buckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0}

// Metrics are the Python runtime's metrics.Metrics a router has (the same names, help and labels),
// in a registry of their own; `pattern` and `role` label every series.
type Metrics struct {
	registry                *prometheus.Registry
	requests, upstreamCalls *prometheus.CounterVec
	refused, retries        *prometheus.CounterVec
	duration                *prometheus.HistogramVec
	InFlight                prometheus.Gauge
	handler                 http.Handler
	pattern, role           string
}

// NewMetrics registers the series; like prometheus_client's labelled metrics, a series appears at
// its first count (metaparticle_in_flight at once, at 0).
func NewMetrics(pattern, role string) *Metrics {
	common := []string{"pattern", "role"}
	m := &Metrics{registry: prometheus.NewRegistry(), pattern: pattern, role: role}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "metaparticle_requests_total", Help: "Requests answered, by gRPC status name."}, append(common, "code"))
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "metaparticle_request_duration_seconds", Help: "Time to answer a request.", Buckets: buckets}, common)
	inFlight := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "metaparticle_in_flight", Help: "Requests being worked on now."}, common)
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "metaparticle_refused_total", Help: "Requests refused at once because the role was at max_in_flight."}, common)
	m.upstreamCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "metaparticle_upstream_calls_total", Help: "Calls to an upstream (a shard, a leaf, the replicas), by outcome (gRPC status name)."}, append(common, "upstream", "outcome"))
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "metaparticle_retries_total", Help: "Requests received as a retry of an attempt that failed on another replica (gRPC's grpc-previous-rpc-attempts)."}, common)
	m.registry.MustRegister(m.requests, m.duration, inFlight, m.refused, m.upstreamCalls, m.retries)
	m.InFlight = inFlight.WithLabelValues(pattern, role)
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

// Answered counts one answered request by its gRPC status name, and its duration.
func (m *Metrics) Answered(code codes.Code, seconds float64) {
	m.requests.WithLabelValues(m.pattern, m.role, codeName(code)).Inc()
	m.duration.WithLabelValues(m.pattern, m.role).Observe(seconds)
}

func (m *Metrics) Refused() { m.refused.WithLabelValues(m.pattern, m.role).Inc() }
func (m *Metrics) Retried() { m.retries.WithLabelValues(m.pattern, m.role).Inc() }

// UpstreamCall counts one call to the upstream role `upstream` by outcome.
func (m *Metrics) UpstreamCall(upstream string, outcome codes.Code) {
	m.upstreamCalls.WithLabelValues(m.pattern, m.role, upstream, codeName(outcome)).Inc()
}

// Handler serves the registry in Prometheus' text format (GET /metrics).
func (m *Metrics) Handler() http.Handler { return m.handler }

// codeName is the gRPC status name as Python's grpc.StatusCode spells it (OK, UNAVAILABLE, ...).
func codeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return "UNKNOWN"
}
