package planner

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Every job of every batch on the grid starts at least Margin away from
// the windows of raised security (from an H or G landing to its weaken's,
// plus Margin), and at least Margin before its landing minus its
// duration, whatever the durations.
func TestGridStartsEveryJobSafely(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		g    grid
	}{
		{name: "tight", g: grid{l0: 1000, period: 2 * (5 + 2*5) * 1.01, gap: 5, margin: 5, slack: 5}},
		{name: "roomy", g: grid{l0: 1000, period: 80, gap: 5, margin: 5, slack: 20}},
		{name: "fast world", g: grid{l0: 1000, period: 3, gap: 0.5, margin: 0.25, slack: 20}},
	}
	m := &HackManager{opts: ManagerOptions{Target: "t"}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !tc.g.valid() {
				t.Fatalf("grid %+v is not valid", tc.g)
			}
			half := tc.g.half()
			for _, hack := range []float64{1000, 1117.3, 2345.6, 50} {
				d := durations{h: hack, g: 3.2 * hack, w: 4 * hack}
				for k := range 40 {
					jobs := m.batchJobs(tc.g, k, BatchPlan{HackThreads: 1, Weaken1Threads: 1, GrowThreads: 1, Weaken2Threads: 1}, d)
					durs := []float64{d.h, d.w, d.g, d.w}
					for i, j := range jobs {
						if j.EndTime != tc.g.landing(k, i) {
							t.Fatalf("batch %d job %d ends at %v, want its landing %v", k, i, j.EndTime, tc.g.landing(k, i))
						}
						if j.StartTime > j.EndTime-durs[i]-tc.g.slack+1e-9 {
							t.Errorf("batch %d job %d starts %v, later than landing - duration - slack", k, i, j.StartTime)
						}
						r := math.Mod(j.StartTime-tc.g.l0, half)
						if r < 0 {
							r += half
						}
						if r < tc.g.gap+tc.g.margin-1e-9 || r > half-tc.g.margin+1e-9 {
							t.Errorf("batch %d job %d starts at offset %.3f of a %.3f half-period: within a margin of raised security", k, i, r, half)
						}
						if pad := j.EndTime - j.StartTime - durs[i]; pad > half+tc.g.slack+1e-9 {
							t.Errorf("batch %d job %d holds its threads %.3f ms longer than it runs", k, i, pad)
						}
						// Started as late as its tolerance, it still
						// starts before the next raised security, and
						// lands before the next landing.
						order := tc.g.gap
						if i == 1 || i == 3 {
							order = tc.g.margin
						}
						if tol := j.Tolerance; tol < tc.g.margin-1e-9 || r+tol > half+1e-9 || j.StartTime+tol+durs[i] > j.EndTime+order+1e-9 {
							t.Errorf("batch %d job %d (offset %.3f) may start %.3f ms late: past the next window or its order", k, i, r, tol)
						}
					}
				}
			}
		})
	}
	if (grid{period: 20, gap: 5, margin: 5}).valid() {
		t.Error("a grid with no room to start a job is valid")
	}
}

// After a re-plan, every job of the new grid that starts before the old
// grid's last landing also keeps clear of the old grid's windows of raised
// security: the old grid's batches are still landing.
func TestReplannedGridStartsClearOfTheOldOne(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		oldPeriod float64
		newPeriod float64
	}{
		{name: "shorter", oldPeriod: 80, newPeriod: 61.7},
		{name: "much shorter", oldPeriod: 80, newPeriod: 31.1},
		{name: "tight", oldPeriod: 40, newPeriod: 2 * (5 + 2*5) * 1.01},
	}
	m := &HackManager{opts: ManagerOptions{Target: "t"}}
	safeIn := func(g grid, t float64) bool {
		r := math.Mod(t-g.l0, g.half())
		if r < 0 {
			r += g.half()
		}
		return r >= g.gap+g.margin-1e-9 && r <= g.half()-g.margin+1e-9
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			old := grid{l0: 1000, period: tc.oldPeriod, gap: 5, margin: 5, slack: 20}
			const k = 30 // the first slot of the new grid
			g := old
			g.period, g.l0 = tc.newPeriod, old.landing(k, 0)
			p := &pipelineRun{m: m, g: g, k0: k, prev: &old, prevEnd: old.landing(k-1, 3) + old.margin,
				plan: BatchPlan{HackThreads: 1, Weaken1Threads: 1, GrowThreads: 1, Weaken2Threads: 1}}
			for _, hack := range []float64{100, 117.3, 234.5} {
				d := durations{h: hack, g: 3.2 * hack, w: 4 * hack}
				for b := range 20 {
					for i, j := range p.batchJobs(b, d) {
						if j.EndTime != g.landing(b, i) {
							t.Fatalf("batch %d job %d ends at %v, want %v", b, i, j.EndTime, g.landing(b, i))
						}
						if !safeIn(g, j.StartTime) {
							t.Errorf("batch %d job %d starts at %.3f, in the new grid's raised security", b, i, j.StartTime)
						}
						if j.StartTime < p.prevEnd && !safeIn(old, j.StartTime) {
							t.Errorf("batch %d job %d starts at %.3f, in the old grid's raised security", b, i, j.StartTime)
						}
						if j.Duration != j.EndTime-j.StartTime {
							t.Errorf("batch %d job %d: duration %v, start to end %v", b, i, j.Duration, j.EndTime-j.StartTime)
						}
					}
				}
			}
		})
	}
}

