package pool

import (
	"testing"
	"time"
)

// A stall of the registry does not count against a worker's silence,
// while it lasts and for stallSettle after it.
func TestRegistryStallAllowance(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var s registryStall
	if s.failed() {
		t.Fatal("a stall before the registry ever answered")
	}
	s.ok(at(0))
	if got := s.allowance(at(0), at(1)); got != 0 {
		t.Fatalf("allowance %s with no stall", got)
	}
	s.ok(at(1))
	if !s.failed() || s.failed() {
		t.Fatal("a failure after an answer starts one stall")
	}
	tests := []struct {
		name      string
		seen, now float64
		okAt      float64 // the registry answers again (0: not yet)
		want      float64
	}{
		{name: "during, seen before", seen: 0.5, now: 4, want: 3},
		{name: "during, seen after it began", seen: 2, now: 4, want: 2},
		{name: "settling", seen: 0.5, now: 7, okAt: 5, want: 6},
		{name: "settled", seen: 0.5, now: 30, okAt: 5, want: 14},
		{name: "seen after it ended", seen: 20, now: 30, okAt: 5, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := registryStall{lastOK: s.lastOK, from: s.from, to: s.to} // the stall as it stands
			if tc.okAt > 0 {
				c.to = at(tc.okAt)
			}
			if got := c.allowance(at(tc.seen), at(tc.now)); got != time.Duration(tc.want*float64(time.Second)) {
				t.Errorf("allowance %s, want %vs", got, tc.want)
			}
		})
	}
}

// A stall that ends for one answer and comes back (a cluster electing the
// registry's leader) is one stall: a worker seen before it began is not
// counted silent from the first failure on.
func TestRegistryStallReopens(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var s registryStall
	s.ok(at(0))
	s.failed() // from 0
	s.ok(at(1))
	s.ok(at(1.2))
	if !s.failed() {
		t.Fatal("a failure after the registry answered again does not count")
	}
	if got, want := s.allowance(at(-0.5), at(4)), 4*time.Second; got != want {
		t.Errorf("allowance %s, want %s: the stall from 0 goes on", got, want)
	}
	// Long after the stall settled, a failure starts a new one.
	s.ok(at(5))
	s.ok(at(30))
	s.failed()
	if got, want := s.allowance(at(29), at(31)), time.Second; got != want {
		t.Errorf("allowance %s, want %s: a new stall from 30", got, want)
	}
}

// A stall noticed late (the pool's watch of the registry behind what was
// stored, the registry answering all along) counts from when it began,
// not from when it was noticed: a worker last seen before it is not
// silent meanwhile.
func TestRegistryStallNoticedLate(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name  string
		since float64 // 0: not known
		want  float64 // allowance at 5 of a worker seen at 0
	}{
		{name: "noticed at 5, begun by 2", since: 2, want: 3},
		{name: "begun after the last answer", since: 4.5, want: 1},
		{name: "not known", want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var s registryStall
			for _, a := range []float64{0, 1, 2, 3, 4} {
				s.ok(at(a))
			}
			var since time.Time
			if tc.since > 0 {
				since = at(tc.since)
			}
			if !s.failedSince(since) {
				t.Fatal("no stall started")
			}
			if got := s.allowance(at(0), at(5)); got != time.Duration(tc.want*float64(time.Second)) {
				t.Errorf("allowance %s, want %vs", got, tc.want)
			}
		})
	}
}
