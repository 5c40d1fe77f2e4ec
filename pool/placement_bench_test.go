package pool

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/job"
)

// benchPool is a pool of n live workers (capacities 16 to 256 threads) with
// no broker: placement works on the pool's own state.
func benchPool(n int) *Pool {
	p, _ := New(nil, Options{Logger: zerolog.Nop()})
	r := rand.New(rand.NewPCG(1, 2))
	caps := []int{16, 32, 64, 128, 256}
	for i := range n {
		addLiveWorker(p, fmt.Sprintf("w%04d", i), caps[r.IntN(len(caps))], "sleep", "encode", "resize", "upload")
	}
	return p
}

// addLiveWorker gives a pool with no broker a worker that has just beaten,
// as its registry entry would.
func addLiveWorker(p *Pool, id string, threads int, tasks ...string) {
	ws := p.newWorkerState(id, threads)
	ws.entry.Threads = threads
	ws.entry.Tasks = tasks
	ws.tasks = map[string]bool{}
	for _, t := range tasks {
		ws.tasks[t] = true
	}
	ws.entry.Heartbeat = time.Hour
	ws.entry.Instance = "i1" // a process that has not exited
	ws.seen = time.Now()
	p.workers[id] = ws
}

// BenchmarkPlacement places 100,000 jobs onto 1,000 workers: starts spread
// over ten minutes, 1-40 s long, 1-32 threads (about 60% of the pool's
// threads busy at any time), and reports placements per second and the
// p50/p99 latency of one placement. Target: p99 below 100 µs.
func BenchmarkPlacement(b *testing.B) {
	const workers, jobs = 1000, 100000
	for range b.N {
		b.StopTimer()
		p := benchPool(workers)
		r := rand.New(rand.NewPCG(3, 4))
		base := job.Now() + 1000
		js := make([]job.Job, jobs)
		for i := range js {
			s := base + r.Float64()*600_000
			js[i] = job.Job{ID: fmt.Sprintf("j%d", i), Task: "upload", Threads: 1 + r.IntN(32), StartTime: s, Duration: 1000 + r.Float64()*39_000}
		}
		lat := make([]time.Duration, 0, jobs)
		refused := 0
		now, nowT := job.Now(), time.Now()
		b.StartTimer()
		start := time.Now()
		for i := range js {
			t0 := time.Now()
			p.mu.Lock()
			_, err := p.placeLocked(&js[i], now, nowT)
			p.mu.Unlock()
			lat = append(lat, time.Since(t0))
			if err != nil {
				refused++
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(jobs)/elapsed.Seconds(), "placements/s")
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50_us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99_us")
		b.ReportMetric(float64(refused), "refused")
		b.StartTimer()
	}
}

// BenchmarkCapacity asks capacity questions of 1,000 workers holding
// 100,000 reservations (placed as BenchmarkPlacement places them), with
// windows anywhere in the ten minutes, and reports the p50/p99 latency of
// one answer. Target: p99 below 100 µs.
func BenchmarkCapacity(b *testing.B) {
	const workers, jobs, questions = 1000, 100000, 20000
	p := benchPool(workers)
	r := rand.New(rand.NewPCG(3, 4))
	base := job.Now() + 1000
	now, nowT := job.Now(), time.Now()
	for i := range jobs {
		s := base + r.Float64()*600_000
		j := job.Job{ID: fmt.Sprintf("j%d", i), Task: "upload", Threads: 1 + r.IntN(32), StartTime: s, Duration: 1000 + r.Float64()*39_000}
		p.mu.Lock()
		_, _ = p.placeLocked(&j, now, nowT)
		p.mu.Unlock()
	}
	reserved := 0
	for _, ws := range p.workers {
		reserved += ws.tl.Len()
	}
	lat := make([]time.Duration, 0, questions)
	b.ResetTimer()
	for range b.N {
		lat = lat[:0]
		for range questions {
			q := CapacityRequest{Start: base + r.Float64()*600_000, Duration: 1000 + r.Float64()*39_000}
			t0 := time.Now()
			if _, err := p.Capacity(q); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50_us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99_us")
	b.ReportMetric(float64(reserved), "reservations")
}
