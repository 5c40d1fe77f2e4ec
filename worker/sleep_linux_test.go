//go:build linux

package worker

import (
	"testing"
	"time"
)

// A timer thread that has spun through its real-time budget runs as an
// ordinary thread until its window ends, so the kernel never stops it.
func TestRealTimeBudget(t *testing.T) {
	m := preciseThread()
	defer m.done()
	if !m.allowed {
		t.Skip("this process may not use real-time priorities")
	}
	if !m.realtime {
		t.Fatal("the thread is not real-time at start")
	}
	start := threadCPUTime()
	for threadCPUTime()-start < int64(rtBudget+20*time.Millisecond) {
	}
	m.budget(time.Now().UnixNano())
	if m.realtime {
		t.Fatalf("still real-time after %s of CPU time in one window", rtBudget+20*time.Millisecond)
	}
	if n := getNice(); n != -20 {
		t.Errorf("ordinary thread's nice is %d, want -20", n)
	}
	m.budget(time.Now().Add(rtWindow).UnixNano())
	if !m.realtime {
		t.Fatal("not real-time again in the next window")
	}
	if n := getNice(); n != m.nice {
		t.Errorf("real-time again at nice %d, want %d", n, m.nice)
	}
}
