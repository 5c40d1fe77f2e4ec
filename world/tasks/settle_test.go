package tasks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/tasks"
)

// The jobs of many gone workers are settled together, not one worker
// after the other: the world holds each settle request for its holdback,
// and the jobs of a killed worker process's 44 workers, one worker at a
// time, took longer than the pool's call. Here 20 workers' jobs, never
// begun, end missed in about one holdback of 300 ms, where one at a time
// takes 6 s.
func TestSettlerSettlesTheWorkersTogether(t *testing.T) {
	t.Parallel()
	const holdback = 300 * time.Millisecond
	b := brokertest.New(t)
	svc, err := world.Serve(context.Background(), b.Connect(t), world.Options{
		Scenario: "newgame", Speed: 1, Seed: 1, FormulasOnly: true, Holdback: holdback, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	var jobs []job.Job
	for w := range 20 {
		for k := range 3 {
			jobs = append(jobs, job.Job{ID: fmt.Sprintf("j%d-%d", w, k), Task: "weaken", Args: []any{"n00dles"}, Threads: 1, Worker: fmt.Sprintf("w%d", w)})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	recs, err := tasks.Settler(world.NewClient(b.Connect(t))).Settle(ctx, jobs, "its worker is gone")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.ID != jobs[i].ID || r.Status != job.StatusMissed {
			t.Errorf("record %d: %s %s (%s), want %s missed", i, r.ID, r.Status, r.Reason, jobs[i].ID)
		}
	}
	if took > 10*holdback {
		t.Errorf("settling 20 workers' jobs took %s: one worker after the other (each at least the holdback, %s)", took.Round(time.Millisecond), holdback)
	}
}
