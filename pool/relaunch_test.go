package pool_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
)

// processLauncher runs the workers it is asked for in one worker process
// of this test, "proc", started on the first launch and again after a
// kill; it is a serverpool.ProcessNamer and serverpool.ExitWatcher, as
// the pool's local launcher is.
type processLauncher struct {
	t     *testing.T
	b     *brokertest.Broker
	exits chan int

	mu       sync.Mutex
	proc     *worker.Process
	nc       *nats.Conn
	cancel   context.CancelFunc
	done     chan struct{}
	launches map[string]int
}

func newProcessLauncher(t *testing.T, b *brokertest.Broker) *processLauncher {
	l := &processLauncher{t: t, b: b, exits: make(chan int, 8), launches: map[string]int{}}
	t.Cleanup(l.stop)
	return l
}

func (l *processLauncher) ProcessOf(string) string { return "proc" }
func (l *processLauncher) Exits() <-chan int       { return l.exits }

func (l *processLauncher) Launch(_ context.Context, spec broker.WorkerSpec) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.proc == nil {
		nc := l.b.Connect(l.t)
		proc, err := worker.NewProcess(nc, worker.ProcessOptions{Name: "proc", Tolerance: testTolerance, Heartbeat: 100 * time.Millisecond,
			Linger: time.Minute, Logger: brokertest.Logger(l.t)})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = proc.Run(ctx); close(done) }()
		l.proc, l.nc, l.cancel, l.done = proc, nc, cancel, done
	}
	l.launches[spec.ID]++
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		// Until its Run has begun.
		err := l.proc.Start(spec)
		if err == nil || errors.Is(err, worker.ErrWorkerRunning) || time.Now().After(deadline) {
			return err
		}
	}
}

// kill ends the process as kill -9 would: its connection closes first,
// then it is gone, and the launcher sees it exit.
func (l *processLauncher) kill() {
	l.mu.Lock()
	nc, cancel, done := l.nc, l.cancel, l.done
	l.proc = nil
	l.mu.Unlock()
	nc.Close()
	cancel()
	<-done
	l.exits <- os.Getpid()
}

func (l *processLauncher) stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.proc = nil
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (l *processLauncher) launched(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launches[id]
}

// The workers of a worker process that dies come back under the same ids,
// at once, and run the jobs that were queued for them on time: none is
// settled or recorded missed while they are away.
func TestWorkersOfADeadProcessComeBackUnderTheirIDs(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	l := newProcessLauncher(t, b)
	startPoolWith(t, b, pool.Options{Launcher: l, Workers: 2, Threads: 2, Host: "home"})
	c := newClient(t, b)
	waitWorkers(t, c, 2)
	start := at(1500 * time.Millisecond)
	d, err := c.DispatchJobs(ctxTimeout(t, 10*time.Second), []job.Job{
		{ID: "queued-1", Task: "sleep", Threads: 2, StartTime: start, Duration: 100},
		{ID: "queued-2", Task: "sleep", Threads: 2, StartTime: start, Duration: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	l.kill()
	recs, err := d.Wait(ctxTimeout(t, 15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Status != job.StatusDone || r.ActualStartTime-start > testTolerance.Seconds()*1000 {
			t.Errorf("job %s on %s: %s (%s), started %.1f ms late; want done on time by the worker that came back", r.ID, r.Worker, r.Status, r.Reason, r.ActualStartTime-start)
		}
	}
	for _, id := range []string{"home-1", "home-2"} {
		if n := l.launched(id); n != 2 {
			t.Errorf("%s launched %d times, want twice: once, and again under its id after the kill", id, n)
		}
	}
	st, err := c.Status(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	alive := 0
	for _, w := range st.Workers {
		if w.Alive {
			alive++
		}
		if w.ID != "home-1" && w.ID != "home-2" {
			t.Errorf("worker %s: want only the two that came back", w.ID)
		}
	}
	if alive != 2 {
		t.Errorf("%d workers alive after the kill, want 2", alive)
	}
	t.Logf("both jobs done %s after the kill", time.Since(killed).Round(time.Millisecond))
}
