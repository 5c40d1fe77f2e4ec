package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
)

// On a single server, three replicas are refused at once with JetStream's
// reason, not retried until the caller gives up; one replica, set on
// streams made with none, changes nothing.
func TestSetupStorage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		storage broker.Storage
		wantErr bool
	}{
		{name: "default", storage: broker.Storage{}},
		{name: "one replica", storage: broker.Storage{Replicas: 1}},
		{name: "three on one server", storage: broker.Storage{Replicas: 3}, wantErr: true},
		{name: "six", storage: broker.Storage{Replicas: 6}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			defer emb.Shutdown()
			nc, err := broker.Connect(context.Background(), emb.URL(), "test", zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			res, err := broker.Setup(ctx, nc, broker.Options{Storage: tc.storage})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Setup: %v, want an error: %v", err, tc.wantErr)
			}
			if err != nil {
				if took := time.Since(start); took > 10*time.Second {
					t.Errorf("refused after %s: retried what JetStream refused", took)
				}
				return
			}
			for _, s := range []jetstream.Stream{res.Jobs, res.Done} {
				info, err := s.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.Config.Replicas != 1 {
					t.Errorf("stream %s: %d replicas, want 1", info.Config.Name, info.Config.Replicas)
				}
			}
			// A second setup, as every process runs at start, changes nothing.
			if _, err := broker.Setup(ctx, nc, broker.Options{Storage: tc.storage}); err != nil {
				t.Errorf("second setup: %v", err)
			}
		})
	}
}
