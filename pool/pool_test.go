package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
)

type env struct {
	b      *brokertest.Broker
	client *pool.Client
	stop   func()
}

// testTolerance is how late a job may start in these tests before it is
// missed. They test placement, records and restarts, not precision (the
// worker's tests and the benches do): a stall of the machine under -race
// (one of 199 ms was seen) must not turn a job into a miss.
const testTolerance = time.Second

// setup runs a pool (no launching) and in-process workers of the given
// threads, named w<threads>.
func setup(t *testing.T, threads ...int) *env {
	t.Helper()
	b := brokertest.New(t)
	e := &env{b: b}
	for _, n := range threads {
		startWorker(t, b, "w"+itoa(n), n)
	}
	e.stop = startPool(t, b)
	c := newClient(t, b)
	e.client = c
	waitWorkers(t, c, len(threads))
	return e
}

func itoa(n int) string { return time.Duration(n).String()[:len(time.Duration(n).String())-2] }

func startWorker(t testing.TB, b *brokertest.Broker, id string, threads int) {
	t.Helper()
	startStoppableWorker(t, b, id, threads)
}

// startStoppableWorker starts a worker and returns what stops it
// gracefully. Handlers may be nil for the built-in tasks.
func startStoppableWorker(t testing.TB, b *brokertest.Broker, id string, threads int, handlers ...*worker.Handlers) (stop func()) {
	t.Helper()
	var h *worker.Handlers
	if len(handlers) > 0 {
		h = handlers[0]
	}
	w, err := worker.New(b.Connect(t), worker.Options{
		ID: id, Threads: threads, Tolerance: testTolerance, Handlers: h,
		Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func startPool(t testing.TB, b *brokertest.Broker) (stop func()) {
	t.Helper()
	return startPoolWith(t, b, pool.Options{})
}

// startPoolWith starts a pool with o, its heartbeat, tolerance and logger
// those of the tests.
func startPoolWith(t testing.TB, b *brokertest.Broker, o pool.Options) (stop func()) {
	t.Helper()
	o.Heartbeat, o.Tolerance, o.Logger = 100*time.Millisecond, testTolerance, brokertest.Logger(t)
	p, err := pool.New(b.Connect(t), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("pool not ready")
	}
	var once bool
	stop = func() {
		if !once {
			once = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitWorkers waits until the pool sees n workers alive.
func waitWorkers(t *testing.T, c *pool.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.Status(context.Background())
		alive := 0
		for _, w := range st.Workers {
			if w.Alive {
				alive++
			}
		}
		if err == nil && alive == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the pool does not see %d workers alive", n)
}

func at(d time.Duration) float64 { return job.Millis(time.Now().Add(d)) }

func TestPlacementBestFit(t *testing.T) {
	t.Parallel()
	e := setup(t, 8, 16)
	s := at(time.Second)
	for _, tc := range []struct {
		id      string
		threads int
		want    string
	}{
		{"small", 4, "w8"}, // fits both; w8 leaves fewer threads idle
		{"big", 12, "w16"}, // fits only w16
		{"rest", 4, "w8"},  // w8 has exactly 4 left
		{"more", 4, "w16"}, // w8 is full now
		{"later", 8, "w8"}, // after its window w8 is free again
		{"nowhere", 9, ""}, // w16 has 0 left over [s, s+100]; w8 is too small
	} {
		start := s
		if tc.id == "later" {
			start = s + 200
		}
		d, err := e.client.DispatchJob(context.Background(), job.Job{ID: tc.id, Task: "sleep", Threads: tc.threads, StartTime: start, Duration: 100})
		if tc.want == "" {
			if !errors.Is(err, pool.ErrNoCapacity) {
				t.Errorf("job %s: %v, want ErrNoCapacity", tc.id, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("job %s: %v", tc.id, err)
		}
		if got := d.Jobs[0].Worker; got != tc.want {
			t.Errorf("job %s went to %s, want %s", tc.id, got, tc.want)
		}
	}
}

func TestBatchIsPlacedWholeOrRefusedWhole(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	s := at(time.Second)
	_, err := e.client.DispatchJobs(context.Background(), []job.Job{
		{ID: "h", Task: "sleep", Threads: 2, StartTime: s, Duration: 100},
		{ID: "g", Task: "sleep", Threads: 2, StartTime: s + 10, Duration: 100},
		{ID: "w", Task: "sleep", Threads: 1, StartTime: s + 20, Duration: 100},
	})
	var pe *pool.PlaceError
	if !errors.Is(err, pool.ErrNoCapacity) || !errors.As(err, new(*pool.RemoteError)) {
		t.Fatalf("err = %v, want a remote ErrNoCapacity", err)
	}
	_ = pe
	var re *pool.RemoteError
	errors.As(err, &re)
	if re.Index == nil || *re.Index != 2 || re.ID != "w" {
		t.Errorf("refusal names job %v %q, want index 2 (w)", re.Index, re.ID)
	}
	// Nothing was reserved: the whole worker is free for the same window.
	d, err := e.client.DispatchJob(context.Background(), job.Job{Task: "sleep", Threads: 4, StartTime: s + 5, Duration: 100})
	if err != nil {
		t.Fatalf("refused batch left reservations: %v", err)
	}
	recs, err := d.Wait(ctxTimeout(t, 10*time.Second))
	if err != nil || recs[0].Status != job.StatusDone {
		t.Fatalf("records %+v, %v", recs, err)
	}
}

// waitAllDone waits for a dispatch's records and fails the test for each
// job that did not end done.
func waitAllDone(t *testing.T, d *pool.Dispatch) {
	t.Helper()
	recs, err := d.Wait(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Status != job.StatusDone {
			t.Errorf("job %s: %s (%s)", r.ID, r.Status, r.Reason)
		}
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestPoolRestartRecoversJobsInFlight(t *testing.T) {
	t.Parallel()
	e := setup(t, 8)
	s := at(1500 * time.Millisecond)
	var jobs []job.Job
	for i := range 4 {
		jobs = append(jobs, job.Job{Task: "sleep", Threads: 2, StartTime: s + float64(i)*10, Duration: 200})
	}
	d, err := e.client.DispatchJobs(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	startPool(t, e.b)
	st, err := e.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.JobsInFlight != 4 {
		t.Errorf("restarted pool sees %d jobs in flight, want 4", st.JobsInFlight)
	}
	// The recovered reservations still count: the worker is full then.
	if _, err := e.client.DispatchJob(context.Background(), job.Job{Task: "sleep", Threads: 1, StartTime: s + 50, Duration: 10}); !errors.Is(err, pool.ErrNoCapacity) {
		t.Errorf("dispatch into a full window after restart: %v", err)
	}
	waitAllDone(t, d)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := e.client.Status(context.Background())
		if st.JobsInFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still in flight after their records", st.JobsInFlight)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	d, err := e.client.DispatchJobs(context.Background(), []job.Job{
		{ID: "x1", Batch: "bx", Task: "sleep", Threads: 1, StartTime: at(time.Second), Duration: 100},
		{ID: "x2", Batch: "bx", Task: "sleep", Threads: 1, Duration: 60000},
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	ids, err := e.client.Cancel(context.Background(), pool.CancelRequest{Batch: "bx", Reason: "changed my mind"})
	if err != nil || len(ids) != 2 {
		t.Fatalf("cancel: %v %v", ids, err)
	}
	recs, err := d.Wait(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Status != job.StatusCancelled || r.Reason != "changed my mind" {
			t.Errorf("job %s: %s (%s)", r.ID, r.Status, r.Reason)
		}
	}
	if _, err := e.client.Cancel(context.Background(), pool.CancelRequest{ID: "nope"}); !errors.Is(err, pool.ErrNotFound) {
		t.Errorf("cancel of an unknown job: %v", err)
	}
}

func TestDuplicateIDsAreRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		ended         bool // the first job has its record
		restartedPool bool
	}{
		{name: "in flight"},
		{name: "after its record", ended: true},
		{name: "after a pool restart", ended: true, restartedPool: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, 4)
			j := job.Job{ID: "same", Task: "sleep", Threads: 1, Duration: 10}
			if !tc.ended {
				j.Duration = 500
			}
			d, err := e.client.DispatchJob(context.Background(), j)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ended {
				if _, err := d.Wait(ctxTimeout(t, 10*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.restartedPool {
				e.stop()
				startPool(t, e.b)
			}
			if _, err := e.client.DispatchJob(context.Background(), j); !errors.Is(err, pool.ErrDuplicateID) {
				t.Errorf("second dispatch of id %q: %v, want ErrDuplicateID", j.ID, err)
			}
		})
	}
}

func TestBatchTravelsAsOneMessagePerWorker(t *testing.T) {
	t.Parallel()
	e := setup(t, 8)
	s := at(time.Second)
	var jobs []job.Job
	for i := range 5 {
		jobs = append(jobs, job.Job{Task: "sleep", Threads: 1, StartTime: s + float64(i)*20, Duration: 10})
	}
	d, err := e.client.DispatchJobs(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.b.Res.JobsOf("w8").GetLastMsgForSubject(context.Background(), broker.JobsSubject("w8"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.b.Res.JobsTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	queued, err := job.ParseMany(msg.Data)
	if err != nil || n.Msgs != 1 || len(queued) != 5 {
		t.Errorf("job streams: %d messages, the last with %d jobs (%v), want 1 with 5", n.Msgs, len(queued), err)
	}
	waitAllDone(t, d)
}

func TestCancelOneJobOfAGoneWorkersMessage(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	// "run" notes each job it runs, across both lives of the worker.
	var mu sync.Mutex
	var ran []string
	h := worker.NewHandlers()
	h.Register("run", worker.HandlerFunc(func(_ context.Context, task *worker.Task) (json.RawMessage, error) {
		mu.Lock()
		ran = append(ran, task.Job.ID)
		mu.Unlock()
		return nil, nil
	}))
	stopWorker := startStoppableWorker(t, b, "gone", 4, h)
	startPool(t, b)
	c := newClient(t, b)
	waitWorkers(t, c, 1)
	s := at(3 * time.Second)
	d, err := c.DispatchJobs(context.Background(), []job.Job{
		{ID: "keep", Task: "run", Threads: 1, StartTime: s, Duration: 10},
		{ID: "drop", Task: "run", Threads: 1, StartTime: s + 10, Duration: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopWorker() // graceful: both jobs stay queued, in one message
	waitWorkers(t, c, 0)
	if _, err := c.Cancel(context.Background(), pool.CancelRequest{ID: "drop", Reason: "not wanted"}); err != nil {
		t.Fatal(err)
	}
	startStoppableWorker(t, b, "gone", 4, h)
	recs, err := d.Wait(ctxTimeout(t, 15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]job.Job{}
	for _, r := range recs {
		got[r.ID] = r
	}
	if r := got["keep"]; r.Status != job.StatusDone {
		t.Errorf("keep: %s (%s), want done when its worker is back", r.Status, r.Reason)
	}
	if r := got["drop"]; r.Status != job.StatusCancelled || r.ActualStartTime != 0 {
		t.Errorf("drop: %s (%s) started %v, want cancelled and never started", r.Status, r.Reason, r.ActualStartTime)
	}
	// The returning worker saw the cancel too: it ran "keep" only, and
	// then took the message off its queue.
	time.Sleep(100 * time.Millisecond) // "drop"'s start, had it been kept
	mu.Lock()
	if len(ran) != 1 || ran[0] != "keep" {
		t.Errorf("the worker ran %v, want [keep]", ran)
	}
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := b.Res.JobsTotals(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages left in the job streams", n.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPoolRestartInsideASharedMessage(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	s := at(300 * time.Millisecond)
	d, err := e.client.DispatchJobs(context.Background(), []job.Job{
		{ID: "early", Task: "sleep", Threads: 4, StartTime: s, Duration: 10},
		{ID: "late", Task: "sleep", Threads: 1, StartTime: s + 2000, Duration: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	// "early" ends while the pool is down; its message stays queued for
	// "late".
	time.Sleep(600 * time.Millisecond)
	startPool(t, e.b)
	st, err := e.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.JobsInFlight != 1 {
		t.Errorf("restarted pool sees %d jobs in flight, want 1 (late)", st.JobsInFlight)
	}
	waitAllDone(t, d)
}

// A worker restarted with other tasks (as many as before) serves the new
// ones: the pool follows its registry entry.
func TestWorkerRestartedWithOtherTasks(t *testing.T) {
	t.Parallel()
	e := setup(t)
	handlers := func(task string) *worker.Handlers {
		h := worker.NewHandlers()
		h.Register(task, worker.HandlerFunc(worker.Sleep))
		return h
	}
	stop := startStoppableWorker(t, e.b, "w1", 2, handlers("a"))
	waitWorkers(t, e.client, 1)
	stop()
	startStoppableWorker(t, e.b, "w1", 2, handlers("b"))
	ctx := ctxTimeout(t, 20*time.Second)
	var d *pool.Dispatch
	var err error
	for {
		// Until the pool has the new entry; it may first see the old one.
		d, err = e.client.DispatchJob(ctx, job.Job{Task: "b", Threads: 1, Duration: 10})
		if err == nil || !errors.Is(err, pool.ErrUnknownTask) && !errors.Is(err, pool.ErrNoCapacity) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dispatch of the restarted worker's task: %v", err)
	}
	if recs, err := d.Wait(ctx); err != nil || recs[0].Status != job.StatusDone {
		t.Fatalf("records %+v, %v", recs, err)
	}
}

// A job that breaks its batch (job.Job.BreaksBatch) and does not run has
// the pool cancel the rest of the batch, with no one asking: a batcher
// killed, or restarting, cannot. A job that does not break its batch
// leaves the rest to run.
func TestABrokenBatchIsCancelled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		breaks bool
		want   job.Status // of the rest of the batch
	}{
		{"breaks", true, job.StatusCancelled},
		{"does not break", false, job.StatusDone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := brokertest.New(t)
			h := worker.NewHandlers()
			h.Register("fail", worker.HandlerFunc(func(context.Context, *worker.Task) (json.RawMessage, error) {
				return nil, errors.New("it went wrong")
			}))
			startStoppableWorker(t, b, "w4", 4, h)
			startPool(t, b)
			c := newClient(t, b)
			waitWorkers(t, c, 1)
			d, err := c.DispatchJobs(context.Background(), []job.Job{
				{ID: "first", Task: "fail", Threads: 1, StartTime: at(200 * time.Millisecond), Duration: 10, BreaksBatch: tc.breaks},
				{ID: "rest", Task: "sleep", Threads: 1, StartTime: at(1500 * time.Millisecond), Duration: 10},
			})
			if err != nil {
				t.Fatal(err)
			}
			recs, err := d.Wait(ctxTimeout(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				switch {
				case r.ID == "first" && r.Status != job.StatusFailed:
					t.Errorf("the failing job: %s (%s)", r.Status, r.Reason)
				case r.ID == "rest" && r.Status != tc.want:
					t.Errorf("the rest of the batch: %s (%s), want %s", r.Status, r.Reason, tc.want)
				case r.ID == "rest" && tc.breaks && !strings.Contains(r.Reason, "its batch is broken: fail first did not run (failed"):
					t.Errorf("the rest of the batch cancelled for %q", r.Reason)
				}
			}
		})
	}
}

// newClient is a pool client on b until the test ends.
func newClient(t testing.TB, b *brokertest.Broker) *pool.Client {
	t.Helper()
	c, err := pool.NewClient(b.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