// The pool places a batch's weakens first (their windows are the longest),
// and the record checks still read the batch in the order it lands.
func TestPlaceOrderPutsWeakensFirst(t *testing.T) {
	t.Parallel()
	jobs := splitParts([]job.Job{
		{ID: "h", Task: game.OpHack, Threads: 7, EndTime: 10},
		{ID: "w1", Task: game.OpWeaken, Threads: 1, EndTime: 11},
		{ID: "g", Task: game.OpGrow, Threads: 5, EndTime: 20},
		{ID: "w2", Task: game.OpWeaken, Threads: 1, EndTime: 21},
	}, 3)
	var got []string
	for _, j := range placeOrder(jobs) {
		got = append(got, fmt.Sprintf("%s:%d", j.ID, j.Threads))
	}
	want := []string{"w1:1", "w2:1", "g:3", "g:2", "h:3", "h:2", "h:2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("place order %v, want %v", got, want)
	}
}

// referenceRho is the community test's network, target and player.
func referenceRho(t *testing.T) (*game.Scenario, *game.Server, game.Hacker) {
	t.Helper()
	sc := mustScenario(t, "reference-880")
	return sc, mustServer(t, sc, "rho-construction"), sc.Player.Hacker()
}

// timing is a pipeline at 60x on reference-880's rho-construction whose
// first batch's first weaken starts about 200 ms after now.
type timing struct {
	m         *HackManager
	srv       *game.Server
	hk        game.Hacker
	g         grid
	now, weak float64 // weak: the weakenTime in real ms
	exp       float64 // the player's hacking exp
}

const timingSpeed = 60

func newTiming(t *testing.T) timing {
	sc, srv, hk := referenceRho(t)
	tm := timing{m: &HackManager{opts: ManagerOptions{Target: srv.Hostname}}, srv: srv, hk: hk, exp: sc.Player.HackingExp,
		g: grid{period: 11.2, gap: 2, margin: 1, slack: 50}, now: 10_000, weak: game.WeakenTimeMs(srv, hk) / timingSpeed}
	tm.g.l0 = tm.now + 200 + tm.weak + tm.g.slack + tm.g.period
	return tm
}

// lateJob times batch k with the forecast fc as the pipeline does, and
// describes the first job that would land into its slack at the level
// its start sees (levelAt), less one, never below the level observed.
func (tm timing) lateJob(fc *expForecast, k int, levelAt func(float64) int) string {
	d := tm.m.batchDurations(tm.srv, tm.hk, fc, tm.g, k, timingSpeed, tm.now)
	plan := BatchPlan{HackThreads: 1, Weaken1Threads: 1, GrowThreads: 1, Weaken2Threads: 1}
	for i, j := range tm.m.batchJobs(tm.g, k, plan, d) {
		level := max(tm.hk.Level, levelAt(j.StartTime)-1)
		real := tm.m.durationsAt(tm.srv, tm.hk, level, timingSpeed)
		if lands := j.StartTime + []float64{real.h, real.w, real.g, real.w}[i]; lands > j.EndTime-tm.g.slack+1e-9 {
			return fmt.Sprintf("batch %d job %d (%s) starts at %.2f and lands %.3f ms into its slack at level %d",
				k, i, j.Task, j.StartTime, lands-(j.EndTime-tm.g.slack), level)
		}
	}
	return ""
}

