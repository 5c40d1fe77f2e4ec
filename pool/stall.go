package pool

import (
	"context"
	"sync"
	"time"
)

// A worker is taken for gone when its heartbeats stop, but heartbeats
// also stop when the registry cannot store them: a broker restarting, or a
// cluster electing the registry's leader. Every worker then looks gone at
// once, the pool refuses every job ("no live workers"), and records the
// jobs due meanwhile missed although their workers run them. So the pool
// asks the registry how it is every heartbeat, and a stall of the registry
// does not count against the workers: a worker may miss its beats for as
// long as the registry was stalled since, on top of missedBeats.

// registryStall is the registry's last stall, as the pool saw it.
type registryStall struct {
	mu sync.Mutex
	// lastOK is the last time the registry answered; from, to the last
	// stall (to zero while it lasts).
	lastOK, from, to time.Time
}

// ok notes an answer at now.
func (s *registryStall) ok(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.from.IsZero() && s.to.IsZero() {
		s.to = now
	}
	s.lastOK = now
}

// failed notes a question the registry did not answer.
func (s *registryStall) failed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastOK.IsZero() || !s.from.IsZero() && s.to.IsZero() {
		return // never answered yet, or already stalled
	}
	s.from, s.to = s.lastOK, time.Time{}
}

// allowance is how much longer than missedBeats a worker last seen at seen
// may stay silent at now: the part of the last stall after seen.
func (s *registryStall) allowance(seen, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.from.IsZero() {
		return 0
	}
	to := s.to
	if to.IsZero() {
		to = now
	}
	from := s.from
	if seen.After(from) {
		from = seen
	}
	if to.Before(from) {
		return 0
	}
	return to.Sub(from)
}

// stallLoop asks the registry for its state every heartbeat (see
// registryStall).
func (p *Pool) stallLoop(ctx context.Context) {
	t := time.NewTicker(p.opts.Heartbeat)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, p.opts.Heartbeat)
		_, err := p.res.Workers.Status(qctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			p.stall.ok(time.Now())
		default:
			p.stall.failed()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
