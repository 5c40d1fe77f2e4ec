package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// outsideOp is a task whose work runs outside the worker, like an
// operation in another service: a process that dies does not stop it, and
// the worker's next process takes it up. Jobs named "never-*" never
// started; for those named "lost-*" the service does not answer.
type outsideOp struct{}

func (outsideOp) Run(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
	if err := t.SleepUntil(ctx, t.ScheduledEnd); err != nil {
		return nil, err
	}
	return json.RawMessage(`{"by":"run"}`), nil
}

func (outsideOp) Resume(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
	if !t.Resumed {
		return nil, fmt.Errorf("Resume of a task not marked Resumed")
	}
	if strings.HasPrefix(t.Job.ID, "never-") {
		return nil, fmt.Errorf("%w: it never started", worker.ErrNotResumed)
	}
	if strings.HasPrefix(t.Job.ID, "lost-") {
		return nil, fmt.Errorf("the other service does not answer")
	}
	t.Start = job.Time(t.Job.StartTime) // as the other service says
	if err := t.SleepUntil(ctx, t.ScheduledEnd); err != nil {
		return nil, err
	}
	return json.RawMessage(`{"by":"resume"}`), nil
}

// TestResumerTakesUpWhatThePreviousProcessStarted: jobs the worker's
// previous process received and whose start passed are given to their
// task's Resumer; it takes up those that started and ends on schedule,
// and those it does not take up, or whose task has none, end as before:
// missed, never run twice.
func TestResumerTakesUpWhatThePreviousProcessStarted(t *testing.T) {
	t.Parallel()
	h := worker.NewHandlers()
	h.Register("outside", outsideOp{})
	e := setupWith(t, 4, h)
	e.stop()
	if err := <-e.done; err != nil {
		t.Fatal(err)
	}
	s := job.Now() + 200
	e.publishJobs(t,
		job.Job{ID: "taken-up", Task: "outside", Threads: 2, StartTime: s, Duration: 1500},
		job.Job{ID: "never-started", Task: "outside", Threads: 1, StartTime: s, Duration: 1500},
		job.Job{ID: "lost-track", Task: "outside", Threads: 1, StartTime: s, Duration: 1500},
		job.Job{ID: "plain", Task: "sleep", Threads: 1, StartTime: s, Duration: 1500},
	)
	// The previous process: it received the message and died.
	ctx := context.Background()
	cons, err := e.b.Res.JobsOf(e.id).CreateOrUpdateConsumer(ctx, broker.WorkerConsumerConfig(e.id))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	time.Sleep(time.Until(job.Time(s)) + 300*time.Millisecond)
	e.start(t, 4)
	recs := e.wait(t, "taken-up", "never-started", "lost-track", "plain")
	r := recs["taken-up"]
	if r.Status != job.StatusDone || string(r.Result) != `{"by":"resume"}` {
		t.Errorf("taken-up: %s %s (%s), want done by its Resumer", r.Status, r.Result, r.Reason)
	}
	if r.ActualStartTime != s {
		t.Errorf("taken-up: actual start %.3f, want its start %.3f, as Resume learned it", r.ActualStartTime, s)
	}
	if end := r.ActualEndTime - r.ScheduledEnd(s); end < -1 || end > tolerance.Seconds()*1000 {
		t.Errorf("taken-up: ended %.3f ms from its scheduled end", end)
	}
	// Its start unknown: not the time it was taken up.
	if r := recs["lost-track"]; r.Status != job.StatusFailed || r.ActualStartTime != 0 {
		t.Errorf("lost-track: %s (%s) started %.3f (%.0f ms after its start), want failed with no start",
			r.Status, r.Reason, r.ActualStartTime, r.ActualStartTime-s)
	}
	for _, id := range []string{"never-started", "plain"} {
		if r := recs[id]; r.Status != job.StatusMissed || r.ActualStartTime != 0 {
			t.Errorf("%s: %s (%s) started %.0f, want missed and never started", id, r.Status, r.Reason, r.ActualStartTime)
		}
	}
}
