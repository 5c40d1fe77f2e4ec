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
	"github.com/hvmind/hvmind/world"
)

// Splitting a job over several workers runs the same threads as several
// smaller jobs over the same window. It changes nothing for sleep, and
// nothing for weaken (security falls by the same amount per thread, floor
// aside). For hack and grow the parts land one after the other on a target
// the earlier parts have changed: n hacks of t/n threads steal
// 1 - (1 - p*t/n)^n of the money rather than p*t, and n grows of t/n threads
// add their threads to the money n times before multiplying. Such a job is
// split only into as many parts as keep that change of effect within
// SplitTolerance, computed with the world's formulas on the target now.

// unlimitedParts is the part limit of tasks that split exactly.
const unlimitedParts = math.MaxInt32

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
		limits[i] = p.splitLimit(ctx, &jobs[i])
	}
	return limits
}

func (p *Pool) splitLimit(ctx context.Context, j *job.Job) int {
	if !p.opts.Split {
		return 1
	}
	switch j.Task {
	case "sleep", world.OpWeaken:
		return unlimitedParts
	case world.OpHack, world.OpGrow:
	default:
		return 1
	}
	target, ok := j.StringArg(0)
	if !ok || p.opts.World == nil || p.opts.SplitTolerance <= 0 {
		return 1
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	srv, err := p.opts.World.Server(cctx, target)
	if err != nil {
		return 1
	}
	pl, err := p.opts.World.Player(cctx)
	if err != nil {
		return 1
	}
	h := pl.Player().Hacker()
	best := 1
	for n := 2; n <= j.Threads && n <= 64; n++ {
		var diff float64
		if j.Task == world.OpHack {
			diff = hackSplitChange(world.HackPercent(&srv, h), j.Threads, n)
		} else {
			diff = growSplitChange(&srv, h, j.Threads, n)
		}
		if diff > p.opts.SplitTolerance {
			break
		}
		best = n
	}
	return best
}

// hackSplitChange is the relative change of the fraction stolen when a
// hack of t threads at pct per thread is split into n near-equal parts.
func hackSplitChange(pct float64, t, n int) float64 {
	whole := math.Min(1, pct*float64(t))
	if whole == 0 {
		return 0
	}
	left := 1.0
	for _, part := range parts(t, n) {
		left *= 1 - math.Min(1, pct*float64(part))
	}
	return math.Abs(whole-(1-left)) / whole
}

// growSplitChange is the relative change of the money a grow of t threads
// adds when split into n near-equal parts, on the target as it is now.
func growSplitChange(s *world.Server, h world.Hacker, t, n int) float64 {
	whole := world.GrowMoney(s, h, s.MoneyAvailable, t, 1) - s.MoneyAvailable
	if whole <= 0 {
		return 0
	}
	money := s.MoneyAvailable
	for _, part := range parts(t, n) {
		money = world.GrowMoney(s, h, money, part, 1)
	}
	return math.Abs(whole-(money-s.MoneyAvailable)) / whole
}

// parts divides t into n near-equal parts.
func parts(t, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = t / n
		if i < t%n {
			out[i]++
		}
	}
	return out
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
