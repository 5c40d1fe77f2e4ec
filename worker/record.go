package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// storeRecords publishes completion records and, once JetStream has stored
// each one, acknowledges the job's message, which removes it from the queue.
// Records carry the job id as their message id, so a record published twice
// (say, by a process that died before acknowledging) is stored once.
func (w *Worker) storeRecords(ctx context.Context) {
	acks := make(chan *run, 8192)
	ackerDone := make(chan struct{})
	go func() { w.ackRecords(ctx, acks); close(ackerDone) }()
	defer func() { close(acks); <-ackerDone }()
	for {
		w.recMu.Lock()
		batch := w.recQueue
		w.recQueue = nil
		w.recMu.Unlock()
		for _, r := range batch {
			r.future = w.publishRecord(ctx, r)
			if r.future == nil {
				continue
			}
			acks <- r
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-w.recSig:
		case <-ctx.Done():
			return
		}
	}
}

func (w *Worker) recordMsg(r *run) *nats.Msg {
	data, err := job.Encode(&r.job)
	if err != nil {
		// Only Extra members could fail; they came from valid JSON.
		data = []byte(`{"id":"` + r.job.ID + `","status":"failed","error":"record not encodable"}`)
	}
	m := nats.NewMsg(broker.DoneSubject(w.opts.ID))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, r.job.ID)
	return m
}

// publishRecord starts storing a record, retrying while JetStream refuses.
func (w *Worker) publishRecord(ctx context.Context, r *run) jetstream.PubAckFuture {
	m := w.recordMsg(r)
	for attempt := 0; ; attempt++ {
		f, err := w.res.JS.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
		if err == nil {
			return f
		}
		if attempt%20 == 0 {
			w.log.Warn().Err(err).Str("job", r.job.ID).Msg("storing completion record; retrying")
		}
		select {
		case <-ctx.Done():
			w.pending.Done()
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *Worker) ackRecords(ctx context.Context, acks <-chan *run) {
	for r := range acks {
		for {
			select {
			case <-r.future.Ok():
			case err := <-r.future.Err():
				w.log.Warn().Err(err).Str("job", r.job.ID).Msg("completion record not stored; retrying")
				time.Sleep(50 * time.Millisecond)
				if f := w.publishRecord(ctx, r); f != nil {
					r.future = f
					continue
				}
				goto next
			}
			break
		}
		if r.msg != nil {
			_ = r.msg.Ack()
		}
		w.mu.Lock()
		delete(w.active, r.job.ID)
		w.recent[r.job.ID] = time.Now()
		w.mu.Unlock()
		w.log.Debug().Str("job", r.job.ID).Str("status", string(r.status)).Msg("recorded")
		w.pending.Done()
	next:
	}
}

// forgetRecent drops ids recorded longer ago than a redelivery could come.
func (w *Worker) forgetRecent(before time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, t := range w.recent {
		if t.Before(before) {
			delete(w.recent, id)
		}
	}
}
