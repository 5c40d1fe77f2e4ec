package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// subscribe follows placed jobs and marks. Placed jobs are read as they
// are published (the jobs' stream is a work queue: only a worker's own
// consumer may read it); a page opened later learns the earlier ones from
// their records.
func (u *UI) subscribe() error {
	js, err := u.nc.Subscribe(broker.SubjectJobs+"*", func(m *nats.Msg) {
		if m.Header.Get(broker.HeaderCancel) != "" || m.Header.Get(broker.HeaderStop) != "" {
			return
		}
		jobs, err := job.ParseMany(m.Data)
		if err != nil {
			return
		}
		u.hist.placed(jobs, job.Now())
	})
	if err != nil {
		return fmt.Errorf("webui: follow jobs: %w", err)
	}
	u.subs = append(u.subs, js)
	ms, err := u.nc.Subscribe(pool.SubjectMarks+"*", func(m *nats.Msg) {
		var mk pool.Mark
		if json.Unmarshal(m.Data, &mk) != nil || mk.Kind == "" {
			return
		}
		u.hist.marked(mk)
	})
	if err != nil {
		return fmt.Errorf("webui: follow marks: %w", err)
	}
	u.subs = append(u.subs, ms)
	return nil
}

// followRecords reads the stored records, from Keep ago on, for as long as
// ctx lasts; it starts again when the records' stream is not there yet or
// went away with the broker's store.
func (u *UI) followRecords(ctx context.Context) {
	js, err := jetstream.New(u.nc)
	if err != nil {
		u.log.Warn().Err(err).Msg("webui: cannot read records")
		return
	}
	since := time.Now().Add(-u.opts.Keep)
	for {
		err := u.consumeRecords(ctx, js, &since)
		if ctx.Err() != nil {
			return
		}
		u.log.Debug().Err(err).Msg("webui: following records again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// consumeRecords follows the records stored since *since until ctx ends or
// the consumer cannot go on; *since moves with the records read.
func (u *UI) consumeRecords(ctx context.Context, js jetstream.JetStream, since *time.Time) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := js.Stream(sctx, broker.StreamDone)
	if err != nil {
		return err
	}
	start := *since
	cons, err := stream.OrderedConsumer(sctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &start,
	})
	if err != nil {
		return err
	}
	broken := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if meta, err := m.Metadata(); err == nil {
			*since = meta.Timestamp // the callbacks run one at a time
		}
		recs, err := job.ParseMany(m.Data())
		if err != nil {
			return
		}
		var points []Point
		if a := u.opts.Annotator; a != nil {
			for i := range recs {
				points = append(points, a.Points(&recs[i])...)
			}
		}
		u.hist.recorded(recs, points)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer makes itself again after most troubles
		// (a deleted consumer, a reconnect); not without its stream.
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			select {
			case broken <- err:
			default:
			}
		}
	}))
	if err != nil {
		return err
	}
	defer func() { cc.Stop(); <-cc.Closed() }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-broken:
		return err
	}
}