// Each job of a batch is timed for the level forecast at its start, one
// level lower for the forecast's error (never below the level observed):
// with level-ups due between the first weaken's start and the hack's, the
// hack is shorter than for the level now, and every job still lands on
// time at the level its start will see, or one below.
func TestBatchDurationsFollowTheLevelAtEachStart(t *testing.T) {
	t.Parallel()
	tm := newTiming(t)
	hk := tm.hk
	// Three levels' worth of exp lands while the batch's weakens run.
	fc := &expForecast{base: tm.exp}
	for lv := hk.Level + 1; lv <= hk.Level+3; lv++ {
		fc.add(tm.now+tm.weak*float64(lv-hk.Level)/5, game.ExpForLevel(lv, hk.Mults.Hacking)-fc.at(math.Inf(1))+1)
	}
	levelAt := func(t float64) int { return game.HackingLevel(fc.at(t), hk.Mults.Hacking) }
	if levelAt(tm.now) != hk.Level || levelAt(tm.now+tm.weak) != hk.Level+3 {
		t.Fatalf("forecast levels %d → %d, want %d → %d", levelAt(tm.now), levelAt(tm.now+tm.weak), hk.Level, hk.Level+3)
	}
	d := tm.m.batchDurations(tm.srv, hk, fc, tm.g, 0, timingSpeed, tm.now)
	if atNow := tm.m.durationsAt(tm.srv, hk, hk.Level, timingSpeed); !(d.h < atNow.h) || d.g > atNow.g || d.w != atNow.w {
		t.Errorf("durations %+v; for the level now %+v: want the hack's shorter, the weakens' the same", d, atNow)
	}
	if late := tm.lateJob(fc, 0, levelAt); late != "" {
		t.Error(late)
	}
}

// Wherever a level-up falls, at a job's start, just before or just after
// it (a start moved earlier into a safe window included), no job of a
// batch is timed shorter than its duration at the level its start will
// see, less one.
func TestBatchDurationsWhereverALevelUpFalls(t *testing.T) {
	t.Parallel()
	tm := newTiming(t)
	hk := tm.hk
	exp := func(lv int) float64 { return game.ExpForLevel(lv, hk.Mults.Hacking) + 1 }
	for up := tm.now; up < tm.now+tm.weak; up += 0.25 {
		// One level up at once (so that less one is still the level
		// observed), and the next at up.
		fc := &expForecast{base: exp(hk.Level + 1)}
		fc.add(up, exp(hk.Level+2)-exp(hk.Level+1))
		levelAt := func(t float64) int { return game.HackingLevel(fc.at(t), hk.Mults.Hacking) }
		for k := range 3 {
			if late := tm.lateJob(fc, k, levelAt); late != "" {
				t.Fatalf("level-up at %.2f: %s", up, late)
			}
		}
	}
}

// The forecast sums the exp of every landing up to a time.
func TestExpForecast(t *testing.T) {
	t.Parallel()
	f := &expForecast{base: 100}
	f.add(10, 1)
	f.add(20, 2)
	f.add(30, 4)
	for _, tc := range []struct{ at, want float64 }{{5, 100}, {10, 101}, {25, 103}, {30, 107}, {99, 107}} {
		if got := f.at(tc.at); got != tc.want {
			t.Errorf("exp at %v = %v, want %v", tc.at, got, tc.want)
		}
	}
}

// Threads go to the best earner first, each up to what its pipeline can
// keep busy; one left less than a batch gets none.
func TestAllocateThreads(t *testing.T) {
	t.Parallel()
	cands := []Share{
		{Target: "small", IncomePerThreadSecond: 5, Capacity: 100, Threads: 10},
		{Target: "best", IncomePerThreadSecond: 9, Capacity: 600, Threads: 50},
		{Target: "hungry", IncomePerThreadSecond: 1, Capacity: 1000, Threads: 400},
	}
	got := AllocateThreads(cands, 1000)
	want := []Share{{Target: "best", Threads: 600}, {Target: "small", Threads: 100}}
	if len(got) != len(want) {
		t.Fatalf("shares %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Target != want[i].Target || got[i].Threads != want[i].Threads {
			t.Fatalf("shares %+v, want %+v", got, want)
		}
	}
	if got := AllocateThreads(cands, 30); len(got) != 1 || got[0].Target != "small" || got[0].Threads != 30 {
		t.Errorf("30 threads: %+v, want all to small (best needs 50 for a batch)", got)
	}
}

