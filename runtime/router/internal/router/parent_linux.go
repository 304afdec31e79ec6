package router

import (
	"os"

	"golang.org/x/sys/unix"
)

// DieWithParent asks the kernel for SIGKILL when our parent dies (PR_SET_PDEATHSIG), as the Python
// runtime does for MP_PARENT_PID; false when the parent is not parentPID any more (it died before
// this was armed, so no signal would ever come).
func DieWithParent(parentPID int) bool {
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	return os.Getppid() == parentPID
}
