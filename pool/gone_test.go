package pool

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
)

// A message already taken out of a job stream is gone, however the broker
// says so; another failure is not.
func TestGoneMessages(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := b.Res.JobsOf("w")
	if _, err := b.Res.JS.Publish(ctx, broker.JobsSubject("w"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		del  func() error
		want bool
	}{
		{"deleted twice", func() error {
			seq := lastSeq(t, stream)
			if err := stream.DeleteMsg(ctx, seq); err != nil {
				t.Fatal(err)
			}
			return stream.DeleteMsg(ctx, seq)
		}, true},
		{"never there", func() error { return stream.DeleteMsg(ctx, 1_000_000) }, false}, // "stream store EOF": not a message the pool took out
		{"read after deletion", func() error {
			_, err := stream.GetMsg(ctx, 1)
			return err
		}, true},
		{"no such stream", func() error { return b.Res.JS.DeleteStream(ctx, "HVMIND_NO_SUCH") }, false},
	}
	for _, tt := range tests {
		err := tt.del()
		if err == nil {
			t.Fatalf("%s: no error", tt.name)
		}
		if got := gone(err); got != tt.want {
			t.Errorf("%s: gone(%v) = %t, want %t", tt.name, err, got, tt.want)
		}
	}
}

func lastSeq(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
