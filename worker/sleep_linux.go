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
// ordinary ones at once.
//
// The kernel gives real-time threads at most 950 ms of each second of a
// core (sched_rt_runtime_us) and then stops them for the other 50 ms. A
// timer thread with timers due every millisecond spins all the time, and
// was stopped 50 ms a second: dozens of jobs started late. So the thread
// keeps within a budget of its own: past rtBudget of CPU time in a window
// of rtWindow it runs as an ordinary thread, at the highest nice, until
// the window ends. Even out of step with the kernel's periods, two
// windows' budgets stay below its cap.

const (
	prSetTimerSlack = 29
	schedFIFO       = 1
	// timerPriority is the lowest real-time priority: above every ordinary
	// thread, below the kernel's own real-time threads.
	timerPriority = 1
)

const (
	// rtWindow and rtBudget: the timer thread runs real-time for at most
	// rtBudget of CPU time in each rtWindow.
	rtWindow = time.Second
	rtBudget = 450 * time.Millisecond
	// clockThreadCPUTime is CLOCK_THREAD_CPUTIME_ID.
	clockThreadCPUTime = 3
)

// preciseThread binds the calling goroutine to its thread and makes the
// thread's sleeps precise and, where permitted, its wake-ups preempt
// ordinary threads within the real-time budget (see budget).
func preciseThread() *threadMode {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	m := &threadMode{nice: getNice()}
	m.allowed = setScheduler(schedFIFO, timerPriority) == nil
	m.realtime = m.allowed
	m.window, m.cpuAt = time.Now().UnixNano(), threadCPUTime()
	return m
}

// threadMode is the timer thread's scheduling: real-time while within its
// budget.
type threadMode struct {
	allowed, realtime bool
	window, cpuAt     int64 // start of the window, and the CPU time then (ns)
	nice              int   // the thread's nice value before
}

// budget is called before each spin: it makes the thread ordinary once it
// has used its real-time budget in this window, and real-time again when a
// new window starts.
func (m *threadMode) budget(now int64) {
	if !m.allowed {
		return
	}
	if now-m.window >= int64(rtWindow) {
		m.window, m.cpuAt = now, threadCPUTime()
		if !m.realtime {
			m.realtime = setScheduler(schedFIFO, timerPriority) == nil
			setNice(m.nice)
		}
		return
	}
	if m.realtime && threadCPUTime()-m.cpuAt > int64(rtBudget) {
		m.realtime = setScheduler(0, 0) != nil // SCHED_OTHER
		if !m.realtime {
			setNice(-20)
		}
	}
}

// done makes the thread as it was, ordinary at its nice value, and gives
// it back to the Go scheduler's pool.
func (m *threadMode) done() {
	if m.realtime {
		_ = setScheduler(0, 0)
	}
	if m.allowed {
		setNice(m.nice)
	}
	runtime.UnlockOSThread()
}

// setNice sets the calling thread's nice value.
func setNice(n int) {
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), n)
}

// getNice is the calling thread's nice value (the raw system call returns
// 20 - nice).
func getNice() int {
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	if err != nil {
		return 0
	}
	return 20 - p
}

// threadCPUTime is the calling thread's CPU time, in ns.
func threadCPUTime() int64 {
	var ts syscall.Timespec
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
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
