package worker

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// TimerQueue fires callbacks at precise instants. Go's timers wake a
// goroutine tens to hundreds of microseconds late; the queue sleeps until
// shortly before the earliest due time (Spin before it) and then spins on the
// clock, so callbacks run within about a microsecond of their time. One
// goroutine serves every timer, so at most one core spins, and only briefly
// before each due time.
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
	q.mu.Lock()
	q.seq++
	tm := &Timer{at: t.UnixNano(), seq: q.seq, fire: fire, q: q}
	heap.Push(&q.h, tm)
	first := tm.index == 0
	q.mu.Unlock()
	if first {
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

// Run serves the queue until ctx ends.
func (q *TimerQueue) Run(ctx context.Context) {
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
		if d > q.spin {
			sleep.Reset(d - q.spin)
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
		// Spin until due, unless an earlier timer arrives.
		for time.Now().UnixNano() < next && !q.woken.Load() {
		}
		select {
		case <-q.wake:
		default:
		}
	}
}

// fireDue runs every timer that is due and returns the next due time.
func (q *TimerQueue) fireDue() (next int64, ok bool) {
	q.mu.Lock()
	for len(q.h) > 0 {
		now := time.Now()
		top := q.h[0]
		if top.at > now.UnixNano() {
			q.mu.Unlock()
			return top.at, true
		}
		heap.Pop(&q.h)
		top.index = -1
		q.mu.Unlock()
		top.fire(now)
		q.mu.Lock()
	}
	q.mu.Unlock()
	return 0, false
}

type timerHeap []*Timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
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
