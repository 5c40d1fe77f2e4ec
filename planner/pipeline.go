package planner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/world/game"
)

// The continuous pipeline lands batches on a grid of period P. Batch k
// lands H at L = L0 + kP, W1 at L + Gap, G at L + P/2 and W2 at L + P/2 +
// Gap. The target's security is above its minimum only from an H landing
// to its W1, and from a G landing to its W2: a Gap in each half-period.
// Every job must start in the rest of the half-period, with Margin to
// spare on both sides.
//
// A job's start is chosen from its landing: the latest safe instant at
// least Slack before landing minus duration. The job carries its landing
// as endTime, and a world task lands at its endTime when its duration is
// shorter (see world/tasks): so a start up to Slack late,
// or a duration shortened by a level-up since dispatch, still lands on
// the grid.
//
// How much Gap and Margin must cover depends on where the jobs run. The
// world orders operations by the instants the workers saw (see
// world.Options.Holdback), and one worker's timer queue fires its timers
// in the order they are due, so on one worker process the order of
// landings and starts is the scheduled one even when the process stalls:
// a small Gap and Margin do. Across processes, each stalls on its own, and
// they must cover the longest stall. Durations only shorten as levels
// rise, so computing each job's for the level forecast at its earliest
// start (less a level, for the forecast's error) never makes it land late.
//
// Batches are dispatched whole, just in time: a Lead before their first
// start. Levels rise as batches land; each batch's grow and weakens are
// sized for the level predicted at its hack's landing (plus a level), from
// the exp of every batch dispatched before it.

// grid is the pipeline's landing grid, in real epoch milliseconds.
type grid struct {
	l0, period, gap, margin, slack float64
	// anyStart is set when a start need not keep clear of the windows of
	// raised security (see secSlack): every instant is safe.
	anyStart bool
}

// half is the half-period: H and G landings alternate on it.
func (g grid) half() float64 { return g.period / 2 }

// landing is when job i (0 H, 1 W1, 2 G, 3 W2) of batch k lands.
func (g grid) landing(k, i int) float64 {
	l := g.l0 + float64(k)*g.period
	switch i {
	case 1:
		return l + g.gap
	case 2:
		return l + g.half()
	case 3:
		return l + g.half() + g.gap
	}
	return l
}

// safeStart is the latest start at or before t that sees minimum security
// even when it runs up to margin late: its offset in the half-period lies
// in [gap+margin, half-margin].
func (g grid) safeStart(t float64) float64 {
	if g.anyStart {
		return t
	}
	h := g.half()
	r := math.Mod(t-g.l0, h)
	if r < 0 {
		r += h
	}
	switch {
	case r < g.gap+g.margin:
		return t - r - g.margin // the end of the previous safe window
	case r > h-g.margin:
		return t - (r - (h - g.margin))
	}
	return t
}

// tolerance is how late job i (0 H, 1 W1, 2 G, 3 W2) of a batch, starting
// at start to land at land after dur, may start: before the next window of
// raised security (unless any start is safe), and landing late by less
// than its order allows (its landing waits for land, so a start late by
// the time it has to spare lands on time; the world lands it then). Started later, it would desync
// its batch and cost a re-prep; missed, it drops only its batch (the
// chaos test's restarts made jobs a few ms late).
func (g grid) tolerance(start, land, dur float64, i int) float64 {
	// A hack or grow lands gap before its weaken; other batches' jobs
	// start a margin after a weaken.
	order := g.gap
	if i == 1 || i == 3 {
		order = g.margin
	}
	t := land - start - dur + order
	if !g.anyStart {
		h := g.half()
		r := math.Mod(start-g.l0, h)
		if r < 0 {
			r += h
		}
		t = math.Min(t, h-r)
	}
	return math.Max(t, 1e-3) // 0 would say "the worker's"
}

// valid reports whether the grid leaves room to start jobs.
func (g grid) valid() bool {
	return g.half() > g.gap+2*g.margin && g.gap > 0 && g.margin >= 0
}

// expEvent is exp the pipeline expects at a landing.
type expEvent struct {
	at  float64
	exp float64
}

// expForecast predicts the player's exp at a time from the exp observed
// and the batches dispatched since.
type expForecast struct {
	base   float64
	events []expEvent // in landing order
	sums   []float64  // sums[i]: exp of events[0..i]
}

func (f *expForecast) add(at, exp float64) {
	s := exp
	if n := len(f.sums); n > 0 {
		s += f.sums[n-1]
	}
	f.events = append(f.events, expEvent{at, exp})
	f.sums = append(f.sums, s)
}

// at is the exp expected once every landing up to t has happened.
func (f *expForecast) at(t float64) float64 {
	i := sort.Search(len(f.events), func(i int) bool { return f.events[i].at > t })
	if i == 0 {
		return f.base
	}
	return f.base + f.sums[i-1]
}

