package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// With FillHosts the pool keeps a worker on every host the server pool may
// use, holding all of the host's free threads: a caller that keeps every
// thread busy (a batcher) wants them all, and a worker launched on demand
// only when nothing fits leaves small hosts idle while big ones refuse
// jobs. The fill runs once before the pool is ready, then every fillEvery
// for threads freed since (a worker gone, a host grown).

// fillParallel is how many workers the filler launches at once.
const fillParallel = 8

// fillEvery is how often the pool looks for free threads to fill, and
// fillRetry how soon it looks again when the capacity provider did not
// answer: a provider that comes up after the pool (a game whose executor
// the player starts later) has its hosts filled within a second.
const (
	fillEvery = 10 * time.Second
	fillRetry = time.Second
)

// fillLoop fills the hosts every fillEvery until ctx ends.
func (p *Pool) fillLoop(ctx context.Context) {
	t := time.NewTicker(fillEvery)
	defer t.Stop()
	retry := time.NewTimer(fillRetry)
	defer retry.Stop()
	if !p.fillFailed.Load() { // the first fill, before the pool was ready
		retry.Stop()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.fillSig:
		case <-retry.C:
		}
		if !p.fillHosts(ctx) {
			retry.Reset(fillRetry)
		}
	}
}

// fillHosts launches a worker with all the free threads of every host that
// has any. The workers are not on demand: idleness does not stop them. It
// reports whether the capacity provider answered.
func (p *Pool) fillHosts(ctx context.Context) bool {
	hosts, err := p.opts.Servers.Hosts(ctx)
	if err != nil {
		p.log.Debug().Err(err).Msg("fill hosts")
		p.fillFailed.Store(true)
		return false
	}
	p.fillFailed.Store(false)
	// A few at a time: after a worker process died, every host is free
	// again, and each launch waits for its worker to register.
	var n atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, fillParallel)
	for _, h := range hosts {
		if ctx.Err() != nil {
			break
		}
		if h.FreeThreads <= 0 {
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if _, err := p.launchWorker(ctx, h.Name, h.FreeThreads, true, false); err != nil {
				p.log.Warn().Err(err).Str("host", h.Name).Msg("fill hosts: launching a worker")
				return
			}
			n.Add(1)
		})
	}
	wg.Wait()
	if n := n.Load(); n > 0 {
		p.log.Info().Int64("workers", n).Msg("filled the hosts' free threads with workers")
	}
	return true
}
