package broker_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
			nc := startEmbedded(t)
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

// The jobs stream takes more workers than nats-server's default of 1,000
// consumers a stream, also when an earlier version made it with that
// default: 1,100 durable consumers are created on it.
func TestJobsStreamTakesManyWorkers(t *testing.T) {
	t.Parallel()
	nc := startEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// As an earlier version made it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: broker.StreamJobs, Subjects: []string{broker.SubjectJobs + ">"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	res, err := broker.Setup(ctx, nc, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1100)
	for g := range 16 {
		wg.Go(func() {
			for i := g; i < 1100; i += 16 {
				id := "w" + strconv.Itoa(i)
				if _, err := res.Jobs.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
					Durable: broker.WorkerConsumer(id), FilterSubject: broker.JobsSubject(id), AckPolicy: jetstream.AckExplicitPolicy,
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("1,100 workers' consumers: %v", err)
	}
}

// startEmbedded starts an embedded broker on a fresh directory and
// connects to it, both stopped at the test's end.
func startEmbedded(t *testing.T) *nats.Conn {
	t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := broker.Connect(context.Background(), emb.URL(), "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// A forming cluster's "no suitable peers" is asked again, more replicas
// than a single server can hold is final at once, and an answer that is
// not a refusal starts the count again.
func TestRefusals(t *testing.T) {
	t.Parallel()
	noPeers := &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}
	single := &jetstream.APIError{Code: 400, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}
	tests := []struct {
		name string
		errs []error
		want []bool
	}{
		{name: "single server", errs: []error{single}, want: []bool{true}},
		{name: "cluster forming", errs: []error{noPeers, noPeers}, want: []bool{false, false}},
		{name: "not a refusal", errs: []error{nats.ErrNoResponders, context.DeadlineExceeded}, want: []bool{false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r broker.Refusals
			for i, err := range tc.errs {
				if got := r.Final(err); got != tc.want[i] {
					t.Errorf("answer %d (%v): final %v, want %v", i, err, got, tc.want[i])
				}
			}
		})
	}
}

// A message on a worker's own registry key cannot purge the others' (a
// rollup): the registry allows none.
func TestRegistryAllowsNoRollup(t *testing.T) {
	t.Parallel()
	nc := startEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := broker.Setup(ctx, nc, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Workers.Put(ctx, "other", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$KV." + broker.BucketWorkers + ".mine")
	m.Header.Set("Nats-Rollup", "all")
	if _, err := res.JS.PublishMsg(ctx, m); err == nil {
		t.Error("a rollup on a worker's key was stored")
	}
	if _, err := res.Workers.Get(ctx, "other"); err != nil {
		t.Errorf("another worker's entry after the rollup: %v", err)
	}
}

// Unavailable says which errors asking again may mend: nothing answered,
// a timeout, no leader, a server failing on its own side (a 5xx answer);
// not a refusal.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no responders", nats.ErrNoResponders, true},
		{"a timeout", context.DeadlineExceeded, true},
		{"try again", broker.ErrTryAgain, true},
		{"no leader", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"the server's own failure", &jetstream.APIError{Code: 500, ErrorCode: 10012, Description: "open …/meta.inf.tmp: no such file or directory"}, true},
		{"a refusal", &jetstream.APIError{Code: 400, ErrorCode: 10148}, false},
		{"not found", jetstream.ErrConsumerNotFound, false},
	}
	for _, tc := range tests {
		if got := broker.Unavailable(tc.err); got != tc.want {
			t.Errorf("%s: Unavailable %v, want %v", tc.name, got, tc.want)
		}
	}
}
