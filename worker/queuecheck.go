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
// listing of each job stream's consumers serves every worker: a worker on
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

// checkQueues lists the consumers of the job streams that hold the
// queues of the process's workers, and tells each running worker whose
// consumer is missing. A worker whose consumer was created after the
// listing began is not told: the listing may have missed it.
func (p *Process) checkQueues(ctx context.Context, res *broker.Resources) {
	began := time.Now().UnixNano()
	p.mu.Lock()
	streams := map[int]bool{}
	for id := range p.running {
		streams[broker.JobStreamOf(id)] = true
	}
	p.mu.Unlock()
	names := map[string]bool{}
	lost := map[int]error{} // the streams found gone
	for i := range streams {
		cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		lister := res.Jobs[i].ConsumerNames(cctx)
		for name := range lister.Name() {
			names[name] = true
		}
		err := lister.Err()
		cancel()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			lost[i] = err
		} else if err != nil {
			p.log.Debug().Err(err).Msg("listing the workers' queues")
			return
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, w := range p.running {
		at := w.queueAt.Load()
		if at == 0 || at > began || w.stopping.Load() {
			continue
		}
		i := broker.JobStreamOf(id)
		switch {
		case !streams[i]:
			// Started since the listing began.
		case lost[i] != nil:
			w.lostQueue(lost[i])
		case !names[broker.WorkerConsumer(id)]:
			w.lostQueue(jetstream.ErrConsumerNotFound)
		}
	}
}
