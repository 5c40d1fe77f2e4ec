package pool

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hvmind/hvmind/job"
)

// placement is one job's tentative reservation during a dispatch.
type placement struct {
	job        *job.Job
	ws         *workerState
	start, end float64
	// of is the id of the job this is a part of, if it was split.
	of string
}

// PlaceError says which job of a dispatch could not be placed, and why.
type PlaceError struct {
	// Index is the job's position in the dispatched list.
	Index int
	// ID is the job's id.
	ID  string
	Err error
}

func (e *PlaceError) Error() string {
	return fmt.Sprintf("job %d (%s): %v", e.Index, e.ID, e.Err)
}

func (e *PlaceError) Unwrap() error { return e.Err }

// window is the interval a job reserves: from its start (now if it has none)
// to its scheduled end.
func window(j *job.Job, now float64) (start, end float64) {
	start = j.StartTime
	if start == 0 {
		start = now
	}
	end = j.ScheduledEnd(start)
	if end <= start {
		end = start + 0.001 // zero-length jobs still hold their threads for a moment
	}
	return start, end
}

// placeAll reserves threads for every job or for none. On failure it
// returns the index of the job that did not fit.
func (p *Pool) placeAll(jobs []job.Job, splits []int) ([]placement, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := job.Now()
	nowT := time.Now()
	out := make([]placement, 0, len(jobs))
	rollback := func() { p.unplaceLocked(out) }
	for i := range jobs {
		j := &jobs[i]
		if _, dup := p.jobs[j.ID]; dup {
			rollback()
			return nil, i, fmt.Errorf("%w: %s is in flight", ErrDuplicateID, j.ID)
		}
		if p.recent.has(j.ID) {
			rollback()
			return nil, i, fmt.Errorf("%w: %s was dispatched within the last %s", ErrDuplicateID, j.ID, recentWindow)
		}
		t0 := time.Now()
		pl, err := p.placeLocked(j, now, nowT)
		took := time.Since(t0)
		p.stats.placed(took)
		p.metrics.placement.Observe(took.Seconds())
		pls := []placement{pl}
		if errors.Is(err, ErrNoCapacity) && splits != nil && splits[i] > 1 {
			if parts, ok := p.splitLocked(j, now, nowT, splits[i]); ok {
				pls, err = parts, nil
				p.log.Info().Msg(describeSplit(j, parts))
			}
		}
		if err != nil {
			rollback()
			return nil, i, err
		}
		// Tracked before it is published: its record may come back fast,
		// and its id must stay taken once it has.
		if pls[0].of != "" {
			p.recent.add(j.ID, nowT)
		}
		for _, pl := range pls {
			out = append(out, pl)
			p.jobs[pl.job.ID] = &inflight{job: *pl.job, worker: pl.job.Worker, start: pl.start, end: pl.end}
			p.recent.add(pl.job.ID, nowT)
		}
	}
	return out, -1, nil
}

// unplaceLocked undoes placeAll for jobs that were not stored.
func (p *Pool) unplaceLocked(placed []placement) {
	for _, pl := range placed {
		pl.ws.release(pl.job.ID)
		delete(p.jobs, pl.job.ID)
		p.recent.remove(pl.job.ID)
		if pl.of != "" {
			p.recent.remove(pl.of)
		}
	}
}

// placeLocked chooses a worker for one job and reserves its threads, the
// way Nomad's scheduler does: a feasibility check (alive, not stopping,
// runs the task, has the cores, big enough), then fit (the first worker
// in order of size with the job's threads free over its whole window: the
// smallest that fits, which keeps big workers free for big jobs), then the
// reservation, which the timeline checks again.
//
// Two passes: the first reads only the per-second summaries, a few array
// reads per worker, and finds the smallest worker whose summary already
// shows the threads free; the exact pass over the timelines runs only when
// none does. A job without a start goes to the smallest worker that has
// its threads free now, else to the one where they are free soonest.
func (p *Pool) placeLocked(j *job.Job, now float64, nowT time.Time) (placement, error) {
	start, end := window(j, now)
	length := end - start
	var best *workerState
	if j.StartTime != 0 {
		best = p.summaryPassLocked(j, start, end, nowT)
	}
	if best == nil {
		found, at, miss := p.exactPassLocked(j, start, end, nowT)
		if found == nil {
			return placement{}, miss.err(j, start, end)
		}
		best, start = found, at
	}
	end = start + length
	if err := best.reserve(j.ID, start, end, j.Threads); err != nil {
		return placement{}, fmt.Errorf("reserve on %s: %w", best.entry.ID, err)
	}
	j.Worker = best.entry.ID
	return placement{job: j, ws: best, start: start, end: end}, nil
}

