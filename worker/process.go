package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// A worker process runs several workers, each with its own id, host,
// threads, durable queue and registry entry, in one operating-system
// process. They share its connection and one TimerQueue. On a machine with
// few cores this matters: one process per host means dozens of timer
// threads competing for the cores, and the jobs of one batch, placed on
// workers of different hosts, then land in the order their processes happen
// to be scheduled. One queue fires every job of the process in time order,
// and spins on one thread at most.
//
// The process takes launch requests as a NATS micro service,
// ProcessServiceName, on broker.ProcessSubject(name, "launch") (a
// broker.WorkerSpec as JSON) and lists its workers on
// broker.ProcessSubject(name, "status").

// ProcessServiceName is the micro service name of worker processes.
const ProcessServiceName = "hvmind-worker-process"

// ErrWorkerRunning is the error of a launch request for a worker id the
// process already runs.
var ErrWorkerRunning = errors.New("this process already runs that worker")

// ProcessOptions configure a worker process. The timing options apply to
// every worker it runs.
type ProcessOptions struct {
	// Name names the process's subjects; it may hold the characters of a
	// worker id.
	Name string
	// Heartbeat and Tolerance are those of Options, for every worker.
	Heartbeat time.Duration
	Tolerance time.Duration
	// Spin is that of Options, for the timer queue the workers share.
	Spin time.Duration
	// StopGrace is that of Options, for every worker (0: its default).
	StopGrace time.Duration
	// Handlers serve the tasks of every worker; nil means NewHandlers.
	Handlers *Handlers
	// Reserver holds the threads of the workers whose spec asks for it.
	Reserver Reserver
	// Settler is that of Options, for every worker.
	Settler job.Settler
	// Linger is how long the process waits for a new worker once all its
	// workers have stopped, before it exits (DefaultLinger when 0).
	Linger time.Duration
	// Logger receives the process's logs and its workers'.
	Logger zerolog.Logger
	// Metrics, when set, count the jobs of every worker of the process.
	Metrics *Metrics
	// Identity, when set, gives each worker a connection of its own, as
	// itself (see broker.Identities); the process's own connection then
	// only beats for them and serves its endpoints. Its Parts replace
	// Handlers, Reserver and Settler.
	Identity *ProcessIdentity
}

// ProcessIdentity is how a worker process gives each of its workers a
// connection of its own.
type ProcessIdentity struct {
	// Dial opens a worker's connection, as the worker.
	Dial func(ctx context.Context, worker string) (*nats.Conn, error)
	// Parts are the worker's handlers, reserver and settler, acting
	// through its connection.
	Parts func(nc *nats.Conn) WorkerParts
}

// WorkerParts are what a worker's tasks act through, and what keeps its
// queue (see QueueKeeper).
type WorkerParts struct {
	Handlers    *Handlers
	Reserver    Reserver
	Settler     job.Settler
	QueueKeeper QueueKeeper
}

// WithDefaults returns the options with every zero field set to its
// default (those of Options for the timing).
func (o ProcessOptions) WithDefaults() ProcessOptions {
	// The workers' options, whose defaults these are.
	w := Options{Heartbeat: o.Heartbeat, Tolerance: o.Tolerance, Spin: o.Spin, StopGrace: o.StopGrace, Handlers: o.Handlers}.WithDefaults()
	o.Heartbeat, o.Tolerance, o.Spin, o.StopGrace, o.Handlers = w.Heartbeat, w.Tolerance, w.Spin, w.StopGrace, w.Handlers
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	return o
}

func (o *ProcessOptions) validate() error {
	if o.Identity != nil && (o.Identity.Dial == nil || o.Identity.Parts == nil) {
		return fmt.Errorf("%w: an identity needs both Dial and Parts", ErrInvalidOption)
	}
	if !job.ValidWorkerID(o.Name) {
		return fmt.Errorf("worker process name: %w (got %q)", ErrInvalidID, o.Name)
	}
	if o.Linger < 0 {
		return fmt.Errorf("%w: linger %s must not be negative", ErrInvalidOption, o.Linger)
	}
	return validateTiming(o.Heartbeat, o.Tolerance)
}

// ProcessStatus is the reply of the status endpoint.
type ProcessStatus struct {
	// Name is the process's name.
	Name string `json:"name"`
	// Workers are the ids of the workers it runs, sorted.
	Workers []string `json:"workers"`
}

// Process runs workers on request. Create it with NewProcess and start it
// with Run.
type Process struct {
	opts   ProcessOptions
	nc     *nats.Conn
	timers *TimerQueue
	log    zerolog.Logger

	mu      sync.Mutex
	ctx     context.Context   // the workers' context, set by Run
	res     *broker.Resources // the broker's streams and buckets, set by Run
	running map[string]*Worker
	// idle fires Linger after the last worker stopped.
	idle *time.Timer
	// closing is set once Run stops taking workers.
	closing bool
	// workers counts the workers' goroutines, handlers the service's
	// handlers at work (see gate).
	workers  sync.WaitGroup
	handlers gate
	// beats writes the workers' heartbeats, as one registry entry.
	beats *processBeats
}

