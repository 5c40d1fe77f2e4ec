package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// An acknowledgement lost on its way to the broker (sent just before the
// connection died) is sent again once the connection is back: the job's
// message leaves the queue, instead of staying there for the consumer's
// AckWait, its job done.
func TestLostAcknowledgementIsSentAgain(t *testing.T) {
	t.Parallel()
	e := proxiedWorker(t)
	e.px.DropAcks.Store(true)
	e.publish(job.Job{ID: "j", Task: "sleep", Threads: 1, Duration: 10})
	if _, err := e.records.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no record: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := e.queued(); n != 1 {
		t.Fatalf("%d messages queued after the acknowledgement was dropped, want 1", n)
	}
	e.px.DropAcks.Store(false)
	e.px.Cut() // the connection dies; the worker connects again
	for deadline := time.Now().Add(10 * time.Second); e.queued() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the message of a job done stays queued after the connection came back")
		}
	}
}

// An acknowledgement is sent again only for the message it was for: a job
// stream made again (a broker on a new store) holds other messages at the
// same sequences, and the broker would take the old acknowledgement for
// the new message there, a job waiting for its start, and lose it.
func TestAcknowledgementIsNotSentAgainForAnotherMessage(t *testing.T) {
	t.Parallel()
	e := proxiedWorker(t)
	b := e.b
	e.publish(job.Job{ID: "first", Task: "sleep", Threads: 1, Duration: 10})
	if _, err := e.records.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no record: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); e.queued() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first job's message was not acknowledged")
		}
	}
	// The job stream is made again: its sequences start over.
	if err := b.Res.JS.DeleteStream(e.ctx, broker.JobStreamName(broker.JobStreamOf("w1"))); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.Setup(e.ctx, b.NC, broker.Options{}); err != nil {
		t.Fatal(err)
	}
	e.publish(job.Job{ID: "later", Task: "sleep", Threads: 1, Duration: 10, StartTime: job.Millis(time.Now().Add(time.Minute))})
	// The worker makes its queue again, and holds the waiting job.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := b.Res.JobsOf("w1").Consumer(e.ctx, broker.WorkerConsumer("w1"))
		if err == nil && c.CachedInfo().NumAckPending == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not take the waiting job from its queue made again")
		}
	}
	e.px.Cut() // the connection dies; the worker connects again, and looks at what it acknowledged
	time.Sleep(2 * time.Second)
	if n := e.queued(); n != 1 {
		t.Fatalf("%d messages queued, want 1: the waiting job's message was taken off by the first job's acknowledgement", n)
	}
}

// proxiedEnv is a worker w1 of one thread connected to its broker through
// a proxy, and a subscription to its records.
type proxiedEnv struct {
	t       *testing.T
	ctx     context.Context
	b       *brokertest.Broker
	px      *brokertest.Proxy
	records *nats.Subscription
}

// proxiedWorker runs a proxied worker until the test ends, registered.
func proxiedWorker(t *testing.T) *proxiedEnv {
	t.Helper()
	b := brokertest.New(t)
	px := brokertest.NewProxy(t, b.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	nc, err := broker.Connect(ctx, px.URL, t.Name(), brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, err := worker.New(nc, worker.Options{ID: "w1", Threads: 1, Tolerance: tolerance,
		Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := broker.GetWorker(ctx, b.Res.Workers, "w1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker did not register")
		}
	}
	records, err := b.NC.SubscribeSync(broker.DoneSubject("w1"))
	if err != nil {
		t.Fatal(err)
	}
	return &proxiedEnv{t: t, ctx: ctx, b: b, px: px, records: records}
}

// publish queues j for w1.
func (e *proxiedEnv) publish(j job.Job) {
	e.t.Helper()
	data, err := job.Encode(&j)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.b.Res.JS.Publish(e.ctx, broker.JobsSubject("w1"), data); err != nil {
		e.t.Fatal(err)
	}
}

// queued is how many messages w1's job stream holds.
func (e *proxiedEnv) queued() uint64 {
	e.t.Helper()
	info, err := e.b.Res.JobsOf("w1").Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}
