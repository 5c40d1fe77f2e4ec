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

// stallSettle is how long after the registry answers again the stall
// still counts: the pool's watch of the registry resumes some time after
// the broker does (after a nats-server restart here, the first beat of a
// worker that had reconnected came more than a second after the registry
// answered, and the pool took it for gone in between).
const stallSettle = 10 * time.Second

// registryStall is the registry's last stall, as the pool saw it.
type registryStall struct {
	mu sync.Mutex
	// lastOK is the last time the registry answered; from, to the last
	// stall (to zero while it lasts).
	lastOK, from, to time.Time
}

// ok notes an answer at now, and reports whether it ends a stall.
func (s *registryStall) ok(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ended := !s.from.IsZero() && s.to.IsZero()
	if ended {
		s.to = now
	}
	s.lastOK = now
	return ended
}

// failed notes a question the registry did not answer, and reports
// whether it starts a stall.
func (s *registryStall) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastOK.IsZero() || !s.from.IsZero() && s.to.IsZero() {
		return false // never answered yet, or already stalled
	}
	s.from, s.to = s.lastOK, time.Time{}
	return true
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
	if to.IsZero() || now.Before(to.Add(stallSettle)) {
		to = now
	} else {
		to = to.Add(stallSettle)
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
			if p.stall.ok(time.Now()) {
				p.log.Info().Msg("the worker registry answers again")
			}
		default:
			if p.stall.failed() {
				p.log.Warn().Err(err).Msg("the worker registry does not answer; the workers' silence is not counted meanwhile")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
