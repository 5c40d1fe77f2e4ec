// Command hvmind-worker runs one long-lived HVMind worker: it registers its
// host and threads, runs the jobs the pool places on it at their exact
// times, and stores a completion record for each.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
	"github.com/hvmind/hvmind/world"
)

func main() {
	// A worker's live heap is small and its allocation rate high (a record
	// per job): collecting at 4x the live heap instead of 2x halves the GC
	// work for a few MB. GOGC, when set, still rules.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hvmind-worker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := config.Default()
	fs := flag.NewFlagSet("hvmind-worker", flag.ContinueOnError)
	cfg.RegisterCommon(fs)
	cfg.RegisterWorker(fs)
	process := fs.String("process", "", "run a worker process of this name instead of one worker: it starts the workers the pool asks for (hvmind.procs.NAME.launch), all on one timer queue")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hvmind-worker --id ID [--host HOST] [--threads N] [--nats URL]")
		fmt.Fprintln(fs.Output(), "       hvmind-worker --process NAME [--nats URL]")
		fs.PrintDefaults()
	}
	if err := cfg.Parse(fs, args); err != nil {
		return err
	}
	if cfg.Worker.ID == "" && *process == "" {
		fs.Usage()
		return fmt.Errorf("--id (or --process) is required")
	}
	// Checked before connecting, which may wait for the broker.
	for flag, v := range map[string]string{"--id": cfg.Worker.ID, "--process": *process} {
		if v != "" && !job.ValidWorkerID(v) {
			return fmt.Errorf("%s %q: want 1-128 letters, digits, '-' or '_'", flag, v)
		}
	}
	log, err := cfg.Logger("hvmind-worker")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	name := cfg.Worker.ID
	if *process != "" {
		name = "process " + *process
	}
	conn, err := broker.Open(ctx, broker.OpenOptions{URL: cfg.NATS, Name: "hvmind-worker " + name, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	handlers := worker.NewHandlers()
	wc := world.NewClient(conn.NC)
	worker.RegisterWorldTasks(handlers, wc)
	// A second signal stops at once.
	go func() {
		<-ctx.Done()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		log.Warn().Msg("second signal: stopping now")
		os.Exit(1)
	}()
	if dir := os.Getenv("HVMIND_CPUPROFILE_DIR"); dir != "" {
		f, err := os.Create(filepath.Join(dir, "worker-"+strings.ReplaceAll(name, " ", "-")+".prof"))
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	if *process != "" {
		p, err := worker.NewProcess(conn.NC, worker.ProcessOptions{
			Name: *process, Handlers: handlers, RAM: worker.WorldRAM{Client: wc},
			Heartbeat: cfg.Worker.Heartbeat, Tolerance: cfg.Worker.Tolerance, Spin: cfg.Worker.Spin,
			Logger: log,
		})
		if err != nil {
			return err
		}
		return p.Run(ctx)
	}
	var ram worker.RAMKeeper
	if cfg.Worker.ReserveRAM {
		ram = worker.WorldRAM{Client: wc}
	}
	w, err := worker.New(conn.NC, worker.Options{
		Handlers: handlers, RAM: ram, OnDemand: cfg.Worker.OnDemand,
		ID: cfg.Worker.ID, Host: cfg.Worker.Host, Threads: cfg.Worker.Threads,
		Heartbeat: cfg.Worker.Heartbeat, Tolerance: cfg.Worker.Tolerance, Spin: cfg.Worker.Spin,
		Logger: log,
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}
