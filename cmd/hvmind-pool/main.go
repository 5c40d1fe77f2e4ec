// Command hvmind-pool runs the HVMind thread pool: by default with an
// embedded NATS server with JetStream and the simulated world's service,
// launching workers on the world's hosts as jobs need them.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/live"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/webui"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/hosts"
	"github.com/hvmind/hvmind/world/tasks"
)

// launchedBrokerGrace is how long a worker the pool launched waits for an
// unreachable broker before it stops.
const launchedBrokerGrace = time.Minute

// embeddedStopBound is how long the pool, once stopped, waits for its
// embedded broker to stop before it exits: a clean stop of a few dozen
// workers' queues fits in it.
const embeddedStopBound = 500 * time.Millisecond

// Where --game listens by default: the broker's WebSocket for the
// executor, and the HTTP server that serves it.
const (
	gameWebSocket = "127.0.0.1:7465"
	gameHTTP      = "127.0.0.1:7464"
)

const usage = `usage: hvmind-pool [--workers N --threads T] [--tail] [--nats URL | --data DIR --listen ADDR]

`

func main() {
	cli.Exit("hvmind-pool", 0, run(os.Args[1:]), os.Stderr)
}

func run(args []string) error {
	p := cli.New("hvmind-pool", usage)
	cfg := &p.Config
	cfg.Pool.Host, cfg.Worker.Host = hosts.Home, hosts.Home
	cfg.RegisterBroker(p.Flags)
	cfg.RegisterPool(p.Flags)
	cfg.RegisterStorage(p.Flags)
	wcfg := world.DefaultConfig()
	wcfg.RegisterFlags(p.Flags, true)
	workerHTTP := p.Flags.String("worker-http", "", "with --worker-process: the worker process serves its workers' Prometheus metrics at http://ADDR/metrics (empty: off)")
	httpAddr := p.Flags.String("http", "", "serve the jobs' live timeline at http://ADDR/ and the pool's Prometheus metrics (and the world's, when the pool runs it) at http://ADDR/metrics (for example 127.0.0.1:7464; empty: off)")
	printIdentity := p.Flags.String("print-identity", "", "with --identity-key: print the environment (HVMIND_USER, HVMIND_PASSWORD) of the worker process NAME, or of the worker ID on its own with worker:ID, for starting it by hand; or, with issuer, the HVMIND_IDENTITY_ISSUER of the broker's configuration; and exit")
	playGame := p.Flags.Bool("game", false, "play the live Bitburner game: the world is the game, through the executor hvmind.js running in it; the embedded broker keeps its files in DATA/game, takes the executor's WebSocket at --websocket (default "+gameWebSocket+"), and --http (default "+gameHTTP+") serves the executor")
	splitTolerance := p.Flags.Float64("split-tolerance", tasks.DefaultSplitTolerance, "largest relative change of a hack's or grow's effect that splitting may cause")
	if err := p.Parse(args); err != nil {
		return err
	}
	if err := wcfg.Validate(); err != nil {
		return cli.Usage(err)
	}
	if *playGame {
		if cfg.NATS != "" {
			return cli.Usagef("--game runs the embedded broker, whose WebSocket listener the game's executor connects to: drop --nats")
		}
		if !wcfg.Serve {
			return cli.Usagef("--game answers the world's requests from the game in this process: drop --world=false")
		}
		// Apart from a simulated world's workers and reservations.
		cfg.DataDir = filepath.Join(cfg.DataDir, "game")
		if cfg.WebSocket == "" {
			cfg.WebSocket = gameWebSocket
		}
		if *httpAddr == "" {
			*httpAddr = gameHTTP
		}
	}
	if n := cfg.Pool.WorkerProcess; n != "" && !job.ValidWorkerID(n) {
		return cli.Usagef("--worker-process %q: a name may hold only letters, digits, '-' and '_'", n)
	}
	if *workerHTTP != "" && cfg.Pool.WorkerProcess == "" {
		return cli.Usagef("--worker-http needs --worker-process: workers in processes of their own would share its address")
	}
	policy, err := serverpool.ParsePolicy(cfg.Pool.SizePolicy)
	if err != nil {
		return cli.Usagef("--size-policy: %v", err)
	}
	bin := cfg.Pool.WorkerBin
	if bin == "" {
		var err error
		if bin, err = serverpool.FindWorkerBin(); err != nil {
			if cfg.Pool.Workers > 0 {
				return cli.Usagef("--workers %d: %v", cfg.Pool.Workers, err)
			}
			p.Log.Warn().Err(err).Msg("the pool cannot launch workers; start hvmind-worker by hand")
		}
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
		if p.Log, err = config.NewLogger(f, "hvmind-pool", cfg.LogLevel, "json"); err != nil {
			return err
		}
	}
	var ids *broker.Identities
	if cfg.Pool.IdentityKey != "" {
		if cfg.Pool.WorkerAuth != (broker.Auth{}) {
			return cli.Usagef("--identity-key gives each worker its own credentials: drop the --worker-* credentials")
		}
		if ids, err = identities(cfg.Pool.IdentityKey, p.Log); err != nil {
			return err
		}
		ids.Grants = world.WorkerGrants
		if *printIdentity != "" {
			return printEnv(ids, *printIdentity)
		}
		// For the embedded broker's configuration (--nats-config), whose
		// auth_callout names the issuer as $HVMIND_IDENTITY_ISSUER.
		if err := os.Setenv(identityIssuerEnv, ids.Issuer()); err != nil {
			return err
		}
	}
	if *printIdentity != "" && ids == nil {
		return cli.Usagef("--print-identity needs --identity-key")
	}
	ctx, stop := p.SignalContext()
	defer stop()

	conn, err := p.Open(ctx, true)
	if err != nil && ids == nil && strings.Contains(err.Error(), identityIssuerEnv) {
		return fmt.Errorf("%w (the configuration sends workers to the pool: give it --identity-key FILE)", err)
	}
	if err != nil {
		return err
	}
	// The embedded broker's own stop grows with its consumers (10 ms
	// each); past this, the exit ends it (see Embedded.ShutdownWithin).
	defer conn.CloseToExit(embeddedStopBound)
	// A CPU profile of the whole process (the embedded broker too), for
	// finding where the pool's time goes at scale.
	if path := os.Getenv("HVMIND_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}

	var worldMetrics []prometheus.Collector
	if *playGame {
		// As the simulated world: it outlives the pool's stop.
		worldCtx, stopWorld := context.WithCancel(context.WithoutCancel(ctx))
		defer stopWorld()
		gs, err := live.Serve(worldCtx, conn.NC, live.ServiceOptions{Storage: cfg.Storage(), Logger: p.Log})
		if err != nil {
			return err
		}
		defer gs.Stop()
	} else if wcfg.Serve {
		// The world outlives the pool's stop: the workers finish their
		// jobs in it, and give their RAM back to it, as they stop.
		worldCtx, stopWorld := context.WithCancel(context.WithoutCancel(ctx))
		defer stopWorld()
		wo := wcfg.Options(p.Log)
		wo.Storage = cfg.Storage()
		ws, err := world.Serve(worldCtx, conn.NC, wo)
		switch {
		case errors.Is(err, world.ErrAlreadyRunning):
			p.Log.Info().Err(err).Msg("using the running world service")
		case err != nil:
			return err
		default:
			defer ws.Stop() // before the connection closes
			worldMetrics = append(worldMetrics, ws.Metrics())
		}
	}

	var launcher serverpool.Launcher
	if bin != "" {
		launcher = &serverpool.LocalLauncher{
			Bin: bin, NATS: conn.URL, LogDir: logDir, Logger: p.Log,
			Args: []string{
				"--heartbeat", cfg.Worker.Heartbeat.String(), "--tolerance", cfg.Worker.Tolerance.String(),
				"--spin", cfg.Worker.Spin.String(), "--stop-grace", cfg.Worker.StopGrace.String(),
				"--log-level", cfg.LogLevel,
				// A launched worker has nothing to do without the broker.
				"--broker-grace", launchedBrokerGrace.String(),
			},
			Process: cfg.Pool.WorkerProcess, Conn: conn.NC, ProcessArgs: workerHTTPArgs(*workerHTTP),
			Env: workerAuth(conn.Auth, cfg.Pool.WorkerAuth).Env(),
		}
		if ids != nil {
			l := launcher.(*serverpool.LocalLauncher)
			l.Env = nil
			l.EnvFor = func(name string, process bool) []string {
				if process {
					return ids.Env(name, conn.Auth)
				}
				return ids.WorkerEnv(name, conn.Auth)
			}
		}
	}
	wc := world.NewClient(conn.NC)
	servers, err := serverpool.New(serverpool.Options{
		Provider: hosts.New(wc), Launcher: launcher, Policy: policy, Only: strings.Split(cfg.Pool.Hosts, ","),
	})
	if err != nil {
		return err
	}
	o := cfg.PoolOptions()
	o.Launcher, o.Servers, o.Logger, o.Identities = launcher, servers, p.Log, ids
	o.Settler, o.Validator = tasks.Settler(wc), tasks.Validator(wc)
	if g := cfg.Worker.StopGrace; g > 0 {
		// Its running jobs, then their records, and some.
		o.StopWait = 2*g + 5*time.Second
	}
	o.Split = pool.NoSplit
	if cfg.Pool.Split {
		o.Split = tasks.SplitPolicy(wc, *splitTolerance)
	}
	pl, err := pool.New(conn.NC, o)
	if err != nil {
		return cli.Usage(err)
	}
	if cfg.Pool.Tail {
		go func() {
			select {
			case <-pl.Ready():
				pl.Tail(ctx, os.Stdout, 250*time.Millisecond)
			case <-ctx.Done():
			}
		}()
	}
	if *httpAddr != "" {
		ui, err := webui.New(conn.NC, webui.Options{Status: pl.Status, Annotator: tasks.Annotator(wc), Logger: p.Log})
		if err != nil {
			return err
		}
		routes := map[string]http.Handler{"/": ui.Handler()}
		wsPort := executorPort(conn)
		if wsPort > 0 {
			h := live.Handler(wsPort)
			for _, f := range live.ScriptNames() {
				routes["/"+f] = h
			}
		}
		ms, err := cli.ServeHTTP(*httpAddr, p.Log, routes, append(worldMetrics, pl.Metrics())...)
		if err != nil {
			ui.Close()
			return err
		}
		defer ms.Close()
		defer ui.Close() // first: its pages' streams end, so the server stops at once
		p.Log.Info().Str("url", ms.Base).Msg("the jobs' timeline")
		if wsPort > 0 {
			cmds := live.InstallCommands(strings.TrimSuffix(strings.TrimPrefix(ms.Base, "http://"), "/"))
			p.Log.Info().Str("first", cmds[0]).Str("then", cmds[1]).
				Msg("the game's executor is served: in the game's terminal, type")
		}
	}
	err = pl.Run(ctx)
	if l, ok := launcher.(*serverpool.LocalLauncher); ok && cfg.Pool.StopWorkers {
		// The worker processes it started (a worker process lingers a
		// little after its workers stop): before the world and the broker.
		l.StopAll(10 * time.Second)
	}
	p.Log.Info().Msg("hvmind-pool stopped")
	return err
}

// workerAuth is the credentials for the workers the pool launches: those
// given for them, else the pool's own; the TLS files are the pool's.
func workerAuth(pool, workers broker.Auth) broker.Auth {
	if workers.Creds == "" && workers.NKey == "" && workers.User == "" && workers.Token == "" {
		return pool
	}
	workers.TLSCA, workers.TLSCert, workers.TLSKey = pool.TLSCA, pool.TLSCert, pool.TLSKey
	return workers
}

// identityIssuerEnv names the issuer of the worker identities in the
// broker's configuration.
const identityIssuerEnv = "HVMIND_IDENTITY_ISSUER"

// identities reads the account nkey seed of the worker identities from
// path, made (readable by its owner only) when there is none.
func identities(path string, log zerolog.Logger) (*broker.Identities, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if seed, err = broker.NewIdentitySeed(); err != nil {
			return nil, fmt.Errorf("--identity-key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("--identity-key: %w", err)
		}
		if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("--identity-key: %w", err)
		}
		log.Info().Str("file", path).Msg("made a new key for the worker identities")
	} else if err != nil {
		return nil, fmt.Errorf("--identity-key: %w", err)
	}
	ids, err := broker.NewIdentities(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("--identity-key %s: %w", path, err)
	}
	log.Info().Str("issuer", ids.Issuer()).Msg("worker identities: the broker's auth_callout issuer (" + identityIssuerEnv + ")")
	return ids, nil
}

