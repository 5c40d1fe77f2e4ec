// Command hvmind-worker runs one long-lived HVMind worker: it registers its
// host and threads, runs the jobs the pool places on it at their exact
// times, and stores a completion record for each. It runs the built-in
// sleep task and the simulated world's hack, grow and weaken; with
// --reserve it holds its threads in the world's RAM while it lives.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/hosts"
	"github.com/hvmind/hvmind/world/tasks"
)

// workerIdentities gives each worker of a process that connected as
// itself (see broker.Identities) a connection of its own, as that worker,
// its password derived from the process's.
func workerIdentities(conn *broker.Conn, log zerolog.Logger) *worker.ProcessIdentity {
	process, _, _ := broker.ParseIdentity(conn.Auth.User)
	return &worker.ProcessIdentity{
		Dial: func(ctx context.Context, id string) (*nats.Conn, error) {
			a := conn.Auth
			a.User, a.Password = broker.WorkerUser(process, id), broker.WorkerPassword(conn.Auth.Password, id)
			return broker.Connect(ctx, conn.URL, "hvmind-worker "+id, log.With().Str("worker", id).Logger(), a)
		},
		Parts: func(nc *nats.Conn) worker.WorkerParts {
			wc := world.NewClient(nc)
			h := worker.NewHandlers()
			tasks.Register(h, wc)
			return worker.WorkerParts{Handlers: h, Reserver: hosts.New(wc), Settler: tasks.Settler(wc), QueueKeeper: pool.NewQueueKeeper(nc)}
		},
	}
}

const usage = `usage: hvmind-worker --id ID [--host HOST] [--threads N] [--nats URL]
       hvmind-worker --process NAME [--nats URL]

`

func main() {
	// A worker's live heap is small and its allocation rate high (a record
	// per job): collecting at 4x the live heap instead of 2x halves the GC
	// work for a few MB. GOGC, when set, still rules.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	cli.Exit("hvmind-worker", 0, run(os.Args[1:]), os.Stderr)
}

func run(args []string) error {
	p := cli.New("hvmind-worker", usage)
	p.Config.Worker.Host = hosts.Home
	p.Config.RegisterWorker(p.Flags)
	httpAddr := p.Flags.String("http", "", "serve the worker's (or the process's workers') Prometheus metrics at http://ADDR/metrics (empty: off)")
	process := p.Flags.String("process", "", "run a worker process of this name instead of one worker: it starts the workers the pool asks for (hvmind.procs.NAME.launch), all on one timer queue")
	if err := p.Parse(args); err != nil {
		return err
	}
	cfg := &p.Config
	if cfg.Worker.ID == "" && *process == "" {
		p.Flags.Usage()
		return cli.Usagef("--id (or --process) is required")
	}
	// Checked before connecting, which may wait for the broker.
	for flag, v := range map[string]string{"--id": cfg.Worker.ID, "--process": *process} {
		if v != "" && !job.ValidWorkerID(v) {
			return cli.Usagef("%s %q: want 1-128 letters, digits, '-' or '_'", flag, v)
		}
	}
	ctx, stop := p.SignalContext()
	defer stop()

	name := cfg.Worker.ID
	if *process != "" {
		name = "process " + *process
	}
	p.Name = "hvmind-worker " + name
	// The grace bounds the first wait for the broker too: a worker the
	// pool launched just as its broker went away for good (the pool and
	// its embedded broker stopped) waited for it forever, a leftover
	// process found still running 45 minutes later.
	openCtx := ctx
	if g := cfg.Worker.BrokerGrace; g > 0 {
		var cancel context.CancelFunc
		openCtx, cancel = context.WithTimeout(ctx, g)
		defer cancel()
	}
	conn, err := p.Open(openCtx, false)
	if err != nil {
		if ctx.Err() == nil && openCtx.Err() != nil {
			return fmt.Errorf("the broker was unreachable for the grace of %s: %w", cfg.Worker.BrokerGrace, err)
		}
		return err
	}
	defer conn.Close()
	ctx = p.StopWhenBrokerGone(ctx, conn.NC, cfg.Worker.BrokerGrace)
	wc := world.NewClient(conn.NC)
	handlers := worker.NewHandlers()
	tasks.Register(handlers, wc)
	if dir := os.Getenv("HVMIND_CPUPROFILE_DIR"); dir != "" {
		f, err := os.Create(filepath.Join(dir, "worker-"+strings.ReplaceAll(name, " ", "-")+".prof"))
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	metrics := worker.NewMetrics()
	if *httpAddr != "" {
		ms, err := cli.ServeMetrics(*httpAddr, p.Log, metrics)
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	if *process != "" {
		// One process of a name per broker on this machine (see
		// cli.LockOne).
		release, err := cli.LockOne("worker process "+*process, conn.URL)
		if err != nil {
			return err
		}
		defer release()
		o := cfg.WorkerProcessOptions(*process)
		o.Handlers, o.Reserver, o.Logger = handlers, hosts.New(wc), p.Log
		o.Settler, o.Metrics = tasks.Settler(wc), metrics
		if name, _, ok := broker.ParseIdentity(conn.Auth.User); ok {
			if name != *process {
				return cli.Usagef("--process %s connects as %s, another process's identity", *process, conn.Auth.User)
			}
			o.Identity = workerIdentities(conn, p.Log)
		}
		proc, err := worker.NewProcess(conn.NC, o)
		if err != nil {
			return cli.Usage(err)
		}
		return proc.Run(ctx)
	}
	o := cfg.WorkerOptions()
	o.Handlers, o.Logger, o.Metrics = handlers, p.Log, metrics
	if _, _, ok := broker.ParseIdentity(conn.Auth.User); ok {
		// As itself: its queue is the pool's to make.
		o.QueueKeeper = pool.NewQueueKeeper(conn.NC)
	}
	o.Settler = tasks.Settler(wc)
	if cfg.Worker.Reserve {
		o.Reserver = hosts.New(wc)
	}
	w, err := worker.New(conn.NC, o)
	if err != nil {
		return cli.Usage(err)
	}
	return w.Run(ctx)
}
