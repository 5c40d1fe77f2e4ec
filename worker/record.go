package worker

import (
	"context"
	"encoding/json"
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

// recordRetry is how long a record JetStream refused waits before it is
// published again.
const recordRetry = 50 * time.Millisecond

// storeRecords publishes completion records and, once JetStream has stored
// each one, acknowledges the job's message, which removes it from the queue.
// Records carry their worker and job as message id (broker.RecordMsgID), so a record published twice
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
	// unanswered holds each record published and not answered yet: when it
	// was sent, and the token to stop waiting for its answer by. A record
	// is entered before it is published, since its answer may come before
	// Publish returns, and mu is never held across a publish.
	type sent struct {
		at    time.Time
		token string
	}
	var mu sync.Mutex
	unanswered := map[*run]*sent{}
	// answered takes the first answer to a record that waits for one: an
	// answer to a publish that was given up on and sent again is as good.
	answered := func(r *run, err error) {
		if !w.callbacks.enter() {
			return
		}
		defer w.callbacks.leave()
		mu.Lock()
		_, waiting := unanswered[r]
		delete(unanswered, r)
		mu.Unlock()
		if waiting {
			w.recordStored(r, err)
		}
	}
	publish := func(r *run) {
		for attempt := 0; ; attempt++ {
			s := &sent{at: time.Now()}
			mu.Lock()
			unanswered[r] = s
			mu.Unlock()
			token, err := acks.Publish(r.recMsg, func(_ broker.PubAck, err error) { answered(r, err) })
			mu.Lock()
			switch {
			case err != nil:
				delete(unanswered, r)
			case unanswered[r] == s:
				s.token = token
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
			case <-time.After(recordRetry):
			}
		}
	}
	// Records sent before a reconnect are sent again at once: their
	// answers are likely lost with the old connection.
	resend := time.NewTicker(250 * time.Millisecond)
	defer resend.Stop()
	reconnects := w.nc.Stats().Reconnects
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
			if r := w.nc.Stats().Reconnects; r != reconnects && w.nc.IsConnected() {
				reconnects, cutoff = r, time.Now()
			}
			var stale []*run
			var tokens []string
			mu.Lock()
			for r, s := range unanswered {
				if s.at.Before(cutoff) {
					delete(unanswered, r)
					stale = append(stale, r)
					tokens = append(tokens, s.token)
				}
			}
			mu.Unlock()
			for _, token := range tokens {
				acks.Forget(token)
			}
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
		// Run waits for the retry: its pending record keeps Run from
		// stopping the storer, and retries from returning.
		w.retries.Add(1)
		time.AfterFunc(recordRetry, func() {
			defer w.retries.Done()
			w.queueRecord(r)
		})
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

// recordMsg is a job's record, with its worker and job as message id.
func (w *Worker) recordMsg(r *run) *nats.Msg {
	data, err := job.Encode(&r.job)
	if err != nil {
		// Encode writes the job by hand and has no error to return today;
		// should it have one, a record that says so still ends the job.
		data, _ = json.Marshal(map[string]string{"id": r.job.ID, "status": string(job.StatusFailed),
			"error": "record not encodable: " + err.Error()})
	}
	m := nats.NewMsg(broker.DoneSubject(w.opts.ID))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, broker.RecordMsgID(w.opts.ID, r.job.ID))
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
