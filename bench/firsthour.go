package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/hosts"
	"github.com/hvmind/hvmind/world/tasks"
)

// The first-hour benchmark: a new game (scenario newgame), a game hour at
// Speed, the same seed for every strategy, each on a world of its own. The
// strategies are HVMind's batcher on foodnstuff (make run's), on n00dles,
// and with --auto, beside the game's beginner script on n00dles and on
// foodnstuff (see beginner.go).

// FirstHourOptions configure the first-hour benchmark.
type FirstHourOptions struct {
	// Speed is the world's speed (60: a game hour in a real minute).
	Speed float64
	// GameMinutes is how long each strategy runs (60).
	GameMinutes float64
	Seed        int64
	// Strategies to run (nil: all): "foodnstuff", "n00dles", "auto",
	// "beginner:n00dles", "beginner:foodnstuff".
	Strategies []string
	// Manager holds the batcher's options (zero: its defaults).
	Manager   planner.ManagerOptions
	WorkerBin string
	Spin      time.Duration
	Tolerance time.Duration
	Logger    zerolog.Logger
}

// FirstHourStrategies are the strategies the benchmark runs by default.
var FirstHourStrategies = []string{"foodnstuff", "n00dles", "auto", "beginner:n00dles", "beginner:foodnstuff"}

// FirstHourResult is one strategy's hour.
type FirstHourResult struct {
	Strategy string `json:"strategy"`
	// Money is the money the player made by each quarter of the run (15,
	// 30, 45 and 60 game minutes for an hour).
	Money       []float64 `json:"money"`
	AtGameMin   []float64 `json:"at_game_minutes"`
	LevelEnd    int       `json:"level_end"`
	Jobs        int64     `json:"jobs"`
	Desyncs     int       `json:"desyncs"`
	Missed      int       `json:"missed"`
	Targets     string    `json:"targets,omitempty"`
	RealSeconds float64   `json:"real_seconds"`
}

// RunFirstHour runs each strategy on a fresh world and reports its money
// at every quarter of the run.
func RunFirstHour(ctx context.Context, o FirstHourOptions, each func(FirstHourResult)) ([]FirstHourResult, error) {
	if !(o.Speed > 0) || !(o.GameMinutes > 0) {
		return nil, fmt.Errorf("speed %v and game minutes %v must be positive", o.Speed, o.GameMinutes)
	}
	strategies := o.Strategies
	if len(strategies) == 0 {
		strategies = FirstHourStrategies
	}
	var out []FirstHourResult
	for _, s := range strategies {
		res, err := runStrategy(ctx, o, s)
		if err != nil {
			return out, fmt.Errorf("%s: %w", s, err)
		}
		out = append(out, res)
		if each != nil {
			each(res)
		}
	}
	return out, nil
}

