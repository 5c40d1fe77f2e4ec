package live

import (
	"testing"
	"time"
)

func TestClockFilterTakesTheShortestRoundTripOfTheWindow(t *testing.T) {
	t.Parallel()
	var f clockFilter
	t0 := time.Unix(1_000_000, 0)
	steps := []struct {
		offset float64
		rtt    time.Duration
		after  time.Duration
		want   float64
	}{
		{offset: 12, rtt: 20 * time.Millisecond, after: 0, want: 12},
		{offset: 1, rtt: 2 * time.Millisecond, after: time.Second, want: 1},
		{offset: -9, rtt: 15 * time.Millisecond, after: 2 * time.Second, want: 1},
		// The sharp sample is out of the window: the best of those left.
		{offset: 7, rtt: 9 * time.Millisecond, after: 32 * time.Second, want: 7},
	}
	for i, s := range steps {
		if got := f.add(s.offset, s.rtt, t0.Add(s.after)); got != s.want {
			t.Errorf("step %d: offset %v, want %v", i, got, s.want)
		}
	}
}
