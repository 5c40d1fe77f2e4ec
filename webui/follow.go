package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
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
	js, err := u.nc.Subscribe(broker.SubjectJobs+"*.*", func(m *nats.Msg) {
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
// ctx lasts; it starts again when the records' stream is not there yet,
// went away, or was made anew (the broker lost its store).
func (u *UI) followRecords(ctx context.Context) {
	js, err := jetstream.New(u.nc)
	if err != nil {
		u.log.Warn().Err(err).Msg("webui: cannot read records")
		return
	}
	f := &recordsFollow{js: js}
	f.since.Store(time.Now().Add(-u.opts.Keep).UnixNano())
	for {
		err := u.consumeRecords(ctx, f)
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

// streamCheckEvery is how often the records' stream is checked to be
// the one being read.
const streamCheckEvery = 2 * time.Second

// errStreamNew says the records' stream was made anew under the consumer:
// its sequences start again at 1, which an ordered consumer that resumes
// after its last sequence would skip.
var errStreamNew = errors.New("the records' stream was made anew")

// recordsFollow is where the reading of the records has got to.
type recordsFollow struct {
	js jetstream.JetStream
	// since is the storage time of the last record read (Unix ns), where
	// the next consumer starts.
	since atomic.Int64
	// gen counts the consumers: a callback of an earlier one, still
	// running after its stop, must not move since.
	gen atomic.Uint64
}

// consumeRecords follows the records stored since f.since until ctx ends
// or the stream is not the one it began on.
func (u *UI) consumeRecords(ctx context.Context, f *recordsFollow) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := f.js.Stream(sctx, broker.StreamDone)
	if err != nil {
		return err
	}
	gen := f.gen.Add(1)
	since := &f.since
	created := stream.CachedInfo().Created
	start := time.Unix(0, since.Load())
	cons, err := stream.OrderedConsumer(sctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &start,
	})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if meta, err := m.Metadata(); err == nil && f.gen.Load() == gen {
			since.Store(meta.Timestamp.UnixNano())
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
	})
	if err != nil {
		return err
	}
	defer func() { cc.Stop(); <-cc.Closed() }()
	t := time.NewTicker(streamCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := stream.Info(cctx)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return err
		case err == nil && !info.Created.Equal(created):
			// Everything in the new stream came after it was made; the
			// old consumer may have read some of it, from its old
			// sequence on, and moved since past the rest.
			f.gen.Add(1)
			since.Store(info.Created.Add(-time.Second).UnixNano())
			return errStreamNew
		}
	}
}
