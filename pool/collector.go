package pool

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// startCollector follows completion records as they are stored. It uses a
// plain subscription: the records stay in their stream for whoever needs them
// later, and the pool needs no delivery state of its own, since what it
// derives from records (reservations, jobs in flight) it rebuilds from the
// job streams when it starts, and sweepStale catches a record it missed.
// This saves the broker a consumer delivery and an acknowledgement per job.
//
// It returns the function that stops following.
func (p *Pool) startCollector() (stop func(), err error) {
	sub, err := p.nc.Subscribe(broker.SubjectDone+">", func(m *nats.Msg) {
		p.collect(strings.TrimPrefix(m.Subject, broker.SubjectDone), m.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("pool: follow records: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := p.nc.FlushTimeout(brokerTimeout); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("pool: follow records: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// endedLocked forgets a job in flight that has ended, and its reservation.
// It reports whether the job was in flight.
func (p *Pool) endedLocked(id string) bool {
	in := p.jobs[id]
	if in == nil {
		return false
	}
	if ws := p.workers[in.worker]; ws != nil {
		ws.release(id)
	}
	delete(p.jobs, id)
	return true
}

// collect ends the job a record stored on worker's subject tells of: a
// record of a job placed on another worker is not that job's (a worker may
// store records on its own subject only, but any record there).
func (p *Pool) collect(worker string, data []byte) {
	j, err := job.ParseSummary(data)
	if err != nil {
		p.log.Warn().Err(err).Msg("unreadable completion record")
		return
	}
	p.mu.Lock()
	if in := p.jobs[j.ID]; in != nil && in.worker != worker {
		p.mu.Unlock()
		p.log.Warn().Str("job", j.ID).Str("subject_worker", worker).Str("worker", in.worker).
			Msg("a record of a job on another worker's subject: ignored")
		return
	}
	p.recent.touch(j.ID, time.Now())
	in := p.jobs[j.ID]
	p.endedLocked(j.ID)
	p.mu.Unlock()
	if in != nil {
		p.breaksBatch(&in.job, &j)
	}
	p.stats.record(&j)
	p.metrics.record(&j)
	if j.Status != job.StatusDone {
		p.log.Debug().Str("job", j.ID).Str("status", string(j.Status)).Str("reason", j.Reason).Str("error", j.Error).Msg("job ended")
	}
}
