package pool

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
func (s *registryStall) failed() bool { return s.failedSince(time.Time{}) }

// failedSince is failed for a stall known to have begun by since (when
// not zero) though the registry answered after: the pool's watch of it
// that has not delivered what was stored then.
func (s *registryStall) failedSince(since time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastOK.IsZero() || !s.from.IsZero() && s.to.IsZero() {
		return false // never answered yet, or already stalled
	}
	if !since.IsZero() && since.Before(s.lastOK) {
		s.lastOK = since
	}
	// A stall that ended within stallSettle goes on: the registry that
	// answers for a beat between two failures (a cluster electing the
	// registry's leader) has not shown the workers' beats meanwhile, and
	// a new stall from the last answer would count them silent since.
	if !s.to.IsZero() && s.lastOK.Before(s.to.Add(stallSettle)) {
		s.to = time.Time{}
		return true
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

// watchLagLimit is how many heartbeats the pool's watch of the registry
// may lag behind what the registry has stored before the pool watches it
// again: after a broker restart the watch resumed 13 s after the broker
// did (make chaos), and meanwhile every worker looked gone to the pool
// although it beat on. A lag of one heartbeat is a stall already (see
// stallLoop).
const watchLagLimit = 2

// stallLoop asks the registry for its state every heartbeat (see
// registryStall), and checks that the pool's watch of it keeps up: a
// watch that has not delivered what the registry stored is a stall too,
// and is started again.
func (p *Pool) stallLoop(ctx context.Context) {
	t := time.NewTicker(p.opts.Heartbeat)
	defer t.Stop()
	// stored are the registry's last revisions as asked, oldest first,
	// until the watch delivers them. Under a steady flow of beats the
	// watch is always a little behind the last revision; it lags when it
	// has not delivered what was stored watchLagLimit beats ago.
	type sample struct {
		at  time.Time
		rev uint64
	}
	var stored []sample
	var rewatched time.Time
	for {
		var lagging time.Time
		qctx, cancel := context.WithTimeout(ctx, p.opts.Heartbeat)
		st, err := p.res.Workers.Status(qctx)
		cancel()
		if lost(err) {
			p.restoreStorage(ctx)
		}
		now := time.Now()
		if err == nil {
			if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
				last := bs.StreamInfo().State.LastSeq
				if len(stored) == 0 || stored[len(stored)-1].rev != last {
					stored = append(stored, sample{now, last})
				}
				if len(stored) > 64 { // a watch stuck for long: its start is what counts
					stored = append(stored[:1], stored[len(stored)-32:]...)
				}
				seen := p.watchRev.Load()
				i := 0
				for i < len(stored) && stored[i].rev <= seen {
					i++
				}
				stored = stored[i:]
				if len(stored) > 0 && now.Sub(stored[0].at) > p.opts.Heartbeat {
					// A stall until the watch has caught up: the
					// workers' beats stored meanwhile are not seen. It
					// began at the latest a beat before what the watch
					// has not delivered was stored: counted from when it
					// was noticed, a broker restart the pool's questions
					// did not meet (it came back between two) had every
					// live worker taken for gone after missedBeats, its
					// threads given back and taken by new workers, in the
					// same second the stall was noticed.
					lagging = stored[0].at.Add(-p.opts.Heartbeat)
					err = fmt.Errorf("the pool's watch of the registry is at revision %d of %d stored by %s", seen, stored[0].rev, stored[0].at.Format(time.TimeOnly))
				}
				if len(stored) > 0 && now.Sub(stored[0].at) > watchLagLimit*p.opts.Heartbeat &&
					now.Sub(rewatched) > watchLagLimit*p.opts.Heartbeat {
					// Still behind: watched again.
					rewatched = now
					select {
					case p.rewatch <- struct{}{}:
					default:
					}
				}
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if p.stall.ok(now) {
				p.log.Info().Msg("the worker registry answers again")
			}
		default:
			if p.stall.failedSince(lagging) {
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
