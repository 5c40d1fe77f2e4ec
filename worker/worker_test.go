package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

const tolerance = 100 * time.Millisecond

type testEnv struct {
	b       *brokertest.Broker
	id      string
	stop    context.CancelFunc
	done    chan error
	mu      sync.Mutex
	records map[string]job.Job
	// raw holds each record as it was stored.
	raw     map[string][]byte
	arrived chan struct{}
	// handlers, when set, serve the tasks instead of the built-in ones.
	handlers *worker.Handlers
}

// setup runs a worker of the given threads on a fresh broker and follows
// its completion records.
func setup(t *testing.T, threads int) *testEnv {
	t.Helper()
	return setupWith(t, threads, nil)
}

// setupWith is setup with the tasks of h (nil: the built-in ones).
func setupWith(t *testing.T, threads int, h *worker.Handlers) *testEnv {
	t.Helper()
	b := brokertest.New(t)
	e := &testEnv{b: b, id: "w1", records: map[string]job.Job{}, raw: map[string][]byte{}, arrived: make(chan struct{}, 1024), handlers: h}
	e.start(t, threads)
	cons, err := b.Res.JS.OrderedConsumer(context.Background(), broker.StreamDone, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if !json.Valid(m.Data()) {
			t.Errorf("record %q is not valid JSON", m.Data())
		}
		j, err := job.Parse(m.Data())
		if err != nil {
			t.Errorf("unreadable record %s: %v", m.Data(), err)
			return
		}
		e.mu.Lock()
		if _, dup := e.records[j.ID]; dup {
			t.Errorf("two records for job %s", j.ID)
		}
		e.records[j.ID] = j
		e.raw[j.ID] = append([]byte(nil), m.Data()...)
		e.mu.Unlock()
		e.arrived <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return e
}

func (e *testEnv) start(t *testing.T, threads int) {
	t.Helper()
	w, err := worker.New(e.b.Connect(t), worker.Options{
		// Precision is measured by the benchmark; tests on a loaded machine
		// get a wide tolerance.
		ID: e.id, Threads: threads, Tolerance: tolerance, Handlers: e.handlers,
		Spin: 500 * time.Microsecond, Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	e.stop, e.done = cancel, done
	stopped := make(chan struct{})
	go func() { err := w.Run(ctx); done <- err; close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	// Ready once registered.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := broker.GetWorker(context.Background(), e.b.Res.Workers, e.id); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("worker did not register")
}

func (e *testEnv) publish(t *testing.T, raw string) {
	t.Helper()
	if _, err := e.b.Res.JS.Publish(context.Background(), broker.JobsSubject(e.id), []byte(raw)); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) publishJob(t *testing.T, j job.Job) {
	t.Helper()
	data, err := job.Encode(&j)
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, string(data))
}

// wait returns the record of each id, failing the test after a timeout.
func (e *testEnv) wait(t *testing.T, ids ...string) map[string]job.Job {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		e.mu.Lock()
		ok := true
		for _, id := range ids {
			if _, got := e.records[id]; !got {
				ok = false
			}
		}
		out := make(map[string]job.Job, len(e.records))
		for k, v := range e.records {
			out[k] = v
		}
		e.mu.Unlock()
		if ok {
			return out
		}
		select {
		case <-e.arrived:
		case <-deadline:
			t.Fatalf("records of %v not all received; have %d", ids, len(out))
		}
	}
}

func TestScheduledJobsStartAndEndOnTime(t *testing.T) {
	t.Parallel()
	e := setup(t, 8)
	t0 := job.Now() + 300
	var ids []string
	for i := range 20 {
		s := t0 + float64(i)*7
		j := job.Job{ID: "s" + string(rune('a'+i)), Task: "sleep", Threads: 1, Duration: 20, StartTime: s, EndTime: s + 20}
		j.Set("note", json.RawMessage(`{"mine": true}`))
		e.publishJob(t, j)
		ids = append(ids, j.ID)
	}
	recs := e.wait(t, ids...)
	for _, id := range ids {
		r := recs[id]
		if r.Status != job.StatusDone {
			t.Fatalf("job %s: status %q (%s), want done", id, r.Status, r.Reason)
		}
		if d := (r.ActualStartTime - r.StartTime) * 1000; d < 0 || d > float64(tolerance/time.Microsecond) {
			t.Errorf("job %s started %.1f µs off its time", id, d)
		}
		if d := (r.ActualEndTime - r.EndTime) * 1000; d < 0 || d > float64(tolerance/time.Microsecond) {
			t.Errorf("job %s ended %.1f µs off its time", id, d)
		}
		if v, _ := r.Get("note"); string(v) != `{"mine": true}` {
			t.Errorf("job %s: extra field became %s", id, v)
		}
		if r.Worker != "w1" {
			t.Errorf("job %s: worker %q", id, r.Worker)
		}
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	now := job.Now()
	e.publishJob(t, job.Job{ID: "late", Task: "sleep", Threads: 1, StartTime: now - 1000, Duration: 1})
	e.publishJob(t, job.Job{ID: "unknown", Task: "mine-bitcoin", Threads: 1, Duration: 1})
	e.publishJob(t, job.Job{ID: "too-big", Task: "sleep", Threads: 5, Duration: 1})
	e.publish(t, `{"task": "sleep", "threads": `)
	// Capacity: a and b overlap and together need 6 of 4 threads; c
	// starts exactly when a ends.
	s := now + 300
	e.publishJob(t, job.Job{ID: "a", Task: "sleep", Threads: 3, StartTime: s, EndTime: s + 500})
	e.publishJob(t, job.Job{ID: "b", Task: "sleep", Threads: 3, StartTime: s + 200, EndTime: s + 600})
	e.publishJob(t, job.Job{ID: "c", Task: "sleep", Threads: 3, StartTime: s + 500, EndTime: s + 600})
	recs := e.wait(t, "late", "unknown", "too-big", "a", "b", "c")
	for _, tc := range []struct {
		id     string
		status job.Status
		reason string
	}{
		{"late", job.StatusMissed, "after its start time"},
		{"unknown", job.StatusFailed, "unknown task"},
		{"too-big", job.StatusFailed, "needs 5 threads"},
		{"a", job.StatusDone, ""},
		{"b", job.StatusMissed, "threads were not free"},
		{"c", job.StatusDone, ""},
	} {
		r := recs[tc.id]
		if r.Status != tc.status || !strings.Contains(r.Reason, tc.reason) {
			t.Errorf("job %s: %s (%s), want %s (%s)", tc.id, r.Status, r.Reason, tc.status, tc.reason)
		}
	}
	// The malformed message gets a failed record too.
	found := false
	for _, r := range e.wait(t) {
		if strings.Contains(r.Reason, "malformed job") && r.Status == job.StatusFailed {
			found = true
		}
	}
	if !found {
		deadline := time.Now().Add(5 * time.Second)
		for !found && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			for _, r := range e.wait(t) {
				found = found || strings.Contains(r.Reason, "malformed job")
			}
		}
		if !found {
			t.Error("no failed record for a malformed message")
		}
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	s := job.Now() + 500
	e.publishJob(t, job.Job{ID: "queued", Task: "sleep", Threads: 1, StartTime: s, Duration: 10})
	e.publishJob(t, job.Job{ID: "running", Task: "sleep", Threads: 1, Duration: 60000})
	time.Sleep(100 * time.Millisecond)
	for _, id := range []string{"queued", "running"} {
		m := nats.NewMsg(broker.JobsSubject(e.id))
		m.Header.Set(broker.HeaderCancel, id)
		m.Data = []byte("no longer needed")
		if _, err := e.b.Res.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	recs := e.wait(t, "queued", "running")
	for _, id := range []string{"queued", "running"} {
		if r := recs[id]; r.Status != job.StatusCancelled || r.Reason != "no longer needed" {
			t.Errorf("job %s: %s (%s), want cancelled", id, r.Status, r.Reason)
		}
	}
	if recs["running"].ActualStartTime == 0 {
		t.Error("the running job's record lost its start time")
	}
}

func TestRestartRunsQueuedJobs(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	s := job.Now() + 1500
	e.publishJob(t, job.Job{ID: "later", Task: "sleep", Threads: 2, StartTime: s, Duration: 10})
	time.Sleep(100 * time.Millisecond)
	e.stop() // graceful: the queued job stays in the durable queue
	if err := <-e.done; err != nil {
		t.Fatal(err)
	}
	e.start(t, 4)
	r := e.wait(t, "later")["later"]
	if r.Status != job.StatusDone {
		t.Fatalf("queued job after restart: %s (%s)", r.Status, r.Reason)
	}
	if d := (r.ActualStartTime - r.StartTime) * 1000; d < 0 || d > float64(tolerance/time.Microsecond) {
		t.Errorf("started %.1f µs off its time", d)
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	for _, o := range []worker.Options{{ID: "", Threads: 1}, {ID: "a b", Threads: 1}, {ID: "a.b", Threads: 1}, {ID: "ok", Threads: 0}} {
		if _, err := worker.New(nil, o); err == nil {
			t.Errorf("New(%+v) accepted bad options", o)
		}
	}
}

// queued is how many messages the job streams hold.
func (e *testEnv) queued(t *testing.T) uint64 {
	t.Helper()
	n, err := e.b.Res.JobsTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n.Msgs
}

func (e *testEnv) publishJobs(t *testing.T, jobs ...job.Job) {
	t.Helper()
	data, err := job.EncodeMany(jobs)
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, string(data))
}

func TestJobsSharingAMessage(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	s := job.Now() + 300
	e.publishJobs(t,
		job.Job{ID: "p1", Task: "sleep", Threads: 2, StartTime: s, Duration: 50},
		job.Job{ID: "p2", Task: "sleep", Threads: 2, StartTime: s + 100, Duration: 50},
		job.Job{ID: "p3", Task: "sleep", Threads: 1, Duration: 10},
		job.Job{ID: "p4", Task: "mine-bitcoin", Threads: 1, Duration: 10},
	)
	recs := e.wait(t, "p1")
	// p1 is recorded, p2 has not started: the message stays queued.
	if n := e.queued(t); n != 1 {
		t.Errorf("jobs stream holds %d messages while p2 waits, want 1", n)
	}
	recs = e.wait(t, "p1", "p2", "p3", "p4")
	for id, want := range map[string]job.Status{"p1": job.StatusDone, "p2": job.StatusDone, "p3": job.StatusDone, "p4": job.StatusFailed} {
		if r := recs[id]; r.Status != want {
			t.Errorf("job %s: %s (%s), want %s", id, r.Status, r.Reason, want)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.queued(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the message stays queued after all its jobs have records")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRestartInsideASharedMessage(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	// Every record published, stored or not: the records stream drops a
	// second one with the same id only within its 10-minute window.
	var mu sync.Mutex
	published := map[string]int{}
	sub, err := e.b.Connect(t).Subscribe(broker.DoneSubject(e.id), func(m *nats.Msg) {
		mu.Lock()
		published[broker.RecordJobID(m.Header.Get(jetstream.MsgIDHeader))]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	s := job.Now() + 200
	e.publishJobs(t,
		job.Job{ID: "first", Task: "sleep", Threads: 1, StartTime: s, Duration: 10},
		job.Job{ID: "second", Task: "sleep", Threads: 1, StartTime: s + 1500, Duration: 10},
	)
	e.wait(t, "first")
	e.stop() // graceful: "second" stays queued in the shared message
	if err := <-e.done; err != nil {
		t.Fatal(err)
	}
	e.start(t, 4)
	recs := e.wait(t, "first", "second")
	// "first" keeps its one record: the restarted worker neither runs it
	// again nor records it missed.
	for _, id := range []string{"first", "second"} {
		if r := recs[id]; r.Status != job.StatusDone {
			t.Errorf("job %s: %s (%s)", id, r.Status, r.Reason)
		}
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"first", "second"} {
		if published[id] != 1 {
			t.Errorf("job %s: %d records published, want 1", id, published[id])
		}
	}
}

// A task whose result is not JSON fails, with a record that is: the record
// carries a result as it is.
func TestResultThatIsNotJSONFails(t *testing.T) {
	t.Parallel()
	h := worker.NewHandlers()
	for name, result := range map[string]string{"garbled": "{not json", "valid": `{"ok":[1,2]}`} {
		h.Register(name, worker.HandlerFunc(func(context.Context, *worker.Task) (json.RawMessage, error) {
			return json.RawMessage(result), nil
		}))
	}
	e := setupWith(t, 2, h)
	e.publishJob(t, job.Job{ID: "garbled", Task: "garbled", Threads: 1, Duration: 1})
	e.publishJob(t, job.Job{ID: "valid", Task: "valid", Threads: 1, Duration: 1})
	recs := e.wait(t, "garbled", "valid")
	if r := recs["garbled"]; r.Status != job.StatusFailed || len(r.Result) != 0 || !strings.Contains(r.Error, "not JSON") {
		t.Errorf("garbled result: %s (%s) result %s error %q, want failed without the result", r.Status, r.Reason, r.Result, r.Error)
	}
	if r := recs["valid"]; r.Status != job.StatusDone || string(r.Result) != `{"ok":[1,2]}` {
		t.Errorf("valid result: %s (%s) result %s, want done with it", r.Status, r.Reason, r.Result)
	}
}

// A job's threads are free at its scheduled end, the end of its
// reservation, even while its handler still has bookkeeping to do: a job
// placed on them from then on starts on time. A task whose work runs past
// its scheduled end, and says so, keeps them until then.
func TestThreadsAreFreeAtTheScheduledEnd(t *testing.T) {
	t.Parallel()
	h := worker.NewHandlers()
	h.Register("sleep", worker.HandlerFunc(worker.Sleep))
	h.Register("slow-return", worker.HandlerFunc(func(ctx context.Context, task *worker.Task) (json.RawMessage, error) {
		if err := task.SleepUntil(ctx, task.ScheduledEnd); err != nil {
			return nil, err
		}
		time.Sleep(2 * tolerance) // after its work: telling someone, say
		return nil, nil
	}))
	h.Register("overrun", worker.HandlerFunc(func(ctx context.Context, task *worker.Task) (json.RawMessage, error) {
		until := task.ScheduledEnd.Add(2 * tolerance)
		task.HoldThreadsUntil(until)
		return nil, task.SleepUntil(ctx, until)
	}))
	for _, tc := range []struct {
		task     string
		nextRuns bool
	}{
		{"slow-return", true},
		{"overrun", false},
	} {
		t.Run(tc.task, func(t *testing.T) {
			t.Parallel()
			e := setupWith(t, 4, h)
			s := job.Now() + 300
			e.publishJobs(t,
				job.Job{ID: "first", Task: tc.task, Threads: 4, StartTime: s, EndTime: s + 100},
				job.Job{ID: "next", Task: "sleep", Threads: 4, StartTime: s + 100, Duration: 10},
			)
			recs := e.wait(t, "first", "next")
			first, next := recs["first"], recs["next"]
			switch {
			case tc.nextRuns && next.Status != job.StatusDone:
				t.Errorf("the job due at the first's scheduled end: %s (%s), want done", next.Status, next.Reason)
			case !tc.nextRuns && next.ActualStartTime != 0 && next.ActualStartTime < first.ActualEndTime:
				t.Errorf("the next job started %.1f ms before the first's work ended: 8 of 4 threads ran", first.ActualEndTime-next.ActualStartTime)
			}
		})
	}
}

// A message that is not a job gets a failed record that quotes it as a
// JSON string: valid JSON whatever its bytes, the bytes that are not UTF-8
// each shown as U+FFFD.
func TestMalformedMessageRecordIsValidJSON(t *testing.T) {
	t.Parallel()
	e := setup(t, 1)
	cases := []struct {
		name string
		data string
	}{
		{"control and invalid UTF-8", "\x00\xff{"},
		{"truncated job", `{"task": "sleep", "threads": `},
		{"quotes and backslashes", `"\" \x`},
		{"HTML and line separators", "<b>&amp;</b>\u2028\t\n"},
		{"invalid UTF-8 inside a rune", "caf\xc3(\xe2\x82"},
	}
	ids := make([]string, len(cases))
	for i, tc := range cases {
		ack, err := e.b.Res.JS.Publish(context.Background(), broker.JobsSubject(e.id), []byte(tc.data))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = fmt.Sprintf("%s-seq%d", e.id, ack.Sequence)
	}
	recs := e.wait(t, ids...)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := recs[ids[i]]
			if r.Status != job.StatusFailed || !strings.Contains(r.Reason, "malformed job") {
				t.Errorf("record %s (%s), want failed as a malformed job", r.Status, r.Reason)
			}
			e.mu.Lock()
			data := e.raw[ids[i]]
			e.mu.Unlock()
			if !json.Valid(data) {
				t.Fatalf("record %q is not valid JSON", data)
			}
			var rec struct {
				Raw *string `json:"raw"`
			}
			if err := json.Unmarshal(data, &rec); err != nil || rec.Raw == nil {
				t.Fatalf("record %s: no raw string (%v)", data, err)
			}
			// Ranging over a string yields U+FFFD for each byte that is
			// not UTF-8, as encoding/json writes it.
			if want := string([]rune(tc.data)); *rec.Raw != want {
				t.Errorf("raw %q, want %q", *rec.Raw, want)
			}
		})
	}
}

// A worker whose queue is gone from the broker (its consumer deleted, as
// with a broker that lost its store) creates it again and goes on taking
// jobs, rather than beat for a queue that no job can reach.
func TestWorkerRecreatesItsQueue(t *testing.T) {
	t.Parallel()
	e := setup(t, 2)
	ctx := context.Background()
	if err := e.b.Res.JobsOf(e.id).DeleteConsumer(ctx, broker.WorkerConsumer(e.id)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := e.b.Res.JobsOf(e.id).Consumer(ctx, broker.WorkerConsumer(e.id)); err == nil {
			break
		}
		select {
		case err := <-e.done:
			t.Fatalf("the worker stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not create its queue again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.publishJob(t, job.Job{ID: "after", Task: "sleep", Threads: 1, Duration: 5})
	if r := e.wait(t, "after")["after"]; r.Status != job.StatusDone {
		t.Errorf("a job after the queue came back: %s (%s), want done", r.Status, r.Reason)
	}
}

// A second process of a worker id takes it over: the first sees another
// instance in the registry where its own beat should be, and stops with
// ErrTakenOver; the second beats on.
func TestWorkerTakenOver(t *testing.T) {
	t.Parallel()
	e := setup(t, 2)
	first := e.done
	e.start(t, 2) // the same id, a new instance
	select {
	case err := <-first:
		if !errors.Is(err, worker.ErrTakenOver) {
			t.Fatalf("the first worker stopped with %v, want ErrTakenOver", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first worker still runs 5 s after another took its id")
	}
	time.Sleep(300 * time.Millisecond) // three beats of the second
	if _, err := broker.GetWorker(context.Background(), e.b.Res.Workers, e.id); err != nil {
		t.Fatalf("the second worker's entry: %v", err)
	}
	select {
	case err := <-e.done:
		t.Fatalf("the second worker stopped too: %v", err)
	default:
	}
}

// A handler that holds its threads (a ThreadHolder) keeps them past its
// job's reservation: until it says how long, or, while it says nothing,
// until the job's actual start plus its duration (a job that started late
// lands late), but not for as long as it stays silent (its answer may be
// slow to come). A plain handler's threads are free at the reservation's
// end. Here "first" starts 30 ms late, waiting for the threads of "before",
// whose handler says it runs 30 ms past its end; "second" is placed on
// first's threads at first's scheduled end.
func TestThreadHolderKeepsItsThreads(t *testing.T) {
	t.Parallel()
	const late = 30.0 // ms: how late "first" starts
	for _, tc := range []struct {
		name  string
		holds bool
		// says is how far past its actual start plus duration the
		// first handler says it runs (0: it says nothing).
		says float64
		// wantAfter is how long after first's actual start second
		// starts, in ms, within a few.
		wantAfter float64
	}{
		{name: "holding handler, silent", holds: true, wantAfter: 100},
		{name: "holding handler that says it runs longer", holds: true, says: 40, wantAfter: 140},
		{name: "plain handler", holds: false, wantAfter: 100 - late},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var returned atomic.Int64 // unix µs when the first handler returned
			op := func(ctx context.Context, tk *worker.Task) (json.RawMessage, error) {
				if tk.Job.ID == "first" {
					if tc.says > 0 {
						end := tk.Start.Add(time.Duration((tk.Job.Duration + tc.says) * float64(time.Millisecond)))
						tk.HoldThreadsUntil(end)
						if err := tk.SleepUntil(ctx, end); err != nil {
							return nil, err
						}
						tk.Release()
					} else {
						time.Sleep(200 * time.Millisecond) // 70 ms past its landing, saying nothing
					}
					returned.Store(time.Now().UnixMicro())
				}
				return nil, nil
			}
			h := worker.NewHandlers()
			h.Register("before", worker.HoldingHandlerFunc(func(ctx context.Context, tk *worker.Task) (json.RawMessage, error) {
				end := tk.ScheduledEnd.Add(time.Duration(late * float64(time.Millisecond)))
				tk.HoldThreadsUntil(end)
				return nil, tk.SleepUntil(ctx, end)
			}))
			if tc.holds {
				h.Register("op", worker.HoldingHandlerFunc(op))
			} else {
				h.Register("op", worker.HandlerFunc(op))
			}
			e := setupWith(t, 2, h)
			s := job.Now() + 300
			e.publishJobs(t,
				job.Job{ID: "before", Task: "before", Threads: 2, StartTime: s, Duration: 100},
				job.Job{ID: "first", Task: "op", Threads: 2, StartTime: s + 100, Duration: 100},
				job.Job{ID: "second", Task: "op", Threads: 2, StartTime: s + 200, Duration: 100})
			recs := e.wait(t, "before", "first", "second")
			first, second := recs["first"], recs["second"]
			for _, r := range []job.Job{first, second} {
				if r.Status != job.StatusDone {
					t.Fatalf("%s: %s (%s)", r.ID, r.Status, r.Reason)
				}
			}
			if got := first.ActualStartTime - first.StartTime; got < late-1 || got > late+10 {
				t.Fatalf("first started %.3f ms late, want about %.0f: the setup did not hold", got, late)
			}
			after := second.ActualStartTime - first.ActualStartTime
			if after < tc.wantAfter-0.5 || after > tc.wantAfter+10 {
				t.Errorf("second started %.3f ms after first, want %.0f", after, tc.wantAfter)
			}
			if tc.holds && tc.says == 0 && second.ActualStartTime*1000 >= float64(returned.Load()) {
				t.Errorf("second waited for the silent first handler to return")
			}
		})
	}
}

// A job with a tolerance of its own is missed once it is that late, where
// the worker would start it later: here both wait for threads a job holds
// 30 ms past its end; the strict one is missed after 10 ms, the other
// starts when the threads are free.
func TestJobToleranceBoundsItsStart(t *testing.T) {
	t.Parallel()
	h := worker.NewHandlers()
	h.Register("before", worker.HoldingHandlerFunc(func(ctx context.Context, tk *worker.Task) (json.RawMessage, error) {
		end := tk.ScheduledEnd.Add(30 * time.Millisecond)
		tk.HoldThreadsUntil(end)
		return nil, tk.SleepUntil(ctx, end)
	}))
	e := setupWith(t, 2, h)
	s := job.Now() + 300
	e.publishJobs(t,
		job.Job{ID: "before", Task: "before", Threads: 2, StartTime: s, Duration: 100},
		job.Job{ID: "strict", Task: "sleep", Threads: 2, StartTime: s + 100, Duration: 10, Tolerance: 10},
		job.Job{ID: "lax", Task: "sleep", Threads: 2, StartTime: s + 100, Duration: 10})
	recs := e.wait(t, "before", "strict", "lax")
	if r := recs["strict"]; r.Status != job.StatusMissed || !strings.Contains(r.Reason, "within 10ms") {
		t.Errorf("strict: %s (%s), want missed after its own 10 ms", r.Status, r.Reason)
	}
	if r := recs["lax"]; r.Status != job.StatusDone || r.ActualStartTime-r.StartTime < 29 {
		t.Errorf("lax: %s, started %.3f ms late; want done once the threads were free, 30 ms late", r.Status, r.ActualStartTime-r.StartTime)
	}
}

// A message on the worker's queue that is not a job placed on it (one
// placed on another worker, or a record, which a pull request's reply
// subject can deliver to any queue) is dropped: not run, not recorded.
func TestNotAJobPlacedHereIsDropped(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	e.publishJobs(t,
		job.Job{ID: "theirs", Task: "sleep", Threads: 1, Duration: 10, Worker: "w2"},
		job.Job{ID: "a-record", Task: "sleep", Threads: 1, Duration: 10, Worker: "w1", Status: job.StatusDone},
		job.Job{ID: "mine", Task: "sleep", Threads: 1, Duration: 10, Worker: "w1"},
	)
	recs := e.wait(t, "mine")
	time.Sleep(200 * time.Millisecond)
	recs = e.wait(t, "mine")
	for _, id := range []string{"theirs", "a-record"} {
		if r, ok := recs[id]; ok {
			t.Errorf("%s was run: %s", id, r.Status)
		}
	}
}
