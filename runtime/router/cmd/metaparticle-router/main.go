// Command metaparticle-router serves the spread or shard router role described by the MP_*
// environment variables, like `python -m metaparticle_runtime` does, at a fraction of its CPU.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"metaparticle/router/internal/router"
)

// One OS thread runs Go code unless GOMAXPROCS says otherwise: like one nginx worker, a router
// process then spends less CPU per request at every load (fewer cross-thread wake-ups) and still
// passes 20,000 req/s; routers= scales out across processes.
func main() {
	keepSysmonAwake()
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
	cfg, err := router.FromEnv(os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "metaparticle-router: configuration error: %v\n", err)
		os.Exit(2)
	}
	if cfg.ParentPID != 0 && !router.DieWithParent(cfg.ParentPID) {
		fmt.Fprintf(os.Stderr, "metaparticle-router: supervisor %d is gone; exiting\n", cfg.ParentPID)
		os.Exit(1)
	}
	log := router.NewLogger(cfg.RoleName, cfg.Replica, cfg.LogLevel)
	if err := router.Serve(cfg, log); err != nil {
		var ce *router.ConfigError
		if errors.As(err, &ce) {
			log.Error("configuration error: " + err.Error())
			os.Exit(2)
		}
		log.Error("cannot serve: " + err.Error())
		os.Exit(1)
	}
}

// sysmonAwake keeps the Go runtime's monitor thread (sysmon) out of its deep sleep. Once every P
// is idle, sysmon sleeps until the next system call wakes it, then polls every 20 µs until the
// process is idle again: a router whose requests each arrive to an idle process (any moderate
// load) paid that wake-up and a few polls per request, 17-30% of its CPU per gRPC request at
// 900 req/s (README, "Performance").
// With schedtrace set sysmon never sleeps deeply and backs off to one poll every 10 ms instead;
// the trace line it enables is printed once per 24.8 days of the host's uptime (the longest
// period GODEBUG takes).
const sysmonAwake = "schedtrace=2147483647"

// keepSysmonAwake re-executes the router in place (same PID) with sysmonAwake added to GODEBUG,
// which the runtime reads only at start; a schedtrace the environment sets already is kept.
func keepSysmonAwake() {
	godebug, _ := os.LookupEnv("GODEBUG")
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(setting, "schedtrace=") {
			return
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + sysmonAwake}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	_ = syscall.Exec(exe, os.Args, env) // returns only if it failed: then the router runs as it is
}
