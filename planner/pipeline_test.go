package planner

import "testing"

func TestSolvePeriodStartsEveryJobAtMinimumSecurity(t *testing.T) {
	t.Parallel()
	for _, hack := range []float64{800, 1234.5, 3000, 20000} {
		d := durations{h: hack, g: 3.2 * hack, w: 4 * hack}
		p, ok := solvePeriod(d, 20)
		if !ok {
			t.Fatalf("no period for hack time %v", hack)
		}
		if p < 80 {
			t.Errorf("period %v shorter than 4 gaps", p)
		}
		q := p / 4
		// Every batch on the grid, not just the first, fits.
		for k := range 50 {
			l := float64(k) * p
			for _, start := range []float64{l - d.h, l + q - d.w, l + 2*q - d.g, l + 3*q - d.w} {
				if !goodStart(start, p) {
					t.Fatalf("hack %v, period %v: batch %d has a start at %v in a window of raised security", hack, p, k, start)
				}
			}
		}
	}
	for _, tc := range []struct {
		off  float64
		good bool
	}{{0, false}, {24, false}, {25, true}, {37, true}, {38, false}, {50, false}, {75, true}, {99, false}, {-25, true}} {
		if got := goodStart(tc.off, 100); got != tc.good {
			t.Errorf("goodStart(%v, 100) = %v, want %v", tc.off, got, tc.good)
		}
	}
}
