package worker

import (
	"testing"
	"time"
)

// The log gives the acknowledgements sent in a span, and forgets those
// older than reackWindow, keeping at most about twice the window's.
func TestAckLog(t *testing.T) {
	t.Parallel()
	var l ackLog
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const every = 0.01 // s: a hundred a second
	n := int(3 * reackWindow.Seconds() / every)
	for i := range n {
		l.add(sentAck{at: at(float64(i) * every), seq: uint64(i)})
	}
	end := at(float64(n) * every)
	if max := int(2*reackWindow.Seconds()/every) + 1; len(l.acks) > max {
		t.Errorf("%d acknowledgements kept, want at most %d", len(l.acks), max)
	}
	got := l.between(end.Add(-time.Second), end)
	if len(got) != 100 || got[0].seq != uint64(n-100) || got[99].seq != uint64(n-1) {
		t.Errorf("the last second: %d acknowledgements, seq %d to %d; want 100, %d to %d", len(got), got[0].seq, got[len(got)-1].seq, n-100, n-1)
	}
}
