package pool_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/worker"
)

// blockingLauncher never finishes a launch before its context ends.
type blockingLauncher struct{ started chan string }

func (l blockingLauncher) Launch(ctx context.Context, spec broker.WorkerSpec) error {
	l.started <- spec.ID
	<-ctx.Done()
	return ctx.Err()
}

// A pool stopped while a request is in progress answers it, and Run
// returns only once every goroutine it started has ended.
func TestRunOwnsItsGoroutines(t *testing.T) {
	b := brokertest.New(t)
	startWorker(t, b, "w4", 4)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(b.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Request("hvmind.test.nobody", nil, 10*time.Millisecond) // its reply subscription
		return nc
	}
	// The worker's first beats and the broker's setup settle first.
	time.Sleep(300 * time.Millisecond)
	before := brokertest.SettledGoroutines()

	pc, cc := connect(), connect()
	launches := make(chan string, 4)
	p, err := pool.New(pc, pool.Options{Heartbeat: 100 * time.Millisecond, Tolerance: testTolerance, Spawn: true,
		Launcher: blockingLauncher{launches}, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	<-p.Ready()
	c, err := pool.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, c, 1)
	// A job that fits: done. One that does not: the pool launches a
	// worker for it, and the launch hangs until the pool stops.
	d, err := c.DispatchJob(context.Background(), job.Job{ID: "fits", Task: "sleep", Threads: 2, Duration: 20})
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := d.Wait(ctxTimeout(t, 10*time.Second)); err != nil || recs[0].Status != job.StatusDone {
		t.Fatalf("records %+v, %v", recs, err)
	}
	refused := make(chan error, 1)
	go func() {
		_, err := c.DispatchJob(context.Background(), job.Job{ID: "big", Task: "sleep", Threads: 8, Duration: 20})
		refused <- err
	}()
	select {
	case <-launches:
	case <-time.After(10 * time.Second):
		t.Fatal("no launch for the job that does not fit")
	}
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	select {
	case err := <-refused:
		if err == nil || !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("the dispatch in progress at the stop: %v, want an answer saying its launch was cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dispatch in progress at the stop was never answered")
	}
	if _, err := c.DispatchJob(context.Background(), job.Job{Task: "sleep", Threads: 1}); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("a dispatch after the stop: %v, want no responders", err)
	}
	c.Close()
	pc.Close()
	cc.Close()
	if after := brokertest.SettledGoroutines(); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before the pool, %d after Run returned:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

// inProcessLauncher starts the workers it is asked for in this process.
type inProcessLauncher struct {
	t       *testing.T
	b       *brokertest.Broker
	started chan string
	stopped chan string
}

func (l inProcessLauncher) Launch(_ context.Context, spec broker.WorkerSpec) error {
	w, err := worker.New(l.b.Connect(l.t), worker.Options{ID: spec.ID, Threads: spec.Threads, Tolerance: testTolerance,
		Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(l.t)})
	if err != nil {
		return err
	}
	l.started <- spec.ID
	go func() {
		_ = w.Run(context.Background()) // until the pool asks it to stop
		l.stopped <- spec.ID
	}()
	return nil
}

// A stop lets a dispatch in progress finish when its launched worker
// registers within the grace, and then, with StopWorkersOnExit, asks every
// live worker to stop, the new one included.
func TestStopLetsARequestFinishThenStopsTheWorkers(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	l := inProcessLauncher{t: t, b: b, started: make(chan string, 4), stopped: make(chan string, 4)}
	if err := l.Launch(context.Background(), broker.WorkerSpec{ID: "w4", Threads: 4}); err != nil {
		t.Fatal(err)
	}
	<-l.started
	p, err := pool.New(b.Connect(t), pool.Options{Heartbeat: 100 * time.Millisecond, Tolerance: testTolerance, Spawn: true,
		Launcher: l, StopWorkersOnExit: true, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	<-p.Ready()
	c, err := pool.NewClient(b.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitWorkers(ctxTimeout(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	placed := make(chan error, 1)
	go func() {
		_, err := c.DispatchJob(context.Background(), job.Job{ID: "big", Task: "sleep", Threads: 8, Duration: 20})
		placed <- err
	}()
	<-l.started // the pool launched a worker for the big job: stop now
	cancel()
	if err := <-placed; err != nil {
		t.Errorf("the dispatch in progress at the stop: %v, want it placed on the worker it launched", err)
	}
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case id := <-l.stopped:
			got[id] = true
		case <-time.After(15 * time.Second):
			t.Fatalf("workers stopped: %v; want both asked to stop", got)
		}
	}
}

// A pool that stops asks a worker process to stop its workers in one
// request, those of every part of its registry entry, and puts a stop
// message only on the queue of a worker that runs on its own; every
// worker leaves.
func TestStopAsksWorkerProcesses(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	startWorker(t, b, "alone", 1)
	proc := startProcess(t, b.Connect(t), "stopme", 100*time.Millisecond)
	nc := b.Connect(t)
	// More than one part of the process's registry entry (500 workers).
	var inProcess []string
	for i := range 501 {
		inProcess = append(inProcess, "p"+strconv.Itoa(i))
	}
	for _, id := range inProcess {
		launchInProcess(t, nc, "stopme", broker.WorkerSpec{ID: id, Host: "home", Threads: 1})
	}
	p, err := pool.New(b.Connect(t), pool.Options{Heartbeat: 100 * time.Millisecond, Tolerance: testTolerance,
		StopWorkersOnExit: true, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	<-p.Ready()
	c, err := pool.NewClient(b.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitWorkers(ctxTimeout(t, 60*time.Second), len(inProcess)+1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var stopMsgs []string
	sub, err := nc.Subscribe(broker.SubjectJobs+">", func(m *nats.Msg) {
		mu.Lock()
		stopMsgs = append(stopMsgs, m.Subject)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(t0)
	mu.Lock()
	defer mu.Unlock()
	if len(stopMsgs) != 1 || stopMsgs[0] != broker.JobsSubject("alone") {
		t.Errorf("stop messages on %v, want one, to the worker on its own", stopMsgs)
	}
	// They left the registry before Run returned; their goroutines end
	// just after.
	deadline := time.Now().Add(2 * time.Second)
	for len(proc.Workers()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ws := proc.Workers(); len(ws) != 0 {
		t.Errorf("the worker process still runs %v after the pool stopped (in %s)", ws, took)
	}
}

// The pool says so when its local workers offer more threads than the
// capacity provider counts on their host, and not when they fit.
func TestLocalWorkersThatDoNotFitAreReported(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		workers  int
		wantWarn bool
	}{
		{name: "fit", workers: 1},
		{name: "do not fit", workers: 2, wantWarn: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := brokertest.New(t)
			sp, err := serverpool.New(serverpool.Options{Provider: serverpool.NewFixed(serverpool.Host{Name: "home", MaxThreads: 4, Cores: 1})})
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			l := inProcessLauncher{t: t, b: b, started: make(chan string, 4), stopped: make(chan string, 4)}
			p, err := pool.New(b.Connect(t), pool.Options{Heartbeat: 100 * time.Millisecond, Tolerance: testTolerance,
				Workers: tc.workers, Threads: 4, Host: "home", Launcher: l, Servers: sp, StopWorkersOnExit: true,
				Logger: zerolog.New(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- p.Run(ctx) }()
			<-p.Ready()
			cancel()
			<-ran
			if got := strings.Contains(logs.String(), "the local workers offer 8 threads on home"); got != tc.wantWarn {
				t.Errorf("warned: %v, want %v; logs:\n%s", got, tc.wantWarn, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
