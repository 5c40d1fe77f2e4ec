package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/hvmind/hvmind/job"
)

// Splitting a job over several workers runs the same threads as several
// smaller jobs over the same window. Whether that changes what the job
// does depends on its task, which the pool knows nothing of: a SplitPolicy
// says, per job, into how many parts it may go. The parts are jobs of
// their own (ID.p1, ID.p2, … with a "part" member naming the job), and the
// client merges their records into one (MergeParts).

// SplitPolicy decides whether a job that fits no single worker may run as
// several smaller jobs over the same window.
type SplitPolicy interface {
	// MaxParts is how many parts j may be split into at most: 1 (or less)
	// means it may not be split. It is asked only for jobs that do not
	// fit, before any part is placed; ctx bounds what it may look up.
	MaxParts(ctx context.Context, j *job.Job) int
}

// SplitPolicyFunc adapts a function to SplitPolicy.
type SplitPolicyFunc func(ctx context.Context, j *job.Job) int

// MaxParts calls f.
func (f SplitPolicyFunc) MaxParts(ctx context.Context, j *job.Job) int { return f(ctx, j) }

// Unlimited is the MaxParts of a job that may be split into any number of
// parts.
const Unlimited = math.MaxInt32

// SplitExactly is the policy of a task whose effect does not depend on how
// its threads are divided (sleep): any number of parts.
var SplitExactly SplitPolicy = SplitPolicyFunc(func(context.Context, *job.Job) int { return Unlimited })

// SplitByTask is a SplitPolicy that asks the policy of each job's task; a
// task without one is never split.
type SplitByTask map[string]SplitPolicy

// MaxParts asks the policy of j's task.
func (s SplitByTask) MaxParts(ctx context.Context, j *job.Job) int {
	if p := s[j.Task]; p != nil {
		return p.MaxParts(ctx, j)
	}
	return 1
}

// DefaultSplit is the pool's split policy when none is given: the built-in
// sleep task splits exactly, and nothing else splits.
func DefaultSplit() SplitByTask { return SplitByTask{"sleep": SplitExactly} }

// NoSplit splits nothing.
var NoSplit SplitPolicy = SplitByTask{}

// splitAskTimeout bounds one question to the split policy.
const splitAskTimeout = 2 * time.Second

// PartOf is the member a split part carries: which job it is part of.
type PartOf struct {
	Of    string `json:"of"`
	Index int    `json:"index"`
	Count int    `json:"count"`
}

// splitLimits returns, per job, how many parts it may be split into (1:
// not at all).
func (p *Pool) splitLimits(ctx context.Context, jobs []job.Job) []int {
	limits := make([]int, len(jobs))
	for i := range jobs {
		cctx, cancel := context.WithTimeout(ctx, splitAskTimeout)
		limits[i] = p.opts.Split.MaxParts(cctx, &jobs[i])
		cancel()
	}
	return limits
}

// splitLocked places a job as parts on several workers, using the ones with
// the most threads free over its window first, in at most maxParts parts.
func (p *Pool) splitLocked(j *job.Job, now float64, nowT time.Time, maxParts int) ([]placement, bool) {
	if maxParts < 2 {
		return nil, false
	}
	start, end := window(j, now)
	type cand struct {
		ws   *workerState
		free int
	}
	var cands []cand
	total := 0
	for _, ws := range p.workers {
		if !p.aliveLocked(ws, nowT) || ws.stopping || !ws.serves(j.Task) || !p.coresFitLocked(ws, j) {
			continue
		}
		if free := ws.tl.Free(start, end); free > 0 {
			cands = append(cands, cand{ws, free})
			total += free
		}
	}
	if total < j.Threads {
		return nil, false
	}
	sort.Slice(cands, func(a, b int) bool {
		if cands[a].free != cands[b].free {
			return cands[a].free > cands[b].free
		}
		return cands[a].ws.entry.ID < cands[b].ws.entry.ID
	})
	left := j.Threads
	var sizes []int
	for _, c := range cands {
		if left == 0 {
			break
		}
		n := min(c.free, left)
		sizes = append(sizes, n)
		left -= n
	}
	if len(sizes) > maxParts {
		return nil, false
	}
	out := make([]placement, 0, len(sizes))
	for i, n := range sizes {
		part := *j
		part.Extra = append([]job.Field(nil), j.Extra...)
		part.ID = j.ID + ".p" + strconv.Itoa(i+1)
		part.Threads = n
		part.Worker = cands[i].ws.entry.ID
		of, _ := json.Marshal(PartOf{Of: j.ID, Index: i + 1, Count: len(sizes)})
		part.Set("part", of)
		if err := cands[i].ws.reserve(part.ID, start, end, n); err != nil {
			for _, pl := range out {
				pl.ws.release(pl.job.ID)
			}
			return nil, false
		}
		out = append(out, placement{job: &part, ws: cands[i].ws, start: start, end: end, of: j.ID})
	}
	return out, true
}

// describeSplit is the log line of a split.
func describeSplit(j *job.Job, pls []placement) string {
	return fmt.Sprintf("job %s (%d threads) split into %d parts", j.ID, j.Threads, len(pls))
}