// pipelinePlan chooses the batch and the grid: the batch that earns most
// per second given both limits, the threads (a batch's thread-seconds
// over the threads free) and timing (no shorter a period than the gap and
// margins allow).
func (m *HackManager) pipelinePlan(srv *game.Server, hk game.Hacker, speed float64, free, maxJob int) (BatchPlan, float64, error) {
	minPeriod := m.minPeriod()
	pad := m.pad()
	t, err := newTarget(srv, hk.Level, hk.Mults, m.cores)
	if err != nil {
		return BatchPlan{}, 0, err
	}
	t.weakenOn(m.weakCores)
	type option struct {
		plan         BatchPlan
		rate, period float64
	}
	var options []option
	bestRate := 0.0
	n := int(math.Min(math.Ceil(1/t.pct), 100_000))
	for h := 1; h <= n; h++ {
		// A hack or grow bigger than the largest host goes in parts
		// (splitParts); only the weakens must fit one.
		p := t.plan(0, h)
		if p.Threads() > free || p.Weaken1Threads > maxJob || p.Weaken2Threads > maxJob {
			break
		}
		d := planDurations(p, speed)
		held := batchHeld(p, d, pad)
		period := math.Max(minPeriod, held.total/float64(free)/m.utilisation())
		// The average is not all: at any instant the jobs of every batch
		// in flight hold their threads at once, and a batch whose jobs
		// do not all find room is refused. When a batch is a good share
		// of the threads (a network of small hosts), the peak is what
		// binds; a fine-grained pipeline's peak is its average.
		if coarse(p, free) {
			period = math.Max(period, peakPeriod(p, d, pad, m.peakRoom(free), m.secSlack == 0))
		}
		if m.pinCores > 1 {
			// Grows and hacks hold only the pinned hosts' threads.
			pinned := float64(free) * m.pinShare
			period = math.Max(period, held.pinned/pinned/m.utilisation())
		}
		rate := p.MoneyPerBatch / period
		options = append(options, option{p, rate, period})
		bestRate = max(bestRate, rate)
	}
	if bestRate == 0 {
		return BatchPlan{}, 0, errNoThreads
	}
	for _, o := range options {
		if o.rate == bestRate {
			o.plan.Fraction = o.plan.ActualFraction
			return o.plan, o.period, nil
		}
	}
	panic("unreachable: an option has the best rate")
}

// peakLimit is the room the batches in flight at one instant may hold, at
// the pipeline's period (a zero limit holds anything).
type peakLimit struct {
	period, room float64
	// shift is whether starts move to safe instants (see grid.anyStart).
	shift bool
}

// fits reports whether batches like p, every period, fit the room.
func (l peakLimit) fits(p BatchPlan, d durations, pad float64) bool {
	return l.period <= 0 || peakThreads(p, d, pad, l.period, l.shift) <= l.room
}

// coarse reports whether a batch like p is a good share (coarseShare) of
// the threads: the pipeline's peak then exceeds its average by whole
// batches.
func coarse(p BatchPlan, free int) bool { return float64(p.Threads()) > coarseShare*float64(free) }

// peakRoom is what the jobs of the batches in flight at one instant may
// hold, of free threads: all of them unless the user set a utilisation.
// The peak counts every batch that may overlap in full (peakThreads), so
// it needs none of the headroom that the average needs (see
// DefaultUtilisation), and a batch refused at a busy instant is offered
// again smaller (see refusedRetries). On a new game (n00dles, speed 60),
// planning the peak for 93% of the 60 threads kept 57% of them busy and
// made $20.3m in the first game hour; for all of them, 69-70% and
// $27.4-28.1m (reference-880, whose batches are not coarse, is unchanged).
func (m *HackManager) peakRoom(free int) float64 {
	if m.opts.Utilisation > 0 {
		return float64(free) * m.opts.Utilisation
	}
	return float64(free)
}

// coarseShare is the share of the threads a batch must hold to be coarse.
const coarseShare = 0.05

// peakThreads is what the jobs of the batches in flight at one instant
// hold, with a batch like p every period: ceil(window/period) of each of
// its jobs overlap, where a job's window is its duration, pad, and up to
// half a period by which its start moves earlier to a safe instant.
func peakThreads(p BatchPlan, d durations, pad, period float64, shift bool) float64 {
	half := 0.0
	if shift {
		half = period / 2
	}
	// Each job's window is timed for a level below the one it lands at
	// (batchDurations): a little longer than d, which a window just
	// shorter than the period must not cross into a second.
	// (at most one more batch of it in flight).
	n := func(dur float64) float64 {
		return math.Ceil((dur + min((peakStretch-1)*dur, period) + pad + half) / period)
	}
	return n(d.h)*float64(p.HackThreads) + n(d.g)*float64(p.GrowThreads) + n(d.w)*float64(p.Weaken1Threads+p.Weaken2Threads)
}

// peakStretch is how much longer than its duration at the landing level a
// job's window may be.
const peakStretch = 1.1

