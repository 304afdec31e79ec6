package router

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen binds a TCP listener, with SO_REUSEPORT when reusePort is set (MP_REUSE_PORT): the local
// target holds each port with a bound, non-listening SO_REUSEPORT socket until its process binds
// it (metaparticle_pulumi/_ports.py), and only a socket that sets SO_REUSEPORT too may bind next to it.
func listen(address string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(_, _ string, raw syscall.RawConn) error {
			var serr error
			if err := raw.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(context.Background(), "tcp", address)
}

// httpListener is the HTTP entry's listener: the inherited listening socket MP_HTTP_FD when given
// (local routers share one accept queue, so a router that dies loses no waiting connection), else
// HTTPPort bound like listen does.
func httpListener(cfg *Config) (net.Listener, error) {
	if cfg.HTTPFd >= 0 {
		file := os.NewFile(uintptr(cfg.HTTPFd), "http-entry")
		if file == nil {
			return nil, fmt.Errorf("MP_HTTP_FD=%d is not an open descriptor", cfg.HTTPFd)
		}
		defer file.Close() // FileListener dups it
		return net.FileListener(file)
	}
	return listen(net.JoinHostPort(cfg.BindHost, fmt.Sprint(cfg.HTTPPort)), cfg.ReusePort)
}
