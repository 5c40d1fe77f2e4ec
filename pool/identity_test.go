package pool_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
)

// A record stored on one worker's subject for a job placed on another is
// not that job's: the job stays in flight, and its own record, when it
// comes, is stored and ends it.
func TestRecordOnAnotherWorkersSubjectIsNotTheJobs(t *testing.T) {
	t.Parallel()
	e := setup(t, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := job.Now() + 1500
	d, err := e.client.DispatchJob(ctx, job.Job{ID: "mine", Task: "sleep", Threads: 2, StartTime: start, Duration: 50})
	if err != nil {
		t.Fatal(err)
	}
	if d.Jobs[0].Worker != "w2" {
		t.Fatalf("placed on %s, want w2", d.Jobs[0].Worker)
	}
	// w3 forges a record of it on its own subject, with its message id.
	nc := e.b.Connect(t)
	js, _ := jetstream.New(nc)
	m := nats.NewMsg(broker.DoneSubject("w3"))
	m.Data = []byte(`{"id":"mine","task":"sleep","threads":2,"worker":"w3","status":"failed","error":"forged"}`)
	m.Header.Set(jetstream.MsgIDHeader, "mine")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	st, err := e.client.Status(ctx)
	if err != nil || st.JobsInFlight != 1 {
		t.Fatalf("in flight after the forged record: %d (%v), want 1", st.JobsInFlight, err)
	}
	rec := <-d.Records()
	if rec.Status != job.StatusDone || rec.Worker != "w2" {
		t.Errorf("its record: %s on %s (%s), want done on w2", rec.Status, rec.Worker, rec.Error)
	}
}

// A worker whose queue the pool keeps (worker.Options.QueueKeeper, as for a
// worker with an identity of its own, which may not create consumers) runs
// its jobs, and again after a restart, with none run twice.
func TestQueueKeptByThePool(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	startPool(t, b)
	c := newClient(t, b)
	run := func() (stop func()) {
		nc := b.Connect(t)
		w, err := worker.New(nc, worker.Options{ID: "kept", Threads: 2, Tolerance: testTolerance,
			Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t), QueueKeeper: pool.NewQueueKeeper(nc)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = w.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}
	stop := run()
	waitWorkers(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := c.DispatchJob(ctx, job.Job{ID: "a", Task: "sleep", Threads: 1, Duration: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r := <-first.Records(); r.Status != job.StatusDone {
		t.Fatalf("first job: %s %s", r.Status, r.Reason)
	}
	second, err := c.DispatchJob(ctx, job.Job{ID: "b", Task: "sleep", Threads: 1, StartTime: job.Now() + 1500, Duration: 10})
	if err != nil {
		t.Fatal(err)
	}
	stop() // gracefully: "b" stays queued
	stop = run()
	defer stop()
	if r := <-second.Records(); r.Status != job.StatusDone {
		t.Fatalf("second job after the restart: %s %s", r.Status, r.Reason)
	}
}

// A queue reset asked again with the same token (its answer lost) is done
// once: the second answer is the first's previous delivery, not the new
// consumer's.
func TestQueueResetOncePerToken(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	startPool(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc := b.Connect(t)
	js, _ := jetstream.New(nc)
	for range 3 {
		if _, err := js.Publish(ctx, broker.JobsSubject("ghost"), []byte(`{"task":"sleep","threads":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	// A previous process took the first two.
	cons, err := b.Res.JobsOf("ghost").CreateOrUpdateConsumer(ctx, broker.WorkerConsumerConfig("ghost"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	k := pool.NewQueueKeeper(nc)
	first, err := k.ResetQueue(ctx, "ghost", "start-1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := k.ResetQueue(ctx, "ghost", "start-1")
	if err != nil || again != first {
		t.Errorf("the same reset again: %d, %v; want %d, the first's", again, err, first)
	}
	if info, err := b.Res.JobsOf("ghost").Consumer(ctx, broker.WorkerConsumer("ghost")); err != nil || info.CachedInfo().Delivered.Stream >= first {
		t.Errorf("the queue after the reset: %v; want a new one", err)
	}
}
