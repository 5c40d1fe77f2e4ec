package pool

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// recover rebuilds the jobs in flight and their reservations from the jobs
// stream, which holds every message with a job whose record is not yet
// stored, and returns when the oldest of those messages was stored (zero if
// none is left). Other jobs in such a message may have their records:
// loadRecentIDs lets go of them.
func (p *Pool) recover(ctx context.Context) (time.Time, error) {
	var oldest time.Time
	n := 0
	add := func(m broker.StoredMsg) {
		if m.Header.Get(broker.HeaderCancel) != "" {
			return
		}
		jobs, err := job.ParseMany(m.Data)
		if err != nil {
			return
		}
		if oldest.IsZero() || m.Time.Before(oldest) {
			oldest = m.Time
		}
		worker, ok := broker.JobsWorker(m.Subject)
		if !ok {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		ws := p.workers[worker]
		if ws == nil {
			// Capacity comes with the worker's next heartbeat.
			ws = p.newWorkerState(worker, math.MaxInt32)
			p.workers[worker] = ws
			p.order = nil
		}
		for _, j := range jobs {
			if _, again := p.jobs[j.ID]; again {
				continue // a scan begun again
			}
			start, end := window(&j, job.Millis(m.Time))
			// Its record may be stored already (the message leaves the
			// queue once all of its jobs have one): loadRecentIDs lets go
			// of it then.
			p.recent.add(j.ID, m.Time)
			if ws.reserve(j.ID, start, end, j.Threads) == nil {
				p.jobs[j.ID] = &inflight{job: j, worker: worker, seq: m.Sequence, start: start, end: end}
				n++
			}
		}
	}
	err := p.whenAvailable(ctx, "job streams", func() error {
		for _, name := range broker.JobStreamNames() {
			if err := p.res.ScanStream(ctx, name, broker.SubjectJobs+">", add); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return oldest, fmt.Errorf("pool: recover jobs in flight: %w", err)
	}
	if n > 0 {
		p.log.Info().Int("jobs", n).Msg("recovered jobs in flight from the job streams")
	}
	return oldest, nil
}

// whenAvailable runs a read of the pool's start, again for up to
// startupPatience while JetStream answers that it cannot serve yet: a
// stream just created on a cluster may take a moment to elect its leader,
// and a broker just restarted to load its streams. The read must bear
// being run again.
func (p *Pool) whenAvailable(ctx context.Context, what string, read func() error) error {
	patience := time.Now().Add(startupPatience)
	for {
		err := read()
		if err == nil || !broker.Unavailable(err) || ctx.Err() != nil || time.Now().After(patience) {
			return err
		}
		p.log.Debug().Err(err).Msg(what + " not answering yet")
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}
