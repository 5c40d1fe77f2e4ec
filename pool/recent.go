package pool

import (
	"context"
	"fmt"
	"time"
)

// recentWindow is how long a dispatched job id stays taken after its job
// ended. Records are stored with the job id as their message id, and the
// records stream drops a message id it has seen within this window: a second
// job with the same id would never get its record stored.
const recentWindow = 10 * time.Minute

// recentSlack is how much longer than the window an id stays taken: an
// entry made at dispatch also covers a record stored up to recentSlack later
// (see touch).
const recentSlack = time.Minute

// recentIDs is the set of job ids dispatched within recentWindow. The pool
// refuses those ids itself, so that the job streams need no message ids of
// its own (JetStream's duplicate check costs about a fifth of a message's
// broker work) and several jobs can share one message.
type recentIDs struct {
	at    map[string]time.Time
	order []recentID // oldest first, from head
	head  int
}

type recentID struct {
	id string
	at time.Time
}

func newRecentIDs() *recentIDs { return &recentIDs{at: map[string]time.Time{}} }

// has reports whether id was dispatched within the window.
func (r *recentIDs) has(id string) bool {
	_, ok := r.at[id]
	return ok
}

// add takes id as dispatched at t.
func (r *recentIDs) add(id string, t time.Time) {
	r.at[id] = t
	r.order = append(r.order, recentID{id, t})
}

// touch keeps id taken for a whole window from t, for a job that ends now:
// its record's message id is remembered that long.
func (r *recentIDs) touch(id string, t time.Time) {
	// Most jobs end within a minute of their dispatch; the entry made then
	// is kept a minute longer instead of adding one per record.
	if at, ok := r.at[id]; ok && t.Sub(at) < recentSlack {
		return
	}
	r.add(id, t)
}

// remove gives id back, for a job that was never stored.
func (r *recentIDs) remove(id string) { delete(r.at, id) }

// prune forgets the ids dispatched before cutoff.
func (r *recentIDs) prune(cutoff time.Time) {
	for r.head < len(r.order) && r.order[r.head].at.Before(cutoff) {
		e := r.order[r.head]
		if t, ok := r.at[e.id]; ok && t.Equal(e.at) {
			delete(r.at, e.id)
		}
		r.order[r.head] = recentID{}
		r.head++
	}
	// Reuse the slice once most of it is spent.
	if r.head > 1024 && r.head*2 > len(r.order) {
		r.order = append(r.order[:0], r.order[r.head:]...)
		r.head = 0
	}
}

// recordsReadTimeout bounds reading the ids of the records of the window
// back at start: a few hundred thousand headers.
const recordsReadTimeout = 2 * time.Minute

// loadRecentIDs takes back, after a restart, the ids of the records stored
// within the window (their message ids, read from the headers alone), and
// lets go of the recovered jobs that have a record already. It reads from
// the earlier of the window's start and inQueue, the oldest job message
// still queued.
func (p *Pool) loadRecentIDs(ctx context.Context, inQueue time.Time) error {
	since := time.Now().Add(-recentWindow - recentSlack)
	if !inQueue.IsZero() && inQueue.Before(since) {
		since = inQueue
	}
	n, ended := 0, 0
	window := time.Now().Add(-recentWindow - recentSlack)
	record := func(id, worker string, at time.Time) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if in := p.jobs[id]; in != nil && in.worker != worker {
			return // stored on another worker's subject: not its record
		}
		// Older records are read only to let go of recovered jobs.
		if at.After(window) {
			p.recent.add(id, at)
			n++
		}
		if p.endedLocked(id) {
			ended++
		}
	}
	var missing uint64
	// Taking an id back twice is harmless: a read cut short by a stream
	// not answering yet is read again.
	err := p.whenAvailable(ctx, "records stream", func() error {
		rctx, cancel := context.WithTimeout(ctx, recordsReadTimeout)
		defer cancel()
		var err error
		missing, err = p.res.RecordIDs(rctx, since, "", record)
		return err
	})
	if err != nil {
		return fmt.Errorf("pool: recent job ids: %w", err)
	}
	if missing > 0 {
		p.log.Warn().Uint64("records", missing).Msg("recent records did not all come")
	}
	if n > 0 {
		p.log.Info().Int("ids", n).Int("ended_in_flight", ended).Msg("job ids of recent records taken back")
	}
	return nil
}
