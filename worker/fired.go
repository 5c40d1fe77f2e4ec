package worker

import (
	"context"
	"sync"
	"time"
)

// The timer queue's thread must never wait: while it waits, every timer
// behind the current one goes late. A job's start, the end that frees its
// threads and the end of its wait for threads need the worker's lock,
// which a goroutine taking in jobs or storing records may hold while the
// kernel has switched it out for a whole time slice. So their timers only
// note the instant they fired and hand it over; firedLoop does the work
// with that instant, which is when the job started (or its threads were
// freed).

// firedTimer is a timer callback with the instant its timer fired.
type firedTimer struct {
	fn func(now time.Time)
	at time.Time
}

// firedQueue holds the fired timers for firedLoop. It grows as they come
// rather than holding room for a burst: a channel with room for 4,096 was
// 128 KB a worker, most of a worker process's memory.
type firedQueue struct {
	mu    sync.Mutex
	items []firedTimer
	// wake has room for one: a push while firedLoop runs wakes it once
	// more.
	wake chan struct{}
}

func newFiredQueue() *firedQueue { return &firedQueue{wake: make(chan struct{}, 1)} }

// push queues f; it holds the lock only to append.
func (q *firedQueue) push(f firedTimer) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// swap returns the queued timers, in the order they fired, and keeps buf
// (emptied) for the next ones.
func (q *firedQueue) swap(buf []firedTimer) []firedTimer {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = buf[:0]
	return out
}

// handOff returns a timer callback that runs fn on firedLoop with the
// instant the timer fired. Once the worker has stopped it drops fn.
func (w *Worker) handOff(fn func(now time.Time)) func(now time.Time) {
	stopped := w.stopped
	return func(now time.Time) {
		select {
		case <-stopped:
		default:
			w.fired.push(firedTimer{fn: fn, at: now})
		}
	}
}

// firedLoop runs the handed-off timer callbacks in the order they fired,
// until ctx ends.
func (w *Worker) firedLoop(ctx context.Context) {
	var buf []firedTimer
	for {
		select {
		case <-w.fired.wake:
		case <-ctx.Done():
			return
		}
		batch := w.fired.swap(buf)
		for i, f := range batch {
			f.fn(f.at)
			batch[i] = firedTimer{} // let go of fn
		}
		buf = batch
	}
}
