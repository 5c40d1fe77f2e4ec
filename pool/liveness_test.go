package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
)

// A worker process the pool did not launch, whose connection dies (kill
// -9 closes it), is taken for gone once its beat is late and its subjects
// have no responders: in under two beats, not after missing five.
func TestPoolFindsAProcessThatLostItsConnection(t *testing.T) {
	t.Parallel()
	const beat = time.Second
	b := brokertest.New(t)
	pnc := b.Connect(t)
	startProcess(t, pnc, "adopted", beat)
	launchInProcess(t, b.Connect(t), "adopted", broker.WorkerSpec{ID: "adopted-1", Host: "home", Threads: 2})
	p := runPool(t, b, pool.Options{Heartbeat: beat, Tolerance: testTolerance})
	alive := func() bool { return isAlive(p, "adopted-1") }
	waitFor(t, 10*time.Second, "the adopted worker alive", alive)
	// Seen for a few beats since the pool started.
	time.Sleep(2500 * time.Millisecond)
	killed := time.Now()
	pnc.Close() // what kill -9 does to its connection
	waitFor(t, 10*time.Second, "the adopted worker gone", func() bool { return !alive() })
	if took := time.Since(killed); took > 4*beat {
		t.Errorf("the worker of a process without a connection was taken for gone after %s (missing %d beats takes 5 s)", took.Round(time.Millisecond), 5)
	} else {
		t.Logf("gone after %s", took.Round(time.Millisecond))
	}
}

// A worker process of many workers writes its entry in parts
// (process.<name>, process.<name>.1…). A part whose beat is late is
// asked about through its process, which answers: its workers stay. (The
// pool asked on the part's own name, which nothing answers, and took
// 2,500 live workers for gone at a time under load.) When the process
// loses its connection, the workers of every part are gone with it.
func TestPoolAsksAboutALatePartThroughItsProcess(t *testing.T) {
	t.Parallel()
	const beat = time.Second
	b := brokertest.New(t)
	pnc := b.Connect(t)
	startProcess(t, pnc, "split", beat)
	launchInProcess(t, b.Connect(t), "split", broker.WorkerSpec{ID: "split-1", Host: "home", Threads: 2})
	p := runPool(t, b, pool.Options{Heartbeat: beat, Tolerance: testTolerance})
	// The second part, as the process writes it, by hand: beat when told.
	part := func() {
		t.Helper()
		putPart(t, b, "split", broker.WorkerEntry{ID: "split-2", Host: "home", Threads: 2, Heartbeat: beat})
	}
	alive := func(id string) bool { return isAlive(p, id) }
	part()
	waitFor(t, 10*time.Second, "both workers alive", func() bool { return alive("split-1") && alive("split-2") })
	beatThenFallSilent(beat, part)
	if !alive("split-2") {
		t.Fatal("the worker of a late part of a live process was taken for gone")
	}
	// Beating again, then the process's connection dies (and the part's
	// beats with it).
	for range 6 {
		part()
		time.Sleep(beat / 2)
	}
	part()
	killed := time.Now()
	pnc.Close()
	waitFor(t, 10*time.Second, "both workers gone", func() bool { return !alive("split-1") && !alive("split-2") })
	if took := time.Since(killed); took > 4*beat {
		t.Errorf("the workers of a process without a connection were all taken for gone after %s (missing 5 beats takes 5 s)", took.Round(time.Millisecond))
	}
}

// A worker process of this machine that the pool did not launch, killed
// within ten seconds of a broker restart, is taken for gone as soon as
// its beat is late and its pid has exited: the registry's stall, which
// excuses the workers' silence and keeps the pool from asking, does not
// hide a process that is no more. (The chaos test found adopted processes
// taken for gone 10 to 15 s after their kill.)
func TestPoolFindsAnExitedProcessAfterABrokerRestart(t *testing.T) {
	t.Parallel()
	const beat = time.Second
	b := brokertest.New(t)
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	pnc, launcher, alive := adoptedWorker(t, b, "mortal", beat)
	time.Sleep(2 * beat)
	// The broker restarts: the registry stalls, and everyone reconnects.
	b.Stop()
	b = brokertest.Start(t, b.Dir, u.Host)
	time.Sleep(3 * beat) // beating again, within the stall's settling
	if !alive() {
		t.Fatal("the worker is not alive after the broker's restart")
	}
	killed := time.Now()
	pnc.Close()
	launcher.exited.Store(true) // what kill -9 does to its pid
	waitFor(t, 15*time.Second, "the worker gone", func() bool { return !alive() })
	if took := time.Since(killed); took > 4*beat {
		t.Errorf("the worker of an exited process was taken for gone after %s, within the registry's stall settling", took.Round(time.Millisecond))
	}
}

// A worker process of this machine that the pool did not launch (one it
// adopted) is seen to exit when its pid does, long before its beat is
// late: a killed adopted process was found only by its late beat, 1.6 to
// 2.6 s after the kill, and the batches sent to it meanwhile were lost.
func TestPoolSeesAnAdoptedProcessExit(t *testing.T) {
	t.Parallel()
	const beat = 10 * time.Second // late after 15 s, gone after 50 s
	pnc, launcher, alive := adoptedWorker(t, brokertest.New(t), "adopted", beat)
	pnc.Close()
	launcher.exited.Store(true) // what kill -9 does to its pid
	waitFor(t, 5*time.Second, "the worker of the exited process gone", func() bool { return !alive() })
}

