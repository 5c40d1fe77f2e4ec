package worker

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// recordPub tracks records published and not yet acknowledged by JetStream.
// Its publish acknowledgements arrive on one wildcard inbox subscription and
// are read without a JSON decoder or a future per record.
type recordPub struct {
	mu      sync.Mutex
	prefix  string
	next    uint64
	pending map[string]*run // reply token -> run
	sub     *nats.Subscription
}

// storeRecords publishes completion records and, once JetStream has stored
// each one, acknowledges the job's message, which removes it from the queue.
// Records carry the job id as their message id, so a record published twice
// (say, by a process that died before acknowledging) is stored once.
func (w *Worker) storeRecords(ctx context.Context) {
	rp := &recordPub{prefix: "_INBOX." + nuid.Next() + ".", pending: map[string]*run{}}
	sub, err := w.nc.Subscribe(rp.prefix+"*", func(m *nats.Msg) { w.recordAcked(rp, m) })
	if err != nil {
		w.log.Error().Err(err).Msg("record acknowledgements")
		return
	}
	_ = sub.SetPendingLimits(-1, -1)
	rp.sub = sub
	defer func() { _ = sub.Unsubscribe() }()
	_ = w.nc.Flush()
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
			w.publishRecord(ctx, rp, r)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-w.recSig:
		case <-resend.C:
			w.resendStale(ctx, rp)
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

// publishRecord starts storing a record, retrying while the connection refuses.
func (w *Worker) publishRecord(ctx context.Context, rp *recordPub, r *run) {
	rp.mu.Lock()
	rp.next++
	token := strconv.FormatUint(rp.next, 36)
	rp.pending[token] = r
	r.pubAt = time.Now()
	rp.mu.Unlock()
	r.recMsg.Reply = rp.prefix + token
	for attempt := 0; ; attempt++ {
		err := w.nc.PublishMsg(r.recMsg)
		if err == nil {
			return
		}
		if attempt%20 == 0 {
			w.log.Warn().Err(err).Str("job", r.job.ID).Msg("storing completion record; retrying")
		}
		select {
		case <-ctx.Done():
			rp.mu.Lock()
			delete(rp.pending, token)
			rp.mu.Unlock()
			w.pending.Done()
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// resendStale publishes again records whose acknowledgement has not come
// (lost across a reconnect, say); the message id keeps them stored once.
func (w *Worker) resendStale(ctx context.Context, rp *recordPub) {
	cutoff := time.Now().Add(-5 * time.Second)
	var stale []*run
	rp.mu.Lock()
	for token, r := range rp.pending {
		if r.pubAt.Before(cutoff) {
			delete(rp.pending, token)
			stale = append(stale, r)
		}
	}
	rp.mu.Unlock()
	for _, r := range stale {
		w.publishRecord(ctx, rp, r)
	}
}

var errorKey = []byte(`"error"`)

// recordAcked handles JetStream's answer to a record: stored (or a
// duplicate of a stored one) acknowledges the job; anything else retries.
func (w *Worker) recordAcked(rp *recordPub, m *nats.Msg) {
	token := m.Subject[len(rp.prefix):]
	rp.mu.Lock()
	r := rp.pending[token]
	delete(rp.pending, token)
	rp.mu.Unlock()
	if r == nil {
		return
	}
	if len(m.Data) == 0 || bytes.Contains(m.Data, errorKey) {
		w.log.Warn().Str("job", r.job.ID).Bytes("reply", m.Data).Msg("completion record not stored; retrying")
		go func() {
			time.Sleep(50 * time.Millisecond)
			w.recMu.Lock()
			w.recQueue = append(w.recQueue, r)
			w.recMu.Unlock()
			select {
			case w.recSig <- struct{}{}:
			default:
			}
		}()
		return
	}
	if r.msg != nil {
		_ = r.msg.Ack()
	}
	w.mu.Lock()
	delete(w.active, r.job.ID)
	w.recent[r.job.ID] = time.Now()
	w.mu.Unlock()
	w.pending.Done()
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
