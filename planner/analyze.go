// Package planner holds HVMind's HackPlanner maths: HWGW batch plans for a
// prepped target, profit estimates and target ranking.
package planner

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/hvmind/hvmind/world/game"
)

// Errors PlanBatch wraps when a target cannot be batched (besides
// game.ErrNoRoot and game.ErrLevelTooLow).
var (
	// ErrNoThreads means no batch fits the threads available.
	ErrNoThreads = errors.New("not enough threads for a batch")
	// ErrNoMoney means the target has no money to steal (moneyMax 0).
	ErrNoMoney = errors.New("no money to steal")
	// ErrNoHackPercent means a hack thread would steal nothing.
	ErrNoHackPercent = errors.New("a hack thread steals nothing")
)

// DefaultFractions returns the hack fractions Analyze plans when given none.
func DefaultFractions() []float64 {
	return []float64{0.01, 0.05, 0.1, 0.25, 0.5}
}

// BatchPlan is the thread maths of one HWGW batch (hack, weaken, grow,
// weaken) against a prepped target: security at its minimum, money at its max.
type BatchPlan struct {
	// Fraction is the fraction of moneyMax asked for.
	Fraction float64 `json:"fraction"`
	// ActualFraction is what the hack threads take: HackThreads * hackPercent (at most 1).
	ActualFraction float64 `json:"actualFraction"`
	// Cores is the core count of the host the grows and weakens run on.
	Cores int `json:"cores"`
	// HackThreads is floor(Fraction / hackPercent), at least 1.
	HackThreads int `json:"hackThreads"`
	// Weaken1Threads cancels the hack's security increase.
	Weaken1Threads int `json:"weaken1Threads"`
	// GrowThreads grows the money back from moneyMax*(1-ActualFraction) to moneyMax.
	GrowThreads int `json:"growThreads"`
	// Weaken2Threads cancels the grow's security increase.
	Weaken2Threads int `json:"weaken2Threads"`
	// HackTimeMs, GrowTimeMs and WeakenTimeMs are the durations at minimum security.
	HackTimeMs   float64 `json:"hackTimeMs"`
	GrowTimeMs   float64 `json:"growTimeMs"`
	WeakenTimeMs float64 `json:"weakenTimeMs"`
	// Chance is the hack's success chance at minimum security.
	Chance float64 `json:"chance"`
	// MoneyPerBatch is the average money a batch earns: Chance * ActualFraction * moneyMax.
	MoneyPerBatch float64 `json:"moneyPerBatch"`
	// ThreadSeconds is h*hackTime + g*growTime + (w1+w2)*weakenTime, in seconds:
	// what a batch costs when each job holds its threads only while it runs.
	ThreadSeconds float64 `json:"threadSeconds"`
	// IncomePerThreadSecond is MoneyPerBatch / ThreadSeconds.
	IncomePerThreadSecond float64 `json:"incomePerThreadSecond"`
}

// Threads is the batch's total thread count.
func (p BatchPlan) Threads() int {
	return p.HackThreads + p.Weaken1Threads + p.GrowThreads + p.Weaken2Threads
}

// target holds the per-target values every plan of a target shares.
type target struct {
	s       game.Server // prepped copy
	h       game.Hacker
	cores   int // of the grows' host (and the weakens', unless weakenOn)
	pct     float64
	chance  float64
	hackMs  float64
	growMs  float64
	weakMs  float64
	growK   float64
	weakPer float64
}

