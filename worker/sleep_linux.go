//go:build linux

package worker

import (
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// Go's timers sleep through epoll with millisecond resolution, so they can
// wake up to a millisecond late. The last stretch before a due time is slept
// in the kernel instead (nanosleep), on a thread of its own whose timer slack
// is 1 ns, which wakes within tens of microseconds; the spin covers the rest.
//
// On a busy machine the kernel may still run another thread for a whole time
// slice (milliseconds) while the timer thread is due. Where the process may
// (CAP_SYS_NICE, or an RLIMIT_RTPRIO above zero), the timer thread therefore
// runs at a low real-time priority: a woken real-time thread preempts
// ordinary ones at once. It only spins for the last Spin before a due time
// and the kernel caps real-time threads at 95% of a core, so it cannot
// starve the rest of the machine.

const (
	prSetTimerSlack = 29
	schedFIFO       = 1
	// timerPriority is the lowest real-time priority: above every ordinary
	// thread, below the kernel's own real-time threads.
	timerPriority = 1
)

// preciseThread binds the calling goroutine to its thread and makes the
// thread's sleeps precise and, where permitted, its wake-ups preempt
// ordinary threads. It returns a function that undoes both.
func preciseThread() func() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	realtime := setScheduler(schedFIFO, timerPriority) == nil
	return func() {
		if realtime {
			// The thread goes back to the Go scheduler's pool: make it
			// ordinary again.
			_ = setScheduler(0, 0) // SCHED_OTHER
		}
		runtime.UnlockOSThread()
	}
}

// setScheduler sets the calling thread's scheduling policy.
func setScheduler(policy, priority int) error {
	param := struct{ priority int32 }{int32(priority)}
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, uintptr(policy), uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return errno
	}
	return nil
}

// kernelSleep sleeps d in the kernel without giving up the goroutine's P.
// A blocking system call (syscall.Nanosleep) lets the runtime hand the P
// to another thread; on return the thread must win a P back, and when the
// process's other goroutines hold every P it waits until one of them is
// scheduled out: milliseconds late on a busy machine. Holding the P for at
// most kernelSlice costs the process a little parallelism instead.
func kernelSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_, _, _ = syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
}
