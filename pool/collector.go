package pool

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// startCollector follows completion records as they are stored. It uses a
// plain subscription: the records stay in their stream for whoever needs them
// later, and the pool needs no delivery state of its own, since what it
// derives from records (reservations, jobs in flight) it rebuilds from the
// jobs stream when it starts, and sweepStale catches a record it missed.
// This saves the broker a consumer delivery and an acknowledgement per job.
//
// It returns the function that stops following.
func (p *Pool) startCollector() (stop func(), err error) {
	sub, err := p.nc.Subscribe(broker.SubjectDone+">", func(m *nats.Msg) { p.collect(m.Data) })
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

func (p *Pool) collect(data []byte) {
	j, err := job.ParseSummary(data)
	if err != nil {
		p.log.Warn().Err(err).Msg("unreadable completion record")
		return
	}
	p.mu.Lock()
	p.recent.touch(j.ID, time.Now())
	p.endedLocked(j.ID)
	p.mu.Unlock()
	p.stats.record(&j)
	p.metrics.record(&j)
	if j.Status != job.StatusDone {
		p.log.Debug().Str("job", j.ID).Str("status", string(j.Status)).Str("reason", j.Reason).Str("error", j.Error).Msg("job ended")
	}
}
