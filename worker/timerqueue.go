package worker

import (
	"container/heap"
	"context"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// TimerQueue fires callbacks at precise instants. Go's timers can wake a
// goroutine up to a millisecond late; the queue sleeps on a Go timer until
// 20 ms before its spin begins, then in the kernel with 1 ns timer slack
// until its spin, which begins Spin before the earliest due time, then
// spins on the clock, so callbacks run within about a microsecond of their
// time. One goroutine serves every timer, so at most one core spins, and
// only briefly before each due time.
//
// The queue's thread never waits for a lock: a goroutine holding one can be
// switched out by the kernel for a whole time slice, and every timer behind
// would go late. Timers are added to a lock-free stack that the queue's
// thread moves into its own heap, and stopped by marking them.
//
// Callbacks run on the queue's goroutine and must return quickly (start a
// goroutine, send on a buffered channel).
type TimerQueue struct {
	spin time.Duration

	// incoming is a stack of added timers, linked by next.
	incoming atomic.Pointer[Timer]
	// pending counts the timers neither fired nor stopped.
	pending atomic.Int64
	seq     atomic.Uint64
	// nextAt is the due time the queue's thread waits for (MaxInt64: none);
	// a timer added before it wakes the thread.
	nextAt atomic.Int64
	wake   chan struct{}
	// woken is set when an earlier timer was added, to break a spin.
	woken atomic.Bool

	// h and due belong to the queue's thread.
	h   timerHeap
	due []*Timer
}

// Timer is one pending callback of a TimerQueue.
type Timer struct {
	at    int64 // Unix nanoseconds
	first bool  // fires before the other timers of the same instant
	seq   uint64
	fire  func(now time.Time)
	state atomic.Int32 // timerPending, timerFired or timerStopped
	next  *Timer       // in the incoming stack
	q     *TimerQueue
}

const (
	timerPending int32 = iota
	timerFired
	timerStopped
)

// NewTimerQueue returns a queue that spins for the last spin before each
// due time. Call Run to serve it.
func NewTimerQueue(spin time.Duration) *TimerQueue {
	if spin < 0 {
		spin = 0
	}
	q := &TimerQueue{spin: spin, wake: make(chan struct{}, 1)}
	q.nextAt.Store(math.MaxInt64)
	return q
}

// At arranges for fire to be called at t (at once if t has passed), with the
// time it was actually called.
func (q *TimerQueue) At(t time.Time, fire func(now time.Time)) *Timer {
	return q.add(t, false, fire)
}

// AtFirst is At for a timer that must fire before the timers due at the
// same instant that were added with At: the end of one job comes before the
// start of the next, whose threads it may free.
func (q *TimerQueue) AtFirst(t time.Time, fire func(now time.Time)) *Timer {
	return q.add(t, true, fire)
}

func (q *TimerQueue) add(t time.Time, first bool, fire func(now time.Time)) *Timer {
	tm := &Timer{at: t.UnixNano(), first: first, seq: q.seq.Add(1), fire: fire, q: q}
	q.pending.Add(1)
	for {
		old := q.incoming.Load()
		tm.next = old
		if q.incoming.CompareAndSwap(old, tm) {
			break
		}
	}
	// Either this sees the thread's new nextAt, or the thread, which
	// stores nextAt before it looks at incoming again, sees this timer.
	if tm.at < q.nextAt.Load() {
		q.woken.Store(true)
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return tm
}

// Stop cancels the timer; it reports false if the timer already fired or
// was stopped.
func (t *Timer) Stop() bool {
	if t.state.CompareAndSwap(timerPending, timerStopped) {
		t.q.pending.Add(-1)
		return true
	}
	return false
}

// Len is the number of pending timers.
func (q *TimerQueue) Len() int {
	return int(q.pending.Load())
}

const (
	// coarseMargin is how long before Spin the queue stops sleeping on Go
	// timers: their wake-up goes through another thread, which on a busy
	// machine may not run for milliseconds. Closer in, it sleeps in the
	// kernel in slices of kernelSlice.
	coarseMargin = 20 * time.Millisecond
	// kernelSlice bounds one kernel sleep.
	kernelSlice = 500 * time.Microsecond
)

// Run serves the queue until ctx ends. While it runs, the process has one
// more P (GOMAXPROCS) than before: the queue's thread keeps its P through
// its last kernel sleeps and spin before a due time, and the rest of the
// process keeps the machine's parallelism.
func (q *TimerQueue) Run(ctx context.Context) {
	defer addP()()
	mode := preciseThread()
	defer mode.done()
	sleep := time.NewTimer(time.Hour)
	defer sleep.Stop()
	for {
		q.woken.Store(false)
		next, ok := q.fireDue()
		if ctx.Err() != nil {
			return
		}
		if !ok {
			select {
			case <-q.wake:
			case <-ctx.Done():
				return
			}
			continue
		}
		d := time.Duration(next - time.Now().UnixNano())
		if d > coarseMargin+q.spin {
			sleep.Reset(d - coarseMargin - q.spin)
			select {
			case <-sleep.C:
			case <-q.wake:
				if !sleep.Stop() {
					<-sleep.C
				}
			case <-ctx.Done():
				return
			}
			continue
		}
		if d > q.spin {
			// Short kernel sleeps, so that an earlier timer is noticed.
			kernelSleep(min(d-q.spin, kernelSlice))
			continue
		}
		// Spin until due, unless an earlier timer arrives.
		mode.budget(time.Now().UnixNano())
		for time.Now().UnixNano() < next && !q.woken.Load() {
		}
		select {
		case <-q.wake:
		default:
		}
	}
}

// fireDue runs every timer that is due and returns the next due time. The
// timers due at one reading of the clock are fired with that reading: they
// were all due then, and the time one callback takes (a goroutine wake-up
// can cost tens of microseconds) must not make the next one look late.
func (q *TimerQueue) fireDue() (next int64, ok bool) {
	for {
		q.drain()
		now := time.Now()
		n := now.UnixNano()
		for len(q.h) > 0 && (q.h[0].at <= n || q.h[0].state.Load() != timerPending) {
			t := heap.Pop(&q.h).(*Timer)
			if t.state.CompareAndSwap(timerPending, timerFired) {
				q.pending.Add(-1)
				q.due = append(q.due, t)
			}
		}
		if len(q.due) > 0 {
			for i, t := range q.due {
				t.fire(now)
				q.due[i] = nil
			}
			q.due = q.due[:0]
			continue
		}
		next = math.MaxInt64
		if len(q.h) > 0 {
			next = q.h[0].at
		}
		q.nextAt.Store(next)
		if q.incoming.Load() != nil {
			continue // added meanwhile
		}
		return next, next != math.MaxInt64
	}
}

// drain moves the added timers into the heap.
func (q *TimerQueue) drain() {
	for t := q.incoming.Swap(nil); t != nil; {
		next := t.next
		t.next = nil
		if t.state.Load() == timerPending {
			heap.Push(&q.h, t)
		}
		t = next
	}
}

// procsMu serialises the queues' changes to GOMAXPROCS.
var procsMu sync.Mutex

// addP adds one to GOMAXPROCS and returns a function that takes it back,
// unless GOMAXPROCS is set in the environment, which rules.
func addP() func() {
	if os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	procsMu.Lock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	procsMu.Unlock()
	return func() {
		procsMu.Lock()
		if n := runtime.GOMAXPROCS(0); n > 1 {
			runtime.GOMAXPROCS(n - 1)
		}
		procsMu.Unlock()
	}
}

type timerHeap []*Timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	if h[i].first != h[j].first {
		return h[i].first
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(*Timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return t
}
