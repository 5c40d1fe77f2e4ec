package pool_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
