package worker

import (
	"context"
	"time"
)

// The timer queue's thread must never wait: while it waits, every timer
// behind the current one goes late. Job starts need the worker's lock,
// which a goroutine taking in jobs or storing records may hold while the
// kernel has switched it out for a whole time slice. So a start timer only
// notes the instant it fired and hands it over; firedLoop does the work
// with that instant, which is when the job started.

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
