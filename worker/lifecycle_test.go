package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// holding returns handlers whose "hold" task says on started that it has
// begun and runs until release is closed (or its context ends).
func holding(started chan<- string, release <-chan struct{}) *worker.Handlers {
	h := worker.NewHandlers()
	h.Register("hold", worker.HandlerFunc(func(ctx context.Context, task *worker.Task) (json.RawMessage, error) {
		started <- task.Job.ID
		select {
		case <-release:
			return json.RawMessage(`{"held":true}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	return h
}

// publishBatch publishes jobs to a worker's queue as one message.
func publishBatch(t *testing.T, b *brokertest.Broker, workerID string, jobs ...job.Job) {
	t.Helper()
	data, err := job.EncodeMany(jobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Res.JS.Publish(context.Background(), broker.JobsSubject(workerID), data); err != nil {
		t.Fatal(err)
	}
}

// waitRegistered waits until a worker has a registry entry.
func waitRegistered(t *testing.T, b *brokertest.Broker, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := broker.FindWorker(context.Background(), b.Res.Workers, id); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s did not register", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queuedMessages is how many messages the job streams hold once it holds
// want, or after 5 s: an acknowledgement reaches the broker after the
// worker has sent it.
func queuedMessages(t *testing.T, b *brokertest.Broker, want uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := b.Res.JobsTotals(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n.Msgs == want || time.Now().After(deadline) {
			return n.Msgs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goroutines returns the stacks of the goroutines outside the embedded
// broker, by goroutine id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nats-server/v2") {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

// startedSince returns the goroutines not in before that satisfy keep.
func startedSince(before map[string]string, keep func(stack string) bool) []string {
	var out []string
	for id, g := range goroutines() {
		if _, ok := before[id]; !ok && keep(g) {
			out = append(out, g)
		}
	}
	return out
}

// ours reports whether a goroutine runs, or was started by, package
// worker's code (the tests' package is worker_test).
func ours(stack string) bool { return strings.Contains(stack, "hvmind/hvmind/worker.") }

// Run, of a worker or of a worker process, returns only once every
// goroutine it started has ended: it waits for the job running at the
// stop, leaves the queued ones in the durable queue, and afterwards no
// goroutine of the package runs, nor, once the NATS client has finished
// tearing down its subscriptions, any other goroutine started since.
// It counts every goroutine of the test binary, so it does not run in
// parallel with other tests.
func TestRunReturnsAfterItsGoroutinesEnded(t *testing.T) {
	for _, tc := range []struct {
		name string
		// run starts what is tested, running a worker of id on nc, and
		// returns the function that runs it until ctx ends.
		run func(t *testing.T, nc *nats.Conn, id string, h *worker.Handlers) func(ctx context.Context) error
	}{
		{"worker", func(t *testing.T, nc *nats.Conn, id string, h *worker.Handlers) func(ctx context.Context) error {
			w, err := worker.New(nc, worker.Options{ID: id, Threads: 2, Tolerance: tolerance, Handlers: h,
				Spin: 500 * time.Microsecond, Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return w.Run
		}},
		{"process", func(t *testing.T, nc *nats.Conn, id string, h *worker.Handlers) func(ctx context.Context) error {
			p, err := worker.NewProcess(nc, worker.ProcessOptions{Name: "proc", Tolerance: tolerance, Handlers: h,
				Spin: 500 * time.Microsecond, Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return func(ctx context.Context) error {
				errs := make(chan error, 1)
				go func() { errs <- p.Run(ctx) }()
				// Start is refused until Run has begun.
				for err := errors.New("not started"); err != nil; {
					if err = p.Start(broker.WorkerSpec{ID: id, Host: "home", Threads: 2}); err != nil {
						select {
						case err := <-errs:
							return err
						case <-time.After(10 * time.Millisecond):
						}
					}
				}
				return <-errs
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := brokertest.New(t)
			nc := b.Connect(t)
			// The connection's own goroutines, among them the one that
			// takes the replies of its first request, are not Run's.
			if _, err := broker.Setup(context.Background(), nc, broker.Options{}); err != nil {
				t.Fatal(err)
			}
			started := make(chan string, 4)
			release := make(chan struct{})
			released := false
			defer func() {
				if !released {
					close(release)
				}
			}()
			before := goroutines()

			id := "g-" + tc.name
			run := tc.run(t, nc, id, holding(started, release))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// What still runs is looked at as soon as Run has returned,
			// on its goroutine: a goroutine Run did not wait for may be
			// about to end.
			type result struct {
				err  error
				left []string
			}
			returned := make(chan result, 1)
			go func() {
				err := run(ctx)
				returned <- result{err, startedSince(before, ours)}
			}()
			waitRegistered(t, b, id)
			publishBatch(t, b, id,
				job.Job{ID: "running", Task: "hold", Threads: 1, Duration: 100},
				job.Job{ID: "queued", Task: "sleep", Threads: 1, StartTime: job.Now() + 60_000, Duration: 10},
			)
			publishBatch(t, b, id, job.Job{ID: "queued-alone", Task: "sleep", Threads: 1, StartTime: job.Now() + 60_000, Duration: 10})
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("the job did not start")
			}
			cancel()
			select {
			case r := <-returned:
				t.Fatalf("Run returned (%v) while a job was running", r.err)
			case <-time.After(300 * time.Millisecond):
			}
			close(release)
			released = true
			select {
			case r := <-returned:
				if r.err != nil {
					t.Fatalf("Run: %v", r.err)
				}
				if len(r.left) > 0 {
					t.Errorf("%d goroutines of the package still ran when Run returned:\n%s", len(r.left), strings.Join(r.left, "\n\n"))
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return once the running job ended")
			}
			deadline := time.Now().Add(5 * time.Second)
			left := startedSince(before, func(string) bool { return true })
			for len(left) > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				left = startedSince(before, func(string) bool { return true })
			}
			if len(left) > 0 {
				t.Errorf("%d goroutines started during Run still run 5 s after it returned:\n%s", len(left), strings.Join(left, "\n\n"))
			}

			if r := waitRecords(t, b, "running")["running"]; r.Status != job.StatusDone {
				t.Errorf("the running job: %s (%s), want done", r.Status, r.Reason)
			}
			if n := queuedMessages(t, b, 2); n != 2 {
				t.Errorf("the jobs stream holds %d messages, want the 2 with a queued job", n)
			}
		})
	}
}

// A worker whose ctx ends while jobs run lets them finish, stores their
// records, acknowledges the messages whose jobs all have one, leaves the
// jobs that have not started in its durable queue, deregisters and
// returns.
func TestStopWhileAJobRunsStoresItsRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// threads the worker offers
		threads int
		// messages are published at now, each a batch; "running" is the
		// job that runs at the stop
		messages func(now float64) [][]job.Job
		// queued is how many messages stay in the jobs stream.
		queued uint64
	}{
		{"as soon as possible, alone", 1, func(float64) [][]job.Job {
			return [][]job.Job{{{ID: "running", Task: "hold", Threads: 1, Duration: 50}}}
		}, 0},
		{"scheduled, with a queued job in its message", 2, func(now float64) [][]job.Job {
			return [][]job.Job{{
				{ID: "running", Task: "hold", Threads: 1, StartTime: now + 500, Duration: 50},
				{ID: "later", Task: "sleep", Threads: 1, StartTime: now + 60_000, Duration: 10},
			}}
		}, 1},
		{"with a job waiting for its threads", 1, func(float64) [][]job.Job {
			return [][]job.Job{
				// Its threads are taken until its scheduled end.
				{{ID: "running", Task: "hold", Threads: 1, Duration: 60_000}},
				{{ID: "waiting", Task: "sleep", Threads: 1, Duration: 10}},
			}
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := brokertest.New(t)
			started := make(chan string, 4)
			release := make(chan struct{})
			const id = "s1"
			w, err := worker.New(b.Connect(t), worker.Options{ID: id, Threads: tc.threads, Tolerance: tolerance,
				Handlers: holding(started, release), Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			returned := make(chan error, 1)
			go func() { returned <- w.Run(ctx) }()
			waitRegistered(t, b, id)
			for _, m := range tc.messages(job.Now()) {
				publishBatch(t, b, id, m...)
			}
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("the job did not start")
			}
			// The job waiting for threads has arrived too.
			time.Sleep(100 * time.Millisecond)
			cancel()
			time.Sleep(100 * time.Millisecond)
			close(release)
			select {
			case err := <-returned:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return")
			}
			r := waitRecords(t, b, "running")["running"]
			if r.Status != job.StatusDone || string(r.Result) != `{"held":true}` || r.ActualStartTime == 0 || r.ActualEndTime < r.ActualStartTime {
				t.Errorf("record %s (%s), result %s, ran %.3f to %.3f: want done with its result and times",
					r.Status, r.Reason, r.Result, r.ActualStartTime, r.ActualEndTime)
			}
			if n := queuedMessages(t, b, tc.queued); n != tc.queued {
				t.Errorf("the jobs stream holds %d messages, want %d", n, tc.queued)
			}
			if _, err := broker.FindWorker(context.Background(), b.Res.Workers, id); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Errorf("registry entry after the stop: %v, want none", err)
			}
		})
	}
}
