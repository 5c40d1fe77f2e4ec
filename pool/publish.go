package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// publish stores placed jobs on their workers' subjects, all or none: if any
// is refused, the stored ones are deleted again and every reservation is
// released.
func (p *Pool) publish(ctx context.Context, placed []placement) error {
	futures := make([]jetstream.PubAckFuture, len(placed))
	var firstErr error
	for i, pl := range placed {
		data, err := job.Encode(pl.job)
		if err != nil {
			firstErr = fmt.Errorf("encode job %s: %w", pl.job.ID, err)
			break
		}
		m := nats.NewMsg(broker.JobsSubject(pl.job.Worker))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, pl.job.ID)
		f, err := p.res.JS.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
		if err != nil {
			firstErr = fmt.Errorf("publish job %s: %w", pl.job.ID, err)
			break
		}
		futures[i] = f
	}
	seqs := make([]uint64, len(placed))
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
			if ack.Duplicate && firstErr == nil {
				firstErr = fmt.Errorf("%w: %s was dispatched within the last 10 minutes", ErrDuplicateID, placed[i].job.ID)
				seqs[i] = 0 // the stored message is the earlier job's
			}
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish job %s: %w", placed[i].job.ID, err)
			}
		case <-timeout.C:
			if firstErr == nil {
				firstErr = fmt.Errorf("publish job %s: no acknowledgement from JetStream", placed[i].job.ID)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if firstErr != nil {
		for i, pl := range placed {
			if seqs[i] != 0 {
				_ = p.res.Jobs.DeleteMsg(context.Background(), seqs[i])
			}
			pl.ws.release(pl.job.ID)
			delete(p.jobs, pl.job.ID)
		}
		return firstErr
	}
	for i, pl := range placed {
		if in := p.jobs[pl.job.ID]; in != nil {
			in.seq = seqs[i]
		}
	}
	return nil
}
