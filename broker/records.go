package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RecordMsgID is the message id of a job's record on its worker's
// subject: the worker and the job (a job id holds no ':'). JetStream keeps
// one record per id, so one worker cannot store a record that would make
// another's record of the same job a duplicate.
func RecordMsgID(worker, jobID string) string { return worker + ":" + jobID }

// RecordJobID is the job of a record's message id (see RecordMsgID).
func RecordJobID(msgID string) string {
	if i := strings.IndexByte(msgID, ':'); i >= 0 {
		return msgID[i+1:]
	}
	return msgID
}

// RecordIDs calls fn with the job id (from the message id), the worker
// whose subject it was stored on, and the storage time of every completion
// record stored since since, on subject (every worker's when empty),
// reading the headers alone. It returns how many records the
// stream counted that did not come (records it dropped for age meanwhile).
func (r *Resources) RecordIDs(ctx context.Context, since time.Time, subject string, fn func(id, worker string, at time.Time)) (missing uint64, err error) {
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
				fn(RecordJobID(id), strings.TrimPrefix(m.Subject(), SubjectDone), meta.Timestamp)
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
