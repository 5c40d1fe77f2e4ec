package pool

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hvmind/hvmind/job"
)

// stats counts what the pool has seen and keeps the drift of recent jobs.
type stats struct {
	accepted atomic.Int64

	mu       sync.Mutex
	byStatus map[job.Status]int64
	drift    []float64 // µs, actual minus scheduled start, ring
	next     int
	perWork  map[string]float64 // last drift per worker, µs
	// place is how long recent placements of one job took, µs, ring.
	place     []float64
	placeNext int
}

const driftRing = 2048

func newStats() stats {
	return stats{byStatus: map[job.Status]int64{}, perWork: map[string]float64{}}
}

func (s *stats) record(j *job.Summary) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byStatus[j.Status]++
	if j.StartTime == 0 || j.ActualStartTime == 0 {
		return
	}
	d := (j.ActualStartTime - j.StartTime) * 1000
	if len(s.drift) < driftRing {
		s.drift = append(s.drift, d)
	} else {
		s.drift[s.next] = d
		s.next = (s.next + 1) % driftRing
	}
	s.perWork[j.Worker] = d
}

// placed notes how long the placement of one job took.
func (s *stats) placed(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	us := float64(d.Nanoseconds()) / 1e3
	if len(s.place) < driftRing {
		s.place = append(s.place, us)
		return
	}
	s.place[s.placeNext] = us
	s.placeNext = (s.placeNext + 1) % driftRing
}

// placement summarises the recent placements' latency, µs.
func (s *stats) placement() Drift {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Summarise(s.place)
}

// Drift summarises the start drift of recent scheduled jobs, in µs.
type Drift struct {
	Jobs int     `json:"jobs"`
	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
	Max  float64 `json:"max_us"`
}

func (s *stats) snapshot() (map[job.Status]int64, Drift, map[string]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := make(map[job.Status]int64, len(s.byStatus))
	for k, v := range s.byStatus {
		counts[k] = v
	}
	per := make(map[string]float64, len(s.perWork))
	for k, v := range s.perWork {
		per[k] = v
	}
	abs := make([]float64, len(s.drift))
	for i, d := range s.drift {
		abs[i] = math.Abs(d)
	}
	return counts, Summarise(abs), per
}

// Summarise returns the p50, p99 and max of values (any unit).
func Summarise(values []float64) Drift {
	if len(values) == 0 {
		return Drift{}
	}
	v := append([]float64(nil), values...)
	sort.Float64s(v)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	return Drift{Jobs: len(v), P50: q(0.50), P99: q(0.99), Max: v[len(v)-1]}
}
