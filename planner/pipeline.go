package planner

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/world"
)

// The continuous pipeline lands a batch every period P: H at L, W1 at L+P/4,
// G at L+P/2, W2 at L+3P/4, L = L0 + kP. Security is above minimum from each
// H landing to its W1 and from each G landing to its W2, so a job must START
// in the other half of the period: [P/4, P/2) or [3P/4, P) after a grid
// point. Start times are landing minus duration, and durations are fixed by
// the formulas, so whether a batch's four starts fall in good windows depends
// only on the durations modulo P: the pipeline searches a period for which
// they do. Levels rise as batches land; each batch's durations are computed
// for the level predicted at each job's start and its effects for the level
// predicted at its landing; a batch whose starts no longer fit the grid is
// skipped, and after a run of skips the pipeline drains and starts a new
// grid.

// goodStart reports whether a start at offset off (mod P) from the grid sees
// minimum security. The last half of each good window is kept free: a task
// asks the world for its duration a little after it starts (a request, queued
// behind the world's writes), and that must still fall in the window.
func goodStart(off, p float64) bool {
	r := math.Mod(off, p)
	if r < 0 {
		r += p
	}
	q := p / 4
	return (r >= q && r < 1.5*q) || (r >= 3*q && r < 3.5*q)
}

// durations are a batch's real durations (ms) for a level.
type durations struct{ h, g, w float64 }

func (m *HackManager) durationsAt(srv *world.Server, hk world.Hacker, level int, speed float64) durations {
	at := world.Prepped(srv)
	h := world.Hacker{Level: level, Mults: hk.Mults}
	hack := world.HackTimeMs(&at, h) / speed
	return durations{h: hack, g: 3.2 * hack, w: 4 * hack}
}

// fits reports whether a batch landing H at l starts every job in a good
// window of the grid from l0 with period p.
func fits(d durations, l, l0, p float64) bool {
	q := p / 4
	return goodStart(l-d.h-l0, p) && goodStart(l+q-d.w-l0, p) &&
		goodStart(l+2*q-d.g-l0, p) && goodStart(l+3*q-d.w-l0, p)
}

// solvePeriod finds the shortest period from 4·gap up for which a batch
// with durations d fits the grid, stepping by 1% of gap.
func solvePeriod(d durations, gap float64) (float64, bool) {
	for p := 4 * gap; p <= 64*gap; p += gap / 100 {
		if fits(d, 0, 0, p) {
			return p, true
		}
	}
	return 0, false
}

// pipeline runs batches continuously until it must start a new grid (or
// ctx ends), then lets the batches in flight land.
func (m *HackManager) pipeline(ctx context.Context, srv *world.Server, hk world.Hacker, speed float64, free int) error {
	maxJob, err := m.largestHost(ctx)
	if err != nil {
		return err
	}
	plan, err := BestBatchWithin(srv, hk.Level, hk.Mults, m.opts.Cores, free, maxJob)
	if errors.Is(err, ErrNoThreads) {
		return errNoThreads
	}
	if err != nil {
		return err
	}
	gap := float64(m.opts.Gap) / 1e6
	d0 := m.durationsAt(srv, hk, hk.Level, speed)
	p, ok := solvePeriod(d0, gap)
	if !ok {
		return errors.New("no batch period fits these durations")
	}
	q := p / 4
	full := world.ExpPerThread(srv, hk.Mults, true)
	perBatch := full*float64(plan.Weaken1Threads+plan.GrowThreads+plan.Weaken2Threads) +
		full*float64(plan.HackThreads)*(plan.Chance+(1-plan.Chance)/4)
	exp0 := m.exp
	lead := float64(m.opts.Lead) / 1e6
	l0 := job.Now() + lead + d0.w
	// landed(t) is how many of the dispatched batches have landed by t.
	var lands []float64 // W2 landings of the dispatched batches, in order
	landed := func(t float64) float64 { return float64(sort.SearchFloat64s(lands, t+1e-9)) }
	levelAt := func(t float64) int {
		return max(hk.Level, world.HackingLevel(exp0+landed(t)*perBatch, hk.Mults.Hacking))
	}
	m.emit("pipeline", "a batch every "+time.Duration(p*1e6).String())
	var wg sync.WaitGroup
	defer wg.Wait()
	// A desync or a missed job leaves the target off its minimum security
	// or maximum money, and every batch after it would start wrong: the
	// pipeline stops dispatching, lets what is in flight land and goes back
	// to the main loop, which re-preps.
	var broken atomic.Bool
	skips := 0
	for k := 0; ctx.Err() == nil; k++ {
		if broken.Load() {
			m.emit("repair", "a batch desynced: draining, then re-prepping")
			return nil
		}
		l := l0 + float64(k)*p
		// Durations of each job, for the level when it starts.
		dW := m.durationsAt(srv, hk, levelAt(l+q-d0.w), speed)
		dH := m.durationsAt(srv, hk, levelAt(l-d0.h), speed)
		dG := m.durationsAt(srv, hk, levelAt(l+2*q-d0.g), speed)
		d := durations{h: dH.h, g: dG.g, w: dW.w}
		earliest := l + q - d.w
		if wait := time.Duration((earliest - lead - job.Now()) * 1e6); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		if !fits(d, l, l0, p) {
			if skips++; skips > 50 {
				m.emit("regrid", "levels moved the durations off the grid")
				return nil
			}
			continue
		}
		skips = 0
		bp := plan
		if lv := levelAt(l); lv != hk.Level {
			if lp, err := PlanAtLevel(srv, lv, hk.Mults, m.opts.Cores, plan.HackThreads); err == nil {
				bp.Weaken1Threads, bp.GrowThreads, bp.Weaken2Threads = lp.Weaken1Threads, lp.GrowThreads, lp.Weaken2Threads
			}
		}
		jobs := []job.Job{
			landing{world.OpHack, bp.HackThreads, l, d.h}.job(m.opts.Target),
			landing{world.OpWeaken, bp.Weaken1Threads, l + q, d.w}.job(m.opts.Target),
			landing{world.OpGrow, bp.GrowThreads, l + 2*q, d.g}.job(m.opts.Target),
			landing{world.OpWeaken, bp.Weaken2Threads, l + 3*q, d.w}.job(m.opts.Target),
		}
		if jobs[1].StartTime < job.Now() {
			continue // fell behind: skip the slot
		}
		disp, err := m.pool.DispatchJobs(ctx, jobs)
		if errors.Is(err, pool.ErrNoCapacity) {
			continue // RAM is full for this slot
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		lands = append(lands, l+3*q)
		m.mu.Lock()
		m.stats.InFlight++
		m.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := disp.Wait(context.WithoutCancel(ctx))
			if err == nil && !m.check(disp.Jobs, recs, true) {
				broken.Store(true)
			}
			m.mu.Lock()
			m.stats.InFlight--
			m.stats.Batches++
			m.mu.Unlock()
		}()
	}
	return nil
}
