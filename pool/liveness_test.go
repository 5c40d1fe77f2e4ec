package pool_test

import (
	"context"
	"encoding/json"
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
	p, err := pool.New(b.Connect(t), pool.Options{Heartbeat: beat, Tolerance: testTolerance, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	<-p.Ready()
	alive := func() bool {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		for _, w := range p.Status(sctx).Workers {
			if w.ID == "adopted-1" {
				return w.Alive
			}
		}
		return false
	}
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
