package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"runtime/pprof"
	"time"

	"github.com/hvmind/hvmind/bench"
	"github.com/hvmind/hvmind/serverpool"
)

func (e *env) bench(ctx context.Context, args []string) (int, error) {
	if len(args) == 0 || args[0] != "dispatch" {
		return 2, errors.New("bench wants a benchmark name: dispatch")
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
	if err := fs.Parse(args[1:]); err != nil {
		return 2, err
	}
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
