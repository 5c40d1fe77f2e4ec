package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	var (
		mu       sync.Mutex
		seqs     = make([]uint64, len(placed))
		firstErr error
		left     = len(placed)
		done     = make(chan struct{})
	)
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	answered := func() {
		left--
		if left == 0 {
			close(done)
		}
	}
	tokens := make([]string, 0, len(placed))
	for i, pl := range placed {
		data, err := job.Encode(pl.job)
		if err == nil {
			m := nats.NewMsg(broker.JobsSubject(pl.job.Worker))
			m.Data = data
			m.Header.Set(jetstream.MsgIDHeader, pl.job.ID)
			var token string
			token, err = p.acks.Publish(m, func(ack broker.PubAck, err error) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					fail(fmt.Errorf("publish job %s: %w", pl.job.ID, err))
				case ack.Duplicate:
					// The stored message is the earlier job's: leave it.
					fail(fmt.Errorf("%w: %s was dispatched within the last 10 minutes", ErrDuplicateID, pl.job.ID))
				default:
					seqs[i] = ack.Seq
				}
				answered()
			})
			tokens = append(tokens, token)
		}
		if err != nil {
			mu.Lock()
			fail(fmt.Errorf("publish job %s: %w", pl.job.ID, err))
			for range placed[i:] { // never sent: never answered
				answered()
			}
			mu.Unlock()
			break
		}
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case <-done:
	case <-timeout.C:
		mu.Lock()
		fail(errors.New("publish jobs: no acknowledgement from JetStream"))
		mu.Unlock()
	case <-ctx.Done():
		mu.Lock()
		fail(ctx.Err())
		mu.Unlock()
	}
	for _, t := range tokens {
		p.acks.Forget(t)
	}
	// A late answer may still come in: work on copies.
	mu.Lock()
	stored := append([]uint64(nil), seqs...)
	result := firstErr
	mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if result != nil {
		for i, pl := range placed {
			if stored[i] != 0 {
				_ = p.res.Jobs.DeleteMsg(context.Background(), stored[i])
			}
			pl.ws.release(pl.job.ID)
			delete(p.jobs, pl.job.ID)
		}
		return result
	}
	for i, pl := range placed {
		if in := p.jobs[pl.job.ID]; in != nil {
			in.seq = stored[i]
		}
	}
	return nil
}
