package pool

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
)

// tidyGone takes out of the job streams what is left queued for workers
// that are gone and have no job in flight: cancels they never read, and
// messages whose jobs all have records; and their durable consumers. Nobody needs them: a worker of
// that name that comes back would only find jobs that have ended. Without
// this they stay for good (the chaos test found thousands after a few
// worker-process kills).
//
// A worker is tidied once it is gone (it left the registry, its process
// exited, or it has been silent for orphanSilence) and every job placed
// on it has ended. The streams' last sequences are read before that check,
// and only messages up to it are purged: a job placed on the worker after
// the check (it came back) has a later sequence and stays.
func (p *Pool) tidyGone(ctx context.Context) {
	now := time.Now()
	p.mu.Lock()
	busy, gone := p.goneLocked(now)
	p.mu.Unlock()
	if len(gone) == 0 {
		// No stream to read: sixteen requests every few beats for
		// nothing. (A broker that lost its store is found by the
		// registry's stall check, see stallLoop.)
		p.forgetGone(now, busy)
		return
	}
	last := make([]uint64, len(p.res.Jobs)) // each job stream's
	for i, st := range p.res.Jobs {
		cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		info, err := st.Info(cctx)
		cancel()
		if lost(err) {
			p.restoreStorage(ctx)
		}
		if err != nil {
			p.log.Debug().Err(err).Msg("tidy: read the job streams")
			return
		}
		last[i] = info.State.LastSeq
	}
	// Checked again after the read, for the purge to keep what was
	// placed since.
	now = time.Now()
	p.mu.Lock()
	busy, gone = p.goneLocked(now)
	p.mu.Unlock()
	for _, id := range gone {
		cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		err := p.res.JobsOf(id).Purge(cctx, jetstream.WithPurgeSubject(broker.JobsSubject(id)), jetstream.WithPurgeSequence(last[broker.JobStreamOf(id)]+1))
		cancel()
		if err != nil {
			p.log.Debug().Err(err).Str("worker", id).Msg("tidy: purge a gone worker's queue")
			continue
		}
		// Its durable consumer too: a worker of that name that comes
		// back creates its own (a job placed meanwhile waits for it in
		// the stream), and names of killed workers are not used again.
		cctx, cancel = context.WithTimeout(ctx, brokerTimeout)
		err = p.res.JobsOf(id).DeleteConsumer(cctx, broker.WorkerConsumer(id))
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			p.log.Debug().Err(err).Str("worker", id).Msg("tidy: delete a gone worker's consumer")
		}
		p.mu.Lock()
		if ws := p.workers[id]; ws != nil {
			ws.tidied, ws.tidiedAt = true, now
		}
		p.mu.Unlock()
	}
	if len(gone) > 0 {
		p.log.Debug().Int("workers", len(gone)).Msg("tidied the queues of gone workers")
	}
	p.forgetGone(now, busy)
}

// goneLocked are the workers with a job in flight (busy), and the
// workers to tidy: gone, holding no job in flight, not tidied yet.
func (p *Pool) goneLocked(now time.Time) (busy map[string]bool, gone []string) {
	busy = map[string]bool{}
	for _, in := range p.jobs {
		busy[in.worker] = true
	}
	for id, ws := range p.workers {
		if ws.tidied || busy[id] || !ws.launched.IsZero() || p.aliveLocked(ws, now) {
			continue
		}
		if ws.seen.IsZero() || ws.exited == ws.entry.Instance || now.Sub(ws.seen) >= orphanSilence {
			gone = append(gone, id)
		}
	}
	return busy, gone
}

// forgetGone drops from the pool's table the workers tidied more than
// ForgetGone ago that hold nothing: no job in flight (busy, as tidyGone
// read it), no reservation on their timeline (a job placed since holds
// one). A worker that beats again is taken back as new; the capacity
// provider's ledger check gives back whatever a forgotten name still holds
// there.
func (p *Pool) forgetGone(now time.Time, busy map[string]bool) {
	if p.opts.ForgetGone < 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for id, ws := range p.workers {
		if ws.tidied && now.Sub(ws.tidiedAt) >= p.opts.ForgetGone && !busy[id] && ws.tl.Len() == 0 &&
			ws.launched.IsZero() && !p.aliveLocked(ws, now) {
			delete(p.workers, id)
			n++
		}
	}
	if n > 0 {
		p.order = nil
		p.log.Debug().Int("workers", n).Msg("forgot gone workers")
	}
}
