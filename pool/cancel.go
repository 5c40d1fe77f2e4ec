package pool

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// Cancel ends a job, or every job of a batch, that has not ended: the pool
// asks the job's worker to cancel it (through the worker's own queue, so it
// is not lost if the worker is restarting), or records it cancelled itself
// when the worker is gone.
func (p *Pool) Cancel(ctx context.Context, cr CancelRequest) ([]string, error) {
	if cr.Reason == "" {
		cr.Reason = "cancelled on request"
	}
	type target struct {
		in inflight
		// gone: the worker left the registry (it deregistered, or its
		// entry expired a WorkerTTL after its last heartbeat). dead: gone,
		// or missing its heartbeats with a Settler to settle its jobs.
		gone, dead bool
	}
	var targets []target
	p.mu.Lock()
	for id, in := range p.jobs {
		if id == cr.ID || (cr.Batch != "" && in.job.Batch == cr.Batch) {
			// A worker that left keeps its state, with no time seen.
			ws := p.workers[in.worker]
			gone := ws == nil || ws.seen.IsZero()
			// With a Settler, a worker that misses its heartbeats is as
			// good as gone: whatever it does, the settle decides.
			dead := gone || (p.opts.Settler != nil && !p.aliveLocked(ws, time.Now()) && ws.launched.IsZero())
			targets = append(targets, target{in: *in, gone: gone, dead: dead})
		}
	}
	p.mu.Unlock()
	if len(targets) == 0 {
		what := "job " + cr.ID
		if cr.ID == "" {
			what = "batch " + cr.Batch
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	// Each job is cancelled by cancelOne (see there who writes its
	// record). A worker whose heartbeats are only late (a broker restart,
	// a worker process being launched again) may be running a job: a
	// guess the pool stored for it would overtake the worker's own (the
	// chaos test found hacks the world applied recorded cancelled), so
	// without a settler it is left to the worker, or, if it never comes
	// back, to the sweeper. Once no job in its message waits, the message
	// is taken out of the worker's queue.
	var ids []string
	seqs := map[broker.QueuedMsg]bool{} // messages of cancelled jobs of gone workers
	for _, t := range targets {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		stored, err := p.cancelOne(cctx, t.in, t.gone, t.dead, cr.Reason)
		cancel()
		if err != nil {
			return ids, fmt.Errorf("cancel job %s: %w", t.in.job.ID, err)
		}
		if stored && t.in.seq != 0 {
			seqs[t.in.queued()] = true
		}
		ids = append(ids, t.in.job.ID)
	}
	// The cancels stay: a worker only presumed gone (its heartbeats late)
	// may hold the message already, and acknowledges a cancel for a job it
	// does not know.
	p.deleteUnneeded(ctx, seqs)
	sort.Strings(ids)
	return ids, nil
}

// cancelOne cancels one job: through its worker's queue, or, for a dead
// worker, by storing its record itself (stored reports that it did).
//
// A dead worker's job whose task has a settler is settled: its record is
// done if it ran to its end (the cancel came too late), cancelled
// otherwise, and no cancel is queued, since the worker will never read
// it. Any other job gets a cancel queued, and, if its worker has left
// the registry, a cancelled record, stored after the cancel: in that
// order, a job recorded cancelled cannot run.
func (p *Pool) cancelOne(ctx context.Context, in inflight, gone, dead bool, reason string) (stored bool, err error) {
	j := in.job
	j.Status, j.Reason = job.StatusCancelled, reason
	settled := false
	if dead && p.opts.Settler != nil && !in.unsettled {
		recs, err := p.settle(ctx, []inflight{in}, "its worker was gone when it was cancelled")
		if err != nil {
			return false, err
		}
		switch rec := recs[0]; rec.Status {
		case "": // a task the settler does not know
		case job.StatusDone:
			j, settled = rec, true
		default:
			j.Reason, settled = reason+" ("+rec.Reason+")", true
		}
	}
	if !settled {
		if err := p.askCancel(ctx, &in, reason); err != nil || !gone {
			return false, err
		}
	}
	if err := p.storeRecord(ctx, &j, in.worker); err != nil {
		return false, err
	}
	p.mu.Lock()
	if cur := p.jobs[j.ID]; cur != nil {
		cur.seq = 0 // the record is on its way to the collector
	}
	p.mu.Unlock()
	return true, nil
}

// askCancel queues a cancel for a job on its worker's subject.
func (p *Pool) askCancel(ctx context.Context, in *inflight, reason string) error {
	m := nats.NewMsg(broker.JobsSubject(in.worker))
	m.Header.Set(broker.HeaderCancel, in.job.ID)
	m.Header.Set(jetstream.MsgIDHeader, "cancel-"+in.job.ID)
	m.Data = []byte(reason)
	_, err := p.res.JS.PublishMsg(ctx, m)
	return err
}
