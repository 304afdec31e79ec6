package router

import (
	"context"
	"net"
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
