package planner

import (
	"math"
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
)

// A prep wave in flight shows how far it is and how long until it lands;
// none shows once it has landed, or outside the prep.
func TestPrepProgress(t *testing.T) {
	t.Parallel()
	now := time.Now()
	at := job.Millis(now)
	tests := []struct {
		name      string
		st        Stats
		wantOK    bool
		wantShare float64
		wantLeft  time.Duration
	}{
		{name: "a quarter in", st: Stats{Phase: "prep", PrepStart: at - 1000, PrepLand: at + 3000}, wantOK: true, wantShare: 0.25, wantLeft: 3 * time.Second},
		{name: "landed", st: Stats{Phase: "prep", PrepStart: at - 4000, PrepLand: at - 1}},
		{name: "batching", st: Stats{Phase: "batch", PrepStart: at - 1000, PrepLand: at + 3000}},
		{name: "no wave yet", st: Stats{Phase: "prep"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			share, left, ok := tc.st.PrepProgress(now)
			if ok != tc.wantOK || math.Abs(share-tc.wantShare) > 1e-9 || (left-tc.wantLeft).Abs() > time.Millisecond {
				t.Errorf("PrepProgress = %v, %v, %v; want %v, %v, %v", share, left, ok, tc.wantShare, tc.wantLeft, tc.wantOK)
			}
		})
	}
}
