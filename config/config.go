// Package config is the programs' typed configuration of the job system:
// the broker, the pool and the workers. Every setting is a command-line
// flag; the same setting can come from a JSON file (--config, keyed by flag
// name) or the environment (HVMIND_ and the flag name in upper case with
// '-' as '_'). Precedence: defaults < file < environment < flags. Parse
// fills any flag of the set it is given, so a program registers the flags
// of the other parts it wires on the same set.
//
// The defaults are the packages' own (pool.DefaultThreads, …), and
// PoolOptions and WorkerOptions turn the settings into those packages'
// options, which validate them. A program may change a default (Default
// returns a value) before it registers the flags.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/worker"
)

// Config holds every setting of every program; each program registers the
// flags it uses.
type Config struct {
	// ConfigFile is the JSON file read for settings not given as flags.
	ConfigFile string
	// NATS is the URL of an external nats-server; empty means embedded.
	NATS string
	// Auth is the credentials for the broker.
	Auth broker.Auth
	// Listen is where an embedded broker listens.
	Listen string
	// DataDir is the embedded broker's storage directory.
	DataDir string
	// WebSocket, when set, is where the embedded broker also takes NATS
	// over WebSocket (host:port), as a script in a web page connects.
	WebSocket string
	// NATSConfig is a nats-server configuration file for the embedded
	// broker (users and permissions; see deploy/nats/hvmind-roles.conf).
	NATSConfig string
	// Sync is how often the embedded broker flushes JetStream's files to
	// disk: "always", an interval, or "default" (see broker.ParseSync).
	Sync string
	// Replicas and PlacementTags (comma-separated) are the streams' and
	// buckets' replicas and placement (see broker.Storage).
	Replicas      int
	PlacementTags string
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string
	// LogFormat is auto (pretty on a terminal, JSON otherwise), pretty or json.
	LogFormat string

	Pool   Pool
	Worker Worker

	// file is the config file's settings, read by Parse.
	file map[string]json.RawMessage
}

// Pool configures hvmind-pool.
type Pool struct {
	// Workers and Threads: local workers the pool keeps running, and the
	// threads of each (also the size of a worker spawned on demand).
	Workers int
	Threads int
	// Spawn lets the pool start local workers when no worker can take a job.
	Spawn bool
	// WorkerAuth is the credentials the pool hands to the workers it
	// launches (in their environment); when it has none, they get the
	// pool's own. The TLS files are always the pool's.
	WorkerAuth broker.Auth
	// IdentityKey is an account nkey seed file: with it, the pool gives
	// each worker process and worker an identity of its own (see
	// broker.Identities), and answers the broker about them.
	IdentityKey string
	// WorkerBin is the hvmind-worker executable; empty looks beside the pool,
	// then on PATH.
	WorkerBin string
	// Host is the host name given to the local workers the pool launches.
	Host string
	// Tail draws the live table of workers.
	Tail bool
	// SpawnWait bounds how long a dispatch waits for a launched worker.
	SpawnWait time.Duration
	// SizePolicy sizes on-demand workers: exact, host or chunk:N.
	SizePolicy string
	// Hosts, when set, are the only hosts of the capacity provider the pool
	// launches workers on (comma-separated).
	Hosts string
	// WorkerProcess, when set, runs the workers the pool launches in one
	// hvmind-worker process of that name, on one timer queue.
	WorkerProcess string
	// FillHosts keeps a worker on every host, with all its free threads.
	FillHosts bool
	// IdleStop stops on-demand workers idle this long (0: never).
	IdleStop time.Duration
	// Split allows splitting a job over several workers, as the split
	// policy the program wires allows.
	Split bool
	// StopWorkers asks the live workers to stop when the pool stops, and
	// stops the worker processes it launched.
	StopWorkers bool
}

// Worker configures hvmind-worker.
type Worker struct {
	ID      string
	Host    string
	Threads int
	// Heartbeat is the interval between registry updates.
	Heartbeat time.Duration
	// Tolerance is how late a job may start before it is missed instead.
	Tolerance time.Duration
	// Spin is how long before a due time the timer queue stops sleeping and
	// spins on the clock.
	Spin time.Duration
	// Reserve holds the worker's threads on its host with the capacity
	// provider the program wires.
	Reserve bool
	// OnDemand marks a worker the pool launched for a job that did not fit.
	OnDemand bool
	// StopGrace is how long a stopping worker lets running jobs run, and
	// then waits for their records (0: as long as they take).
	StopGrace time.Duration
	// BrokerGrace stops a worker that has not reached the broker for this
	// long (0: it waits for the broker forever).
	BrokerGrace time.Duration
}

