package live

import (
	"time"
)

// clockFilter keeps the game clock's offset from the state requests of the
// last clockWindow and gives the one measured with the shortest round trip:
// a request that waited (in the browser, on the network, on a busy core)
// on one way more than the other is off by up to half its wait, and the
// shortest is the least off. The game's clock and this machine's do not
// drift apart in a window of seconds.
type clockFilter struct {
	samples []clockSample
}

type clockSample struct {
	offset float64
	rtt    time.Duration
	at     time.Time
}

// clockWindow is how far back clockFilter looks.
const clockWindow = 30 * time.Second

// add takes a sample measured at now, and returns the offset to use.
func (f *clockFilter) add(offset float64, rtt time.Duration, now time.Time) float64 {
	keep := f.samples[:0]
	for _, s := range f.samples {
		if now.Sub(s.at) < clockWindow {
			keep = append(keep, s)
		}
	}
	f.samples = append(keep, clockSample{offset: offset, rtt: rtt, at: now})
	best := f.samples[0]
	for _, s := range f.samples[1:] {
		if s.rtt < best.rtt {
			best = s
		}
	}
	return best.offset
}
