// Package router is the Go implementation of the runtime's spread and shard router roles: the same
// environment (RuntimeConfig.to_env), gRPC service, health, HTTP entry and error documents as the
// Python runtime (runtime/metaparticle_runtime), which stays the reference and the fallback.
package router

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// ConfigError is a configuration the router cannot run (exit code 2, like the Python runtime).
type ConfigError struct{ msg string }

func (e *ConfigError) Error() string { return e.msg }

func configErr(format string, args ...any) error { return &ConfigError{fmt.Sprintf(format, args...)} }

// Config is the part of RuntimeConfig (runtime/metaparticle_runtime/config.py) a router reads.
type Config struct {
	Pattern, Name, Role, RoleName, Replica string
	BindHost                               string
	GRPCPort                               int
	HTTPPort                               int // 0: no HTTP entry
	HTTPFd                                 int // MP_HTTP_FD: an inherited listening socket for the HTTP entry (-1: bind HTTPPort)
	Timeout                                time.Duration
	MaxRequestBytes, MaxJSONDepth          int
	MaxResponseBytes                       int // MP_MAX_RESPONSE_BYTES: the largest reply accepted and sent
	Idempotent                             bool
	MaxInFlight, Retries                   int
	Upstreams, UpstreamNames               []string
	KeyPath                                string
	DrainSeconds                           time.Duration
	TLSCert, TLSKey, TLSCA                 string
	LogLevel                               string
	ReusePort                              bool // MP_REUSE_PORT: bind the gRPC and HTTP ports with SO_REUSEPORT
	ParentPID                              int  // MP_PARENT_PID: 0, or the supervisor this process dies with
	MetricsPort                            int  // MP_METRICS_PORT: 0, or the port of GET /metrics and /healthz
}