// runStrategy runs one strategy for the game time on a fresh world.
func runStrategy(ctx context.Context, o FirstHourOptions, strategy string) (FirstHourResult, error) {
	res := FirstHourResult{Strategy: strategy}
	r, err := newRig(ctx, "firsthour", o.WorkerBin, workerArgs(o.Spin, o.Tolerance), broker.Sync{}, o.Logger)
	if err != nil {
		return res, err
	}
	defer r.Close()
	ws, err := world.Serve(ctx, r.conn.NC, world.Options{Scenario: "newgame", Speed: o.Speed, Seed: o.Seed, Logger: o.Logger})
	if err != nil {
		return res, err
	}
	r.alsoStop = append(r.alsoStop, ws.Stop)
	wc := world.NewClient(r.conn.NC)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	var fleet *planner.Fleet
	var ops func() int64
	if target, ok := strings.CutPrefix(strategy, "beginner:"); ok {
		var n int64
		go func() {
			var err error
			n, err = runBeginner(sctx, wc, target)
			done <- err
		}()
		ops = func() int64 { return n } // read after done
	} else {
		r.launcher.Process, r.launcher.Conn = "bench", r.conn.NC
		servers, err := serverpool.New(serverpool.Options{Provider: hosts.New(wc), Launcher: r.launcher, Policy: serverpool.Policy{Kind: "host"}})
		if err != nil {
			return res, err
		}
		if err := r.startPool(ctx, pool.Options{
			Host: hosts.Home, Spawn: true, Tolerance: o.Tolerance, Servers: servers, IdleStop: time.Hour, FillHosts: true,
			Split: tasks.SplitPolicy(wc, tasks.DefaultSplitTolerance), StopWorkersOnExit: true, Settler: tasks.Settler(wc), Validator: tasks.Validator(wc),
		}); err != nil {
			return res, err
		}
		fo := planner.FleetOptions{Manager: o.Manager}
		fo.Manager.Logger = o.Logger
		if strategy == "auto" {
			fo.Auto = true
		} else {
			fo.Targets = []string{strategy}
		}
		if fleet, err = planner.NewFleet(r.client, wc, fo); err != nil {
			return res, err
		}
		go func() { done <- fleet.Run(sctx) }()
		go func() {
			for range fleet.Events() {
			}
		}()
	}

	pl0, err := wc.Player(ctx)
	if err != nil {
		return res, err
	}
	clk0, err := wc.Clock(ctx)
	if err != nil {
		return res, err
	}
	realStart := time.Now()
	quarters := 4
	want := o.GameMinutes * 60_000
	for q := 1; q <= quarters; q++ {
		mark := want * float64(q) / float64(quarters)
		for {
			clk, err := wc.Clock(ctx)
			if err != nil {
				return res, err
			}
			if clk.GameTimeMs-clk0.GameTimeMs >= mark {
				break
			}
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case err := <-done:
				return res, fmt.Errorf("the strategy stopped early: %v", err)
			case <-time.After(time.Duration(math.Min(float64(50*time.Millisecond), want/o.Speed*float64(time.Millisecond)/400))):
			}
		}
		// The world applies a landing once it is a holdback old: read the
		// money a holdback after the mark.
		time.Sleep(world.DefaultHoldback(o.Speed))
		pl, err := wc.Player(ctx)
		if err != nil {
			return res, err
		}
		res.Money = append(res.Money, math.Round(pl.Money-pl0.Money))
		res.AtGameMin = append(res.AtGameMin, round(mark/60_000))
		res.LevelEnd = pl.HackingLevel
	}
	res.RealSeconds = round(time.Since(realStart).Seconds())
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	if fleet != nil {
		var targets []string
		for _, st := range fleet.Stats() {
			res.Jobs += int64(st.Jobs)
			res.Desyncs += st.Desyncs
			res.Missed += st.Missed
			targets = append(targets, st.Target)
		}
		res.Targets = strings.Join(targets, ",")
	} else {
		res.Jobs = ops()
	}
	return res, nil
}

// FirstHourSummary compares the strategies with the beginner script's best
// target.
type FirstHourSummary struct {
	// BeginnerBest is the beginner script's strategy that made the most
	// by the end, and its money at each quarter.
	BeginnerBest      string    `json:"beginner_best"`
	BeginnerBestMoney []float64 `json:"beginner_best_money"`
	// Ratios is each other strategy's money at each quarter over the
	// beginner's best's then.
	Ratios map[string][]float64 `json:"ratio_to_beginner_best"`
}

// CompareFirstHour compares each strategy with the beginner script's best.
func CompareFirstHour(results []FirstHourResult) FirstHourSummary {
	s := FirstHourSummary{Ratios: map[string][]float64{}}
	var best *FirstHourResult
	for i := range results {
		r := &results[i]
		if strings.HasPrefix(r.Strategy, "beginner:") && len(r.Money) > 0 &&
			(best == nil || r.Money[len(r.Money)-1] > best.Money[len(best.Money)-1]) {
			best = r
		}
	}
	if best == nil {
		return s
	}
	s.BeginnerBest, s.BeginnerBestMoney = best.Strategy, best.Money
	for _, r := range results {
		if strings.HasPrefix(r.Strategy, "beginner:") {
			continue
		}
		ratios := make([]float64, len(r.Money))
		for q := range r.Money {
			if q < len(best.Money) && best.Money[q] > 0 {
				ratios[q] = round(r.Money[q] / best.Money[q])
			}
		}
		s.Ratios[r.Strategy] = ratios
	}
	return s
}