// newTarget checks that s can be batched by a player of the given level and
// mults, with grows and weakens on a host with cores cores.
func newTarget(s *game.Server, level int, mults game.Mults, cores int) (*target, error) {
	if s == nil {
		return nil, errors.New("plan batch: no server")
	}
	if level < 1 {
		return nil, fmt.Errorf("plan batch against %s: hacking level %d, want >= 1", s.Hostname, level)
	}
	if cores < 1 {
		return nil, fmt.Errorf("plan batch against %s: cores %d, want >= 1", s.Hostname, cores)
	}
	t := &target{s: game.Prepped(s), h: game.Hacker{Level: level, Mults: mults}, cores: cores}
	if err := game.CheckHack(&t.s, t.h); err != nil {
		return nil, fmt.Errorf("cannot hack %w", err)
	}
	if !(t.s.MoneyMax > 0) {
		return nil, fmt.Errorf("cannot hack %s: %w (moneyMax %v)", s.Hostname, ErrNoMoney, t.s.MoneyMax)
	}
	t.pct = game.HackPercent(&t.s, t.h)
	if !(t.pct > 0) {
		return nil, fmt.Errorf("cannot hack %s: %w (hack percent 0 at security %v)", s.Hostname, ErrNoHackPercent, t.s.HackDifficulty)
	}
	t.chance = game.HackChance(&t.s, t.h)
	t.hackMs = game.HackTimeMs(&t.s, t.h)
	t.growMs = game.GrowTimeMs(&t.s, t.h)
	t.weakMs = game.WeakenTimeMs(&t.s, t.h)
	t.growK = game.GrowLog(&t.s, t.h, cores)
	t.weakPer = game.WeakenPerThread(cores)
	return t, nil
}

// plan builds the batch that hacks with h threads.
func (t *target) plan(fraction float64, h int) BatchPlan {
	actual := math.Min(float64(h)*t.pct, 1)
	maxMoney := t.s.MoneyMax
	g := game.SolveGrowThreads(t.growK, maxMoney*(1-actual), maxMoney)
	p := BatchPlan{
		Fraction:       fraction,
		ActualFraction: actual,
		Cores:          t.cores,
		HackThreads:    h,
		Weaken1Threads: int(math.Ceil(game.HackSecurityIncrease(h, t.pct) / t.weakPer)),
		GrowThreads:    g,
		Weaken2Threads: int(math.Ceil(game.GrowSecurityIncrease(g, g) / t.weakPer)),
		HackTimeMs:     t.hackMs,
		GrowTimeMs:     t.growMs,
		WeakenTimeMs:   t.weakMs,
		Chance:         t.chance,
		MoneyPerBatch:  t.chance * actual * maxMoney,
	}
	p.ThreadSeconds = (float64(p.HackThreads)*t.hackMs + float64(p.GrowThreads)*t.growMs +
		float64(p.Weaken1Threads+p.Weaken2Threads)*t.weakMs) / 1000
	if p.ThreadSeconds > 0 {
		p.IncomePerThreadSecond = p.MoneyPerBatch / p.ThreadSeconds
	}
	return p
}

// PlanBatch plans one HWGW batch that hacks fraction (0 < fraction <= 1) of
// the money of s once s is prepped (security at minimum, money at max), for
// a player of the given hacking level and mults, with grows and weakens on a
// host with cores cores. It fails when s cannot be hacked: no root, level
// too low, no money, or a hack percent of 0.
func PlanBatch(s *game.Server, level int, mults game.Mults, cores int, fraction float64) (BatchPlan, error) {
	if !(fraction > 0 && fraction <= 1) {
		return BatchPlan{}, fmt.Errorf("plan batch: fraction %v, want 0 < fraction <= 1", fraction)
	}
	t, err := newTarget(s, level, mults, cores)
	if err != nil {
		return BatchPlan{}, err
	}
	return t.plan(fraction, hackThreadsFor(fraction, t.pct)), nil
}

// hackThreadsFor is floor(fraction / pct), at least 1.
func hackThreadsFor(fraction, pct float64) int {
	h := math.Floor(fraction / pct)
	if !(h >= 1) {
		return 1
	}
	return int(math.Min(h, math.MaxInt32))
}

// maxBestBatchPlans bounds how many hack-thread counts BestBatch tries.
const maxBestBatchPlans = 100_000

// BestBatch is the batch with the highest IncomePerThreadSecond over every
// hack-thread count from 1 to ceil(1/hackPercent) (sampled evenly when there
// are more than 100,000), with the same inputs and errors as PlanBatch.
// Its Fraction is its ActualFraction.
func BestBatch(s *game.Server, level int, mults game.Mults, cores int) (BatchPlan, error) {
	return BestBatchWithin(s, level, mults, cores, math.MaxInt, math.MaxInt)
}

