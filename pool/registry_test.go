package pool_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
)

// The pool watches the registry with one watch that lasts: the watch
// once ended as soon as it had started (its start's deadline ended the
// subscription), and the pool started a new one, replaying every entry,
// dozens of times a second.
func TestRegistryWatchLasts(t *testing.T) {
	t.Parallel()
	e := setup(t, 2, 3)
	nc := e.b.Connect(t)
	var creates atomic.Int64
	sub, err := nc.Subscribe("$JS.API.CONSUMER.CREATE.KV_"+broker.BucketWorkers+".>", func(*nats.Msg) { creates.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	time.Sleep(2 * time.Second) // twenty heartbeats
	if n := creates.Load(); n != 0 {
		t.Errorf("%d watches of the registry started in 2 s of a steady pool, want 0", n)
	}
	waitWorkers(t, e.client, 2)
}
