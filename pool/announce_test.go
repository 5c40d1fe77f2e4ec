package pool_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/pool"
)

// The pool tells hvmind.workers.<worker> when a worker joins and when it
// leaves; the workers' beats are not published there.
func TestPoolAnnouncesWorkers(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	events := make(chan *nats.Msg, 64)
	sub, err := b.Connect(t).ChanSubscribe(broker.SubjectWorkers+">", events)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	startPool(t, b)
	stop := startStoppableWorker(t, b, "ann-1", 3)

	next := func() pool.WorkerEvent {
		t.Helper()
		select {
		case m := <-events:
			var ev pool.WorkerEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("%s: %q: %v", m.Subject, m.Data, err)
			}
			if m.Subject != broker.SubjectWorkers+ev.Worker {
				t.Errorf("event for %s on %s", ev.Worker, m.Subject)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no worker event in 5 s")
			return pool.WorkerEvent{}
		}
	}
	if ev := next(); ev.Event != "joined" || ev.Worker != "ann-1" || ev.Threads != 3 {
		t.Errorf("joined: %+v", ev)
	}
	// Ten beats (100 ms) publish nothing more.
	select {
	case m := <-events:
		t.Errorf("a beat was published: %s %s", m.Subject, m.Data)
	case <-time.After(time.Second):
	}
	stop()
	if ev := next(); ev.Event != "left" || ev.Worker != "ann-1" {
		t.Errorf("left: %+v", ev)
	}
}

// A worker that left is dropped from the pool's table ForgetGone after
// its queue was tidied: hvmind_workers{state="gone"} comes back to 0.
func TestPoolForgetsGoneWorkers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		forget time.Duration
		gone   float64 // at the end
	}{
		{"forgotten", 300 * time.Millisecond, 0},
		{"never", -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := brokertest.New(t)
			p, err := pool.New(b.Connect(t), pool.Options{Heartbeat: 100 * time.Millisecond, Tolerance: testTolerance,
				Logger: brokertest.Logger(t), ForgetGone: tc.forget})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = p.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			reg := prometheus.NewRegistry()
			reg.MustRegister(p.Metrics())
			workers := func(state string) float64 {
				mfs, err := reg.Gather()
				if err != nil {
					t.Fatal(err)
				}
				for _, mf := range mfs {
					if mf.GetName() != "hvmind_workers" {
						continue
					}
					for _, m := range mf.GetMetric() {
						for _, l := range m.GetLabel() {
							if l.GetName() == "state" && l.GetValue() == state {
								return m.GetGauge().GetValue()
							}
						}
					}
				}
				return 0
			}
			stay := startStoppableWorker(t, b, "stay-1", 2)
			defer stay()
			leave := startStoppableWorker(t, b, "leave-1", 2)
			waitFor(t, 5*time.Second, "two workers alive", func() bool { return workers("alive") == 2 })
			leave()
			waitFor(t, 5*time.Second, "a gone worker", func() bool { return workers("gone") == 1 })
			// Tidied within five beats, forgotten 300 ms after.
			time.Sleep(2 * time.Second)
			if g, a := workers("gone"), workers("alive"); g != tc.gone || a != 1 {
				t.Errorf("gone %v alive %v, want gone %v alive 1", g, a, tc.gone)
			}
		})
	}
}

// waitFor polls cond until it holds, for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
