package bench

import (
	"runtime"
	"time"
)

// Stalls is what a thread that does nothing but read the clock sees: the
// gaps between two readings longer than a millisecond are time the machine
// gave to someone else (other processes, or the hypervisor's steal). They
// bound the timing precision any process on the machine can have.
type Stalls struct {
	Seconds float64 `json:"seconds"`
	Over1ms int     `json:"over_1ms"`
	Over5ms int     `json:"over_5ms"`
	WorstUs float64 `json:"worst_us"`
}

// MeasureStalls spins on the clock for d on a locked thread.
func MeasureStalls(d time.Duration) Stalls {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := Stalls{Seconds: d.Seconds()}
	last := time.Now()
	end := last.Add(d)
	var worst time.Duration
	for now := last; now.Before(end); now = time.Now() {
		g := now.Sub(last)
		if g > time.Millisecond {
			s.Over1ms++
		}
		if g > 5*time.Millisecond {
			s.Over5ms++
		}
		worst = max(worst, g)
		last = now
	}
	s.WorstUs = round(float64(worst) / float64(time.Microsecond))
	return s
}
