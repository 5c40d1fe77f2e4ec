package pool_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// settlerFunc is a job.Settler from a function of one job.
type settlerFunc struct {
	mu    sync.Mutex
	asked []string
	f     func(j job.Job) job.Job
}

func (s *settlerFunc) Settle(_ context.Context, jobs []job.Job, reason string) ([]job.Job, error) {
	out := make([]job.Job, len(jobs))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, j := range jobs {
		s.asked = append(s.asked, j.ID)
		out[i] = s.f(j)
		if out[i].Status != "" {
			out[i].Reason = reason
		}
	}
	return out, nil
}

// The jobs of a gone worker are recorded as the settler says: a job whose
// effect happened elsewhere is done with its result, not "missed"; a task
// the settler does not know is recorded missed, as without one.
func TestSettlerRecordsAGoneWorkersJobs(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	settler := &settlerFunc{f: func(j job.Job) job.Job {
		switch j.ID {
		case "applied":
			j.Status, j.Result = job.StatusDone, json.RawMessage(`{"applied":true}`)
			j.ActualStartTime, j.ActualEndTime = j.StartTime, j.StartTime+j.Duration
		case "begun":
			j.Status = job.StatusFailed
		case "unknown":
		default:
			j.Status = job.StatusMissed
		}
		return j
	}}
	stopWorker := startStoppableWorker(t, b, "gone", 4)
	startPoolWith(t, b, pool.Options{Settler: settler})
	c := newClient(t, b)
	waitWorkers(t, c, 1)
	s := at(2 * time.Second)
	d, err := c.DispatchJobs(context.Background(), []job.Job{
		{ID: "applied", Task: "sleep", Threads: 1, StartTime: s, Duration: 10},
		{ID: "begun", Task: "sleep", Threads: 1, StartTime: s, Duration: 10},
		{ID: "never", Task: "sleep", Threads: 1, StartTime: s, Duration: 10},
		{ID: "unknown", Task: "sleep", Threads: 1, StartTime: s, Duration: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopWorker() // its jobs stay queued; it never comes back
	recs, err := d.Wait(ctxTimeout(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]job.Status{"applied": job.StatusDone, "begun": job.StatusFailed, "never": job.StatusMissed, "unknown": job.StatusMissed}
	for _, r := range recs {
		if r.Status != want[r.ID] {
			t.Errorf("%s: %s (%s), want %s", r.ID, r.Status, r.Reason, want[r.ID])
		}
		if r.ID == "applied" && (string(r.Result) != `{"applied":true}` || r.ActualEndTime == 0) {
			t.Errorf("applied: result %s, ended %v; want the settler's", r.Result, r.ActualEndTime)
		}
	}
	settler.mu.Lock()
	defer settler.mu.Unlock()
	if len(settler.asked) != 4 {
		t.Errorf("the settler was asked about %v, want the 4 jobs once each", settler.asked)
	}
}