// DefaultSync is the embedded broker's default disk flushing: every write
// before it is acknowledged. A record stored is then on disk, and so is
// every write its task made through the broker before it ended (the
// worker stores the record after). With nats-server's own default (every
// two minutes) a crash of the machine may lose writes that were
// acknowledged. It costs throughput (bench dispatch: about 4,400 jobs/s
// flat out instead of 45,000-60,000; the README has the figures);
// --sync 1s costs nothing measurable.
const DefaultSync = "always"

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		Listen:    broker.DefaultListen,
		DataDir:   DefaultDataDir(),
		Sync:      DefaultSync,
		LogLevel:  "info",
		LogFormat: "auto",
		Pool: Pool{
			Threads:    pool.DefaultThreads,
			Spawn:      true,
			Host:       job.LocalHost(),
			SpawnWait:  pool.DefaultSpawnWait,
			SizePolicy: serverpool.DefaultPolicy.String(),
			IdleStop:   pool.DefaultIdleStop,
			Split:      true,
			// What a program starts stops with it, unless asked otherwise.
			StopWorkers: true,
		},
		Worker: Worker{
			Host:      job.LocalHost(),
			Threads:   pool.DefaultThreads,
			Heartbeat: worker.DefaultHeartbeat,
			Tolerance: worker.DefaultTolerance,
			Spin:      worker.DefaultSpin,
			StopGrace: worker.DefaultStopGrace,
		},
	}
}

// ErrInvalid wraps a setting out of range.
var ErrInvalid = errors.New("invalid setting")

// Validate checks the settings as a person gives them: a flag's 0 means
// what its help says (--spin 0: never spin), never "the default", and a
// negative count or duration is an error rather than a silent fix.
func (c *Config) Validate() error {
	if _, err := c.BrokerSync(); err != nil {
		return err
	}
	if err := c.Storage().Validate(); err != nil {
		return fmt.Errorf("%w: --%w", ErrInvalid, err)
	}
	for _, d := range []struct {
		flag     string
		v        time.Duration
		zeroOK   bool
		whatZero string
	}{
		{"heartbeat", c.Worker.Heartbeat, false, ""},
		{"tolerance", c.Worker.Tolerance, false, ""},
		{"spin", c.Worker.Spin, true, "never spin"},
		{"spawn-wait", c.Pool.SpawnWait, false, ""},
		{"idle-stop", c.Pool.IdleStop, true, "never stop"},
		{"stop-grace", c.Worker.StopGrace, true, "no limit"},
		{"broker-grace", c.Worker.BrokerGrace, true, "wait forever"},
	} {
		if d.v < 0 || (d.v == 0 && !d.zeroOK) {
			want := "a positive duration"
			if d.zeroOK {
				want = "0 (" + d.whatZero + ") or a positive duration"
			}
			return fmt.Errorf("%w: --%s %s: want %s", ErrInvalid, d.flag, d.v, want)
		}
	}
	switch {
	case c.Pool.Workers < 0:
		return fmt.Errorf("%w: --workers %d: want 0 or more", ErrInvalid, c.Pool.Workers)
	case c.Pool.Threads <= 0:
		return fmt.Errorf("%w: --threads %d: want a positive number", ErrInvalid, c.Pool.Threads)
	case c.Worker.Threads <= 0:
		return fmt.Errorf("%w: --threads %d: want a positive number", ErrInvalid, c.Worker.Threads)
	}
	return nil
}

// PoolOptions is the pool's settings as pool.Options; the program adds
// what it wires (Launcher, Servers, Split, Logger).
func (c *Config) PoolOptions() pool.Options {
	return pool.Options{
		Workers: c.Pool.Workers, Threads: c.Pool.Threads, Host: c.Pool.Host, Spawn: c.Pool.Spawn,
		IdleStop: orNever(c.Pool.IdleStop), FillHosts: c.Pool.FillHosts, SpawnWait: c.Pool.SpawnWait,
		Heartbeat: c.Worker.Heartbeat, Tolerance: c.Worker.Tolerance, StopWorkersOnExit: c.Pool.StopWorkers,
		Storage: c.Storage(),
	}
}

