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
		// entry expired a WorkerTTL after its last heartbeat).
		gone bool
	}
	var targets []target
	p.mu.Lock()
	for id, in := range p.jobs {
		if id == cr.ID || (cr.Batch != "" && in.job.Batch == cr.Batch) {
			// A worker that left keeps its state, with no time seen.
			ws := p.workers[in.worker]
			targets = append(targets, target{in: *in, gone: ws == nil || ws.seen.IsZero()})
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
	// The worker is asked to cancel, through its queue. Only for a worker
	// that has left the registry does the pool store the record itself,
	// after queueing the cancel: in that order, a job recorded cancelled
	// cannot run. A worker whose heartbeats are only late (a broker
	// restart, a worker process being launched again) may be running the
	// job: a record the pool stored for it would overtake the worker's own
	// (the chaos test found hacks the world applied recorded cancelled),
	// so it is left to the worker, or, if it never comes back, to the
	// sweeper at the job's start.
	// Once no job in its message waits, the message is taken out of the
	// worker's queue.
	var ids []string
	seqs := map[uint64]bool{} // messages of cancelled jobs of gone workers
	for _, t := range targets {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.askCancel(cctx, &t.in, cr.Reason)
		if err == nil && t.gone {
			j := t.in.job
			j.Status, j.Reason = job.StatusCancelled, cr.Reason
			if err = p.storeRecord(cctx, &j, t.in.worker); err == nil && t.in.seq != 0 {
				p.mu.Lock()
				if in := p.jobs[j.ID]; in != nil {
					in.seq = 0 // the record is on its way to the collector
				}
				p.mu.Unlock()
				seqs[t.in.seq] = true
			}
		}
		cancel()
		if err != nil {
			return ids, fmt.Errorf("cancel job %s: %w", t.in.job.ID, err)
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

// askCancel queues a cancel for a job on its worker's subject.
func (p *Pool) askCancel(ctx context.Context, in *inflight, reason string) error {
	m := nats.NewMsg(broker.JobsSubject(in.worker))
	m.Header.Set(broker.HeaderCancel, in.job.ID)
	m.Header.Set(jetstream.MsgIDHeader, "cancel-"+in.job.ID)
	m.Data = []byte(reason)
	_, err := p.res.JS.PublishMsg(ctx, m)
	return err
}