// FromEnv reads the MP_* variables (lookup is os.LookupEnv in production).
func FromEnv(lookup func(string) (string, bool)) (*Config, error) {
	get := func(name string) string {
		v, _ := lookup(name)
		return v
	}
	intOf := func(name string, def int) (int, error) {
		raw := strings.TrimSpace(get(name))
		if raw == "" {
			return def, nil
		}
		v, err := strconv.Atoi(raw)
		if err != nil {
			return 0, configErr("%s must be a int, got %s", name, pyQuote(get(name)))
		}
		return v, nil
	}
	floatOf := func(name string, def float64) (float64, error) {
		raw := strings.TrimSpace(get(name))
		if raw == "" {
			return def, nil
		}
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return 0, configErr("%s must be a float, got %s", name, pyQuote(get(name)))
		}
		return v, nil
	}
	list := func(name string) ([]string, error) {
		raw := get(name)
		if raw == "" {
			return nil, nil
		}
		var items []any
		if err := json.Unmarshal([]byte(raw), &items); err != nil {
			return nil, configErr("%s must be a JSON list, got %s", name, pyQuote(raw))
		}
		out := make([]string, len(items))
		for i, item := range items {
			if s, ok := item.(string); ok {
				out[i] = s
			} else {
				out[i] = fmt.Sprint(item)
			}
		}
		return out, nil
	}
	or := func(name, def string) string {
		if v := get(name); v != "" {
			return v
		}
		return def
	}
	c := &Config{Role: get("MP_ROLE")}
	switch c.Role {
	case "spread", "shard":
	case "function", "gather":
		return nil, configErr("the Go router serves the spread and shard roles; MP_ROLE=%s runs on the Python runtime (python -m metaparticle_runtime)", c.Role)
	default:
		return nil, configErr("MP_ROLE must be one of function, spread, shard, gather, got %s", pyQuote(c.Role))
	}
	host, _ := os.Hostname()
	c.Pattern, c.Name = or("MP_PATTERN", "Service"), or("MP_NAME", "service")
	c.RoleName, c.Replica = or("MP_ROLE_NAME", c.Role), or("MP_REPLICA", host)
	c.BindHost, c.KeyPath, c.LogLevel = or("MP_BIND_HOST", "0.0.0.0"), get("MP_KEY_PATH"), or("MP_LOG_LEVEL", "INFO")
	c.TLSCert, c.TLSKey, c.TLSCA = get("MP_TLS_CERT"), get("MP_TLS_KEY"), get("MP_TLS_CA")
	var err error
	ints := []struct {
		name string
		dst  *int
		def  int
	}{
		{"MP_GRPC_PORT", &c.GRPCPort, 50051}, {"MP_HTTP_PORT", &c.HTTPPort, 0},
		{"MP_MAX_REQUEST_BYTES", &c.MaxRequestBytes, 4 * 1024 * 1024}, {"MP_MAX_JSON_DEPTH", &c.MaxJSONDepth, 64},
		{"MP_MAX_RESPONSE_BYTES", &c.MaxResponseBytes, 16 * 1024 * 1024},
		{"MP_MAX_IN_FLIGHT", &c.MaxInFlight, 256}, {"MP_RETRIES", &c.Retries, 2},
		{"MP_METRICS_PORT", &c.MetricsPort, 0}, {"MP_PARENT_PID", &c.ParentPID, 0},
		{"MP_HTTP_FD", &c.HTTPFd, -1},
	}
	for _, it := range ints {
		if *it.dst, err = intOf(it.name, it.def); err != nil {
			return nil, err
		}
	}
	timeout, err := floatOf("MP_TIMEOUT", 10.0)
	if err != nil {
		return nil, err
	}
	drain, err := floatOf("MP_DRAIN_SECONDS", 0.5)
	if err != nil {
		return nil, err
	}
	threads, err := intOf("MP_THREADS", 1)
	if err != nil {
		return nil, err
	}
	// Read for their errors only (a router has no use for them): a value the Python runtime refuses
	// is refused here too, with its message.
	for _, name := range []string{"MP_INDEX", "MP_COUNT"} {
		if _, err := intOf(name, 0); err != nil {
			return nil, err
		}
	}
	if _, err := floatOf("MP_HEDGE_AFTER", 0); err != nil {
		return nil, err
	}
	flag := func(name string, def bool) (bool, error) {
		switch raw := get(name); strings.ToLower(raw) {
		case "":
			return def, nil
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		default:
			return false, configErr("%s must be true or false, got %s", name, pyQuote(raw))
		}
	}
	if c.Idempotent, err = flag("MP_IDEMPOTENT", true); err != nil {
		return nil, err
	}
	if c.ReusePort, err = flag("MP_REUSE_PORT", false); err != nil {
		return nil, err
	}
	eventLoop, onMissing := or("MP_EVENT_LOOP", "auto"), or("MP_ON_MISSING", "fail")
	if c.Upstreams, err = list("MP_UPSTREAMS"); err != nil {
		return nil, err
	}
	if c.UpstreamNames, err = list("MP_UPSTREAM_NAMES"); err != nil {
		return nil, err
	}
	if len(c.UpstreamNames) == 0 {
		for i := range c.Upstreams {
			c.UpstreamNames = append(c.UpstreamNames, fmt.Sprintf("upstream-%d", i))
		}
	}
	// The same checks as RuntimeConfig.validate, in its order, for what a router uses.
	switch {
	case len(c.Upstreams) == 0:
		return nil, configErr("the %s role needs MP_UPSTREAMS", c.Role)
	case c.Role == "spread" && len(c.Upstreams) != 1:
		return nil, configErr("the spread role routes to exactly one upstream group")
	case c.Role == "shard" && (get("MP_FUNCTION") != "" || get("MP_FUNCTION_FILE") != ""):
		return nil, configErr("a shard key function (MP_FUNCTION) runs on the Python runtime; the Go router takes MP_KEY_PATH only")
	case c.Role == "shard" && c.KeyPath == "":
		return nil, configErr("the shard role needs MP_KEY_PATH or a key function")
	case eventLoop != "auto" && eventLoop != "asyncio" && eventLoop != "uvloop":
		return nil, configErr("MP_EVENT_LOOP must be auto, asyncio or uvloop, got %s", pyQuote(eventLoop))
	case onMissing != "fail" && onMissing != "partial":
		return nil, configErr("MP_ON_MISSING must be fail or partial, got %s", pyQuote(onMissing))
	case len(c.UpstreamNames) != len(c.Upstreams):
		return nil, configErr("MP_UPSTREAM_NAMES must name every upstream")
	case (c.TLSCert != "") != (c.TLSKey != ""):
		return nil, configErr("MP_TLS_CERT and MP_TLS_KEY go together")
	case c.TLSCert != "" && c.TLSCA == "":
		return nil, configErr("MP_TLS_CERT needs MP_TLS_CA: roles accept only peers whose certificate the CA signed")
	case !(timeout > 0):
		return nil, configErr("MP_TIMEOUT must be positive")
	case c.MaxRequestBytes < 1 || c.MaxResponseBytes < 1:
		return nil, configErr("MP_MAX_REQUEST_BYTES and MP_MAX_RESPONSE_BYTES must be at least 1")
	case c.MaxInFlight < 1 || threads < 1:
		return nil, configErr("MP_MAX_IN_FLIGHT and MP_THREADS must be at least 1")
	}
	c.Timeout = seconds(timeout)
	c.DrainSeconds = seconds(math.Max(drain, 0))
	return c, nil
}

func seconds(s float64) time.Duration {
	if s > 1e9 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s * float64(time.Second))
}

// pyQuote is repr() of a str, as the Python runtime's messages write values.
func pyQuote(s string) string { return reprStr(s) }
