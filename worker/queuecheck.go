package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
)

// queueCheckLoop checks, every queueCheckEvery heartbeats until ctx ends,
// that the durable queue of each of the process's workers is still there,
// and has a worker whose queue is gone create it again (see queueLoop). One
// listing of the jobs stream's consumers serves every worker: a worker on
// its own asks for its consumer's info, and a thousand workers in one
// process made two hundred such requests a second to the broker.
func (p *Process) queueCheckLoop(ctx context.Context, res *broker.Resources) {
	t := time.NewTicker(queueCheckEvery * p.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.checkQueues(ctx, res)
	}
}

// checkQueues lists the jobs stream's consumers and tells each running
// worker whose consumer is missing. A worker whose consumer was created
// after the listing began is not told: the listing may have missed it.
func (p *Process) checkQueues(ctx context.Context, res *broker.Resources) {
	began := time.Now().UnixNano()
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	names := map[string]bool{}
	lister := res.Jobs.ConsumerNames(cctx)
	for name := range lister.Name() {
		names[name] = true
	}
	err := lister.Err()
	gone := errors.Is(err, jetstream.ErrStreamNotFound)
	if err != nil && !gone {
		p.log.Debug().Err(err).Msg("listing the workers' queues")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, w := range p.running {
		at := w.queueAt.Load()
		if at == 0 || at > began || w.stopping.Load() {
			continue
		}
		switch {
		case gone:
			w.lostQueue(err)
		case !names[broker.WorkerConsumer(id)]:
			w.lostQueue(jetstream.ErrConsumerNotFound)
		}
	}
}
