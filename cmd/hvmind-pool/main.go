// Command hvmind-pool runs the HVMind thread pool: by default with an
// embedded NATS server with JetStream, launching local workers as needed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/worker"
	"github.com/hvmind/hvmind/world"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hvmind-pool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := config.Default()
	fs := flag.NewFlagSet("hvmind-pool", flag.ContinueOnError)
	cfg.RegisterCommon(fs)
	cfg.RegisterBroker(fs)
	cfg.RegisterPool(fs)
	cfg.RegisterWorldServe(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hvmind-pool [--workers N --threads T] [--tail] [--nats URL | --data DIR --listen ADDR]")
		fs.PrintDefaults()
	}
	if err := cfg.Parse(fs, args); err != nil {
		return err
	}
	if n := cfg.Pool.WorkerProcess; n != "" && !job.ValidWorkerID(n) {
		return fmt.Errorf("--worker-process %q: a name may hold only letters, digits, '-' and '_'", n)
	}
	log, err := cfg.Logger("hvmind-pool")
	if err != nil {
		return err
	}
	logDir := filepath.Join(cfg.DataDir, "logs")
	if cfg.Pool.Tail {
		// The table owns the terminal; logs go to a file.
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(logDir, "pool.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		log, err = config.NewLogger(f, "hvmind-pool", cfg.LogLevel, "json")
		if err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conn, err := broker.Open(ctx, broker.OpenOptions{
		URL: cfg.NATS, Embed: true, Listen: cfg.Listen, DataDir: cfg.DataDir,
		Name: "hvmind-pool", Logger: log,
	})
	if err != nil {
		return err
	}
	defer conn.Close()

	if cfg.World.Serve {
		ws, err := world.Serve(ctx, conn.NC, world.Options{Scenario: cfg.World.Scenario, Speed: cfg.World.Speed,
			Seed: cfg.World.Seed, Reset: cfg.World.Reset, Logger: log})
		switch {
		case errors.Is(err, world.ErrAlreadyRunning):
			log.Info().Err(err).Msg("using the running world service")
		case err != nil:
			return err
		default:
			defer ws.Stop() // before the connection closes
		}
	}

	policy, err := serverpool.ParsePolicy(cfg.Pool.SizePolicy)
	if err != nil {
		return err
	}
	var launcher serverpool.Launcher
	bin := cfg.Pool.WorkerBin
	if bin == "" {
		bin, err = serverpool.FindWorkerBin()
	}
	if err != nil {
		log.Warn().Err(err).Msg("the pool cannot launch workers; start hvmind-worker by hand")
	} else {
		launcher = &serverpool.LocalLauncher{
			Bin: bin, NATS: conn.URL, LogDir: logDir, Logger: log,
			Args: []string{
				"--heartbeat", cfg.Worker.Heartbeat.String(), "--tolerance", cfg.Worker.Tolerance.String(),
				"--spin", cfg.Worker.Spin.String(), "--log-level", cfg.LogLevel,
			},
			Process: cfg.Pool.WorkerProcess, Conn: conn.NC,
		}
	}
	wc := world.NewClient(conn.NC)
	var servers *serverpool.ServerPool
	if launcher != nil {
		servers = serverpool.New(wc, launcher, policy).Only(strings.Split(cfg.Pool.Hosts, ",")...)
	}
	p, err := pool.New(conn.NC, pool.Options{
		Workers: cfg.Pool.Workers, Threads: cfg.Pool.Threads, Spawn: cfg.Pool.Spawn,
		Launcher: launcher, Host: cfg.Pool.Host, SpawnWait: cfg.Pool.SpawnWait,
		Heartbeat: cfg.Worker.Heartbeat, Tolerance: cfg.Worker.Tolerance, Logger: log,
		RAM: worker.WorldRAM{Client: wc}, World: wc, Servers: servers,
		IdleStop: cfg.Pool.IdleStop, FillHosts: cfg.Pool.FillHosts, Split: cfg.Pool.Split, SplitTolerance: cfg.Pool.SplitTolerance,
		StopWorkersOnExit: cfg.Pool.StopWorkers,
	})
	if err != nil {
		return err
	}
	if cfg.Pool.Tail {
		go func() {
			select {
			case <-p.Ready():
				p.Tail(ctx, os.Stdout, 250*time.Millisecond)
			case <-ctx.Done():
			}
		}()
	}
	err = p.Run(ctx)
	logStopped(log)
	return err
}

func logStopped(log zerolog.Logger) { log.Info().Msg("hvmind-pool stopped") }