// peakPeriod is the shortest period at which the jobs of the batches in
// flight at one instant hold at most room threads (see peakThreads).
func peakPeriod(p BatchPlan, d durations, pad, room float64, shift bool) float64 {
	peak := func(period float64) float64 { return peakThreads(p, d, pad, period, shift) }
	lo, hi := 0.0, d.w+pad // one batch in flight at a time at most
	if peak(hi) > room {
		return math.Inf(1) // one batch alone does not fit
	}
	for range 60 {
		mid := (lo + hi) / 2
		if peak(mid) <= room {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// minPeriod is the shortest period the gap and margins allow.
func (m *HackManager) minPeriod() float64 {
	return 2 * (float64(m.opts.Gap)/1e6 + 2*float64(m.opts.Margin)/1e6) * 1.01
}

// pad is how much longer than its duration a job holds its threads, in
// real ms: Slack, and the move of its start to a safe instant (at most a
// half-period, a quarter on average).
func (m *HackManager) pad() float64 {
	if m.secSlack > 0 { // starts are not moved to safe instants
		return float64(m.opts.Slack) / 1e6
	}
	return m.minPeriod()/4 + float64(m.opts.Slack)/1e6
}

// Security barely matters to a target whose requirement is low: a start at
// raised security lengthens a job by 2.5·req·Δsec/(2.5·req·sec + 500) of
// its duration. When the most a batch raises security (a hack's or a
// grow's landing, before its weaken's) lengthens the longest job by less
// than a quarter of Slack, which the job's early start absorbs, a start
// need not keep clear of the windows of raised security: no job's start
// moves earlier (and holds its threads idle for it), and the checks allow
// that much security at a start.

// secSlackFor is the security above minimum a start may see on srv with
// jobs of real duration d (the longest) and the given Slack, real ms.
func secSlackFor(srv *game.Server, d, slack float64) float64 {
	req := float64(max(srv.RequiredHackingSkill, 1))
	sec := game.SecurityFloor(srv)
	return slack / 4 / d * (2.5*req*sec + 500) / (2.5 * req)
}

// setSecSlack sets the security a start may see, under the lock the
// record checks read it under.
func (m *HackManager) setSecSlack(s float64) {
	m.mu.Lock()
	m.secSlack = s
	m.mu.Unlock()
}

// batchRaise is the most a batch like p raises the target's security at
// one instant: its hack's landing, or its grow's.
func batchRaise(p BatchPlan) float64 {
	return max(game.HackSecurityPerThread*float64(p.HackThreads), game.GrowSecurityPerThread*float64(p.GrowThreads))
}

// held is the real thread-milliseconds a batch holds: in all, and in its
// grow and hack (which may be pinned to some hosts, see pipeline).
type held struct{ total, pinned float64 }

func batchHeld(p BatchPlan, d durations, pad float64) held {
	pinned := float64(p.GrowThreads)*(d.g+pad) + float64(p.HackThreads)*(d.h+pad)
	return held{
		total:  pinned + float64(p.Weaken1Threads+p.Weaken2Threads)*(d.w+pad),
		pinned: pinned,
	}
}

// planDurations are a plan's real durations at a world speed.
func planDurations(p BatchPlan, speed float64) durations {
	return durations{h: p.HackTimeMs / speed, g: p.GrowTimeMs / speed, w: p.WeakenTimeMs / speed}
}

// sizeBatch chooses the threads of a batch landing at level lvLand and
// running for d: the most hack threads whose batch holds no more threads
// than the plan's did when the period was chosen, in all and on the
// pinned hosts. As levels rise, each hack thread steals more, so the grow
// after it needs more threads, and durations shorten: a batch sized as at
// the start would hold more, or fewer, threads than the period allows, and
// the pool would refuse batches, or threads would go idle.
func (m *HackManager) sizeBatch(srv *game.Server, hk game.Hacker, lvLand int, d durations, plan BatchPlan, planHackMs float64, budget held, maxJob int, peak peakLimit) (BatchPlan, error) {
	t, err := newTarget(srv, lvLand, hk.Mults, m.cores)
	if err != nil {
		return BatchPlan{}, err
	}
	t.weakenOn(m.weakCores)
	pad := m.pad()
	// As levels rise durations shorten: a hack of more threads holds them
	// for as long as the plan's did, and the batches in flight at once
	// still fit, so that the threads stay busy at the period chosen at
	// the start.
	grown := float64(plan.HackThreads) * planHackMs / max(d.h, 1e-9)
	top := max(plan.HackThreads+max(1, plan.HackThreads/4), int(grown*1.05))
	top = min(top, int(math.Ceil(1/t.pct)))
	smallest := BatchPlan{}
	for h := top; h >= 1; h-- {
		p := t.plan(0, h)
		if p.Weaken1Threads > maxJob || p.Weaken2Threads > maxJob {
			continue
		}
		c := batchHeld(p, d, pad)
		if c.total <= budget.total*(1+1e-9) && (m.pinCores <= 1 || c.pinned <= budget.pinned*(1+1e-9)) && peak.fits(p, d, pad) {
			return p, nil
		}
		smallest = p
	}
	if smallest.HackThreads == 0 {
		return BatchPlan{}, errNoThreads
	}
	// Over the budget even so (it was spent ahead): the smallest batch, whose
	// excess the next ones pay back.
	return smallest, nil
}

// pipeline runs batches continuously until a desync (it cancels the
// batches that would land wrong and returns, and the main loop re-preps)
// or until ctx ends (it lets the batches in flight land): a setup
// (newPipeline), then one step per slot of the grid (slot). A prep wave
// in flight (nil: none) lands before the first batch; srv is the target
// as the prep leaves it.
func (m *HackManager) pipeline(ctx context.Context, srv *game.Server, hk game.Hacker, speed float64, free int, prep *pool.Dispatch) error {
	return m.pipelineAfter(ctx, srv, hk, speed, free, prep, [2]float64{})
}

// pipelineAfter is pipeline, its batches landing after landings already in
// flight between after[0] and after[1] (epoch ms; zero: none), and
// starting none of their jobs among those landings.
func (m *HackManager) pipelineAfter(ctx context.Context, srv *game.Server, hk game.Hacker, speed float64, free int, prep *pool.Dispatch, after [2]float64) error {
	p, err := m.newPipeline(ctx, srv, hk, speed, free, prep, after)
	if err != nil {
		if prep != nil {
			m.awaitPrep(ctx, prep)
		}
		return err
	}
	defer func() {
		// Its batches in flight land; their records are waited for only
		// a little past their landings (see collect): a pipeline that
		// ended on a desync waited out 30 s for records lost with a
		// broker restart before the target was prepared again.
		close(p.ending)
		p.wg.Wait()
	}()
	for k := 0; ; k++ {
		if ctx.Err() != nil {
			return nil
		}
		if p.broken.Load() {
			m.repair(ctx, p.inflight)
			return nil
		}
		if err := p.slot(ctx, k); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// pipelineRun is one run of the pipeline: its plan and grid, and what
// carries from slot to slot.
type pipelineRun struct {
	m      *HackManager
	srv    *game.Server
	hk     game.Hacker
	speed  float64
	maxJob int
	// free is the threads the pipeline plans for.
	free int
	plan BatchPlan
	// peak bounds what the batches in flight at once hold.
	peak peakLimit
	// g is the grid of the slots from k0 on: slot k is its batch k-k0.
	g  grid
	k0 int
	// prev is the grid before the last re-plan, whose batches land until
	// prevEnd: a start before then keeps clear of its windows too.
	prev    *grid
	prevEnd float64
	// avoid is when a prep wave in flight lands: no job starts then.
	avoid  [2]float64
	lead   float64
	budget held
	// carry is what a batch left of its budget (a hack thread is a few
	// percent of a batch), which the next may use, so that on average
	// batches hold what the period was chosen for.
	carry held
	fc    *expForecast
	// full is the exp one thread earns (a failed hack's, a quarter).
	full     float64
	inflight *batchSet
	broken   atomic.Bool
	// ending is closed when the pipeline returns (stopped, or a desync).
	ending chan struct{}
	wg     sync.WaitGroup
}

// newPipeline plans the pipeline for the threads the pool may use: the
// batch, the grid, and where the first landing falls.
func (m *HackManager) newPipeline(ctx context.Context, srv *game.Server, hk game.Hacker, speed float64, free int, prep *pool.Dispatch, after [2]float64) (*pipelineRun, error) {
	maxJob, err := m.largestHost(ctx)
	if err != nil {
		return nil, err
	}
	// The pipeline plans for every thread the pool may use: the threads
	// free now are fewer while workers of the last phase still hold theirs.
	if all, err := m.networkThreads(ctx); err == nil {
		free = all
	}
	if m.opts.Threads > 0 {
		free = min(free, m.opts.Threads)
	}
	m.setSecSlack(0)
	plan, period, err := m.pipelinePlan(srv, hk, speed, free, maxJob)
	if err != nil {
		return nil, err
	}
	slack := float64(m.opts.Slack) / 1e6
	if s := secSlackFor(srv, plan.WeakenTimeMs/speed, slack); batchRaise(plan) <= s/2 {
		// Starts may be anywhere: plan again without moving them.
		m.setSecSlack(s)
		if plan, period, err = m.pipelinePlan(srv, hk, speed, free, maxJob); err != nil {
			return nil, err
		}
		if batchRaise(plan) > s/2 {
			m.setSecSlack(0)
			if plan, period, err = m.pipelinePlan(srv, hk, speed, free, maxJob); err != nil {
				return nil, err
			}
		}
	}
	g := grid{gap: float64(m.opts.Gap) / 1e6, margin: float64(m.opts.Margin) / 1e6, slack: slack, period: period, anyStart: m.secSlack > 0}
	if !g.valid() {
		return nil, fmt.Errorf("a period of %.2f ms leaves no start window with gap %s and margin %s", period, m.opts.Gap, m.opts.Margin)
	}
	p := &pipelineRun{
		m: m, srv: srv, hk: hk, speed: speed, maxJob: maxJob, plan: plan, free: free,
		lead:     float64(m.opts.Lead) / 1e6,
		budget:   batchHeld(plan, planDurations(plan, speed), m.pad()),
		fc:       &expForecast{base: m.exp},
		full:     game.ExpPerThread(srv, hk.Mults, true),
		inflight: newBatchSet(),
		ending:   make(chan struct{}),
	}
	// The first batches go out at once, so they need less lead than the
	// rest: nothing lands before the first weakenTime, and each ms of lead
	// adds to it. A batch is skipped when under lead/4 is left before its
	// first start, Slack before its landing minus its duration at most.
	firstLead := max(p.lead/2, g.slack+p.lead/4)
	g.l0 = job.Now() + firstLead + plan.WeakenTimeMs/speed + g.period
	if prep != nil {
		after = [2]float64{math.Inf(1), 0}
		for _, j := range prep.Jobs {
			after = [2]float64{math.Min(after[0], j.EndTime), math.Max(after[1], j.EndTime)}
		}
	}
	if after[1] > 0 {
		// The first hack lands once the prep (or what is in flight) has;
		// no job starts while its landings move security.
		g.l0 = math.Max(g.l0, after[1]+g.margin+g.gap)
		p.avoid = [2]float64{after[0] - g.margin, after[1] + g.margin}
	}
	if prep != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if !m.awaitPrep(context.WithoutCancel(ctx), prep) && !p.broken.Swap(true) {
				m.emit("desync", "the prep wave did not land whole")
			} else {
				m.setPhase("batch") // the prep has landed under the pipeline
			}
		}()
	}
	p.g = g
	if coarse(plan, free) {
		p.peak = peakLimit{period: g.period, room: m.peakRoom(free), shift: !g.anyStart}
	}
	m.emit("pipeline", fmt.Sprintf("a batch of %d/%d/%d/%d threads every %.2f ms, for %d threads", plan.HackThreads,
		plan.Weaken1Threads, plan.GrowThreads, plan.Weaken2Threads, g.period, free))
	limit := 0.0
	if best, err := BestBatch(srv, hk.Level, hk.Mults, m.cores); err == nil {
		limit = RAMLimitPerSecond(best, free)
	}
	m.mu.Lock()
	m.stats.LimitPerGameSecond = limit
	m.stats.PeriodMs = g.period
	m.stats.Plan = fmt.Sprintf("%d/%d/%d/%d", plan.HackThreads, plan.Weaken1Threads, plan.GrowThreads, plan.Weaken2Threads)
	m.mu.Unlock()
	return p, nil
}

// slot is the pipeline's step for slot k of the grid: wait until the
// batch is a lead from its first start, size it for the level at its
// landing within the budget, dispatch it, and follow its records. A batch
// the pool refuses, or that is late or fits no host, leaves its slot empty.
func (p *pipelineRun) slot(ctx context.Context, k int) error {
	m := p.m
	now := job.Now()
	p.replan(k, now)
	g, b := p.g, k-p.k0
	dur := m.batchDurations(p.srv, p.hk, p.fc, g, b, p.speed, now)
	jobs := p.batchJobs(b, dur)
	first := math.Inf(1)
	for _, j := range jobs {
		first = math.Min(first, j.StartTime)
	}
	if wait := time.Duration((first - p.lead - now) * 1e6); wait > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if p.broken.Load() {
			return nil
		}
		// Time passed: the level may have risen.
		dur = m.batchDurations(p.srv, p.hk, p.fc, g, b, p.speed, job.Now())
		jobs = p.batchJobs(b, dur)
	}
	if first < job.Now()+p.lead/4 {
		m.count(func(s *Stats) { s.Skipped++ })
		return nil // fell behind: skip the slot rather than start late
	}
	// Threads for the level at the hack's landing (plus one: growing
	// too much only costs a thread; too little desyncs), within what
	// the period allows a batch.
	lvLand := max(p.hk.Level, game.HackingLevel(p.fc.at(g.landing(b, 0)), p.hk.Mults.Hacking)+1)
	allowed := held{total: p.budget.total + p.carry.total, pinned: p.budget.pinned + p.carry.pinned}
	base := jobs
	var (
		bp   BatchPlan
		disp *pool.Dispatch
	)
	for try := 0; ; try++ {
		var err error
		bp, err = m.sizeBatch(p.srv, p.hk, lvLand, dur, p.plan, p.plan.HackTimeMs/p.speed, allowed, p.maxJob, p.peak)
		if err != nil {
			m.count(func(s *Stats) { s.Skipped++ })
			return nil // no batch fits a host at this level
		}
		jobs = slices.Clone(base)
		jobs[0].Threads, jobs[1].Threads, jobs[2].Threads, jobs[3].Threads = bp.HackThreads, bp.Weaken1Threads, bp.GrowThreads, bp.Weaken2Threads
		jobs = splitParts(jobs, max(1, p.maxJob/partsPerHost))
		// Hacks go with the grows: a hack is short and coarse (24 threads
		// for a quarter of a weakenTime), and on a small host it leaves
		// gaps too short for the weakens' long windows, which then find
		// no room: at 97% planned, small hosts ran 62% full and home
		// overflowed (248 batches refused an hour). On the big host it is
		// a sliver, and the weakens, placed smallest host first, fill the
		// small ones.
		m.pin(jobs, game.OpGrow, game.OpHack)
		// A batch is no use once its first job should have started: the
		// dispatch (which the client sends again while unanswered) ends
		// then.
		dctx, cancel := context.WithDeadline(ctx, job.Time(first-p.lead/4))
		disp, err = m.pool.DispatchJobs(dctx, placeOrder(jobs))
		cancel()
		if err != nil && ctx.Err() == nil && Unavailable(err) {
			// The pool (or the broker) is not answering: a restart. The
			// batches in flight still land, and the pipeline goes on with
			// the next slot, rather than stopping, waiting out every batch
			// in flight, and preparing again. A copy of this dispatch the
			// pool placed after all lands on its slot like the others;
			// only its money is not counted here.
			m.log.Debug().Err(err).Int("slot", k).Msg("dispatch unanswered")
			m.count(func(s *Stats) { s.Skipped++ })
			p.carry = held{}
			return nil
		}
		if errors.Is(err, pool.ErrNoCapacity) {
			m.log.Debug().Err(err).Int("slot", k).Int("try", try).Msg("batch refused")
			if try < refusedRetries && bp.HackThreads > 1 {
				// A smaller batch may fit where this one found a host
				// short of a thread: the slot is not lost whole.
				allowed = held{total: allowed.total / 2, pinned: allowed.pinned / 2}
				continue
			}
			m.count(func(s *Stats) { s.Refused++ })
			p.carry = held{}
			return nil // the threads are busy for this slot
		}
		if err != nil {
			return err
		}
		break
	}
	used := batchHeld(bp, dur, m.pad())
	// Kept within half a batch either way: a slot skipped or refused
	// gives none.
	p.carry = held{
		total:  max(-p.budget.total/2, min(allowed.total-used.total, p.budget.total/2)),
		pinned: max(-p.budget.pinned/2, min(allowed.pinned-used.pinned, p.budget.pinned/2)),
	}
	chance := game.HackChance(p.srv, game.Hacker{Level: lvLand, Mults: p.hk.Mults})
	p.fc.add(g.landing(b, 0), p.full*float64(bp.HackThreads)*(chance+(1-chance)/4))
	p.fc.add(g.landing(b, 1), p.full*float64(bp.Weaken1Threads))
	p.fc.add(g.landing(b, 2), p.full*float64(bp.GrowThreads))
	p.fc.add(g.landing(b, 3), p.full*float64(bp.Weaken2Threads))
	p.inflight.add(disp, g.landing(b, 0))
	m.count(func(s *Stats) { s.InFlight++ })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		recs, err := m.collect(context.WithoutCancel(ctx), p.ending, disp)
		p.inflight.remove(disp)
		if err == nil && !m.check(disp.Jobs, recs, true) && !p.broken.Swap(true) {
			m.emit("desync", m.Stats().LastDesync)
		}
		m.count(func(s *Stats) { s.InFlight--; s.Batches++ })
	}()
	return nil
}

// awaitPrep waits for a prep wave's records and checks them; it reports
// whether the target is left intact.
func (m *HackManager) awaitPrep(ctx context.Context, d *pool.Dispatch) bool {
	defer m.count(func(s *Stats) { s.InFlight-- })
	recs, err := m.collect(ctx, nil, d)
	if err != nil {
		m.log.Warn().Err(err).Msg("prep wave")
		return false
	}
	intact := m.check(d.Jobs, recs, false)
	m.emit("landed", "the prep wave")
	return intact
}

// replanShrink is how far durations shrink, as levels rise, before the
// pipeline plans its batch and period again: with the period fixed, each
// batch's jobs hold their threads for a shrinking share of it, and only
// the batches' growth within the peak makes up for it (on a new game,
// n00dles' hack time fell from 0.82 to 0.30 real seconds in the first
// game hour, and 40% of the threads were busy).
const replanShrink = 0.9

// replan plans the batch and the period again, from slot k on, when the
// durations at the level forecast now have shrunk by replanShrink since
// the plan. The new grid continues the old one: its first batch lands
// where the old one's slot k would have, and a start before the old
// grid's last landing keeps clear of its windows too (batchJobs), so the
// batches in flight land as planned and no slot is lost.
func (p *pipelineRun) replan(k int, now float64) {
	m := p.m
	hk := p.hk
	hk.Level = max(hk.Level, game.HackingLevel(p.fc.at(now), hk.Mults.Hacking))
	if m.durationsAt(p.srv, hk, hk.Level, p.speed).h > replanShrink*p.plan.HackTimeMs/p.speed {
		return
	}
	plan, period, err := m.pipelinePlan(p.srv, hk, p.speed, p.free, p.maxJob)
	if err != nil {
		return
	}
	g := p.g
	g.period = period
	if !g.valid() {
		return
	}
	b := k - p.k0
	g.l0 = p.g.landing(b, 0)
	old := p.g
	p.prev, p.prevEnd = &old, p.g.landing(b-1, 3)+p.g.margin
	p.g, p.k0, p.plan, p.carry = g, k, plan, held{}
	p.budget = batchHeld(plan, planDurations(plan, p.speed), m.pad())
	if coarse(plan, p.free) {
		p.peak = peakLimit{period: g.period, room: m.peakRoom(p.free), shift: !g.anyStart}
	} else {
		p.peak = peakLimit{}
	}
	m.emit("pipeline", fmt.Sprintf("level %d: a batch of %d/%d/%d/%d threads every %.2f ms", hk.Level, plan.HackThreads,
		plan.Weaken1Threads, plan.GrowThreads, plan.Weaken2Threads, g.period))
	m.mu.Lock()
	m.stats.PeriodMs = g.period
	m.stats.Plan = fmt.Sprintf("%d/%d/%d/%d", plan.HackThreads, plan.Weaken1Threads, plan.GrowThreads, plan.Weaken2Threads)
	m.mu.Unlock()
}

// batchJobs is batch b of the grid, for the plan, with durations d (see
// HackManager.batchJobs). A start before the previous grid's last landing
// also keeps clear of that grid's windows of raised security.
func (p *pipelineRun) batchJobs(b int, d durations) []job.Job {
	jobs := p.m.batchJobs(p.g, b, p.plan, d)
	for i := range jobs {
		s := jobs[i].StartTime
		// Each step moves the start earlier, to the end of a safe window
		// of one grid, or before the prep's landing; a few steps find an
		// instant safe in all.
		for range 64 {
			t := s
			if p.prev != nil && !p.g.anyStart && t < p.prevEnd {
				t = p.g.safeStart(p.prev.safeStart(t))
			}
			if t > p.avoid[0] && t < p.avoid[1] {
				t = p.g.safeStart(p.avoid[0])
			}
			if t == s {
				break
			}
			s = t
		}
		jobs[i].StartTime, jobs[i].Duration = s, jobs[i].EndTime-s
	}
	return jobs
}

// refusedRetries is how many times a slot's batch refused for want of
// threads is offered again at half the size.
const refusedRetries = 2

// placeOrder is the order the pool places a batch's jobs in: the weakens
// first, then the grow, then the hack. The pool places jobs one by one,
// each on the smallest worker with room over its window; the weakens hold
// a few threads for the longest windows, and placed after the hack's
// parts they found every host's threads taken somewhere in their window
// (on a new game, 41 of 87 n00dles batches refused for a 2-thread
// weaken), where the short parts fit around them.
func placeOrder(jobs []job.Job) []job.Job {
	rank := map[string]int{game.OpWeaken: 0, game.OpGrow: 1, game.OpHack: 2}
	out := slices.Clone(jobs)
	slices.SortStableFunc(out, func(a, b job.Job) int { return rank[a.Task] - rank[b.Task] })
	return out
}

// networkThreads is the threads every host the pool may use could hold
// (every host of the world when the pool lists none).
func (m *HackManager) networkThreads(ctx context.Context) (int, error) {
	n := 0
	if st, err := m.pool.Status(ctx); err == nil && len(st.Hosts) > 0 {
		for _, h := range st.Hosts {
			n += h.MaxThreads
		}
		return n, nil
	}
	hosts, err := m.world.RAM(ctx)
	if err != nil {
		return 0, err
	}
	for _, h := range hosts {
		n += game.ThreadsForRAM(h.MaxRAM)
	}
	return n, nil
}

// batchJobs is batch k of the grid with durations d: each job starts at
// the latest safe start Slack before its landing minus its duration,
// and ends at its landing.
func (m *HackManager) batchJobs(g grid, k int, plan BatchPlan, d durations) []job.Job {
	tasks := [4]struct {
		task    string
		threads int
		dur     float64
	}{
		{game.OpHack, plan.HackThreads, d.h},
		{game.OpWeaken, plan.Weaken1Threads, d.w},
		{game.OpGrow, plan.GrowThreads, d.g},
		{game.OpWeaken, plan.Weaken2Threads, d.w},
	}
	jobs := make([]job.Job, 4)
	for i, t := range tasks {
		land := g.landing(k, i)
		start := g.safeStart(land - t.dur - g.slack)
		// A weaken or grow that does not run breaks the batch (see
		// collect): the pool cancels the rest even while no manager runs.
		jobs[i] = job.Job{Task: t.task, Args: []any{m.opts.Target}, Threads: t.threads,
			StartTime: start, EndTime: land, Duration: land - start, Tolerance: g.tolerance(start, land, t.dur, i),
			BreaksBatch: t.task != game.OpHack}
	}
	return jobs
}

// repair cancels every batch in flight whose hack has not landed: with the
// target off its minimum security or maximum money, each would start or
// land wrong. The batches whose hack landed are left to finish, since
// their grow and weakens put money and security back. The main loop then
// re-preps. The batches landing soonest are cancelled first, several at a
// time: hundreds are in flight, and each that lands before its cancel
// lands wrong.
func (m *HackManager) repair(ctx context.Context, inflight *batchSet) {
	cutoff := job.Now() + float64(m.opts.Margin)/1e6
	var n atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, repairCancels)
	// All the cancels within repairTimeout: with the pool away (a
	// restart), each would wait its whole timeout, and a repair of 539
	// batches took 31 s. A batch not cancelled by then lands.
	rctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	for _, b := range inflight.landingAfter(cutoff) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := m.pool.Cancel(rctx, pool.CancelRequest{Batch: b, Reason: "desync: re-prepping"}); err == nil {
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	m.emit("repair", fmt.Sprintf("a batch desynced: cancelled %d batches in flight, re-prepping", n.Load()))
}

// repairCancels is how many cancel requests a repair has in flight, and
// repairTimeout how long it tries them all.
const (
	repairCancels = 16
	repairTimeout = 5 * time.Second
)

// collect gathers a batch's records. When a job other than the hack could
// not start (missed its start, or failed), the rest of the batch is
// cancelled at once: the hack starts last of the four, well before any job
// lands, so it never lands and the target stays prepped, where letting it
// land without that weaken or grow would desync every batch after it.
//
// Once stop is closed (the pipeline ended: the manager stops, or it
// re-preps after a desync; its batches land meanwhile), it waits only
// stopRecordGrace after the last landing: a record comes within
// milliseconds of its landing while the broker is there, and a manager
// stopped with the broker gone waited out recordGrace.
func (m *HackManager) collect(ctx context.Context, stop <-chan struct{}, d *pool.Dispatch) ([]job.Job, error) {
	out := make([]job.Job, 0, len(d.Jobs))
	// Every record is due soon after the batch's last landing; one that has
	// not come well after it never will (the pool or broker has gone), and
	// the manager must be able to stop.
	last := 0.0
	for _, j := range d.Jobs {
		last = math.Max(last, j.EndTime)
	}
	grace := recordGrace
	giveUp := time.NewTimer(time.Until(job.Time(last)) + grace)
	defer giveUp.Stop()
	dropped := false
	for {
		var r job.Job
		select {
		case <-stop:
			stop, grace = nil, stopRecordGrace
			giveUp.Reset(time.Until(job.Time(last)) + grace)
			continue
		case rec, ok := <-d.Records():
			if !ok {
				return out, nil
			}
			r = rec
		case <-giveUp.C:
			return out, fmt.Errorf("batch %s: %d of %d records within %s of its last landing", d.Jobs[0].Batch, len(out), len(d.Jobs), grace)
		}
		out = append(out, r)
		if dropped || r.Task == game.OpHack || (r.Status != job.StatusMissed && r.Status != job.StatusFailed) {
			continue
		}
		dropped = true
		go func() {
			reason := fmt.Sprintf("%s %s could not start (%s): the rest of its batch would land wrong", r.Task, r.ID, r.Status)
			// The pool may have cancelled them already (job.Job.BreaksBatch).
			if _, err := m.pool.Cancel(ctx, pool.CancelRequest{Batch: d.Jobs[0].Batch, Reason: reason}); err != nil && !errors.Is(err, pool.ErrNotFound) {
				m.log.Warn().Err(err).Msg("cancelling the rest of a batch")
			}
		}()
		m.emit("drop", fmt.Sprintf("%s of batch %s could not start (%s: %s): cancelled the rest of the batch", r.Task, d.Jobs[0].Batch, r.Status, strings.Join(slices.DeleteFunc([]string{r.Reason, r.Error}, func(s string) bool { return s == "" }), ": ")))
	}
}

// recordGrace is how long after a batch's last landing its records may
// take, and stopRecordGrace how long once the manager stops.
const (
	recordGrace     = 30 * time.Second
	stopRecordGrace = 3 * time.Second
)

// durations are a batch's real durations (ms) for a level.
type durations struct{ h, g, w float64 }

// batchDurations are the real durations of batch k's jobs dispatched at
// now: each for the level forecast at its earliest start (its landing less
// its duration at the level now, the slack and a half-period), less one
// for the forecast's error. Levels only rise, so a job's level at its
// start is at least that, and it lands no later than planned. A hack
// starts three quarters of a weakenTime after the batch's first weaken,
// several level-ups later on a busy pipeline: for the level now, it
// would start (and hold its threads) that much earlier than it needs to.
func (m *HackManager) batchDurations(srv *game.Server, hk game.Hacker, fc *expForecast, g grid, k int, speed, now float64) durations {
	level := func(t float64) int {
		return max(hk.Level, game.HackingLevel(fc.at(math.Max(t, now)), hk.Mults.Hacking)-1)
	}
	d := m.durationsAt(srv, hk, level(now), speed)
	start := func(i int, dur float64) float64 { return g.landing(k, i) - dur - g.slack - g.half() }
	return durations{
		h: m.durationsAt(srv, hk, level(start(0, d.h)), speed).h,
		w: m.durationsAt(srv, hk, level(start(1, d.w)), speed).w,
		g: m.durationsAt(srv, hk, level(start(2, d.g)), speed).g,
	}
}

func (m *HackManager) durationsAt(srv *game.Server, hk game.Hacker, level int, speed float64) durations {
	at := game.Prepped(srv)
	h := game.Hacker{Level: level, Mults: hk.Mults}
	hack := game.HackTimeMs(&at, h) / speed
	return durations{h: hack, g: 3.2 * hack, w: 4 * hack}
}

// batchSet is the pipeline's batches in flight, with their hacks' landings.
type batchSet struct {
	mu sync.Mutex
	m  map[*pool.Dispatch]float64
}

func newBatchSet() *batchSet { return &batchSet{m: map[*pool.Dispatch]float64{}} }

func (s *batchSet) add(d *pool.Dispatch, hackLands float64) {
	s.mu.Lock()
	s.m[d] = hackLands
	s.mu.Unlock()
}

func (s *batchSet) remove(d *pool.Dispatch) {
	s.mu.Lock()
	delete(s.m, d)
	s.mu.Unlock()
}

// landingAfter lists the batch ids whose hack lands after t, soonest
// first.
func (s *batchSet) landingAfter(t float64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	type batch struct {
		id    string
		lands float64
	}
	var bs []batch
	for d, l := range s.m {
		if l > t && len(d.Jobs) > 0 {
			bs = append(bs, batch{d.Jobs[0].Batch, l})
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].lands < bs[j].lands })
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.id
	}
	return out
}

// partsPerHost is how many parts of a hack or grow the largest host can
// hold: small parts pack among the other jobs where whole ones would find
// no host with room (on a network of small hosts, down to a thread each).
const partsPerHost = 3

// splitParts puts a batch's jobs that hold more threads than maxJob in
// near-equal parts, each on one host, that land at the same instant. The
// parts of a hack steal a little less than the whole would (each takes its
// share of what the ones before it left), so the grow sized for the whole
// restores the target; security rises and falls by as much either way.
func splitParts(jobs []job.Job, maxJob int) []job.Job {
	out := make([]job.Job, 0, len(jobs))
	for _, j := range jobs {
		if (j.Task != game.OpHack && j.Task != game.OpGrow) || j.Threads <= maxJob || maxJob < 1 {
			out = append(out, j)
			continue
		}
		n := (j.Threads + maxJob - 1) / maxJob
		for i := range n {
			part := j
			part.Threads = j.Threads/n + btoi(i < j.Threads%n)
			out = append(out, part)
		}
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