// WorkerOptions is the worker's settings as worker.Options; the program
// adds what it wires (Handlers, Reserver, Logger).
func (c *Config) WorkerOptions() worker.Options {
	return worker.Options{
		ID: c.Worker.ID, Host: c.Worker.Host, Threads: c.Worker.Threads, OnDemand: c.Worker.OnDemand,
		Heartbeat: c.Worker.Heartbeat, Tolerance: c.Worker.Tolerance, Spin: orNever(c.Worker.Spin),
		StopGrace: orNever(c.Worker.StopGrace),
	}
}

// WorkerProcessOptions is the worker process's settings.
func (c *Config) WorkerProcessOptions(name string) worker.ProcessOptions {
	return worker.ProcessOptions{Name: name, Heartbeat: c.Worker.Heartbeat, Tolerance: c.Worker.Tolerance,
		Spin: orNever(c.Worker.Spin), StopGrace: orNever(c.Worker.StopGrace)}
}

// orNever turns a flag's 0, which means "never" (--spin 0: no spinning,
// --idle-stop 0: no stopping, --stop-grace 0: no limit), into the negative
// value the options take for it; their 0 is the default.
func orNever(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// DefaultDataDir is $XDG_DATA_HOME/hvmind, else ~/.local/share/hvmind.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "hvmind")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "hvmind")
	}
	return filepath.Join(os.TempDir(), "hvmind")
}

// RegisterCommon adds the flags every program has.
func (c *Config) RegisterCommon(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "JSON file of settings, keyed by flag name")
	fs.StringVar(&c.NATS, "nats", c.NATS, "URL of an external nats-server (also NATS_URL); empty: the embedded broker")
	fs.StringVar(&c.Auth.Creds, "creds", c.Auth.Creds, "NATS credentials file (also NATS_CREDS)")
	fs.StringVar(&c.Auth.NKey, "nkey", c.Auth.NKey, "file of a NATS user nkey seed (also NATS_NKEY)")
	fs.StringVar(&c.Auth.User, "user", c.Auth.User, "NATS user (also NATS_USER)")
	fs.StringVar(&c.Auth.Password, "password", c.Auth.Password, "NATS password (also NATS_PASSWORD; better in the environment or the config file than on a command line)")
	fs.StringVar(&c.Auth.Token, "token", c.Auth.Token, "NATS token (also NATS_TOKEN; better in the environment or the config file)")
	fs.StringVar(&c.Auth.TLSCA, "tls-ca", c.Auth.TLSCA, "CA file that verifies the NATS server (also NATS_CA)")
	fs.StringVar(&c.Auth.TLSCert, "tls-cert", c.Auth.TLSCert, "client certificate file (also NATS_CERT)")
	fs.StringVar(&c.Auth.TLSKey, "tls-key", c.Auth.TLSKey, "client key file (also NATS_KEY)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: trace, debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: auto, pretty, json")
}

// RegisterBroker adds the embedded broker's flags.
func (c *Config) RegisterBroker(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "address of the embedded broker")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory of the embedded broker")
	fs.StringVar(&c.WebSocket, "websocket", c.WebSocket, "the embedded broker also takes NATS over WebSocket at this host:port, without TLS, as a script in a web page connects (empty: off)")
	fs.StringVar(&c.NATSConfig, "nats-config", c.NATSConfig, "nats-server configuration file for the embedded broker: its users and their permissions (deploy/nats/hvmind-roles.conf), TLS")
	fs.StringVar(&c.Sync, "sync", c.Sync, "how often the embedded broker flushes its files to disk: always (every write, before it is acknowledged), an interval such as 1s (a machine crash may lose what was acknowledged since), or default (nats-server's: every 2 minutes)")
}

// RegisterStorage adds the flags of the streams' and buckets' replicas and
// placement, for the programs that create them.
func (c *Config) RegisterStorage(fs *flag.FlagSet) {
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "copies a NATS cluster keeps of each stream and bucket, 1 to 5, applied to existing ones too (0: leave them as they are; new ones get 1)")
	fs.StringVar(&c.PlacementTags, "placement-tags", c.PlacementTags, "comma-separated server tags the copies must be placed on (nats-server's server_tags; empty: anywhere)")
}

