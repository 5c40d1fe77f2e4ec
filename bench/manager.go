package bench

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
	"github.com/hvmind/hvmind/world/hosts"
	"github.com/hvmind/hvmind/world/tasks"
)

// ManagerOptions configure the manager benchmark.
type ManagerOptions struct {
	// Scenario and Target: the network and the server to hack.
	Scenario string
	Target   string
	// Speed is the world's speed; GameMinutes how much game time to run.
	Speed       float64
	GameMinutes float64
	Seed        int64
	// SizePolicy sizes the workers the pool launches (serverpool.ParsePolicy).
	SizePolicy string
	// Hosts, when set, are the only hosts the pool may launch workers on.
	Hosts []string
	// Processes runs each worker in a process of its own instead of all in
	// one worker process (see worker.Process).
	Processes bool
	// Manager holds the manager's timing options (Gap, Margin, Lead, Cores...).
	Manager planner.ManagerOptions
	// WorkerBin is the hvmind-worker executable; Spin and Tolerance are
	// given to the workers.
	WorkerBin string
	Spin      time.Duration
	Tolerance time.Duration
	// Sync is the embedded broker's disk flushing (see broker.Sync).
	Sync   broker.Sync
	Logger zerolog.Logger
}

// ManagerResult is what the manager benchmark prints.
type ManagerResult struct {
	Scenario    string  `json:"scenario"`
	Target      string  `json:"target"`
	Speed       float64 `json:"speed"`
	GameMinutes float64 `json:"game_minutes"`
	RealSeconds float64 `json:"real_seconds"`
	// MoneyPerGameMinute is the player's money gained over the run (prep
	// and ramp-up included) per game minute.
	MoneyPerGameMinute float64 `json:"money_per_game_minute"`
	// RAMLimitPerGameMinute is the RAM limit of world/game/RULES.md for the scenario and
	// target at the start: every host's threads busy with the batch that
	// earns most per thread-second with that host's cores.
	RAMLimitPerGameMinute float64 `json:"ram_limit_per_game_minute"`
	PctOfLimit            float64 `json:"pct_of_limit"`
	// SteadyMoneyPerGameMinute and SteadyPctOfLimit are the same from the
	// first batch's landing to the end: the pipeline's rate once it is full.
	SteadyMoneyPerGameMinute float64 `json:"steady_money_per_game_minute"`
	SteadyPctOfLimit         float64 `json:"steady_pct_of_limit"`
	// FirstLandingGameMinute is when the first batch's hack landed.
	FirstLandingGameMinute float64 `json:"first_landing_game_minute"`
	Batches                int     `json:"batches"`
	Jobs                   int     `json:"jobs"`
	Desyncs                int     `json:"desyncs"`
	Missed                 int     `json:"missed"`
	Cancelled              int     `json:"cancelled"`
	Skipped                int     `json:"skipped"`
	Refused                int     `json:"refused"`
	FirstDesync            string  `json:"first_desync,omitempty"`
	LastDesync             string  `json:"last_desync,omitempty"`
	StartErrorP50          float64 `json:"start_error_us_p50"`
	StartErrorP99          float64 `json:"start_error_us_p99"`
	StartErrorMax          float64 `json:"start_error_us_max"`
	EndErrorP50            float64 `json:"end_error_us_p50"`
	EndErrorP99            float64 `json:"end_error_us_p99"`
	EndErrorMax            float64 `json:"end_error_us_max"`
	// RAMUtilisationPct is the thread-time the manager's jobs held over
	// the thread-time of every host, over the run.
	RAMUtilisationPct float64 `json:"ram_utilisation_pct"`
	Plan              string  `json:"plan"`
	PeriodMs          float64 `json:"period_ms"`
	LevelStart        int     `json:"level_start"`
	LevelEnd          int     `json:"level_end"`
	Workers           int     `json:"workers"`
	Gap               string  `json:"gap"`
	Margin            string  `json:"margin"`
	// WorldLateRequests counts the timed requests that reached the world
	// after its holdback (see world.Options.Holdback): their order among the
	// others was not guaranteed. WorldLatestRequestMs is the latest.
	WorldLateRequests    int64   `json:"world_late_requests"`
	WorldLatestRequestMs float64 `json:"world_latest_request_ms"`
	// MachineStalls is a clock-spinning thread's view of this machine
	// just before the run, for context: stalls longer than the margin
	// are what desyncs a pipeline.
	MachineStalls Stalls `json:"machine_stalls"`
}