// NewProcess validates the options and prepares a worker process on an
// open connection.
func NewProcess(nc *nats.Conn, opts ProcessOptions) (*Process, error) {
	opts = opts.WithDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger.With().Str("process", opts.Name).Logger()
	return &Process{
		opts: opts, nc: nc, timers: NewTimerQueue(opts.Spin), log: log,
		running: map[string]*Worker{},
		beats:   newProcessBeats(opts.Name, nuid.Next(), os.Getpid(), opts.Heartbeat, log),
	}, nil
}

// Start starts a worker in the process. The worker runs until ctx of Run
// ends or it stops on its own (the pool asked it to, another process took
// its id over, its reservation was refused).
func (p *Process) Start(spec broker.WorkerSpec) error {
	parts := WorkerParts{Handlers: p.opts.Handlers, Reserver: p.opts.Reserver, Settler: p.opts.Settler}
	nc, res := p.nc, (*broker.Resources)(nil)
	if p.opts.Identity != nil {
		// The worker's own connection, opened before the worker counts
		// as running (a few ms: the broker asks the pool who it is).
		p.mu.Lock()
		ctx, running := p.ctx, p.running[spec.ID] != nil
		p.mu.Unlock()
		if running {
			return fmt.Errorf("start worker %s: %w", spec.ID, ErrWorkerRunning)
		}
		if ctx == nil {
			return fmt.Errorf("start worker %s: the process is not running", spec.ID)
		}
		// Within the launch request's bound: a worker the broker
		// refuses (the pool away, or the id another process's) fails
		// the launch instead of holding the next.
		dctx, cancel := context.WithTimeout(ctx, identityStartTimeout)
		defer cancel()
		var err error
		if nc, err = p.opts.Identity.Dial(dctx, spec.ID); err != nil {
			return fmt.Errorf("start worker %s: connect as itself: %w", spec.ID, err)
		}
		if res, err = broker.Bind(dctx, nc); err != nil {
			nc.Close()
			return fmt.Errorf("start worker %s: %w", spec.ID, err)
		}
		parts = p.opts.Identity.Parts(nc)
	}
	err := p.start(spec, nc, res, parts)
	if err != nil && nc != p.nc {
		nc.Close()
	}
	return err
}

