package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nuid"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
)

// The dispatch path. A dispatch places every job of a request or none,
// then publishes them. Placement tries, in order: the workers there are;
// a new worker for the job that did not fit (while workers can be
// launched); splitting the jobs that do not fit over the workers there are
// (as the split policy allows); a worker on the largest host for a job too
// big for any host, to split it over; and else refuses the whole request,
// saying which job did not fit and why. A refused request stops the
// workers it launched.

// maxExtraLaunches bounds the launches one dispatch tries beyond one per
// job: a launch can be lost to another dispatch placing on the new worker.
const maxExtraLaunches = 16

// dispatch places and publishes jobs: all of them or none.
func (p *Pool) dispatch(ctx context.Context, jobs []job.Job, batch bool) ([]Placed, error) {
	if err := p.prepare(jobs, batch); err != nil {
		return nil, err
	}
	if err := p.validate(ctx, jobs); err != nil {
		return nil, err
	}
	if needsCores(jobs) {
		p.refreshHostCores(ctx)
	}
	a := &attempt{p: p, jobs: jobs, canLaunch: p.canLaunch(), noHost: map[int]bool{}}
	placed, err := a.place(ctx)
	if err == nil {
		err = p.publish(ctx, placed)
	}
	if err != nil {
		// Even when the request's time is up: a worker launched for it
		// must not stay idle.
		p.stopLaunched(context.WithoutCancel(ctx), a.launched)
		return nil, err
	}
	p.stats.accepted.Add(int64(len(jobs)))
	p.metrics.accepted.Add(float64(len(jobs)))
	return placedReply(placed), nil
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

// validate asks the Validator about each job.
func (p *Pool) validate(ctx context.Context, jobs []job.Job) error {
	if p.opts.Validator == nil {
		return nil
	}
	for i, j := range jobs {
		if err := p.opts.Validator.Validate(ctx, j); err != nil {
			return &PlaceError{Index: i, ID: j.ID, Err: fmt.Errorf("%w: %w", ErrInvalidJob, err)}
		}
	}
	return nil
}

// attempt is one dispatch's way to a placement: what it has launched, and
// what it has learned of the jobs that did not fit.
type attempt struct {
	p    *Pool
	jobs []job.Job
	// splits is how many parts each job may go in; nil until a job did
	// not fit (asking the split policy may take a request).
	splits []int
	// canLaunch is cleared once a launch failed for a reason other than
	// no host having the threads.
	canLaunch bool
	// noHost marks the jobs no single host can hold.
	noHost   map[int]bool
	launches int
	launched []string
	// launchErr is the last launch's failure, told with a refusal.
	launchErr error
}

// place reserves threads for every job, or refuses them all.
func (a *attempt) place(ctx context.Context) ([]placement, error) {
	for {
		placed, idx, err := a.p.placeAll(a.jobs, a.splits)
		if err == nil {
			return placed, nil
		}
		if !errors.Is(err, ErrNoCapacity) {
			return nil, a.refuse(idx, err)
		}
		switch {
		case a.launchFor(ctx, idx):
		case a.allowSplits(ctx):
		case a.launchToSplit(ctx, idx):
		default:
			return nil, a.refuse(idx, err)
		}
	}
}

// mayLaunch reports whether another worker may be launched.
func (a *attempt) mayLaunch() bool {
	return a.canLaunch && a.launches < len(a.jobs)+maxExtraLaunches
}

// launchFor launches a worker that can take job idx whole. It reports
// whether one now runs.
func (a *attempt) launchFor(ctx context.Context, idx int) bool {
	if !a.mayLaunch() || a.noHost[idx] {
		return false
	}
	j := &a.jobs[idx]
	err := a.launched1(a.p.launchFor(ctx, j.Threads, j.MinCores))
	switch {
	case err == nil:
		return true
	case errors.Is(err, serverpool.ErrNoHost):
		a.noHost[idx] = true // it may still split
	default:
		a.canLaunch = false
	}
	return false
}

// launchToSplit launches a worker of all the threads of the largest host,
// for a job too big for any host that may be split over several. It
// reports whether one now runs.
func (a *attempt) launchToSplit(ctx context.Context, idx int) bool {
	if !a.mayLaunch() || a.splits == nil || a.splits[idx] < 2 {
		return false
	}
	if err := a.launched1(a.p.launchLargest(ctx, a.jobs[idx].MinCores)); err != nil {
		a.canLaunch = false
		return false
	}
	return true
}

// launched1 counts one launch and keeps its worker (to stop it if the
// dispatch is refused) or its error.
func (a *attempt) launched1(id string, err error) error {
	a.launches++
	if id != "" {
		a.launched = append(a.launched, id)
	}
	if err != nil {
		a.launchErr = err
	}
	return err
}

// allowSplits asks the split policy, once per dispatch, how far each job
// may be split. It reports whether placement should be tried again.
func (a *attempt) allowSplits(ctx context.Context) bool {
	if a.splits != nil {
		return false
	}
	a.splits = a.p.splitLimits(ctx, a.jobs)
	return true
}

// refuse is the error of a dispatch whose job idx could not be placed.
func (a *attempt) refuse(idx int, err error) error {
	if a.launchErr != nil && errors.Is(err, ErrNoCapacity) {
		err = fmt.Errorf("%w (and no worker could be launched for it: %v)", err, a.launchErr)
	}
	return &PlaceError{Index: idx, ID: a.jobs[idx].ID, Err: err}
}

// placedReply says where each placed job (or part) went.
func placedReply(placed []placement) []Placed {
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
	return out
}
