// Command metaparticle-router serves the spread or shard router role described by the MP_*
// environment variables, like `python -m metaparticle_runtime` does, at a fraction of its CPU.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"metaparticle/router/internal/router"
)

// One OS thread runs Go code unless GOMAXPROCS says otherwise: like one nginx worker, a router
// process then spends less CPU per request at every load (fewer cross-thread wake-ups) and still
// passes 20,000 req/s; routers= scales out across processes.
func main() {
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
