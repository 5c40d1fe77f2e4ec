package worker

import (
	"context"
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

// firedBuffer is how many fired timers may wait for firedLoop before the
// timer thread waits for room.
const firedBuffer = 4096

// handOff returns a timer callback that runs fn on firedLoop with the
// instant the timer fired. Once the worker has stopped it drops fn: the
// timer queue, which other workers may share, must not wait for a loop
// that has ended.
func (w *Worker) handOff(fn func(now time.Time)) func(now time.Time) {
	stopped := w.stopped
	return func(now time.Time) {
		select {
		case w.fired <- firedTimer{fn: fn, at: now}:
		case <-stopped:
		}
	}
}

// firedLoop runs the handed-off timer callbacks in the order they fired,
// until ctx ends.
func (w *Worker) firedLoop(ctx context.Context) {
	for {
		select {
		case f := <-w.fired:
			f.fn(f.at)
		case <-ctx.Done():
			return
		}
	}
}
