package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
)

// rig is what both benchmarks run on: a fresh embedded broker in a
// temporary directory, a launcher of real worker processes, and, once
// startPool is called, the pool and a client of it.
type rig struct {
	dir      string
	conn     *broker.Conn
	launcher *serverpool.LocalLauncher
	client   *pool.Client
	// stopPool stops the pool and then every worker the launcher started.
	stopPool func()
	// alsoStop are services of the run (the world) that Close stops after
	// the pool and its workers, which use them to the end, and before the
	// broker.
	alsoStop []func()
	log      zerolog.Logger
}

// workerArgs are the flags both benchmarks give their workers.
func workerArgs(spin, tolerance time.Duration) []string {
	return []string{"--spin", spin.String(), "--tolerance", tolerance.String(), "--log-level", "warn"}
}

// newRig starts a broker in a new temporary directory and prepares a
// launcher of workerBin with args. Close removes everything.
func newRig(ctx context.Context, name, workerBin string, args []string, sync broker.Sync, log zerolog.Logger) (*rig, error) {
	dir, err := os.MkdirTemp("", "hvmind-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: dir, Sync: sync, Name: "bench", Logger: log})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &rig{
		dir: dir, conn: conn, log: log,
		launcher: &serverpool.LocalLauncher{Bin: workerBin, NATS: conn.URL, LogDir: filepath.Join(dir, "logs"), Logger: log, Args: args},
	}, nil
}

// startPool runs a pool of o (its Launcher and Logger are the rig's) until
// Close, and returns once it is ready.
func (r *rig) startPool(ctx context.Context, o pool.Options) error {
	o.Launcher, o.Logger = r.launcher, r.log
	p, err := pool.New(r.conn.NC, o)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	poolDone := make(chan error, 1)
	go func() { poolDone <- p.Run(pctx) }()
	stop := func() {
		cancel()
		<-poolDone
		r.launcher.StopAll(10 * time.Second)
	}
	select {
	case <-p.Ready():
	case err := <-poolDone: // the pool has returned: only its workers are left
		cancel()
		r.launcher.StopAll(10 * time.Second)
		return fmt.Errorf("pool: %w", err)
	}
	client, err := pool.NewClient(r.conn.NC)
	if err != nil {
		stop()
		return err
	}
	r.client = client
	r.stopPool = func() { client.Close(); stop() }
	return nil
}

// Close stops the pool and its workers, then the broker, and removes the
// directory.
func (r *rig) Close() {
	if r.stopPool != nil {
		r.stopPool()
	}
	for i := len(r.alsoStop) - 1; i >= 0; i-- {
		r.alsoStop[i]()
	}
	r.conn.Close()
	os.RemoveAll(r.dir)
}
