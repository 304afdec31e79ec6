// Command metaparticle-router serves the spread or shard router role described by the MP_*
// environment variables, like `python -m metaparticle_runtime` does, at a fraction of its CPU.
package main

import (
	"errors"
	"fmt"
	"os"

	"metaparticle/router/internal/router"
)

func main() {
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
