package webui

import (
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// The history forgets what ended more than Keep ago, then the oldest jobs
// beyond MaxJobs; what is left is what a new page gets.
func TestHistoryTrim(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		keep    time.Duration
		maxJobs int
		want    []string
	}{
		{"by age", time.Minute, 10, []string{"recent", "newest", "future"}},
		{"by count: the latest arrivals stay", time.Hour, 2, []string{"newest", "future"}},
		{"nothing to trim", time.Hour, 10, []string{"old", "recent", "newest", "future"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := job.Now()
			h := newHistory(tc.keep, tc.maxJobs)
			h.placed([]job.Job{{ID: "old", Task: "t", Threads: 1, Duration: 1000, StartTime: now - 10*60_000}}, now)
			h.recorded([]job.Job{{ID: "recent", Task: "t", Threads: 1, Duration: 10, StartTime: now - 30_000,
				ActualStartTime: now - 30_000, ActualEndTime: now - 29_990, Status: job.StatusDone}},
				[]Point{{Chart: "c", Time: now - 10*60_000}, {Chart: "c", Time: now - 30_000}})
			h.placed([]job.Job{{ID: "newest", Task: "t", Threads: 1, Duration: 10}}, now)
			h.placed([]job.Job{{ID: "future", Task: "t", Threads: 1, Duration: 10, StartTime: now + 60_000}}, now)
			h.marked(pool.Mark{Time: now - 10*60_000, Kind: "old"})
			h.trim(now)
			h.mu.Lock()
			snap := h.snapshotLocked(now)
			h.mu.Unlock()
			got := map[string]bool{}
			for _, v := range snap.Jobs {
				got[v.ID] = true
			}
			if len(got) != len(tc.want) {
				t.Errorf("kept %v, want %v", got, tc.want)
			}
			for _, id := range tc.want {
				if !got[id] {
					t.Errorf("%s trimmed; kept %v", id, got)
				}
			}
			if tc.keep == time.Minute && (len(snap.Points) != 1 || len(snap.Marks) != 0) {
				t.Errorf("kept %d points and %d marks older than Keep", len(snap.Points), len(snap.Marks))
			}
		})
	}
}

// A record of a job placed before the UI watched draws it from the
// record's own window.
func TestRecordOfUnseenJob(t *testing.T) {
	t.Parallel()
	h := newHistory(time.Hour, 10)
	h.recorded([]job.Job{
		{ID: "s", Task: "t", Threads: 1, Duration: 10, StartTime: 1000, Worker: "w", ActualStartTime: 1001, ActualEndTime: 1011, Status: job.StatusDone},
		{ID: "asap", Task: "t", Threads: 1, Duration: 10, Worker: "w", ActualStartTime: 2000, ActualEndTime: 2010, Status: job.StatusFailed, Error: "boom"},
	}, nil)
	d, changed := h.takeDelta(0)
	if !changed || len(d.Jobs) != 2 {
		t.Fatalf("delta %+v", d)
	}
	for _, v := range d.Jobs {
		switch v.ID {
		case "s":
			if v.Start != 1000 || v.End != 1010 || v.ASAP {
				t.Errorf("scheduled job: %+v", v)
			}
		case "asap":
			if v.Start != 2000 || v.End != 2010 || !v.ASAP || v.Reason != "boom" {
				t.Errorf("ASAP job: %+v", v)
			}
		}
	}
	if _, changed := h.takeDelta(0); changed {
		t.Error("a second delta with nothing new")
	}
}
