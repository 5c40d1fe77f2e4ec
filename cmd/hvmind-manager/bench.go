package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
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
	if args[0] == "scale" {
		return e.benchScale(ctx, args[1:])
	}
	if args[0] != "dispatch" {
		return 2, errors.New("bench wants a benchmark name: manager (the default), dispatch or scale")
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

// benchScale measures the pool's cost as the workers grow: one JSON line
// per size.
func (e *env) benchScale(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("bench scale", flag.ContinueOnError)
	o := bench.ScaleOptions{Logger: e.log}
	sizes := fs.String("workers", "10,100,1000,10000", "comma-separated pool sizes (workers) to measure")
	fs.IntVar(&o.Processes, "processes", 4, "most worker processes the workers are hosted in")
	fs.IntVar(&o.PerProcess, "per-process", 25, "fewest workers in one worker process")
	fs.IntVar(&o.Threads, "threads", 4, "threads per worker")
	fs.IntVar(&o.Jobs, "jobs", 5000, "jobs in each throughput run")
	fs.IntVar(&o.Paced, "paced", 2000, "jobs in the paced run")
	fs.Float64Var(&o.Rate, "rate", 1000, "paced jobs due per second")
	fs.IntVar(&o.InFlight, "in-flight", 100000, "jobs queued when the pool is killed and started again (0: no restart)")
	fs.IntVar(&o.Batch, "batch", 250, "jobs per dispatch request")
	fs.IntVar(&o.Concurrency, "concurrency", 8, "dispatch requests in flight")
	fs.DurationVar(&o.Heartbeat, "heartbeat", time.Second, "the workers' heartbeat")
	fs.StringVar(&o.WorkerBin, "worker-bin", "", "hvmind-worker executable (default: beside this program, then PATH)")
	fs.StringVar(&o.PoolBin, "pool-bin", "", "hvmind-pool executable (default: beside this program, then PATH)")
	fs.StringVar(&o.NATS, "url", "", "an external broker or cluster to run on (default: an embedded broker, a fresh one per size)")
	fs.BoolVar(&o.Keep, "keep", false, "keep each size's folder (the pool's log at level info, the worker processes' logs) and print where it is")
	if pos, err := e.parse(fs, args); err != nil || len(pos) > 0 {
		return 2, orUnexpected(err, pos)
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return 2, cli.Usagef("--workers %q: want sizes such as 10,100,1000", *sizes)
		}
		o.Workers = append(o.Workers, n)
	}
	if o.Threads < 1 || o.Jobs < 1 || o.Paced < 1 || o.Rate <= 0 || o.Batch < 1 || o.Concurrency < 1 || o.InFlight < 0 || o.Processes < 1 || o.Heartbeat <= 0 {
		return 2, cli.Usagef("bench scale: --threads, --jobs, --paced, --rate, --batch, --concurrency, --processes and --heartbeat must be positive")
	}
	var err error
	if o.WorkerBin == "" {
		if o.WorkerBin, err = serverpool.FindWorkerBin(); err != nil {
			return 1, err
		}
	}
	if o.PoolBin == "" {
		if o.PoolBin, err = findBeside("hvmind-pool"); err != nil {
			return 1, err
		}
	}
	enc := json.NewEncoder(e.out)
	if err := bench.RunScale(ctx, o, func(r bench.ScaleResult) error { return enc.Encode(r) }); err != nil {
		return 1, err
	}
	return 0, nil
}

// findBeside finds a program beside this one, then on PATH.
func findBeside(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		cand := filepath.Join(filepath.Dir(exe), name)
		if st, err := os.Stat(cand); err == nil && !st.IsDir() {
			return cand, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is neither beside this program nor on PATH", name)
	}
	return p, nil
}