// RunManager runs the HackManager against a fresh world on an embedded
// broker, the real pool and real worker processes, for GameMinutes of game
// time, and measures its income against the RAM limit.
func RunManager(ctx context.Context, o ManagerOptions) (ManagerResult, error) {
	res := ManagerResult{Scenario: o.Scenario, Target: o.Target, Speed: o.Speed}
	if !(o.Speed > 0) || !(o.GameMinutes > 0) {
		return res, fmt.Errorf("speed %v and game minutes %v must be positive", o.Speed, o.GameMinutes)
	}
	res.MachineStalls = MeasureStalls(2 * time.Second)
	sc, err := game.LoadScenario(o.Scenario)
	if err != nil {
		return res, err
	}
	limit, err := RAMLimitPerGameMinute(sc, o.Target)
	if err != nil {
		return res, err
	}
	res.RAMLimitPerGameMinute = limit
	totalThreads := planner.TotalHostThreads(sc)
	srv, _ := sc.Server(o.Target)

	r, err := newRig(ctx, "manager", o.WorkerBin, workerArgs(o.Spin, o.Tolerance), o.Sync, o.Logger)
	if err != nil {
		return res, err
	}
	defer r.Close()
	ws, err := world.Serve(ctx, r.conn.NC, world.Options{Scenario: o.Scenario, Speed: o.Speed, Seed: o.Seed, Logger: o.Logger})
	if err != nil {
		return res, err
	}
	r.alsoStop = append(r.alsoStop, ws.Stop)
	policy, err := serverpool.ParsePolicy(o.SizePolicy)
	if err != nil {
		return res, err
	}
	if !o.Processes {
		r.launcher.Process, r.launcher.Conn = "bench", r.conn.NC
	}
	wc := world.NewClient(r.conn.NC)
	servers, err := serverpool.New(serverpool.Options{Provider: hosts.New(wc), Launcher: r.launcher, Policy: policy, Only: o.Hosts})
	if err != nil {
		return res, err
	}
	if err := r.startPool(ctx, pool.Options{
		Spawn: true, Tolerance: o.Tolerance, Servers: servers, IdleStop: time.Hour, FillHosts: true,
		Split: tasks.SplitPolicy(wc, tasks.DefaultSplitTolerance), StopWorkersOnExit: true, Settler: tasks.Settler(wc), Validator: tasks.Validator(wc),
	}); err != nil {
		return res, err
	}
	client := r.client

	mo := o.Manager
	mo.Target, mo.Logger = o.Target, o.Logger
	m, err := planner.NewManager(client, wc, mo)
	if err != nil {
		return res, err
	}
	pl0, err := wc.Player(ctx)
	if err != nil {
		return res, err
	}
	clk0, err := wc.Clock(ctx)
	if err != nil {
		return res, err
	}
	res.LevelStart = pl0.HackingLevel

	// The manager runs until the game time is up; money is read then (jobs
	// still in flight have not earned it), and the manager is stopped.
	mctx, stopManager := context.WithCancel(ctx)
	defer stopManager()
	managerDone := make(chan error, 1)
	go func() { managerDone <- m.Run(mctx) }()
	go func() { // drain events
		for range m.Events() {
		}
	}()
	realStart := time.Now()
	want := o.GameMinutes * 60_000
	var firstLanding float64
	var pl world.PlayerInfo
	var clk world.Clock
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case err := <-managerDone:
			return res, fmt.Errorf("the manager stopped early: %v", err)
		case <-time.After(time.Duration(math.Min(float64(50*time.Millisecond), want/o.Speed*float64(time.Millisecond)/100))):
		}
		if clk, err = wc.Clock(ctx); err != nil {
			return res, err
		}
		if firstLanding == 0 && m.Stats().Stolen > 0 {
			firstLanding = clk.GameTimeMs - clk0.GameTimeMs
		}
		if clk.GameTimeMs-clk0.GameTimeMs >= want {
			break
		}
	}
	real := time.Since(realStart)
	st := m.Stats()
	// The world applies a landing once it is a holdback old (see
	// world.Options.Holdback): a holdback after the hour's end, it has
	// applied every landing of the hour, and none after.
	time.Sleep(world.DefaultHoldback(o.Speed))
	if pl, err = wc.Player(ctx); err != nil {
		return res, err
	}
	stopManager()
	select {
	case <-managerDone:
	case <-time.After(time.Minute + time.Duration(2*game.WeakenTimeMs(srv, sc.Player.Hacker())/o.Speed)*time.Millisecond):
	}

	gameMin := (clk.GameTimeMs - clk0.GameTimeMs) / 60_000
	earned := pl.Money - pl0.Money
	res.GameMinutes = round(gameMin)
	res.RealSeconds = round(real.Seconds())
	res.MoneyPerGameMinute = math.Round(earned / gameMin)
	res.PctOfLimit = round(100 * res.MoneyPerGameMinute / limit)
	if firstLanding > 0 {
		res.FirstLandingGameMinute = round(firstLanding / 60_000)
		if steady := gameMin - firstLanding/60_000; steady > 0 {
			res.SteadyMoneyPerGameMinute = math.Round(earned / steady)
			res.SteadyPctOfLimit = round(100 * res.SteadyMoneyPerGameMinute / limit)
		}
	}
	res.Batches, res.Jobs, res.Desyncs, res.Missed = st.Batches, st.Jobs, st.Desyncs, st.Missed
	res.Cancelled, res.Skipped, res.Refused, res.LastDesync = st.Cancelled, st.Skipped, st.Refused, st.LastDesync
	res.FirstDesync = st.FirstDesync
	res.Plan, res.PeriodMs, res.LevelEnd = st.Plan, round(st.PeriodMs), pl.HackingLevel
	res.Gap, res.Margin = m.Options().Gap.String(), m.Options().Margin.String()
	res.RAMUtilisationPct = round(100 * st.ThreadMs / (float64(totalThreads) * float64(real.Milliseconds())))
	abs := func(v []float64) []float64 {
		for i := range v {
			v[i] = math.Abs(v[i])
		}
		return v
	}
	s, e := pool.Summarise(abs(m.StartErrorsUs())), pool.Summarise(abs(m.EndErrorsUs()))
	res.StartErrorP50, res.StartErrorP99, res.StartErrorMax = round(s.P50), round(s.P99), round(s.Max)
	res.EndErrorP50, res.EndErrorP99, res.EndErrorMax = round(e.P50), round(e.P99), round(e.Max)
	if status, err := client.Status(ctx); err == nil {
		res.Workers = len(status.Workers)
	}
	n, latest := ws.LateRequests()
	res.WorldLateRequests, res.WorldLatestRequestMs = n, round(float64(latest)/float64(time.Millisecond))
	return res, nil
}

// RAMLimitPerGameMinute is the RAM limit of world/game/RULES.md, in money per game minute,
// for target on the scenario's network at its start: each host's threads
// kept busy with the batch that earns most per thread-second with that
// host's cores.
func RAMLimitPerGameMinute(sc *game.Scenario, target string) (float64, error) {
	srv, ok := sc.Server(target)
	if !ok {
		return 0, fmt.Errorf("unknown target %q in scenario %q", target, sc.Name)
	}
	hk := sc.Player.Hacker()
	best := map[int]float64{}
	total := 0.0
	for i := range sc.Servers {
		h := &sc.Servers[i]
		threads := game.HostThreads(h)
		if threads == 0 {
			continue
		}
		cores := max(1, h.CPUCores)
		ipts, ok := best[cores]
		if !ok {
			plan, err := planner.BestBatch(srv, hk.Level, hk.Mults, cores)
			if err != nil {
				return 0, err
			}
			ipts = plan.IncomePerThreadSecond
			best[cores] = ipts
		}
		total += float64(threads) * ipts
	}
	return total * 60, nil
}
