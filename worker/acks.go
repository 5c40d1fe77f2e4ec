package worker

import (
	"sync"
	"time"

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
const reackWindow = 30 * time.Second

// ackLog is the acknowledgements the worker sent lately, oldest first.
type ackLog struct {
	mu   sync.Mutex
	acks []sentAck
}

type sentAck struct {
	at    time.Time
	reply string
}

// ack acknowledges msg, and remembers it (see reackWindow).
func (w *Worker) ack(msg jetstream.Msg) {
	_ = msg.Ack()
	w.acks.add(msg.Reply(), time.Now())
}

// add remembers an acknowledgement sent to reply at at, and forgets those
// older than reackWindow.
func (l *ackLog) add(reply string, at time.Time) {
	if reply == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := 0
	for old < len(l.acks) && at.Sub(l.acks[old].at) > reackWindow {
		old++
	}
	if old > 0 && old >= len(l.acks)/2 {
		// Shifted down now and then, not at every add.
		l.acks = append(l.acks[:0], l.acks[old:]...)
	}
	l.acks = append(l.acks, sentAck{at: at, reply: reply})
}

// since is the replies of the acknowledgements sent since t.
func (l *ackLog) since(t time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.acks {
		if !a.at.Before(t) {
			out = append(out, a.reply)
		}
	}
	return out
}

// reackAfterReconnect sends again, once the worker's connection has come
// back since the last call, the acknowledgements of the last reackWindow
// (see there). The heartbeat loop calls it.
func (w *Worker) reackAfterReconnect() {
	r := w.nc.Stats().Reconnects
	if r == w.reconnects {
		return
	}
	w.reconnects = r
	replies := w.acks.since(time.Now().Add(-reackWindow))
	for _, reply := range replies {
		if err := w.nc.Publish(reply, []byte("+ACK")); err != nil {
			w.log.Debug().Err(err).Msg("acknowledging again after a reconnect")
			return
		}
	}
	if len(replies) > 0 {
		w.log.Debug().Int("acks", len(replies)).Msg("acknowledged again what was acknowledged before the connection came back")
	}
}
