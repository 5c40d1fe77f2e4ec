package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RecordIDs calls fn with the job id (the message id) and the storage time
// of every completion record stored since since, on subject (every worker's
// when empty), reading the headers alone. It returns how many records the
// stream counted that did not come (records it dropped for age meanwhile).
func (r *Resources) RecordIDs(ctx context.Context, since time.Time, subject string, fn func(id string, at time.Time)) (missing uint64, err error) {
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
		HeadersOnly:   true,
	}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	cons, err := r.Done.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("read records: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read records: %w", err)
	}
	left := info.NumPending
	for left > 0 {
		batch, err := cons.FetchNoWait(4096)
		if err != nil {
			return left, fmt.Errorf("read records: %w", err)
		}
		got := uint64(0)
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" && err == nil {
				fn(id, meta.Timestamp)
			}
		}
		if err := batch.Error(); err != nil {
			return left, fmt.Errorf("read records: %w", err)
		}
		if got == 0 {
			return left, nil
		}
		left -= min(got, left)
	}
	return 0, nil
}
