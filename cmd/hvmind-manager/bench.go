package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/hvmind/hvmind/bench"
	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/serverpool"
)

func (e *env) bench(ctx context.Context, args []string) (int, error) {
	if len(args) == 0 || args[0] == "manager" || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && args[0] == "manager" {
			args = args[1:]
		}
		return e.benchManager(ctx, args)
	}
	if args[0] != "dispatch" {
		return 2, errors.New("bench wants a benchmark name: manager (the default) or dispatch")
	}
	fs := flag.NewFlagSet("bench dispatch", flag.ContinueOnError)
	o := bench.DispatchOptions{Logger: e.log}
	fs.IntVar(&o.Jobs, "jobs", 20000, "jobs in each flat-out run (and raw JetStream messages)")
	fs.IntVar(&o.Repeat, "repeat", 3, "raw and flat-out runs, alternately (medians are reported)")
	fs.IntVar(&o.Paced, "paced", 5000, "jobs in the paced run")
	fs.Float64Var(&o.Rate, "rate", 1000, "paced jobs due per second")
	fs.Float64Var(&o.PacedDuration, "paced-duration", 5, "milliseconds each paced job sleeps")
	fs.IntVar(&o.Workers, "workers", 4, "worker processes")
	fs.IntVar(&o.Threads, "threads", 64, "threads per worker")
	fs.IntVar(&o.Batch, "batch", 250, "jobs per dispatch request")
	fs.IntVar(&o.Concurrency, "concurrency", 8, "dispatch requests in flight")
	fs.StringVar(&o.WorkerBin, "worker-bin", "", "hvmind-worker executable (default: beside this program, then PATH)")
	fs.DurationVar(&o.Spin, "spin", e.cfg.Worker.Spin, "workers' timer spin window")
	fs.DurationVar(&o.Tolerance, "tolerance", 50*time.Millisecond, "how late a job may start before it is missed")
	syncFlag := fs.String("sync", "default", "the embedded broker's disk flushing: always, an interval such as 1s, or default (every 2 minutes)")
	if pos, err := e.parse(fs, args[1:]); err != nil || len(pos) > 0 {
		return 2, orUnexpected(err, pos)
	}
	sync, err := broker.ParseSync(*syncFlag)
	if err != nil {
		return 2, cli.Usagef("--%v", err)
	}
	o.Sync = sync
	if o.WorkerBin == "" {
		bin, err := serverpool.FindWorkerBin()
		if err != nil {
			return 1, err
		}
		o.WorkerBin = bin
	}
	if path := os.Getenv("HVMIND_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return 1, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 1, err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.RunDispatch(ctx, o)
	if err != nil {
		return 1, err
	}
	return 0, json.NewEncoder(e.out).Encode(res)
}