// A batch one of whose jobs could not start is dropped whole: when its
// hack and grow never landed, the target is untouched and needs no
// re-prep; when they landed without it, it does. Both count as desyncs.
func TestCheckDroppedBatch(t *testing.T) {
	t.Parallel()
	sent := []job.Job{
		{ID: "h", Task: game.OpHack}, {ID: "w1", Task: game.OpWeaken},
		{ID: "g", Task: game.OpGrow}, {ID: "w2", Task: game.OpWeaken},
	}
	landed := func(id, task string, seq uint64) job.Job {
		res, _ := json.Marshal(world.Result{Seq: seq, SecurityAtStart: 10, MoneyBefore: 100})
		return job.Job{ID: id, Task: task, Status: job.StatusDone, Result: res}
	}
	st := func(id, task string, s job.Status) job.Job { return job.Job{ID: id, Task: task, Status: s} }
	for _, tc := range []struct {
		name   string
		recs   []job.Job
		intact bool
	}{
		{"weaken missed, rest cancelled", []job.Job{st("w1", game.OpWeaken, job.StatusMissed),
			st("h", game.OpHack, job.StatusCancelled), st("g", game.OpGrow, job.StatusCancelled), st("w2", game.OpWeaken, job.StatusCancelled)}, true},
		{"grow failed, weakens landed", []job.Job{st("g", game.OpGrow, job.StatusFailed),
			st("h", game.OpHack, job.StatusCancelled), landed("w1", game.OpWeaken, 1), landed("w2", game.OpWeaken, 2)}, true},
		{"weaken missed, hack landed", []job.Job{st("w1", game.OpWeaken, job.StatusMissed),
			landed("h", game.OpHack, 1), st("g", game.OpGrow, job.StatusCancelled), st("w2", game.OpWeaken, job.StatusCancelled)}, false},
		{"hack missed, rest landed", []job.Job{st("h", game.OpHack, job.StatusMissed),
			landed("w1", game.OpWeaken, 1), landed("g", game.OpGrow, 2), landed("w2", game.OpWeaken, 3)}, true},
		{"weaken missed, hack cancelled after it landed", []job.Job{st("w1", game.OpWeaken, job.StatusMissed),
			func() job.Job { j := landed("h", game.OpHack, 1); j.Status = job.StatusCancelled; return j }(),
			st("g", game.OpGrow, job.StatusCancelled), st("w2", game.OpWeaken, job.StatusCancelled)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := &HackManager{opts: ManagerOptions{Target: "t"}}
			m.stats.MinSec, m.stats.MoneyMax = 10, 100
			if got := m.check(sent, tc.recs, true); got != tc.intact {
				t.Errorf("check = %v, want %v", got, tc.intact)
			}
			if m.stats.Desyncs != 1 {
				t.Errorf("desyncs = %d, want 1", m.stats.Desyncs)
			}
		})
	}
}

// A desync's report gives each job's start and end against its schedule,
// and none for a job that never started.
func TestDescribeBatch(t *testing.T) {
	t.Parallel()
	sent := []job.Job{
		{ID: "h", Task: game.OpHack, Threads: 24, StartTime: 1_000, EndTime: 2_000},
		{ID: "w1", Task: game.OpWeaken, Threads: 1, StartTime: 900, EndTime: 2_002},
	}
	recs := map[string]job.Job{
		"h":  {ID: "h", Status: job.StatusDone, ActualStartTime: 1_000.25, ActualEndTime: 2_000.5},
		"w1": {ID: "w1", Status: job.StatusMissed},
	}
	sent = append(sent, job.Job{ID: "g", Task: game.OpGrow, Threads: 49})
	got := describeBatch(sent, recs)
	want := "hack×24 done start +0.250 ms end +0.500 ms; weaken×1 missed; grow×49 no record"
	if got != want {
		t.Errorf("describeBatch = %q, want %q", got, want)
	}
}

