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
		in    inflight
		alive bool
	}
	var targets []target
	now := time.Now()
	p.mu.Lock()
	for id, in := range p.jobs {
		if id == cr.ID || (cr.Batch != "" && in.job.Batch == cr.Batch) {
			ws := p.workers[in.worker]
			targets = append(targets, target{in: *in, alive: ws != nil && p.aliveLocked(ws, now)})
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
	// A live worker is asked to cancel. For a gone one the cancel is queued
	// all the same, for when it comes back, and then the pool stores the
	// record itself: in that order, a job recorded cancelled cannot run.
	// Once no job in its message waits, the message is taken out of the
	// worker's queue.
	var ids []string
	seqs := map[uint64]bool{} // messages of cancelled jobs of gone workers
	for _, t := range targets {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.askCancel(cctx, &t.in, cr.Reason)
		if err == nil && !t.alive {
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
