package worker

import (
	"context"
	"math"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestTimerQueueFiresInOrderAndStops(t *testing.T) {
	t.Parallel()
	q := NewTimerQueue(200 * time.Microsecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	base := time.Now().Add(20 * time.Millisecond)
	var mu sync.Mutex
	var order []int
	done := make(chan struct{})
	for _, i := range []int{3, 1, 4, 0, 2} {
		q.At(base.Add(time.Duration(i)*3*time.Millisecond), func(now time.Time) {
			mu.Lock()
			order = append(order, i)
			if len(order) == 4 {
				close(done)
			}
			mu.Unlock()
		})
	}
	stopped := q.At(base.Add(time.Millisecond), func(time.Time) { t.Error("a stopped timer fired") })
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop should report true once")
	}
	// Timer 4 is stopped from inside timer 3's window.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("timers did not fire")
	}
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("fired out of order: %v", order)
		}
	}
	// A timer in the past fires at once.
	fired := make(chan time.Time, 1)
	q.At(time.Now().Add(-time.Second), func(now time.Time) { fired <- now })
	select {
	case <-fired:
	case <-time.After(time.Second):
		t.Fatal("a past-due timer did not fire")
	}
}

// lateness schedules n callbacks 1 ms apart and returns how late each fired,
// in µs.
func lateness(n int, schedule func(at time.Time, fn func(now time.Time))) []float64 {
	out := make([]float64, n)
	var wg sync.WaitGroup
	wg.Add(n)
	base := time.Now().Add(10 * time.Millisecond)
	for i := range n {
		at := base.Add(time.Duration(i) * time.Millisecond)
		schedule(at, func(now time.Time) {
			out[i] = float64(now.Sub(at)) / 1e3
			wg.Done()
		})
	}
	wg.Wait()
	return out
}

func quantile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// BenchmarkTimerLateness compares the queue's lateness with a bare Go timer
// (time.AfterFunc) in the same process: 1 ms apart, as the paced benchmark.
func BenchmarkTimerLateness(b *testing.B) {
	q := NewTimerQueue(100 * time.Microsecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	n := 1000
	var queue, bare []float64
	for range b.N {
		queue = append(queue, lateness(n, func(at time.Time, fn func(time.Time)) { q.At(at, fn) })...)
		bare = append(bare, lateness(n, func(at time.Time, fn func(time.Time)) {
			time.AfterFunc(time.Until(at), func() { fn(time.Now()) })
		})...)
	}
	b.ReportMetric(quantile(queue, 0.5), "queue_p50_us")
	b.ReportMetric(quantile(queue, 0.99), "queue_p99_us")
	b.ReportMetric(quantile(bare, 0.5), "gotimer_p50_us")
	b.ReportMetric(quantile(bare, 0.99), "gotimer_p99_us")
	b.ReportMetric(quantile(bare, 0.99)/math.Max(quantile(queue, 0.99), 0.001), "p99_improvement_x")
}
