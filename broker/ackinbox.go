package broker

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
)

// ErrNoStream means no stream took a message (nothing answered it).
var ErrNoStream = errors.New("no stream answered")

// PubAck is JetStream's acknowledgement of a stored message.
type PubAck struct {
	// Seq is the message's sequence in its stream.
	Seq uint64
	// Duplicate is set when a message with the same id was stored already.
	Duplicate bool
}

// AckInbox publishes messages to JetStream and hands each acknowledgement
// to a callback. All acknowledgements arrive on one wildcard subscription
// and are read without a JSON decoder: the jetstream package's futures cost
// a goroutine hop and a decode per message, which on the job path (two
// stored messages per job) was a third of a worker's CPU.
type AckInbox struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription

	mu   sync.Mutex
	next uint64
	wait map[string]func(PubAck, error)
}

// NewAckInbox subscribes to a fresh inbox on nc.
func NewAckInbox(nc *nats.Conn) (*AckInbox, error) {
	// Under the connection's inbox prefix: a worker identity may
	// subscribe to nothing else.
	a := &AckInbox{nc: nc, prefix: nc.NewInbox() + ".", wait: map[string]func(PubAck, error){}}
	sub, err := nc.Subscribe(a.prefix+"*", a.handle)
	if err != nil {
		return nil, fmt.Errorf("acknowledgement inbox: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	a.sub = sub
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("acknowledgement inbox: %w", err)
	}
	return a, nil
}

// Close stops receiving acknowledgements.
func (a *AckInbox) Close() { _ = a.sub.Unsubscribe() }

// Publish sends m (its Reply is set here) and calls done once with its
// acknowledgement or the error JetStream answered; it returns a token for
// Forget. If sending fails, done is not called and the error is returned.
// A message that is never answered (lost with a connection) is the
// caller's to time out.
func (a *AckInbox) Publish(m *nats.Msg, done func(PubAck, error)) (string, error) {
	a.mu.Lock()
	a.next++
	token := strconv.FormatUint(a.next, 36)
	a.wait[token] = done
	a.mu.Unlock()
	m.Reply = a.prefix + token
	if err := a.nc.PublishMsg(m); err != nil {
		a.Forget(token)
		return "", err
	}
	return token, nil
}

// Forget stops waiting for a message's acknowledgement.
func (a *AckInbox) Forget(token string) {
	a.mu.Lock()
	delete(a.wait, token)
	a.mu.Unlock()
}

var (
	seqKey = []byte(`"seq":`)
	dupKey = []byte(`"duplicate"`)
	errKey = []byte(`"error"`)
)

func (a *AckInbox) handle(m *nats.Msg) {
	token := m.Subject[len(a.prefix):]
	a.mu.Lock()
	done := a.wait[token]
	delete(a.wait, token)
	a.mu.Unlock()
	if done == nil {
		return
	}
	done(parseAck(m.Data))
}

// parseAck reads {"stream":…,"seq":N[,"duplicate": true]} or an error.
func parseAck(data []byte) (PubAck, error) {
	switch {
	case len(data) == 0:
		return PubAck{}, ErrNoStream
	case bytes.Contains(data, errKey):
		return PubAck{}, fmt.Errorf("JetStream refused the message: %s", data)
	}
	var ack PubAck
	if i := bytes.Index(data, seqKey); i >= 0 {
		d := bytes.TrimLeft(data[i+len(seqKey):], " ")
		for len(d) > 0 && d[0] >= '0' && d[0] <= '9' {
			ack.Seq = ack.Seq*10 + uint64(d[0]-'0')
			d = d[1:]
		}
	}
	if ack.Seq == 0 {
		return PubAck{}, fmt.Errorf("unreadable publish acknowledgement: %s", data)
	}
	ack.Duplicate = bytes.Contains(data, dupKey)
	return ack, nil
}
