package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
)

func TestAckInbox(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	a, err := broker.NewAckInbox(b.NC)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	publish := func(subject, id string) (broker.PubAck, error) {
		m := nats.NewMsg(subject)
		m.Data = []byte(`{"x":1}`)
		if id != "" {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		type res struct {
			ack broker.PubAck
			err error
		}
		ch := make(chan res, 1)
		if _, err := a.Publish(m, func(ack broker.PubAck, err error) { ch <- res{ack, err} }); err != nil {
			return broker.PubAck{}, err
		}
		select {
		case r := <-ch:
			return r.ack, r.err
		case <-time.After(5 * time.Second):
			t.Fatal("no acknowledgement")
			return broker.PubAck{}, nil
		}
	}
	first, err := publish(broker.DoneSubject("w"), "same")
	if err != nil || first.Seq == 0 || first.Duplicate {
		t.Fatalf("first publish: %+v %v", first, err)
	}
	dup, err := publish(broker.DoneSubject("w"), "same")
	if err != nil || !dup.Duplicate || dup.Seq != first.Seq {
		t.Fatalf("duplicate publish: %+v %v", dup, err)
	}
	if _, err := publish("nowhere.at.all", ""); !errors.Is(err, broker.ErrNoStream) {
		t.Fatalf("publish to no stream: %v", err)
	}
	info, err := b.Res.Done.Info(context.Background())
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream holds %d records (%v), want 1", info.State.Msgs, err)
	}
}
