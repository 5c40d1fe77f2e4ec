package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nuid"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
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

// prepare validates jobs, assigns missing ids and a shared batch id.
func (p *Pool) prepare(jobs []job.Job, batch bool) error {
	if len(jobs) == 0 {
		return fmt.Errorf("%w: no jobs", ErrInvalidJob)
	}
	now := job.Now()
	batchID := ""
	if batch {
		for _, j := range jobs {
			if j.Batch != "" {
				batchID = j.Batch
				break
			}
		}
		if batchID == "" {
			batchID = nuid.Next()
		}
	}
	seen := make(map[string]bool, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		if err := j.Validate(now, p.opts.Tolerance); err != nil {
			return &PlaceError{Index: i, ID: j.ID, Err: fmt.Errorf("%w: %w", ErrInvalidJob, err)}
		}
		if j.ID == "" {
			j.ID = nuid.Next()
		}
		if batch && j.Batch == "" {
			j.Batch = batchID
		}
		if seen[j.ID] {
			return &PlaceError{Index: i, ID: j.ID, Err: fmt.Errorf("%w: %s appears twice", ErrDuplicateID, j.ID)}
		}
		seen[j.ID] = true
	}
	return nil
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
		pl, err := p.placeLocked(j, now, nowT)
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

// placeLocked chooses a worker for one job and reserves its threads. It
// tries the workers from the smallest up (feasibility: alive, runs the
// task, big enough) and takes the first with the job's threads free over
// its whole window: the smallest that fits, which keeps big workers free
// for big jobs, and usually found long before the end of the list. A job
// without a start goes to the smallest worker that has its threads free
// now, else to the one where they are free soonest.
func (p *Pool) placeLocked(j *job.Job, now float64, nowT time.Time) (placement, error) {
	start, end := window(j, now)
	length := end - start
	asap := j.StartTime == 0
	var best *workerState
	bestStart := math.Inf(1)
	alive, serving, cored := 0, 0, 0
	maxFree, maxFreeID := -1, ""
	var tasks []string
	if !asap {
		// A first pass on the per-second summaries: a few array reads per
		// worker. It finds the smallest worker whose summary already shows
		// the threads free; the exact pass below runs only when none does.
		for _, ws := range p.orderLocked() {
			if ws.tl.Capacity() >= j.Threads && ws.surelyFits(start, end, j.Threads) &&
				p.aliveLocked(ws, nowT) && !ws.stopping && ws.serves(j.Task) && p.coresFitLocked(ws, j) {
				best, bestStart = ws, start
				break
			}
		}
	}
	for _, ws := range p.orderLocked() {
		if best != nil {
			break
		}
		if !p.aliveLocked(ws, nowT) || ws.stopping {
			continue
		}
		alive++
		if !ws.serves(j.Task) {
			tasks = append(tasks, ws.entry.Tasks...)
			continue
		}
		serving++
		if !p.coresFitLocked(ws, j) {
			continue
		}
		cored++
		if ws.tl.Capacity() < j.Threads {
			maxFree, maxFreeID = max(maxFree, ws.tl.Capacity()), ws.entry.ID
			continue
		}
		if asap {
			s := ws.tl.NextFree(j.Threads, start, length)
			if s < bestStart {
				best, bestStart = ws, s
				if s <= start {
					break
				}
			}
			continue
		}
		free := ws.tl.Free(start, end)
		if free >= j.Threads {
			best, bestStart = ws, start
			break
		}
		if free > maxFree {
			maxFree, maxFreeID = free, ws.entry.ID
		}
	}
	switch {
	case best != nil:
	case alive == 0:
		return placement{}, fmt.Errorf("%w: no live workers", ErrNoCapacity)
	case serving == 0:
		return placement{}, fmt.Errorf("%w %q: the live workers run %s", ErrUnknownTask, j.Task, uniqueList(tasks))
	case cored == 0:
		return placement{}, fmt.Errorf("%w: no live worker's host has the %d cores wanted", ErrNoCapacity, j.MinCores)
	case asap:
		return placement{}, fmt.Errorf("%w: %d threads wanted; no live worker has that many", ErrNoCapacity, j.Threads)
	default:
		return placement{}, fmt.Errorf("%w: %d threads wanted over [%s, %s]; the most free is %d on %s",
			ErrNoCapacity, j.Threads, clock(start), clock(end), maxFree, maxFreeID)
	}
	start, end = bestStart, bestStart+length
	if err := best.reserve(j.ID, start, end, j.Threads); err != nil {
		return placement{}, fmt.Errorf("reserve on %s: %w", best.entry.ID, err)
	}
	j.Worker = best.entry.ID
	return placement{job: j, ws: best, start: start, end: end}, nil
}

// dispatch places and publishes jobs: all of them or none.
func (p *Pool) dispatch(ctx context.Context, jobs []job.Job, batch bool) ([]Placed, error) {
	if err := p.prepare(jobs, batch); err != nil {
		return nil, err
	}
	if needsCores(jobs) {
		p.refreshHostCores(ctx)
	}
	// In order: existing workers; a new worker (while workers can be
	// launched); splitting over existing workers; refusal.
	var placed []placement
	var splits []int
	canLaunch := p.canLaunch()
	var launchErr error
	var launched []string
	noHost := map[int]bool{} // jobs no single host can hold
	for launches := 0; ; launches++ {
		var idx int
		var err error
		placed, idx, err = p.placeAll(jobs, splits)
		if err == nil {
			break
		}
		capacity := errors.Is(err, ErrNoCapacity)
		if capacity && canLaunch && !noHost[idx] && launches < len(jobs)+16 {
			id, lerr := p.launchFor(ctx, jobs[idx].Threads, jobs[idx].MinCores)
			if id != "" {
				launched = append(launched, id)
			}
			if lerr == nil {
				continue
			}
			launchErr = lerr
			if errors.Is(lerr, serverpool.ErrNoHost) {
				noHost[idx] = true
			} else {
				canLaunch = false
			}
		}
		if capacity && splits == nil && p.opts.Split {
			splits = p.splitLimits(ctx, jobs)
			continue
		}
		// A job too big for any host, that splits: add a worker on the
		// largest host, and split again.
		if capacity && canLaunch && splits != nil && splits[idx] > 1 && launches < len(jobs)+16 {
			id, lerr := p.launchLargest(ctx, jobs[idx].MinCores)
			if id != "" {
				launched = append(launched, id)
			}
			if lerr == nil {
				continue
			}
			launchErr, canLaunch = lerr, false
		}
		if launchErr != nil {
			err = fmt.Errorf("%w (and no worker could be launched for it: %v)", err, launchErr)
		}
		p.stopLaunched(ctx, launched)
		return nil, &PlaceError{Index: idx, ID: jobs[idx].ID, Err: err}
	}
	if err := p.publish(ctx, placed); err != nil {
		p.stopLaunched(ctx, launched)
		return nil, err
	}
	p.stats.accepted.Add(int64(len(jobs)))
	out := make([]Placed, len(placed))
	for i, pl := range placed {
		out[i] = Placed{ID: pl.job.ID, Batch: pl.job.Batch, Worker: pl.job.Worker, Start: pl.start, End: pl.end, Threads: pl.job.Threads}
		if raw, ok := pl.job.Get("part"); ok {
			var po PartOf
			if json.Unmarshal(raw, &po) == nil {
				out[i].Part = &po
			}
		}
	}
	return out, nil
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