// BestBatchWithin is BestBatch among the batches of at most maxThreads
// threads in all whose hack and grow jobs have at most maxJob threads each
// (a hack or grow must fit one worker; weakens can be split); ErrNoThreads
// when not even one hack thread's batch fits.
func BestBatchWithin(s *game.Server, level int, mults game.Mults, cores, maxThreads, maxJob int) (BatchPlan, error) {
	t, err := newTarget(s, level, mults, cores)
	if err != nil {
		return BatchPlan{}, err
	}
	n := int(math.Min(math.Ceil(1/t.pct), math.MaxInt32))
	step := max(1, n/maxBestBatchPlans)
	var best BatchPlan
	found := false
	for h := 1; h <= n; h += step {
		p := t.plan(0, h)
		if p.Threads() > maxThreads || p.HackThreads > maxJob || p.GrowThreads > maxJob {
			break // more hack threads only need more threads
		}
		if !found || p.IncomePerThreadSecond > best.IncomePerThreadSecond {
			best, found = p, true
		}
	}
	if !found {
		return BatchPlan{}, fmt.Errorf("%w: the smallest batch on %s needs more than %d threads", ErrNoThreads, s.Hostname, maxThreads)
	}
	best.Fraction = best.ActualFraction
	return best, nil
}

// PlanAtLevel is the batch of h hack threads on a prepped target at a given
// hacking level: what its weakens and grow must be when it lands then.
func PlanAtLevel(s *game.Server, level int, mults game.Mults, cores, h int) (BatchPlan, error) {
	return planAtLevel(s, level, mults, cores, cores, h)
}

// planAtLevel is PlanAtLevel with grows on hosts of growCores cores and
// weakens on hosts of weakCores.
func planAtLevel(s *game.Server, level int, mults game.Mults, growCores, weakCores, h int) (BatchPlan, error) {
	t, err := newTarget(s, level, mults, growCores)
	if err != nil {
		return BatchPlan{}, err
	}
	t.weakenOn(weakCores)
	return t.plan(0, h), nil
}

// weakenOn sizes the weakens for hosts of cores cores, which may differ
// from the grows' host.
func (t *target) weakenOn(cores int) {
	t.weakPer = game.WeakenPerThread(max(cores, 1))
}

// RAMLimitPerSecond is the income limit of world/game/RULES.md "Income limits" when
// threads threads are always busy and each job holds its threads only while
// it runs: threads / ThreadSeconds * MoneyPerBatch, in money per second.
func RAMLimitPerSecond(plan BatchPlan, threads int) float64 {
	if !(plan.ThreadSeconds > 0) || threads <= 0 {
		return 0
	}
	return float64(threads) / plan.ThreadSeconds * plan.MoneyPerBatch
}

// LaunchAtOnceLimitPerSecond is the income limit, in money per second, of a
// batcher that launches every job of a batch at once and so holds every
// thread for a whole weakenTime.
func LaunchAtOnceLimitPerSecond(plan BatchPlan, threads int) float64 {
	held := float64(plan.Threads()) * plan.WeakenTimeMs / 1000
	if !(held > 0) || threads <= 0 {
		return 0
	}
	return float64(threads) / held * plan.MoneyPerBatch
}

// TotalHostThreads is the number of worker threads the scenario's hosts can
// hold: the sum of game.HostThreads (floor of free RAM / 1.75) over rooted servers.
func TotalHostThreads(sc *game.Scenario) int {
	total := 0
	for i := range sc.Servers {
		total += game.HostThreads(&sc.Servers[i])
	}
	return total
}

