package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// A handler can be unit-tested on a Task made by hand, with no worker:
// SleepUntil then waits on the runtime's timer.
func TestHandlerOnAHandMadeTask(t *testing.T) {
	t.Parallel()
	end := time.Now().Add(30 * time.Millisecond)
	task := &worker.Task{Job: &job.Job{Task: "sleep", Threads: 1}, ScheduledEnd: end}
	if _, err := worker.Sleep(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(end) || task.EndedAt.Before(end) {
		t.Errorf("Sleep returned %v before the scheduled end (ended at %v)", end.Sub(now), task.EndedAt)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	task = &worker.Task{Job: &job.Job{Task: "sleep", Threads: 1}, ScheduledEnd: time.Now().Add(time.Hour)}
	if _, err := worker.Sleep(ctx, task); err == nil {
		t.Error("Sleep on a cancelled context returned no error")
	}
}
