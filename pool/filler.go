package pool

import (
	"context"
	"time"
)

// With FillHosts the pool keeps a worker on every host the server pool may
// use, holding all of the host's free threads: a caller that keeps every
// thread busy (a batcher) wants them all, and a worker launched on demand
// only when nothing fits leaves small hosts idle while big ones refuse
// jobs. The fill runs once before the pool is ready, then every fillEvery
// for threads freed since (a worker gone, a host grown).

// fillEvery is how often the pool looks for free threads to fill.
const fillEvery = 10 * time.Second

// fillLoop fills the hosts every fillEvery until ctx ends.
func (p *Pool) fillLoop(ctx context.Context) {
	t := time.NewTicker(fillEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.fillHosts(ctx)
		}
	}
}

// fillHosts launches a worker with all the free threads of every host that
// has any. The workers are not on demand: idleness does not stop them.
func (p *Pool) fillHosts(ctx context.Context) {
	hosts, err := p.opts.Servers.Hosts(ctx)
	if err != nil {
		p.log.Debug().Err(err).Msg("fill hosts")
		return
	}
	n := 0
	for _, h := range hosts {
		if ctx.Err() != nil {
			return
		}
		if h.FreeThreads <= 0 {
			continue
		}
		if _, err := p.launchWorker(ctx, h.Name, h.FreeThreads, true, false); err != nil {
			p.log.Warn().Err(err).Str("host", h.Name).Msg("fill hosts: launching a worker")
			continue
		}
		n++
	}
	if n > 0 {
		p.log.Info().Int("workers", n).Msg("filled the hosts' free threads with workers")
	}
}