// start runs a worker on nc (the process's, or its own with its broker
// resources res) with parts.
func (p *Process) start(spec broker.WorkerSpec, nc *nats.Conn, res *broker.Resources, parts WorkerParts) error {
	var reserver Reserver
	if spec.Reserve {
		if parts.Reserver == nil {
			return fmt.Errorf("start worker %s: this process has no reserver to hold its threads on %s", spec.ID, spec.Host)
		}
		reserver = parts.Reserver
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil || p.ctx.Err() != nil || p.closing {
		return fmt.Errorf("start worker %s: the process is not running", spec.ID)
	}
	if _, ok := p.running[spec.ID]; ok {
		return fmt.Errorf("start worker %s: %w", spec.ID, ErrWorkerRunning)
	}
	if res == nil {
		res = p.res
	}
	w, err := New(nc, Options{
		ID: spec.ID, Host: spec.Host, Threads: spec.Threads, OnDemand: spec.OnDemand, Reserver: reserver,
		Heartbeat: p.opts.Heartbeat, Tolerance: p.opts.Tolerance, Spin: p.opts.Spin, StopGrace: p.opts.StopGrace,
		Timers: p.timers, Handlers: parts.Handlers, Settler: parts.Settler, QueueKeeper: parts.QueueKeeper, Logger: p.opts.Logger,
		Beater: p.beats, res: res, processChecksQueue: true, Metrics: p.opts.Metrics,
	})
	if err != nil {
		return fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	p.running[spec.ID] = w
	ctx := p.ctx
	p.workers.Go(func() {
		err := w.Run(ctx)
		if err != nil {
			p.log.Warn().Err(err).Str("worker", spec.ID).Msg("worker ended")
		}
		if nc != p.nc {
			nc.Close()
		}
		p.mu.Lock()
		delete(p.running, spec.ID)
		if len(p.running) == 0 { // idle is set with ctx, before any Start
			p.idle.Reset(p.opts.Linger)
		}
		p.mu.Unlock()
	})
	return nil
}

// identityStartTimeout bounds connecting a worker as itself and looking up
// the streams, under the pool's 10 s launch request.
const identityStartTimeout = 8 * time.Second

// DefaultLinger is how long a worker process whose workers have all
// stopped waits for a new one before it exits: the pool stops the workers
// it no longer needs, and launches a new process when it needs one.
const DefaultLinger = 5 * time.Second

// Workers lists the ids of the workers running, sorted.
func (p *Process) Workers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.running))
	for id := range p.running {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Run serves launch requests until ctx ends, or until Linger after
// its last worker stopped, then stops every worker gracefully (see
// Worker.Run) and returns once they, the service's handlers and the timer
// queue have all ended.
func (p *Process) Run(ctx context.Context) error {
	// The queue outlives ctx: the workers' running jobs finish on it.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var timers sync.WaitGroup
	timers.Go(func() { p.timers.Run(bg) })
	defer func() {
		stopBG()
		timers.Wait()
	}()

	res, err := broker.Setup(ctx, p.nc, broker.Options{})
	if err != nil {
		return fmt.Errorf("worker process %s: %w", p.opts.Name, err)
	}
	// The heartbeats go on until every worker has stopped and left.
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	var beats sync.WaitGroup
	beats.Go(func() { p.beats.loop(beatCtx, res.Workers) })
	beats.Go(func() { p.queueCheckLoop(beatCtx, res) })
	defer func() {
		stopBeats()
		beats.Wait()
	}()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	p.mu.Lock()
	p.ctx, p.idle, p.res = ctx, idle, res
	p.mu.Unlock()
	svc, err := broker.AddService(p.nc, micro.Config{
		Name:        ProcessServiceName,
		Version:     "0.1.0",
		Description: "HVMind worker process: runs several workers on one timer queue",
		Metadata:    map[string]string{"name": p.opts.Name},
	},
		broker.Endpoint{Name: "launch", Subject: broker.ProcessSubject(p.opts.Name, "launch"), Handler: p.gated(p.handleLaunch), Description: "start a worker in this process (a broker.WorkerSpec)"},
		broker.Endpoint{Name: "status", Subject: broker.ProcessSubject(p.opts.Name, "status"), Handler: p.gated(p.handleStatus), Description: "the workers this process runs"},
		broker.Endpoint{Name: "stop", Subject: broker.ProcessSubject(p.opts.Name, "stop"), Handler: p.gated(p.handleStop), Description: "stop some of the workers of this process (a broker.StopRequest)"},
	)
	if err != nil {
		err = fmt.Errorf("worker process %s: %w", p.opts.Name, err)
	} else {
		p.log.Info().Msg("worker process ready")
		p.serve(ctx, stop, idle)
		// Drains the endpoints: a request already received may still
		// reach its handler (see gate).
		_ = svc.Stop()
	}
	// No Start adds a worker after this (a handler may still be at
	// work): then every worker is counted in workers.
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.workers.Wait()
	// A launch request that comes this late is not answered: the
	// launcher's timeout covers it, as for a process that has exited.
	p.handlers.close()
	p.log.Info().Msg("worker process stopped")
	return err
}

// serve waits until ctx ends, or until its workers have all stopped and
// Linger has passed with none started.
func (p *Process) serve(ctx context.Context, stop context.CancelFunc, idle *time.Timer) {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-idle.C:
			// Under the lock, so that a launch is either in before the
			// process decides to exit, or refused after.
			p.mu.Lock()
			if len(p.running) == 0 {
				p.log.Info().Msg("every worker has stopped: the worker process exits")
				stop()
			}
			p.mu.Unlock()
		}
	}
}

// gated runs h for the requests the process's handlers gate admits.
func (p *Process) gated(h micro.HandlerFunc) micro.HandlerFunc {
	return func(req micro.Request) {
		if !p.handlers.enter() {
			return
		}
		defer p.handlers.leave()
		h(req)
	}
}

// handleLaunch starts the worker a request's spec describes.
func (p *Process) handleLaunch(req micro.Request) {
	var spec broker.WorkerSpec
	if err := json.Unmarshal(req.Data(), &spec); err != nil {
		_ = req.Error("400", "malformed worker spec: "+err.Error(), nil)
		return
	}
	if err := p.Start(spec); err != nil {
		code := "400"
		if errors.Is(err, ErrWorkerRunning) {
			code = "409"
		}
		_ = req.Error(code, err.Error(), nil)
		return
	}
	p.log.Info().Str("worker", spec.ID).Str("host", spec.Host).Int("threads", spec.Threads).Msg("started worker")
	_ = req.RespondJSON(ProcessStatus{Name: p.opts.Name, Workers: p.Workers()})
}

// handleStatus lists the process's workers.
func (p *Process) handleStatus(req micro.Request) {
	_ = req.RespondJSON(ProcessStatus{Name: p.opts.Name, Workers: p.Workers()})
}

// handleStop stops the workers a request names, each as a stop message on
// its queue would (see broker.StopRequest), and names those it stopped.
func (p *Process) handleStop(req micro.Request) {
	var sr broker.StopRequest
	if err := json.Unmarshal(req.Data(), &sr); err != nil {
		_ = req.Error("400", "malformed stop request: "+err.Error(), nil)
		return
	}
	reply := broker.StopReply{Stopped: []string{}}
	p.mu.Lock()
	ws := make([]*Worker, 0, len(sr.Workers))
	for _, id := range sr.Workers {
		if w := p.running[id]; w != nil {
			ws = append(ws, w)
		}
	}
	p.mu.Unlock()
	for _, w := range ws {
		if w.stopAsked(sr.Reason) {
			reply.Stopped = append(reply.Stopped, w.opts.ID)
		}
	}
	_ = req.RespondJSON(reply)
}
