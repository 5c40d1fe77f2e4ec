package worker

import (
	"container/heap"
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// TimerQueue fires callbacks at precise instants. Go's timers can wake a
// goroutine up to a millisecond late; the queue sleeps on a Go timer until a
// few milliseconds before the earliest due time, then in the kernel with
// 1 ns timer slack until Spin before it, then spins on the clock, so
// callbacks run within about a microsecond of their time. One goroutine
// serves every timer, so at most one core spins, and only briefly before
// each due time.
//
// Callbacks run on the queue's goroutine and must return quickly (start a
// goroutine, close a channel).
type TimerQueue struct {
	spin time.Duration

	mu   sync.Mutex
	h    timerHeap
	seq  uint64
	wake chan struct{}
	// woken is set when an earlier timer was added, to break a spin.
	woken atomic.Bool
}

// Timer is one pending callback of a TimerQueue.
type Timer struct {
	at    int64 // Unix nanoseconds
	first bool  // fires before the other timers of the same instant
	seq   uint64
	fire  func(now time.Time)
	index int // in the heap; -1 once fired or stopped
	q     *TimerQueue
}

// NewTimerQueue returns a queue that spins for the last spin before each
// due time. Call Run to serve it.
func NewTimerQueue(spin time.Duration) *TimerQueue {
	if spin < 0 {
		spin = 0
	}
	return &TimerQueue{spin: spin, wake: make(chan struct{}, 1)}
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
	q.mu.Lock()
	q.seq++
	tm := &Timer{at: t.UnixNano(), first: first, seq: q.seq, fire: fire, q: q}
	heap.Push(&q.h, tm)
	earliest := tm.index == 0
	q.mu.Unlock()
	if earliest {
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
	q := t.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&q.h, t.index)
	t.index = -1
	return true
}

// Len is the number of pending timers.
func (q *TimerQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.h)
}

const (
	// coarseMargin is how long before Spin the queue stops sleeping on Go
	// timers, which may wake a millisecond late.
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
	defer preciseThread()()
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
		now := time.Now()
		q.mu.Lock()
		var due []*Timer
		for len(q.h) > 0 && q.h[0].at <= now.UnixNano() {
			due = append(due, heap.Pop(&q.h).(*Timer))
		}
		if len(due) == 0 {
			defer q.mu.Unlock()
			if len(q.h) == 0 {
				return 0, false
			}
			return q.h[0].at, true
		}
		q.mu.Unlock()
		for _, t := range due {
			t.fire(now)
		}
	}
}

// procsMu serialises the queues' changes to GOMAXPROCS.
var procsMu sync.Mutex

// addP adds one to GOMAXPROCS and returns a function that takes it back.
func addP() func() {
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
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	t.index = -1
	return t
}
