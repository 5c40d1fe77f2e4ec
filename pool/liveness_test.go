package pool_test

import (
	"context"
	"testing"
	"time"

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
	proc, err := worker.NewProcess(pnc, worker.ProcessOptions{
		Name: "adopted", Tolerance: testTolerance, Linger: time.Minute, Heartbeat: beat, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	procDone := make(chan struct{})
	go func() { _ = proc.Run(pctx); close(procDone) }()
	t.Cleanup(func() { pcancel(); <-procDone })
	nc := b.Connect(t)
	for try := 0; ; try++ { // the process's service may not be up yet
		_, err := nc.Request(broker.ProcessSubject("adopted", "launch"), []byte(`{"id":"adopted-1","host":"home","threads":2}`), 5*time.Second)
		if err == nil {
			break
		}
		if try == 50 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
