package worker

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// unansweredAfter is how long a record may go without an acknowledgement
// (lost with a connection, say) before it is published again; its message
// id keeps it stored once.
const unansweredAfter = 5 * time.Second

// storeRecords publishes completion records and, once JetStream has stored
// each one, acknowledges the job's message, which removes it from the queue.
// Records carry the job id as their message id, so a record published twice
// (say, by a process that died before acknowledging) is stored once.
func (w *Worker) storeRecords(ctx context.Context) {
	acks, err := broker.NewAckInbox(w.nc)
	for err != nil {
		w.log.Warn().Err(err).Msg("record acknowledgements; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		acks, err = broker.NewAckInbox(w.nc)
	}
	defer acks.Close()
	var mu sync.Mutex
	unanswered := map[*run]string{} // run -> its publish token
	publish := func(r *run) {
		for attempt := 0; ; attempt++ {
			mu.Lock()
			r.pubAt = time.Now()
			token, err := acks.Publish(r.recMsg, func(_ broker.PubAck, err error) {
				mu.Lock()
				delete(unanswered, r)
				mu.Unlock()
				w.recordStored(r, err)
			})
			if err == nil {
				unanswered[r] = token
			}
			mu.Unlock()
			if err == nil {
				return
			}
			if attempt%20 == 0 {
				w.log.Warn().Err(err).Str("job", r.job.ID).Msg("storing completion record; retrying")
			}
			select {
			case <-ctx.Done():
				w.pending.Done()
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	resend := time.NewTicker(time.Second)
	defer resend.Stop()
	for {
		w.recMu.Lock()
		batch := w.recQueue
		w.recQueue = nil
		w.recMu.Unlock()
		for _, r := range batch {
			if r.recMsg == nil {
				r.recMsg = w.recordMsg(r)
			}
			publish(r)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-w.recSig:
		case <-resend.C:
			cutoff := time.Now().Add(-unansweredAfter)
			var stale []*run
			mu.Lock()
			for r, token := range unanswered {
				if r.pubAt.Before(cutoff) {
					acks.Forget(token)
					delete(unanswered, r)
					stale = append(stale, r)
				}
			}
			mu.Unlock()
			for _, r := range stale {
				publish(r)
			}
		case <-ctx.Done():
			return
		}
	}
}

// recordStored acknowledges the job once its record is stored (or was
// already), and queues the record again if JetStream refused it.
func (w *Worker) recordStored(r *run, err error) {
	if err != nil {
		w.log.Warn().Err(err).Str("job", r.job.ID).Msg("completion record not stored; retrying")
		time.AfterFunc(50*time.Millisecond, func() { w.queueRecord(r) })
		return
	}
	r.del.recorded()
	w.mu.Lock()
	delete(w.active, r.job.ID)
	w.recent[r.job.ID] = time.Now()
	w.mu.Unlock()
	w.pending.Done()
}

// queueRecord hands a record to storeRecords.
func (w *Worker) queueRecord(r *run) {
	w.recMu.Lock()
	w.recQueue = append(w.recQueue, r)
	w.recMu.Unlock()
	select {
	case w.recSig <- struct{}{}:
	default:
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
