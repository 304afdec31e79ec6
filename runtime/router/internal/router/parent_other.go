//go:build !linux

package router

import "os"

// DieWithParent: no PR_SET_PDEATHSIG here, the supervisor stops its children itself; false when
// the parent is not parentPID any more.
func DieWithParent(parentPID int) bool { return os.Getppid() == parentPID }
