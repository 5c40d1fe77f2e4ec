package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// startCollector consumes completion records with the pool's durable
// consumer, which resumes after a restart where it stopped, and releases
// each ended job's reservation.
func (p *Pool) startCollector(ctx context.Context) error {
	cons, err := p.res.Done.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       broker.ConsumerPool,
		Description:   "the pool's view of completion records",
		FilterSubject: broker.SubjectDone + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 65536,
	})
	if err != nil {
		return fmt.Errorf("pool: record consumer: %w", err)
	}
	cc, err := cons.Consume(p.collect, jetstream.PullMaxMessages(2048),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.log.Debug().Err(err).Msg("consume records")
		}))
	if err != nil {
		return fmt.Errorf("pool: consume records: %w", err)
	}
	go func() { <-ctx.Done(); cc.Stop() }()
	return nil
}

func (p *Pool) collect(msg jetstream.Msg) {
	j, err := job.Parse(msg.Data())
	if err != nil {
		p.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("unreadable completion record")
		_ = msg.Ack()
		return
	}
	p.mu.Lock()
	if in := p.jobs[j.ID]; in != nil {
		if ws := p.workers[in.worker]; ws != nil {
			ws.tl.Release(j.ID)
		}
		delete(p.jobs, j.ID)
	}
	p.mu.Unlock()
	p.stats.record(&j)
	if j.Status != job.StatusDone {
		p.log.Debug().Str("job", j.ID).Str("status", string(j.Status)).Str("reason", j.Reason).Msg("job ended")
	}
	_ = msg.Ack()
}