// A hack whose cancel came after it landed, recorded cancelled with its
// result, or split with a part that landed, moved the target.
func TestMayHaveLanded(t *testing.T) {
	t.Parallel()
	withParts := func(parts string) job.Job {
		j := job.Job{ID: "h", Task: game.OpHack, Status: job.StatusCancelled}
		j.Set("parts", json.RawMessage(parts))
		return j
	}
	for _, tc := range []struct {
		name string
		r    job.Job
		want bool
	}{
		{"cancelled before", job.Job{Status: job.StatusCancelled}, false},
		{"cancelled with a result", job.Job{Status: job.StatusCancelled, Result: json.RawMessage(`{"seq":3}`)}, true},
		{"parts none landed", withParts(`[{"id":"h.p1","task":"hack","threads":1,"status":"cancelled"}]`), false},
		{"a part landed", withParts(`[{"id":"h.p1","task":"hack","threads":1,"status":"cancelled"},{"id":"h.p2","task":"hack","threads":1,"status":"done"}]`), true},
		{"parts unreadable", withParts(`"?"`), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := mayHaveLanded(tc.r); got != tc.want {
				t.Errorf("mayHaveLanded = %v, want %v", got, tc.want)
			}
		})
	}
}

// As levels rise, a batch sized for its landing's level holds no more
// threads than the period was chosen for, in all and on the pinned hosts
// (grows and hacks), and uses
// nearly all of that: the pool refuses no batch for it, and leaves few
// threads idle.
func TestSizeBatchKeepsWithinThePlansThreads(t *testing.T) {
	t.Parallel()
	_, srv, hk := referenceRho(t)
	const speed = 60
	m := &HackManager{opts: ManagerOptions{Gap: 2e6, Margin: 1e6, Slack: 30e6, Utilisation: 0.95},
		cores: 3, weakCores: 1, pinCores: 3, pinShare: 0.915}
	plan, _, err := m.pipelinePlan(srv, hk, speed, 20464, 18724)
	if err != nil {
		t.Fatal(err)
	}
	budget := batchHeld(plan, planDurations(plan, speed), m.pad())
	for _, level := range []int{hk.Level, hk.Level + 5, hk.Level + 25, hk.Level + 100} {
		d := m.durationsAt(srv, hk, level, speed)
		p, err := m.sizeBatch(srv, hk, level+1, d, plan, plan.HackTimeMs/speed, budget, 18724, peakLimit{})
		if err != nil {
			t.Fatal(err)
		}
		got := batchHeld(p, d, m.pad())
		if got.total > budget.total || got.pinned > budget.pinned {
			t.Errorf("level %d: batch %d/%d/%d/%d holds %.0f thread-ms (pinned %.0f), over the plan's %.0f (%.0f)",
				level, p.HackThreads, p.Weaken1Threads, p.GrowThreads, p.Weaken2Threads, got.total, got.pinned, budget.total, budget.pinned)
		}
		// One more hack thread would not fit.
		if got.total < 0.9*budget.total && got.pinned < 0.9*budget.pinned {
			t.Errorf("level %d: batch %d/%d/%d/%d holds %.0f thread-ms of %.0f", level, p.HackThreads, p.Weaken1Threads, p.GrowThreads, p.Weaken2Threads, got.total, budget.total)
		}
		t.Logf("level %d: %d/%d/%d/%d, %.1f%% of the plan's thread-ms", level, p.HackThreads, p.Weaken1Threads, p.GrowThreads, p.Weaken2Threads, 100*got.total/budget.total)
	}
}

func TestUtilisationMustBeAShare(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		u      float64
		pinned bool
		want   float64 // 0: refused
	}{
		{0, false, DefaultUtilisation},
		{0, true, PinnedUtilisation},
		{0.95, false, 0.95},
		{0.95, true, 0.95},
		{1, false, 1},
		{1.5, false, 0},
		{-0.2, false, 0},
	} {
		m, err := NewManager(nil, nil, ManagerOptions{Target: "n00dles", Utilisation: tc.u})
		if err == nil && tc.pinned {
			m.pinCores = 3
		}
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("utilisation %v accepted, want an error", tc.u)
		case tc.want != 0 && err != nil:
			t.Errorf("utilisation %v: %v", tc.u, err)
		case tc.want != 0 && m.utilisation() != tc.want:
			t.Errorf("utilisation %v (pinned %v) planned as %v, want %v", tc.u, tc.pinned, m.utilisation(), tc.want)
		}
	}
}
