package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// recover rebuilds the jobs in flight and their reservations from the jobs
// stream: it holds exactly the jobs whose records are not yet stored.
func (p *Pool) recover(ctx context.Context) error {
	n := 0
	var seq uint64 = 1
	for {
		m, err := p.res.Jobs.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(broker.SubjectJobs+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("pool: recover jobs in flight: %w", err)
		}
		seq = m.Sequence + 1
		if m.Header.Get(broker.HeaderCancel) != "" {
			continue
		}
		j, err := job.Parse(m.Data)
		if err != nil {
			continue
		}
		worker := strings.TrimPrefix(m.Subject, broker.SubjectJobs)
		start, end := window(&j, job.Millis(m.Time))
		p.mu.Lock()
		ws := p.workers[worker]
		if ws == nil {
			// Capacity comes with the worker's next heartbeat.
			ws = newWorkerState(worker, math.MaxInt32)
			p.workers[worker] = ws
			p.order = nil
		}
		if ws.reserve(j.ID, start, end, j.Threads) == nil {
			p.jobs[j.ID] = &inflight{job: j, worker: worker, seq: m.Sequence, start: start, end: end}
			n++
		}
		p.mu.Unlock()
	}
	if n > 0 {
		p.log.Info().Int("jobs", n).Msg("recovered jobs in flight from the jobs stream")
	}
	return nil
}
