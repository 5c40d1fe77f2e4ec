package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
			for _, s := range append(slices.Clone(res.Jobs), res.Done) {
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

// A job stream takes more workers than nats-server's default of 1,000
// consumers a stream: 1,100 durable consumers of workers whose queues are
// in one stream are created on it.
func TestJobStreamTakesManyWorkers(t *testing.T) {
	t.Parallel()
	nc := startEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := broker.Setup(ctx, nc, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; len(ids) < 1100; i++ {
		if id := "w" + strconv.Itoa(i); broker.JobStreamOf(id) == 3 {
			ids = append(ids, id)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for g := range 16 {
		wg.Go(func() {
			for i := g; i < len(ids); i += 16 {
				if _, err := res.JobsOf(ids[i]).CreateOrUpdateConsumer(ctx, broker.WorkerConsumerConfig(ids[i])); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("1,100 workers' consumers on one stream: %v", err)
	}
}

// The setup on a broker with streams already there: the single jobs
// stream of an earlier version, whose subjects overlap the job streams',
// is removed when it is empty, and kept and refused (ErrOldJobStream,
// saying what to do) when it holds jobs; a job stream made with
// nats-server's default consumer limit is raised to MaxWorkers; another
// stream over the job subjects is refused at once, saying so.
func TestSetupWithStreamsAlreadyThere(t *testing.T) {
	t.Parallel()
	old := jetstream.StreamConfig{Name: broker.StreamJobs, Subjects: []string{broker.SubjectJobs + ">"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, AllowDirect: true}
	tests := []struct {
		name   string
		stream jetstream.StreamConfig
		queued int // jobs on hvmind.jobs.home-1, as an earlier version placed them
		// wantIs and wantMsg are the refusal, if any.
		wantIs  error
		wantMsg string
		// check looks at the broker after the setup.
		check func(ctx context.Context, t *testing.T, js jetstream.JetStream)
	}{
		{name: "an earlier version's empty jobs stream", stream: old, check: func(ctx context.Context, t *testing.T, js jetstream.JetStream) {
			if _, err := js.Stream(ctx, broker.StreamJobs); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("the old empty stream is still there: %v", err)
			}
			if _, err := js.Publish(ctx, broker.JobsSubject("home-1"), []byte(`{}`)); err != nil {
				t.Errorf("publish a job: %v", err)
			}
		}},
		{name: "an earlier version's jobs stream holding jobs", stream: old, queued: 2,
			wantIs: broker.ErrOldJobStream, wantMsg: "nats stream rm HVMIND_JOBS",
			check: func(ctx context.Context, t *testing.T, js jetstream.JetStream) {
				if _, err := js.Stream(ctx, broker.StreamJobs); err != nil {
					t.Errorf("the old stream with its jobs: %v", err)
				}
			}},
		{name: "a job stream with the default consumer limit", stream: jetstream.StreamConfig{Name: broker.JobStreamName(3),
			Subjects: []string{broker.SubjectJobs + "03.*"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, AllowDirect: true},
			check: func(ctx context.Context, t *testing.T, js jetstream.JetStream) {
				st, err := js.Stream(ctx, broker.JobStreamName(3))
				if err != nil {
					t.Fatal(err)
				}
				if got := st.CachedInfo().Config.MaxConsumers; got != broker.MaxWorkers {
					t.Errorf("it takes %d consumers, want %d", got, broker.MaxWorkers)
				}
			}},
		{name: "another stream over the job subjects", stream: jetstream.StreamConfig{Name: "MINE",
			Subjects: []string{broker.SubjectJobs + "05.>"}, Storage: jetstream.FileStorage},
			wantMsg: "another stream of this broker holds subjects under hvmind.jobs.>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc := startEmbedded(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.CreateStream(ctx, tc.stream); err != nil {
				t.Fatal(err)
			}
			for range tc.queued {
				if _, err := js.Publish(ctx, broker.SubjectJobs+"home-1", []byte(`{"task":"sleep","threads":1}`)); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			_, err = broker.Setup(ctx, nc, broker.Options{})
			took := time.Since(start)
			switch {
			case tc.wantMsg == "" && err != nil:
				t.Fatalf("Setup: %v", err)
			case tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg) || tc.wantIs != nil && !errors.Is(err, tc.wantIs)):
				t.Fatalf("Setup: %v, want a refusal saying %q", err, tc.wantMsg)
			case tc.wantMsg != "" && took > 5*time.Second:
				t.Errorf("refused after %s: asked again what cannot change", took)
			}
			if tc.check != nil {
				tc.check(ctx, t, js)
			}
		})
	}
}

// A worker's jobs subject names its worker and the stream that holds it.
func TestJobsSubject(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"home-1", "w", "a_b-c", "n00dles-17"} {
		subj := broker.JobsSubject(id)
		want := fmt.Sprintf("hvmind.jobs.%02d.%s", broker.JobStreamOf(id), id)
		if subj != want {
			t.Errorf("JobsSubject(%q) = %q, want %q", id, subj, want)
		}
		if got, ok := broker.JobsWorker(subj); !ok || got != id {
			t.Errorf("JobsWorker(%q) = %q, %v", subj, got, ok)
		}
	}
	for _, subj := range []string{"hvmind.jobs.home-1", "hvmind.jobs.99.home-1", "hvmind.done.00.x", "hvmind.jobs.00.", "hvmind.jobs.00.a.b"} {
		if got, ok := broker.JobsWorker(subj); ok {
			t.Errorf("JobsWorker(%q) = %q, want none", subj, got)
		}
	}
	// The ids spread over every stream.
	seen := map[int]bool{}
	for i := range 1000 {
		seen[broker.JobStreamOf(fmt.Sprintf("home-%d", i))] = true
	}
	if len(seen) != broker.JobStreams {
		t.Errorf("1,000 workers' queues in %d streams, want all %d", len(seen), broker.JobStreams)
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