// benchManager replays the community batcher test: the HackManager on a
// fresh world for a game hour, on the real pool and workers.
func (e *env) benchManager(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("bench manager", flag.ContinueOnError)
	o := bench.ManagerOptions{Logger: e.log}
	fs.StringVar(&o.Scenario, "scenario", "reference-880", "scenario to load")
	fs.StringVar(&o.Target, "target", "rho-construction", "server to hack")
	fs.Float64Var(&o.Speed, "speed", 60, "world speed (60: a game hour in a real minute)")
	fs.Float64Var(&o.GameMinutes, "game-minutes", 60, "game time to run")
	fs.Int64Var(&o.Seed, "seed", 1, "seed of the hack rolls")
	fs.StringVar(&o.SizePolicy, "size-policy", "host", "how the pool sizes the workers it launches")
	hosts := fs.String("hosts", "", "comma-separated hosts the pool may launch workers on (empty: all)")
	strategies := fs.String("strategies", strings.Join(bench.FirstHourStrategies, ","), "with --scenario newgame and no --target, the first-hour benchmark's strategies")
	fs.BoolVar(&o.Processes, "processes", false, "run each worker in a process of its own (default: all in one worker process, on one timer queue)")
	fs.DurationVar(&o.Manager.Gap, "gap", planner.DefaultGap, "real time from a hack's (or grow's) landing to its weaken's")
	fs.DurationVar(&o.Manager.Margin, "margin", planner.DefaultMargin, "how far every start keeps from the windows of raised security")
	fs.DurationVar(&o.Manager.Slack, "slack", planner.DefaultSlack, "how late a job may start and still land on time")
	fs.DurationVar(&o.Manager.Lead, "lead", 200*time.Millisecond, "how far ahead of its first start a batch is dispatched")
	fs.Float64Var(&o.Manager.Utilisation, "utilisation", 0, fmt.Sprintf("share of the free threads the pipeline plans to keep busy (planning all of them gets batches refused, and each refusal wastes the threads around it); 0: %v with grows and hacks pinned to the hosts with the most threads, else %v; a plan bound by the batches in flight at one instant (a few small hosts) plans that peak for every thread", planner.PinnedUtilisation, planner.DefaultUtilisation))
	fs.IntVar(&o.Manager.Cores, "cores", 0, "cores the thread maths assume for grow and weaken (0: the fewest of the pool's hosts)")
	fs.BoolVar(&o.Manager.Waves, "waves", false, "run batches in waves instead of the continuous pipeline")
	fs.StringVar(&o.WorkerBin, "worker-bin", "", "hvmind-worker executable (default: beside this program, then PATH)")
	fs.DurationVar(&o.Spin, "spin", e.cfg.Worker.Spin, "workers' timer spin window")
	fs.DurationVar(&o.Tolerance, "tolerance", planner.DefaultSlack, "how late a job may start before it is missed (default: --slack; later, it could not land on time)")
	syncFlag := fs.String("sync", "default", "the embedded broker's disk flushing: always, an interval such as 1s, or default (every 2 minutes)")
	if pos, err := e.parse(fs, args); err != nil || len(pos) > 0 {
		return 2, orUnexpected(err, pos)
	}
	sync, err := broker.ParseSync(*syncFlag)
	if err != nil {
		return 2, cli.Usagef("--%v", err)
	}
	o.Sync = sync
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	tolerance := set["tolerance"]
	if !tolerance {
		// The slack the manager will use: it takes the default for 0.
		o.Tolerance = o.Manager.Slack
		if o.Tolerance <= 0 {
			o.Tolerance = planner.DefaultSlack
		}
	}
	if err := o.Manager.Validate(); err != nil {
		return 2, err
	}
	if o.WorkerBin == "" {
		bin, err := serverpool.FindWorkerBin()
		if err != nil {
			return 1, err
		}
		o.WorkerBin = bin
	}
	if *hosts != "" {
		o.Hosts = strings.Split(*hosts, ",")
	}
	if o.Scenario == "newgame" && !set["target"] {
		return e.benchFirstHour(ctx, o, *strategies)
	}
	res, err := bench.RunManager(ctx, o)
	if err != nil {
		return 1, err
	}
	return 0, json.NewEncoder(e.out).Encode(res)
}

// orUnexpected is err, or the error of arguments a command does not take.
func orUnexpected(err error, pos []string) error {
	if err != nil {
		return err
	}
	return cli.Usagef("unexpected arguments %v", pos)
}

// benchFirstHour runs the first-hour benchmark: a JSON line per strategy,
// then one that compares them.
func (e *env) benchFirstHour(ctx context.Context, o bench.ManagerOptions, strategies string) (int, error) {
	fo := bench.FirstHourOptions{
		Speed: o.Speed, GameMinutes: o.GameMinutes, Seed: o.Seed, Manager: o.Manager,
		WorkerBin: o.WorkerBin, Spin: o.Spin, Tolerance: o.Tolerance, Logger: o.Logger,
	}
	for _, s := range strings.Split(strategies, ",") {
		if s = strings.TrimSpace(s); s != "" {
			fo.Strategies = append(fo.Strategies, s)
		}
	}
	enc := json.NewEncoder(e.out)
	results, err := bench.RunFirstHour(ctx, fo, func(r bench.FirstHourResult) { _ = enc.Encode(r) })
	if err != nil {
		return 1, err
	}
	return 0, enc.Encode(bench.CompareFirstHour(results))
}
