package pool

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/hvmind/hvmind/job"
)

// The pool answers capacity questions from the timelines placement uses,
// so that a caller can size a job before it asks, instead of guessing from
// a status snapshot and learning the rest from refusals: an answer is what
// a dispatch sent at once would get.

// CapacityRequest asks what a job over a window could get.
type CapacityRequest struct {
	// Start is the window's start, Unix epoch ms (0: now).
	Start float64 `json:"start,omitempty"`
	// Duration is the window's length in ms (0: an instant).
	Duration float64 `json:"duration"`
	// MinCores and Task filter the workers as placement does: hosts with
	// that many cores, workers that run the task.
	MinCores int    `json:"minCores,omitempty"`
	Task     string `json:"task,omitempty"`
	// ProfileSpan, when set, also asks for the free threads over
	// [Start, Start+ProfileSpan) at each instant they change.
	ProfileSpan float64 `json:"profileSpan,omitempty"`
}

// CapacityReply is the answer to a CapacityRequest.
type CapacityReply struct {
	// Start and End are the window asked about, Unix epoch ms.
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	// Largest is the most threads one job could be given on one worker
	// over the whole window, and Worker is that worker.
	Largest int    `json:"largest"`
	Worker  string `json:"worker,omitempty"`
	// Free is the least, over the window, of the threads free on those
	// workers added up. A batch of such jobs, each on one worker for the
	// whole window, may get fewer: the free threads can be spread over
	// workers and time.
	Free int `json:"free"`
	// Workers is how many workers could take such a job at all.
	Workers int `json:"workers"`
	// Profile is the free threads, added up over those workers, from each
	// instant they change (when ProfileSpan was asked for).
	Profile []FreeAt `json:"profile,omitempty"`
}

// FreeAt is the free threads from At on.
type FreeAt struct {
	At   float64 `json:"at"`
	Free int     `json:"free"`
}

// validate checks a request; it returns the window.
func (r *CapacityRequest) validate(now float64) (start, end float64, err error) {
	switch {
	case bad(r.Start) || bad(r.Duration) || bad(r.ProfileSpan):
		return 0, 0, fmt.Errorf("%w: start, duration and profileSpan must be numbers", ErrInvalidJob)
	case r.Duration < 0:
		return 0, 0, fmt.Errorf("%w: duration %v must not be negative", ErrInvalidJob, r.Duration)
	case r.ProfileSpan < 0:
		return 0, 0, fmt.Errorf("%w: profileSpan %v must not be negative", ErrInvalidJob, r.ProfileSpan)
	case r.MinCores < 0:
		return 0, 0, fmt.Errorf("%w: minCores %d must not be negative", ErrInvalidJob, r.MinCores)
	case r.Start < 0:
		return 0, 0, fmt.Errorf("%w: start %v must be a Unix epoch time in ms (0: now)", ErrInvalidJob, r.Start)
	}
	start = r.Start
	if start == 0 {
		start = now
	}
	// A window as placement reserves it (see window).
	end = start + max(r.Duration, 0.001)
	return start, end, nil
}

func bad(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

// Capacity answers a capacity question from the placement's timelines.
// Largest takes the workers from the biggest down and stops once no
// worker left could beat the best found; Free, without filters, is read
// from the pool's timeline of every reservation in O(log n); a question
// with a task or cores adds up the profile of the workers that qualify.
func (p *Pool) Capacity(r CapacityRequest) (CapacityReply, error) {
	now, nowT := job.Now(), time.Now()
	start, end, err := r.validate(now)
	if err != nil {
		return CapacityReply{}, err
	}
	out := CapacityReply{Start: start, End: end}
	j := job.Job{Task: r.Task, MinCores: r.MinCores}
	p.mu.Lock()
	defer p.mu.Unlock()
	order := p.orderLocked() // smallest first
	filtered := r.Task != "" || r.MinCores > 1
	var eligible []*workerState // for the slower questions only
	threads := 0
	for i := len(order) - 1; i >= 0; i-- { // biggest first
		ws := order[i]
		if !p.aliveLocked(ws, nowT) || ws.stopping || (r.Task != "" && !ws.serves(r.Task)) || !p.coresFitLocked(ws, &j) {
			continue
		}
		out.Workers++
		threads += ws.tl.Capacity()
		if filtered || r.ProfileSpan > 0 {
			eligible = append(eligible, ws)
		}
		if ws.tl.Capacity() <= out.Largest {
			continue // cannot beat it
		}
		if free := ws.tl.Free(start, end); free > out.Largest {
			out.Largest, out.Worker = free, ws.entry.ID
		}
	}
	switch {
	case !filtered:
		// The pool's timeline also holds the reservations of workers
		// gone, until swept: Free errs on the low side.
		out.Free = max(0, threads-p.all.MaxUsed(start, end))
	default:
		out.Free = threads
		for _, f := range freeProfile(eligible, start, end) {
			out.Free = min(out.Free, f.Free)
		}
	}
	if r.ProfileSpan > 0 {
		out.Profile = freeProfile(eligible, start, start+r.ProfileSpan)
	}
	return out, nil
}

// freeProfile adds up the free threads of the workers over [start, end),
// from each instant they change.
func freeProfile(workers []*workerState, start, end float64) []FreeAt {
	type change struct {
		at    float64
		delta int // of free threads
	}
	free := 0
	var changes []change
	for _, ws := range workers {
		steps := ws.tl.Steps(start, end)
		if len(steps) == 0 {
			continue
		}
		free += ws.tl.Capacity() - steps[0].Used
		for i := 1; i < len(steps); i++ {
			changes = append(changes, change{steps[i].At, steps[i-1].Used - steps[i].Used})
		}
	}
	sort.Slice(changes, func(a, b int) bool { return changes[a].at < changes[b].at })
	out := []FreeAt{{At: start, Free: free}}
	for _, c := range changes {
		free += c.delta
		if last := &out[len(out)-1]; last.At == c.at {
			last.Free = free // several changes at one instant
		} else {
			out = append(out, FreeAt{At: c.at, Free: free})
		}
	}
	// Only the instants where the total changes.
	kept := out[:1]
	for _, f := range out[1:] {
		if f.Free != kept[len(kept)-1].Free {
			kept = append(kept, f)
		}
	}
	return kept
}
