package pool

import (
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/job"
)

// poolOf is a pool with no broker and live workers of the given threads,
// named w1, w2…: placement works on the pool's own state.
func poolOf(threads ...int) *Pool {
	p, _ := New(nil, Options{Logger: zerolog.Nop()})
	for i, n := range threads {
		addLiveWorker(p, fmt.Sprintf("w%d", i+1), n, "sleep")
	}
	return p
}

// Jobs without a start go where they start soonest, and a batch of them
// spreads over the free workers in one pass: ten workers of 4 threads run
// 40 one-thread jobs at once, not four at a time on one worker.
func TestASAPJobsSpread(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		workers []int
		jobs    int
		threads int
		// wantPer is how many jobs each worker gets; wantLater how many
		// start after the others end.
		wantPer   []int
		wantLater int
	}{
		{name: "one-thread jobs fill every worker", workers: []int{4, 4, 4, 4, 4, 4, 4, 4, 4, 4}, jobs: 40, threads: 1, wantPer: []int{4, 4, 4, 4, 4, 4, 4, 4, 4, 4}},
		{name: "six 6-thread jobs on six workers", workers: []int{6, 6, 6, 6, 6, 6}, jobs: 6, threads: 6, wantPer: []int{1, 1, 1, 1, 1, 1}},
		// Ties (free as soon on both) go to the first in placement
		// order: the smallest, then by id.
		{name: "more than fit: the rest queue", workers: []int{2, 2}, jobs: 6, threads: 1, wantPer: []int{4, 2}, wantLater: 2},
		{name: "the smallest that is free now", workers: []int{8, 2, 4}, jobs: 3, threads: 2, wantPer: []int{0, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := poolOf(tc.workers...)
			jobs := make([]job.Job, tc.jobs)
			for i := range jobs {
				jobs[i] = job.Job{ID: fmt.Sprintf("j%d", i), Task: "sleep", Threads: tc.threads, Duration: 200}
			}
			now := job.Now()
			placed, _, err := p.placeAll(jobs, nil)
			if err != nil {
				t.Fatal(err)
			}
			per := map[string]int{}
			later := 0
			for _, pl := range placed {
				per[pl.job.Worker]++
				if pl.start > now+100 {
					later++
				}
			}
			for i := range tc.workers {
				if id := fmt.Sprintf("w%d", i+1); per[id] != tc.wantPer[i] {
					t.Errorf("%s got %d jobs, want %d (all: %v)", id, per[id], tc.wantPer[i], per)
				}
			}
			if later != tc.wantLater {
				t.Errorf("%d jobs start after the first ones end, want %d", later, tc.wantLater)
			}
		})
	}
}
