package world_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/world"
)

// A begin the world holds for its order (a long holdback) when the service
// stops is applied and answered, not dropped; Stop returns once every
// goroutine the service started has ended, and the service stops when
// Serve's context ends.
func TestStopAnswersHeldRequestsAndLeavesNoGoroutine(t *testing.T) {
	b := brokertest.New(t)
	nc := b.Connect(t)
	c := world.NewClient(b.Connect(t))
	// A connection's reply subscription is the connection's, made at its
	// first request: both are made before counting.
	_, _ = c.Clock(ctxT(t))
	_, _ = nc.Request("hvmind.test.nobody", nil, 10*time.Millisecond)
	before := brokertest.SettledGoroutines()

	ctx, cancel := context.WithCancel(context.Background())
	svc, err := world.Serve(ctx, nc, world.Options{Scenario: "newgame", Holdback: time.Hour, FormulasOnly: true, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		// Stamped now, held for an hour.
		_, err := c.Begin(rctx, world.BeginRequest{JobID: "held", Task: "weaken", Target: "n00dles", Host: "home", Threads: 1,
			Start: float64(time.Now().UnixNano()) / 1e6})
		answered <- err
	}()
	time.Sleep(200 * time.Millisecond) // the begin is in the sequencer
	select {
	case err := <-answered:
		t.Fatalf("the begin was answered before its holdback: %v", err)
	default:
	}
	cancel()
	select {
	case <-svc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not stop when its context ended")
	}
	select {
	case err := <-answered:
		if err != nil {
			t.Errorf("the held begin was answered with %v, want its reply", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held begin was never answered")
	}
	svc.Stop() // again: a no-op
	if after := brokertest.SettledGoroutines(); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before Serve, %d after Stop:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}
