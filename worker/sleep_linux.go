//go:build linux

package worker

import (
	"runtime"
	"syscall"
	"time"
)

// Go's timers sleep through epoll with millisecond resolution, so they can
// wake up to a millisecond late. The last stretch before a due time is slept
// in the kernel instead (nanosleep), on a thread of its own whose timer slack
// is 1 ns, which wakes within tens of microseconds; the spin covers the rest.

const prSetTimerSlack = 29

// preciseThread binds the calling goroutine to its thread and makes the
// thread's sleeps precise. It returns a function that undoes the binding.
func preciseThread() func() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	return runtime.UnlockOSThread
}

// kernelSleep sleeps d in the kernel.
func kernelSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