// Storage is the streams' and buckets' replicas and placement.
func (c *Config) Storage() broker.Storage {
	var tags []string
	for _, t := range strings.Split(c.PlacementTags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return broker.Storage{Replicas: c.Replicas, Tags: tags}
}

// BrokerSync is the embedded broker's sync setting (see --sync).
func (c *Config) BrokerSync() (broker.Sync, error) {
	s, err := broker.ParseSync(c.Sync)
	if err != nil {
		return broker.Sync{}, fmt.Errorf("%w: --%w", ErrInvalid, err)
	}
	return s, nil
}

// RegisterPool adds hvmind-pool's flags.
func (c *Config) RegisterPool(fs *flag.FlagSet) {
	fs.IntVar(&c.Pool.Workers, "workers", c.Pool.Workers, "local workers to keep running")
	fs.IntVar(&c.Pool.Threads, "threads", c.Pool.Threads, "threads of each local worker")
	fs.BoolVar(&c.Pool.Spawn, "spawn", c.Pool.Spawn, "launch local workers on demand when no worker can take a job")
	fs.StringVar(&c.Pool.WorkerAuth.Creds, "worker-creds", c.Pool.WorkerAuth.Creds, "credentials file for the workers the pool launches (default: the pool's own credentials)")
	fs.StringVar(&c.Pool.WorkerAuth.NKey, "worker-nkey", c.Pool.WorkerAuth.NKey, "nkey seed file for the workers the pool launches")
	fs.StringVar(&c.Pool.WorkerAuth.User, "worker-user", c.Pool.WorkerAuth.User, "NATS user for the workers the pool launches")
	fs.StringVar(&c.Pool.WorkerAuth.Password, "worker-password", c.Pool.WorkerAuth.Password, "its password (better in HVMIND_WORKER_PASSWORD or the config file)")
	fs.StringVar(&c.Pool.WorkerAuth.Token, "worker-token", c.Pool.WorkerAuth.Token, "NATS token for the workers the pool launches")
	fs.StringVar(&c.Pool.IdentityKey, "identity-key", c.Pool.IdentityKey, "account nkey seed file (made when missing): each worker process and worker the pool launches connects as itself, allowed only its own subjects, and the pool answers the broker about them (its auth_callout; see deploy/nats/hvmind-roles.conf)")
	fs.StringVar(&c.Pool.WorkerBin, "worker-bin", c.Pool.WorkerBin, "hvmind-worker executable (default: beside hvmind-pool, then PATH)")
	fs.StringVar(&c.Pool.Host, "host", c.Pool.Host, "host name of the local workers the pool launches")
	fs.BoolVar(&c.Pool.Tail, "tail", c.Pool.Tail, "draw a live table of workers")
	fs.DurationVar(&c.Pool.SpawnWait, "spawn-wait", c.Pool.SpawnWait, "how long a dispatch waits for a launched worker to register")
	fs.StringVar(&c.Pool.Hosts, "hosts", c.Pool.Hosts, "comma-separated hosts the pool may launch workers on (empty: every host the capacity provider offers)")
	fs.StringVar(&c.Pool.SizePolicy, "size-policy", c.Pool.SizePolicy, "size of workers launched on the provider's hosts: exact (the job's threads), host (all the host's free threads) or chunk:N (rounded up to N threads)")
	fs.StringVar(&c.Pool.WorkerProcess, "worker-process", c.Pool.WorkerProcess, "launch workers inside one hvmind-worker process of this name, on one timer queue, instead of a process each (best for batching on a machine with few cores)")
	fs.BoolVar(&c.Pool.FillHosts, "fill-hosts", c.Pool.FillHosts, "keep a worker holding all the free threads of every host (--hosts), not only when a job does not fit: what a batcher wants")
	fs.DurationVar(&c.Pool.IdleStop, "idle-stop", c.Pool.IdleStop, "stop workers launched on demand after this long with nothing to do (0: never)")
	fs.BoolVar(&c.Pool.Split, "split", c.Pool.Split, "split a job that fits no single worker over several, where its task allows")
	fs.BoolVar(&c.Pool.StopWorkers, "stop-workers", c.Pool.StopWorkers, "stop the live workers, and the worker processes the pool launched, when the pool stops (false: they outlive it, and the next pool adopts them)")
	c.registerTiming(fs)
}

// RegisterWorker adds hvmind-worker's flags.
func (c *Config) RegisterWorker(fs *flag.FlagSet) {
	fs.StringVar(&c.Worker.ID, "id", c.Worker.ID, "worker id (letters, digits, '-', '_'); required")
	fs.StringVar(&c.Worker.Host, "host", c.Worker.Host, "host the worker runs on")
	fs.IntVar(&c.Worker.Threads, "threads", c.Worker.Threads, "threads this worker offers")
	fs.BoolVar(&c.Worker.Reserve, "reserve", c.Worker.Reserve, "hold this worker's threads on --host with the capacity provider while running (refuse to start if they do not fit)")
	fs.BoolVar(&c.Worker.OnDemand, "on-demand", c.Worker.OnDemand, "set by the pool on workers it launched for a job: stopped when idle")
	fs.DurationVar(&c.Worker.BrokerGrace, "broker-grace", c.Worker.BrokerGrace, "stop when the broker has been unreachable this long (0: wait for it forever; the pool gives the workers it launches 1m)")
	c.registerTiming(fs)
}

func (c *Config) registerTiming(fs *flag.FlagSet) {
	fs.DurationVar(&c.Worker.Heartbeat, "heartbeat", c.Worker.Heartbeat, "interval between worker heartbeats")
	fs.DurationVar(&c.Worker.Tolerance, "tolerance", c.Worker.Tolerance, "how late a job may start before it ends as missed")
	fs.DurationVar(&c.Worker.Spin, "spin", c.Worker.Spin, "how long before a due time the timer spins instead of sleeping (0: never spin)")
	fs.DurationVar(&c.Worker.StopGrace, "stop-grace", c.Worker.StopGrace, "how long a stopping worker lets running jobs run before cancelling them, and then waits for their records (0: as long as they take)")
}

// Parse parses args into fs, then fills every flag not given on the command
// line from the environment or, failing that, the config file, whose every
// key must be a flag of fs.
func (c *Config) Parse(fs *flag.FlagSet, args []string) error {
	if err := c.ParseLeading(fs, args); err != nil {
		return err
	}
	return c.CheckFileKeys(fs)
}

// ParseLeading is Parse for a program with commands of their own flags:
// the config file's keys are checked later, against the program's flags
// and its command's (CheckFileKeys), once the command's are filled
// (Fill).
func (c *Config) ParseLeading(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !given(fs)["config"] {
		if v := os.Getenv(EnvName("config")); v != "" {
			c.ConfigFile = v
		}
	}
	c.file = map[string]json.RawMessage{}
	if c.ConfigFile != "" {
		data, err := os.ReadFile(c.ConfigFile)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := json.Unmarshal(data, &c.file); err != nil {
			return fmt.Errorf("config file %s: %w", c.ConfigFile, err)
		}
	}
	return c.Fill(fs)
}

// given is the flags of fs set on the command line.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// Fill fills every flag of fs (parsed already) not given on the command
// line from the environment or, failing that, the config file read by
// Parse or ParseLeading.
func (c *Config) Fill(fs *flag.FlagSet) error {
	set := given(fs)
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == "config" {
			return
		}
		if v, ok := lookupEnv(f.Name); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("environment %s: %w", EnvName(f.Name), e)
			}
			return
		}
		if raw, ok := c.file[f.Name]; ok {
			v := string(raw)
			var s string
			if json.Unmarshal(raw, &s) == nil {
				v = s
			}
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("config file %s: %s: %w", c.ConfigFile, f.Name, e)
			}
		}
	})
	return err
}

// CheckFileKeys reports a key of the config file that is a flag of none
// of the sets: a typo is an error, not a setting silently ignored.
func (c *Config) CheckFileKeys(sets ...*flag.FlagSet) error {
	for k := range c.file {
		known := false
		for _, fs := range sets {
			known = known || fs.Lookup(k) != nil
		}
		if !known {
			return fmt.Errorf("config file %s: unknown setting %q", c.ConfigFile, k)
		}
	}
	return nil
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return "HVMIND_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// natsEnv are the variables of the nats CLI's that stand for flags.
var natsEnv = map[string]string{
	"nats": "NATS_URL", "creds": "NATS_CREDS", "nkey": "NATS_NKEY", "user": "NATS_USER",
	"password": "NATS_PASSWORD", "token": "NATS_TOKEN", "tls-ca": "NATS_CA", "tls-cert": "NATS_CERT", "tls-key": "NATS_KEY",
}

func lookupEnv(flagName string) (string, bool) {
	if v, ok := os.LookupEnv(EnvName(flagName)); ok {
		return v, true
	}
	if name, ok := natsEnv[flagName]; ok {
		return os.LookupEnv(name)
	}
	return "", false
}
