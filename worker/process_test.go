package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// A worker process starts the workers it is asked for, each with its own
// queue and registry entry, and runs their jobs on one timer queue.
func TestProcessRunsSeveralWorkers(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	nc := b.Connect(t)
	p, err := worker.NewProcess(nc, worker.ProcessOptions{
		Name: "p1", Tolerance: tolerance, Linger: 300 * time.Millisecond, Spin: 500 * time.Microsecond, Heartbeat: 100 * time.Millisecond,
		Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = p.Run(ctx); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("the process exited before it had a worker")
	case <-time.After(500 * time.Millisecond):
	}
	t.Cleanup(func() { cancel(); <-stopped })

	client := b.Connect(t)
	launch := func(body string) (string, string) {
		t.Helper()
		var msg, err = client.Request(broker.ProcessSubject("p1", "launch"), []byte(body), 5*time.Second)
		for i := 0; err != nil && i < 50; i++ { // the service may not be up yet
			time.Sleep(50 * time.Millisecond)
			msg, err = client.Request(broker.ProcessSubject("p1", "launch"), []byte(body), 5*time.Second)
		}
		if err != nil {
			t.Fatal(err)
		}
		return msg.Header.Get(micro.ErrorCodeHeader), string(msg.Data)
	}
	for _, tc := range []struct {
		name, body, code string
	}{
		{"first", `{"id":"a1","host":"home","threads":2}`, ""},
		{"second", `{"id":"b1","host":"n00dles","threads":1}`, ""},
		{"same id", `{"id":"a1","host":"home","threads":2}`, "409"},
		{"malformed", `{"id":`, "400"},
		{"bad id", `{"id":"a b","threads":1}`, "400"},
		{"no threads", `{"id":"c1","threads":0}`, "400"},
	} {
		if code, body := launch(tc.body); code != tc.code {
			t.Errorf("%s: code %q (%s), want %q", tc.name, code, body, tc.code)
		}
	}
	for _, id := range []string{"a1", "b1"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			e, err := broker.FindWorker(context.Background(), b.Res.Workers, id)
			if err == nil {
				if id == "b1" && e.Host != "n00dles" {
					t.Errorf("worker b1 registered on host %q", e.Host)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("worker %s did not register", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got := strings.Join(p.Workers(), ","); got != "a1,b1" {
		t.Fatalf("workers %q, want a1,b1", got)
	}
	msg, err := client.Request(broker.ProcessSubject("p1", "status"), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st worker.ProcessStatus
	if err := json.Unmarshal(msg.Data, &st); err != nil || strings.Join(st.Workers, ",") != "a1,b1" {
		t.Fatalf("status %s (%v)", msg.Data, err)
	}

	// One job each, due at the same instant: both start on time.
	s := job.Now() + 300
	for _, w := range []string{"a1", "b1"} {
		data, _ := job.Encode(&job.Job{ID: "j-" + w, Task: "sleep", Threads: 1, StartTime: s, EndTime: s + 20})
		if _, err := b.Res.JS.Publish(context.Background(), broker.JobsSubject(w), data); err != nil {
			t.Fatal(err)
		}
	}
	recs := waitRecords(t, b, "j-a1", "j-b1")
	for id, r := range recs {
		if r.Status != job.StatusDone || r.ActualStartTime < r.StartTime || (r.ActualStartTime-r.StartTime)*1000 > float64(tolerance/time.Microsecond) {
			t.Errorf("job %s: %s, started %.3f ms off", id, r.Status, r.ActualStartTime-r.StartTime)
		}
	}

	// The pool stops both workers: the process exits once Linger has
	// passed with none.
	for _, w := range []string{"a1", "b1"} {
		m := nats.NewMsg(broker.JobsSubject(w))
		m.Header.Set(broker.HeaderStop, "test")
		if _, err := b.Res.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatalf("the process still runs %v", p.Workers())
	}
}

// waitRecords reads the completion records until every id has one.
func waitRecords(t *testing.T, b *brokertest.Broker, ids ...string) map[string]job.Job {
	t.Helper()
	got := map[string]job.Job{}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		cons, err := b.Res.JS.OrderedConsumer(context.Background(), broker.StreamDone, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
			if err != nil {
				break
			}
			if j, err := job.Parse(m.Data()); err == nil {
				got[j.ID] = j
			}
		}
		all := true
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				all = false
			}
		}
		if all {
			return got
		}
	}
	t.Fatalf("records of %v not all stored; have %d", ids, len(got))
	return nil
}

// A job whose task did its work before a cancel reached it is recorded
// done, with its result: the record tells what the task did.
func TestCancelAfterTheWorkIsDoneRecordsDone(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	h := worker.NewHandlers()
	started := make(chan struct{}, 1)
	h.Register("lands", worker.HandlerFunc(func(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond) // lands whatever the context says
		return json.RawMessage(`{"landed":true}`), nil
	}))
	w, err := worker.New(b.Connect(t), worker.Options{ID: "c1", Threads: 1, Tolerance: tolerance,
		Heartbeat: 100 * time.Millisecond, Handlers: h, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = w.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	data, _ := job.Encode(&job.Job{ID: "l1", Task: "lands", Threads: 1, Duration: 300})
	if _, err := b.Res.JS.Publish(context.Background(), broker.JobsSubject("c1"), data); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not start")
	}
	if !w.Cancel("l1", "too late") {
		t.Fatal("job not found to cancel")
	}
	r := waitRecords(t, b, "l1")["l1"]
	if r.Status != job.StatusDone || string(r.Result) != `{"landed":true}` || !strings.Contains(r.Reason, "too late") {
		t.Fatalf("record %s (%s) result %s, want done with its result", r.Status, r.Reason, r.Result)
	}
}

// A worker process writes its workers' heartbeats as one registry entry,
// once a heartbeat, however many workers it runs; a worker that stops
// leaves the entry, and the entry goes with the process.
func TestProcessBeatsAsOne(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	nc := b.Connect(t)
	p, err := worker.NewProcess(nc, worker.ProcessOptions{
		Name: "p2", Tolerance: tolerance, Linger: time.Minute, Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = p.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	client := b.Connect(t)
	var ids []string
	for i := range 20 {
		ids = append(ids, "pw"+strconv.Itoa(i))
	}
	launchIn(t, b, client, "p2", ids...)
	var writes atomic.Int64
	sub, err := client.Subscribe("$KV."+broker.BucketWorkers+".>", func(m *nats.Msg) {
		if m.Subject != "$KV."+broker.BucketWorkers+"."+broker.ProcessKey("p2") {
			t.Errorf("a registry write on %s: workers of a process beat in its entry", m.Subject)
		}
		writes.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	_ = sub.Unsubscribe()
	// Ten beats, and maybe a prompt write or two: not 20 workers × 10.
	if n := writes.Load(); n < 5 || n > 15 {
		t.Errorf("%d registry writes in 1 s by 20 workers beating every 100 ms, want about 10", n)
	}
	// Stopping the process: every worker leaves, and the entry with them.
	cancel()
	<-stopped
	for _, id := range []string{ids[0], ids[19]} {
		if _, err := broker.FindWorker(context.Background(), b.Res.Workers, id); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("worker %s after its process stopped: %v, want no entry", id, err)
		}
	}
}

// A worker process checks its workers' queues with one listing of the
// consumers of each job stream that holds them, not one request per worker, and a worker whose queue is gone
// (its consumer deleted, as with a broker that lost its store) gets it
// back and goes on taking jobs while the others keep theirs.
func TestProcessChecksQueuesTogether(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	nc := b.Connect(t)
	p, err := worker.NewProcess(nc, worker.ProcessOptions{
		Name: "p3", Tolerance: tolerance, Linger: time.Minute, Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = p.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	client := b.Connect(t)
	var ids []string
	for i := range 10 {
		ids = append(ids, "qw"+strconv.Itoa(i))
	}
	launchIn(t, b, client, "p3", ids...)
	bg := context.Background()
	kept, err := b.Res.JobsOf(ids[1]).Consumer(bg, broker.WorkerConsumer(ids[1]))
	if err != nil {
		t.Fatal(err)
	}
	var infos, listings atomic.Int64
	sub, err := client.Subscribe("$JS.API.CONSUMER.>", func(m *nats.Msg) {
		switch {
		case strings.HasPrefix(m.Subject, "$JS.API.CONSUMER.INFO."):
			infos.Add(1)
		case strings.HasPrefix(m.Subject, "$JS.API.CONSUMER.NAMES."):
			listings.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	streams := map[int]bool{} // a listing each, every check
	for _, id := range ids {
		streams[broker.JobStreamOf(id)] = true
	}
	k := int64(len(streams))
	time.Sleep(1100 * time.Millisecond) // two checks, every five beats
	if n, l := infos.Load(), listings.Load(); n != 0 || l < k || l > 3*k {
		t.Errorf("in 1.1 s, ten workers beating every 100 ms asked for %d consumers' info and listed the consumers of their %d job streams %d times; want none and twice each",
			n, k, l)
	}

	if err := b.Res.JobsOf(ids[0]).DeleteConsumer(bg, broker.WorkerConsumer(ids[0])); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.Res.JobsOf(ids[0]).Consumer(bg, broker.WorkerConsumer(ids[0])); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not create its queue again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	data, _ := job.Encode(&job.Job{ID: "after", Task: "sleep", Threads: 1, Duration: 5})
	if _, err := b.Res.JS.Publish(bg, broker.JobsSubject(ids[0]), data); err != nil {
		t.Fatal(err)
	}
	if r := waitRecords(t, b, "after")["after"]; r.Status != job.StatusDone {
		t.Errorf("a job after the queue came back: %s (%s), want done", r.Status, r.Reason)
	}
	now, err := b.Res.JobsOf(ids[1]).Consumer(bg, broker.WorkerConsumer(ids[1]))
	if err != nil {
		t.Fatal(err)
	}
	if !now.CachedInfo().Created.Equal(kept.CachedInfo().Created) {
		t.Errorf("worker %s's queue was created again (%s, first %s); only %s's was gone",
			ids[1], now.CachedInfo().Created, kept.CachedInfo().Created, ids[0])
	}
}

// launchIn asks the worker process named process, through its launch
// endpoint, to start one-thread workers of the ids given, and waits until
// each has registered.
func launchIn(t *testing.T, b *brokertest.Broker, nc *nats.Conn, process string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		body := `{"id":"` + id + `","host":"home","threads":1}`
		var err error
		for try := 0; try < 50; try++ { // the service may not be up yet
			if _, err = nc.Request(broker.ProcessSubject(process, "launch"), []byte(body), 5*time.Second); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		waitRegistered(t, b, id)
	}
}