// Analysis is the profitability of one target for the scenario's player.
// Times, chance and percent are at minimum security.
type Analysis struct {
	Server               string  `json:"server"`
	RequiredHackingSkill int     `json:"requiredHackingSkill"`
	MinSecurity          float64 `json:"minSecurity"`
	MoneyMax             float64 `json:"moneyMax"`
	ServerGrowth         float64 `json:"serverGrowth"`
	HackTimeMs           float64 `json:"hackTimeMs"`
	GrowTimeMs           float64 `json:"growTimeMs"`
	WeakenTimeMs         float64 `json:"weakenTimeMs"`
	Chance               float64 `json:"chance"`
	HackPercent          float64 `json:"hackPercent"`
	// MoneyPerThread is what one hack thread steals from max money: hackPercent * moneyMax.
	MoneyPerThread float64 `json:"moneyPerThread"`
	// Plans holds a BatchPlan for each requested fraction, in order.
	Plans []BatchPlan `json:"plans"`
	// Best is the plan of Plans with the highest IncomePerThreadSecond.
	Best BatchPlan `json:"best"`
	// BestIncomePerThreadSecond is Best.IncomePerThreadSecond.
	BestIncomePerThreadSecond float64 `json:"bestIncomePerThreadSecond"`
}

// Analyze ranks targets for the scenario's player (level from its exp and
// mults), with grows and weakens on hosts of cores cores. With no targets it
// analyses every rooted server with money whose required level the player
// has; a named target that is unknown or cannot be hacked is an error. Each
// target gets a BatchPlan per fraction (DefaultFractions when none). The
// result is sorted by BestIncomePerThreadSecond, highest first.
func Analyze(sc *game.Scenario, targets []string, fractions []float64, cores int) ([]Analysis, error) {
	if sc == nil {
		return nil, errors.New("analyze: no scenario")
	}
	if len(fractions) == 0 {
		fractions = DefaultFractions()
	}
	for _, f := range fractions {
		if !(f > 0 && f <= 1) {
			return nil, fmt.Errorf("analyze: fraction %v, want 0 < fraction <= 1", f)
		}
	}
	if cores < 1 {
		return nil, fmt.Errorf("analyze: cores %d, want >= 1", cores)
	}
	hacker := sc.Player.Hacker()

	var servers []*game.Server
	if len(targets) == 0 {
		for i := range sc.Servers {
			s := &sc.Servers[i]
			if s.HasAdminRights && s.MoneyMax > 0 && s.RequiredHackingSkill <= hacker.Level {
				servers = append(servers, s)
			}
		}
	} else {
		for _, name := range targets {
			s, ok := sc.Server(name)
			if !ok {
				return nil, fmt.Errorf("analyze: unknown target %q in scenario %q", name, sc.Name)
			}
			servers = append(servers, s)
		}
	}

	out := make([]Analysis, 0, len(servers))
	for _, s := range servers {
		a, err := analyzeOne(s, hacker, fractions, cores)
		if err != nil {
			if len(targets) == 0 && errors.Is(err, ErrNoHackPercent) {
				continue // not worth listing
			}
			return nil, fmt.Errorf("analyze: %w", err)
		}
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].BestIncomePerThreadSecond != out[j].BestIncomePerThreadSecond {
			return out[i].BestIncomePerThreadSecond > out[j].BestIncomePerThreadSecond
		}
		return out[i].Server < out[j].Server
	})
	return out, nil
}

func analyzeOne(s *game.Server, h game.Hacker, fractions []float64, cores int) (Analysis, error) {
	t, err := newTarget(s, h.Level, h.Mults, cores)
	if err != nil {
		return Analysis{}, err
	}
	a := Analysis{
		Server:               s.Hostname,
		RequiredHackingSkill: s.RequiredHackingSkill,
		MinSecurity:          t.s.HackDifficulty,
		MoneyMax:             t.s.MoneyMax,
		ServerGrowth:         t.s.ServerGrowth,
		HackTimeMs:           t.hackMs,
		GrowTimeMs:           t.growMs,
		WeakenTimeMs:         t.weakMs,
		Chance:               t.chance,
		HackPercent:          t.pct,
		MoneyPerThread:       t.pct * t.s.MoneyMax,
		Plans:                make([]BatchPlan, 0, len(fractions)),
	}
	for i, f := range fractions {
		p := t.plan(f, hackThreadsFor(f, t.pct))
		a.Plans = append(a.Plans, p)
		if i == 0 || p.IncomePerThreadSecond > a.Best.IncomePerThreadSecond {
			a.Best = p
		}
	}
	a.BestIncomePerThreadSecond = a.Best.IncomePerThreadSecond
	return a, nil
}
