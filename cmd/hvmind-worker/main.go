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
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
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
	// The timer queue's thread keeps its P while it sleeps in the kernel and
	// spins before a due time (see worker.TimerQueue). One more P than the
	// default keeps the rest of the worker (taking in jobs, storing records,
	// running handlers) as parallel as the machine. GOMAXPROCS, when set,
	// still rules.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hvmind-worker --id ID [--host HOST] [--threads N] [--nats URL]")
		fs.PrintDefaults()
	}
	if err := cfg.Parse(fs, args); err != nil {
		return err
	}
	if cfg.Worker.ID == "" {
		fs.Usage()
		return fmt.Errorf("--id is required")
	}
	log, err := cfg.Logger("hvmind-worker")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conn, err := broker.Open(ctx, broker.OpenOptions{URL: cfg.NATS, Name: "hvmind-worker " + cfg.Worker.ID, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	handlers := worker.NewHandlers()
	wc := world.NewClient(conn.NC)
	worker.RegisterWorldTasks(handlers, wc)
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
		f, err := os.Create(filepath.Join(dir, "worker-"+cfg.Worker.ID+".prof"))
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	return w.Run(ctx)
}
