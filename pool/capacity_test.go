package pool_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// The pool tells what a job could get from the timelines it places on:
// the largest job one worker could take over a window, and which, the
// threads free in all, and how that changes over a span.
func TestCapacity(t *testing.T) {
	t.Parallel()
	e := setup(t, 4, 8)
	ctx := ctxTimeout(t, 20*time.Second)
	t0 := job.Now() + 2000
	// 6 threads over [t0, t0+2s]: only w8 has them.
	d, err := e.client.DispatchJob(ctx, job.Job{ID: "six", Task: "sleep", Threads: 6, StartTime: t0, Duration: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if d.Jobs[0].Worker != "w8" {
		t.Fatalf("placed on %s, want w8", d.Jobs[0].Worker)
	}
	for _, tc := range []struct {
		name    string
		req     pool.CapacityRequest
		largest int
		worker  string
		free    int
		workers int
	}{
		{"inside the job", pool.CapacityRequest{Start: t0 + 500, Duration: 500}, 4, "w4", 6, 2},
		{"after it", pool.CapacityRequest{Start: t0 + 2500, Duration: 500}, 8, "w8", 12, 2},
		{"across its end", pool.CapacityRequest{Start: t0 + 1500, Duration: 1000}, 4, "w4", 6, 2},
		{"a task no worker runs", pool.CapacityRequest{Start: t0, Duration: 100, Task: "paint"}, 0, "", 0, 0},
		{"a task they run", pool.CapacityRequest{Start: t0 + 500, Duration: 500, Task: "sleep"}, 4, "w4", 6, 2},
		{"cores no host has", pool.CapacityRequest{Start: t0, Duration: 100, MinCores: 2}, 0, "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.client.Capacity(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got.Largest != tc.largest || got.Worker != tc.worker || got.Free != tc.free || got.Workers != tc.workers {
				t.Errorf("largest %d on %q, free %d, workers %d; want %d on %q, %d, %d",
					got.Largest, got.Worker, got.Free, got.Workers, tc.largest, tc.worker, tc.free, tc.workers)
			}
		})
	}
	// The profile over the span: 12 free, 6 while the job runs, 12 again.
	got, err := e.client.Capacity(ctx, pool.CapacityRequest{Start: t0 - 1000, Duration: 1, ProfileSpan: 4000})
	if err != nil {
		t.Fatal(err)
	}
	want := []pool.FreeAt{{At: t0 - 1000, Free: 12}, {At: t0, Free: 6}, {At: t0 + 2000, Free: 12}}
	if len(got.Profile) != len(want) {
		t.Fatalf("profile %+v, want %+v", got.Profile, want)
	}
	for i := range want {
		if got.Profile[i] != want[i] {
			t.Errorf("profile step %d: %+v, want %+v", i, got.Profile[i], want[i])
		}
	}
	// What the answer says fits, fits.
	largest, err := e.client.Capacity(ctx, pool.CapacityRequest{Start: t0 + 100, Duration: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.DispatchJob(ctx, job.Job{Task: "sleep", Threads: largest.Largest, StartTime: t0 + 100, Duration: 1000}); err != nil {
		t.Errorf("a job of the largest size the pool gave (%d) was refused: %v", largest.Largest, err)
	}
}

func TestCapacityBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, req := range []pool.CapacityRequest{{Duration: -1}, {Duration: 10, MinCores: -1}, {Duration: 10, ProfileSpan: -5}, {Start: -3, Duration: 10}} {
		if _, err := e.client.Capacity(ctx, req); !errors.Is(err, pool.ErrInvalidJob) {
			t.Errorf("%+v: %v, want ErrInvalidJob", req, err)
		}
	}
	nc := e.b.Connect(t)
	msg, err := nc.RequestWithContext(context.Background(), pool.SubjectCapacity, []byte(`{"start":"soon","duration":10}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg.Data), "capacity request") || !strings.Contains(string(msg.Data), `"code":"invalid"`) {
		t.Errorf("a start that is not a number: %s", msg.Data)
	}
}