// A worker process on another machine (its entry says so) has a pid
// that means nothing here: when its part's beat is late, the pool asks
// it, and a process that answers keeps its workers, whatever the pid
// would say here.
func TestPoolLooksUpOnlyThePidsOfThisMachine(t *testing.T) {
	t.Parallel()
	const beat = time.Second
	b := brokertest.New(t)
	startProcess(t, b.Connect(t), "remote", beat)
	launchInProcess(t, b.Connect(t), "remote", broker.WorkerSpec{ID: "remote-1", Host: "home", Threads: 2})
	launcher := &pidLauncher{}
	p := runPool(t, b, pool.Options{Heartbeat: beat, Tolerance: testTolerance, Launcher: launcher})
	// A second part of the process's entry, from another machine, by hand.
	part := func() {
		t.Helper()
		putPart(t, b, "remote", broker.WorkerEntry{ID: "remote-2", Host: "home", Threads: 2, Heartbeat: beat,
			PID: 4242, Machine: "another-machine/pid:[1]"})
	}
	alive := func(id string) bool { return isAlive(p, id) }
	part()
	waitFor(t, 10*time.Second, "both workers alive", func() bool { return alive("remote-1") && alive("remote-2") })
	// No such pid here: only the process's own part, alone, would say it
	// exited.
	launcher.exited.Store(true)
	beatThenFallSilent(beat, part)
	if !alive("remote-2") {
		t.Error("the worker of a live process on another machine was taken for gone by a pid looked up here")
	}
}

// adoptedWorker starts a worker process name (on pnc) with one worker,
// name-1, beating every beat, and a pool that did not launch it, whose
// launcher says whether the process's pid has exited; it returns once the
// pool sees the worker alive, with what says whether it still does.
func adoptedWorker(t *testing.T, b *brokertest.Broker, name string, beat time.Duration) (pnc *nats.Conn, launcher *pidLauncher, alive func() bool) {
	t.Helper()
	pnc = b.Connect(t)
	startProcess(t, pnc, name, beat)
	launchInProcess(t, b.Connect(t), name, broker.WorkerSpec{ID: name + "-1", Host: "home", Threads: 2})
	launcher = &pidLauncher{}
	p := runPool(t, b, pool.Options{Heartbeat: beat, Tolerance: testTolerance, Launcher: launcher})
	alive = func() bool { return isAlive(p, name+"-1") }
	waitFor(t, 10*time.Second, "the worker alive", alive)
	return pnc, launcher, alive
}

// beatThenFallSilent beats with part for a few beats (a process not seen
// since the pool started is not asked about), then stays silent for more
// than late (1.5 beats) and less than gone (5).
func beatThenFallSilent(beat time.Duration, part func()) {
	for range 5 {
		time.Sleep(beat / 2)
		part()
	}
	time.Sleep(3*beat + beat/2)
}

// runPool runs a pool on b until the test ends, and returns it ready.
func runPool(t *testing.T, b *brokertest.Broker, opts pool.Options) *pool.Pool {
	t.Helper()
	opts.Logger = brokertest.Logger(t)
	p, err := pool.New(b.Connect(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	<-p.Ready()
	return p
}

// isAlive reports whether the pool takes worker id for alive.
func isAlive(p *pool.Pool, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, w := range p.Status(ctx).Workers {
		if w.ID == id {
			return w.Alive
		}
	}
	return false
}

// putPart writes, as a beat now, the second part of a worker process's
// registry entry (process.<name>.1), holding the worker e.
func putPart(t *testing.T, b *brokertest.Broker, process string, e broker.WorkerEntry) {
	t.Helper()
	now := time.Now()
	e.Instance, e.Started, e.Beat, e.Tasks = "i", now, now, []string{"sleep"}
	pe := broker.ProcessEntry{Process: process, PID: e.PID, Instance: "i", Beat: now, Heartbeat: e.Heartbeat, Workers: []broker.WorkerEntry{e}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := broker.PutProcessKey(ctx, b.Res.Workers, broker.ProcessKey(process)+".1", pe); err != nil {
		t.Fatal(err)
	}
}

// pidLauncher launches nothing, and says whether the test's processes
// have exited (see the pool's pidChecker).
type pidLauncher struct{ exited atomic.Bool }

func (l *pidLauncher) Launch(context.Context, broker.WorkerSpec) error {
	return errors.New("this test launches nothing")
}

func (l *pidLauncher) Exited(int) bool { return l.exited.Load() }

// startProcess runs a worker process named name on nc, with heartbeats
// every beat, until the test ends.
func startProcess(t *testing.T, nc *nats.Conn, name string, beat time.Duration) *worker.Process {
	t.Helper()
	proc, err := worker.NewProcess(nc, worker.ProcessOptions{
		Name: name, Tolerance: testTolerance, Linger: time.Minute, Heartbeat: beat, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = proc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return proc
}

// launchInProcess starts a worker in the worker process name, asking
// again while the process's service is not up yet.
func launchInProcess(t *testing.T, nc *nats.Conn, name string, spec broker.WorkerSpec) {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ {
		_, err := nc.Request(broker.ProcessSubject(name, "launch"), data, 5*time.Second)
		if err == nil {
			return
		}
		if try == 50 {
			t.Fatalf("launch %s in %s: %v", spec.ID, name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