// feasibleLocked reports whether a worker may take a job at all.
func (p *Pool) feasibleLocked(ws *workerState, j *job.Job, nowT time.Time) bool {
	return ws.tl.Capacity() >= j.Threads && p.aliveLocked(ws, nowT) && !ws.stopping &&
		ws.serves(j.Task) && p.coresFitLocked(ws, j)
}

// summaryPassLocked is the first pass: the smallest feasible worker whose
// per-second summary shows the job's threads free over [start, end], or
// nil.
func (p *Pool) summaryPassLocked(j *job.Job, start, end float64, nowT time.Time) *workerState {
	for _, ws := range p.orderLocked() {
		if ws.tl.Capacity() >= j.Threads && ws.surelyFits(start, end, j.Threads) && p.feasibleLocked(ws, j, nowT) {
			return ws
		}
	}
	return nil
}

// placeMiss is what the exact pass saw when no worker fit, to say why.
type placeMiss struct {
	alive, serving, cored int
	// maxFree is the most threads free on one worker, and where.
	maxFree   int
	maxFreeID string
	// tasks are what the live workers run, when none runs the job's.
	tasks []string
}

// exactPassLocked is the second pass, on the timelines: the smallest
// worker with the job's threads free over its window and the start there
// (for a job without a start, the worker where its threads are free
// soonest), or nil and why none.
func (p *Pool) exactPassLocked(j *job.Job, start, end float64, nowT time.Time) (*workerState, float64, placeMiss) {
	asap := j.StartTime == 0
	length := end - start
	var best *workerState
	bestStart := math.Inf(1)
	miss := placeMiss{maxFree: -1}
	for _, ws := range p.orderLocked() {
		if !p.aliveLocked(ws, nowT) || ws.stopping {
			continue
		}
		miss.alive++
		if !ws.serves(j.Task) {
			miss.tasks = append(miss.tasks, ws.entry.Tasks...)
			continue
		}
		miss.serving++
		if !p.coresFitLocked(ws, j) {
			continue
		}
		miss.cored++
		if ws.tl.Capacity() < j.Threads {
			miss.maxFree, miss.maxFreeID = max(miss.maxFree, ws.tl.Capacity()), ws.entry.ID
			continue
		}
		if asap {
			if s := ws.tl.NextFree(j.Threads, start, length); s < bestStart {
				best, bestStart = ws, s
				if s <= start {
					break
				}
			}
			continue
		}
		free := ws.tl.Free(start, end)
		if free >= j.Threads {
			return ws, start, miss
		}
		if free > miss.maxFree {
			miss.maxFree, miss.maxFreeID = free, ws.entry.ID
		}
	}
	return best, bestStart, miss
}

// err says why no worker could take j over [start, end].
func (m *placeMiss) err(j *job.Job, start, end float64) error {
	switch {
	case m.alive == 0:
		return fmt.Errorf("%w: no live workers", ErrNoCapacity)
	case m.serving == 0:
		return fmt.Errorf("%w %q: the live workers run %s", ErrUnknownTask, j.Task, uniqueList(m.tasks))
	case m.cored == 0:
		return fmt.Errorf("%w: no live worker's host has the %d cores wanted", ErrNoCapacity, j.MinCores)
	case j.StartTime == 0:
		return fmt.Errorf("%w: %d threads wanted; no live worker has that many", ErrNoCapacity, j.Threads)
	default:
		return fmt.Errorf("%w: %d threads wanted over [%s, %s]; the most free is %d on %s",
			ErrNoCapacity, j.Threads, clock(start), clock(end), m.maxFree, m.maxFreeID)
	}
}

func uniqueList(s []string) string {
	sort.Strings(s)
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ", ")
}

func clock(ms float64) string { return job.Time(ms).Format("15:04:05.000") }
