package worker

import (
	"context"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// reackWindow is how long the worker remembers the acknowledgements it
// sent, to send them again after its connection comes back. An
// acknowledgement sent just before the broker went away (written to a
// socket that died, or taken by a server killed before its store had it)
// is lost, and its message stays on the queue, held for the consumer's
// AckWait: the chaos test found 48 such messages after a broker SIGTERM,
// every job in them done. Sent again, it takes the message off; sent twice,
// it does nothing.
//
// The broker takes an acknowledgement for the message at its stream
// sequence, whatever that message is now: a stream made again (a broker
// on a new store, or one that lost the tail of its store in a kill)
// stores other messages at the same sequences, of this worker or of
// another. So an acknowledgement is sent again only for the message it
// was for: the one at its sequence is read first, and must be the same.
const reackWindow = 30 * time.Second

// reackBefore is how long before the last beat that found the connection
// unchanged an acknowledgement may have been sent and still be lost: the
// connection died after that beat, and a broker killed loses what it took
// in its last moments. reackTimeout bounds the reading of the messages:
// the heartbeat loop waits for it.
const (
	reackBefore  = 5 * time.Second
	reackTimeout = 2 * time.Second
)

// ackLog is the acknowledgements the worker sent lately, oldest first.
type ackLog struct {
	mu   sync.Mutex
	acks []sentAck
}

// sentAck is an acknowledgement sent: when, to which reply subject, for
// the message at which stream sequence, and that message's fingerprint.
type sentAck struct {
	at    time.Time
	reply string
	seq   uint64
	print uint64
}

// ack acknowledges msg, and remembers it (see reackWindow).
func (w *Worker) ack(msg jetstream.Msg) {
	_ = msg.Ack()
	meta, err := msg.Metadata()
	if err != nil || msg.Reply() == "" {
		return
	}
	w.acks.add(sentAck{at: time.Now(), reply: msg.Reply(), seq: meta.Sequence.Stream,
		print: fingerprint(msg.Subject(), msg.Headers(), msg.Data())})
}

// fingerprint tells a message from another stored at the same sequence:
// its message id (the pool gives every dispatch one), else a hash of its
// subject, its own headers and its data.
func fingerprint(subject string, h nats.Header, data []byte) uint64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(subject))
	if id := h.Get(jetstream.MsgIDHeader); id != "" {
		_, _ = f.Write([]byte(id))
		return f.Sum64()
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		// Not the broker's own (a direct get adds the stream, sequence,
		// subject and time).
		if !strings.HasPrefix(k, "Nats-") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		_, _ = f.Write([]byte(k))
		for _, v := range h[k] {
			_, _ = f.Write([]byte(v))
		}
	}
	_, _ = f.Write(data)
	return f.Sum64()
}

// add remembers a, and forgets what is older than reackWindow.
func (l *ackLog) add(a sentAck) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old, _ := slices.BinarySearchFunc(l.acks, a.at.Add(-reackWindow), func(s sentAck, t time.Time) int { return s.at.Compare(t) })
	if old > 0 && old >= len(l.acks)/2 {
		// Shifted down once half is old, not at every add: at hundreds of
		// acknowledgements a second, every add would move thousands.
		l.acks = slices.Delete(l.acks, 0, old)
	}
	l.acks = append(l.acks, a)
}

// between is the acknowledgements sent from from to to.
func (l *ackLog) between(from, to time.Time) []sentAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := func(s sentAck, t time.Time) int { return s.at.Compare(t) }
	i, _ := slices.BinarySearchFunc(l.acks, from, at)
	j, _ := slices.BinarySearchFunc(l.acks, to, at)
	return slices.Clone(l.acks[i:j])
}

// reackAfterReconnect sends again, once the worker's connection has come
// back since the last call, the acknowledgements that may have been lost
// with it (sent from reackBefore before the last beat that found the
// connection unchanged, within reackWindow, until now) whose messages are
// still queued, the same (see reackWindow). The heartbeat loop calls it.
func (w *Worker) reackAfterReconnect(ctx context.Context) {
	now := time.Now()
	r := w.nc.Stats().Reconnects
	if r == w.reconnects {
		w.steady = now
		return
	}
	w.reconnects = r
	from := now.Add(-reackWindow)
	if early := w.steady.Add(-reackBefore); early.After(from) {
		from = early
	}
	w.steady = now
	acks := w.acks.between(from, now)
	if len(acks) == 0 || w.res == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, reackTimeout)
	defer cancel()
	stream := w.res.JobsOf(w.opts.ID)
	sent := 0
	for _, a := range acks {
		m, err := stream.GetMsg(cctx, a.seq)
		if err != nil {
			if cctx.Err() != nil {
				break
			}
			continue // taken off already, or not readable here
		}
		if fingerprint(m.Subject, m.Header, m.Data) != a.print {
			continue // another message at that sequence
		}
		if err := w.nc.Publish(a.reply, []byte("+ACK")); err != nil {
			break
		}
		sent++
	}
	if sent > 0 {
		w.log.Debug().Int("acks", sent).Msg("acknowledged again what was acknowledged before the connection came back")
	}
}