// printEnv prints the credentials of the worker process name (or of the
// worker on its own, "worker:ID") as environment lines; "issuer" prints
// the issuer for the broker's configuration.
func printEnv(ids *broker.Identities, name string) error {
	if name == "issuer" {
		fmt.Println(identityIssuerEnv + "=" + ids.Issuer())
		return nil
	}
	id, alone := strings.CutPrefix(name, "worker:")
	if !job.ValidWorkerID(id) {
		return cli.Usagef("--print-identity %q: want a worker process's name, or worker:ID", name)
	}
	env := ids.Env(id, broker.Auth{})
	if alone {
		env = ids.WorkerEnv(id, broker.Auth{})
	}
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); v != "" && (k == "HVMIND_USER" || k == "HVMIND_PASSWORD") {
			fmt.Println(kv)
		}
	}
	return nil
}

// workerHTTPArgs are the worker process's flags for its metrics at addr.
func workerHTTPArgs(addr string) []string {
	if addr == "" {
		return nil
	}
	return []string{"--http", addr}
}

// executorPort is the port of the embedded broker's WebSocket listener,
// where the game's executor connects (0: none).
func executorPort(conn *broker.Conn) int {
	if conn.Embedded == nil {
		return 0
	}
	u, err := url.Parse(conn.Embedded.WebSocketURL())
	if err != nil || u.Port() == "" {
		return 0
	}
	port, _ := strconv.Atoi(u.Port())
	return port
}
