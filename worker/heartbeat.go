package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// heartbeatLoop rewrites the worker's registry entry every heartbeat, until
// ctx ends; the bucket's TTL removes it when beats stop. If another process
// has taken the worker id over, this one stops. It also re-asserts the
// reservation now and then, and forgets the ids recorded too long ago for
// a redelivery.
// queueCheckEvery is how many heartbeats pass between two checks that the
// worker's durable queue is still there.
const queueCheckEvery = 5

func (w *Worker) heartbeatLoop(ctx context.Context, stop context.CancelCauseFunc) {
	t := time.NewTicker(w.opts.Heartbeat)
	defer t.Stop()
	failing := false
	for beat := 1; ; beat++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The reservation is idempotent; re-asserting it now and then takes
		// it back if the pool gave it away while our beats were not seen.
		if w.opts.Reserver != nil && beat%reassertEvery == 0 {
			if err := w.reserve(ctx); err != nil {
				w.log.Warn().Err(err).Msg("re-asserting this worker's reservation")
			}
		}
		if beat%queueCheckEvery == 0 && !w.opts.processChecksQueue && !w.stopping.Load() {
			cctx, cancel := w.beatCall(ctx)
			_, err := w.res.JobsOf(w.opts.ID).Consumer(cctx, broker.WorkerConsumer(w.opts.ID))
			cancel()
			if queueGone(err) {
				w.lostQueue(err)
			}
		}
		err := w.beat(ctx)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Someone wrote the entry since this worker's last beat:
			// another process of this id, or an expiry. The next beat
			// writes over whatever is there, unless it was another.
			cctx, cancel := w.beatCall(ctx)
			cur, gerr := broker.GetWorker(cctx, w.res.Workers, w.opts.ID)
			cancel()
			if gerr == nil && cur.Instance != w.instance {
				w.log.Error().Int("other_pid", cur.PID).Msg("another process registered this worker id; stopping")
				stop(ErrTakenOver)
				return
			}
			err = w.beat(ctx)
		}
		switch {
		case err != nil && !failing:
			failing = true
			w.log.Warn().Err(err).Msg("heartbeat failed; retrying")
		case err == nil && failing:
			failing = false
			w.log.Info().Msg("heartbeat restored")
		}
		w.forgetRecent(time.Now().Add(-35 * time.Minute))
		w.reackAfterReconnect(ctx)
	}
}

// beatCall bounds a call of the heartbeat loop to the broker by a
// heartbeat (and brokerTimeout): a call stuck on a broker connection that
// died (a cluster node killed) held the beats up for brokerTimeout each,
// long enough for the pool to take a live worker for gone; given up
// after a beat, it is made again, on the new connection, at the next.
func (w *Worker) beatCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, min(max(w.opts.Heartbeat, 100*time.Millisecond), brokerTimeout))
}

// Snapshot is the worker's current registry entry.
func (w *Worker) Snapshot() broker.WorkerEntry {
	w.mu.Lock()
	e := broker.WorkerEntry{
		ID: w.opts.ID, Host: w.opts.Host, Threads: w.opts.Threads, Busy: w.busy,
		Tasks: w.opts.Handlers.Names(), PID: os.Getpid(), Machine: broker.MachineID(), Instance: w.instance,
		Started: w.started, Beat: time.Now(), Heartbeat: w.opts.Heartbeat,
		Done: w.done.Load(), Missed: w.missed.Load(), OnDemand: w.opts.OnDemand, Stopping: w.stopping.Load(),
	}
	for _, r := range w.active {
		switch {
		case r.ended:
		case r.started:
			e.Running = append(e.Running, broker.RunningJob{
				ID: r.job.ID, Task: r.job.Task, Threads: r.job.Threads,
				Start: job.Millis(r.out.start), End: r.job.ScheduledEnd(job.Millis(r.start)),
				Scheduled: r.job.StartTime,
			})
		default:
			e.Queued++
		}
	}
	w.mu.Unlock()
	return e
}

// beat writes the worker's registry entry over its last beat (see
// broker.PutWorkerAt): jetstream.ErrKeyRevisionMismatch when another
// writer came in between, and the next beat writes over it.
func (w *Worker) beat(ctx context.Context) error {
	e := w.Snapshot()
	if w.opts.Beater != nil {
		// The first beat registers the worker, a stopping one tells the
		// pool to place nothing more on it: both go out at once.
		w.opts.Beater.Beat(e, !w.beaten.Swap(true) || e.Stopping)
		return nil
	}
	cctx, cancel := w.beatCall(ctx)
	defer cancel()
	rev, err := broker.PutWorkerAt(cctx, w.res.Workers, e, w.beatRev.Load())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		w.beatRev.Store(0)
	}
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	w.beatRev.Store(rev)
	return nil
}
