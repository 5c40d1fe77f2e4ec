// Package pool is HVMind's ThreadPool: it places time-scheduled jobs on
// long-lived workers (package worker) over NATS JetStream. It keeps the
// registry of live workers, a timeline of reserved threads per worker,
// places each job on the smallest worker that has its threads free over
// the job's whole window, places batches whole or not at all, and collects
// every job's completion record. Callers use a Client (DispatchJob,
// DispatchJobs, Status, Cancel) from any process.
//
// The pool knows jobs, threads, workers and hosts, not what a task does: a
// task is a name the workers serve. What it needs from elsewhere it asks
// through its options: a Launcher starts worker processes; Servers (a
// serverpool.ServerPool over a capacity provider) says where new workers
// may run and how big, and which cores each host has; Split says which
// jobs that fit no single worker may run as several.
//
// The pool's state can always be rebuilt from the broker: the registry
// bucket says which workers live, the job streams hold every job that has
// not ended (a worker removes a message once every job in it has its
// record stored), and the records stream tells which of those have ended
// and which job ids were used lately. Killing the pool loses nothing.
package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool/timeline"
	"github.com/hvmind/hvmind/serverpool"
)

// Sentinel errors; dispatch errors wrap them.
var (
	// ErrNoCapacity: no worker can take the job's threads over its window.
	ErrNoCapacity = errors.New("no worker has the threads free")
	// ErrUnknownTask: no worker serves the task.
	ErrUnknownTask = errors.New("unknown task")
	// ErrDuplicateID: a job with this id is in flight or was dispatched lately.
	ErrDuplicateID = errors.New("duplicate job id")
	// ErrInvalidJob: the job failed validation.
	ErrInvalidJob = errors.New("invalid job")
	// ErrNotFound: no job or batch in flight with that id.
	ErrNotFound = errors.New("no such job in flight")
	// ErrInvalidOption: an option of New is out of range.
	ErrInvalidOption = errors.New("invalid pool option")
	// ErrStopping: the pool is stopping and takes no more requests.
	ErrStopping = errors.New("the pool is stopping")
)

// Defaults of Options.
const (
	// DefaultThreads is the threads of each local worker.
	DefaultThreads = 64
	// DefaultSpawnWait bounds how long a dispatch waits for a worker it
	// launched to register.
	DefaultSpawnWait = 10 * time.Second
	// DefaultHeartbeat is the workers' heartbeat interval assumed for a
	// worker that does not say its own.
	DefaultHeartbeat = time.Second
	// DefaultTolerance is how far in the past a dispatched start may be.
	DefaultTolerance = 5 * time.Millisecond
	// DefaultIdleStop is how long a worker launched on demand may sit idle.
	DefaultIdleStop = time.Minute
	// DefaultStopWait is how long a stopping pool waits for the workers it
	// asked to stop to leave: a worker's stop grace for its running jobs
	// and again for their records, and some.
	DefaultStopWait = 25 * time.Second
	// DefaultForgetGone is how long the pool keeps a gone worker in its
	// table (and its status) after tidying what was queued for it.
	DefaultForgetGone = 10 * time.Minute
)

// Options configure a Pool.
type Options struct {
	// Workers and Threads: local workers to keep at start, each of Threads
	// (DefaultThreads when 0; also the least size of a local worker
	// launched on demand).
	Workers int
	Threads int
	// Host names the host of local workers (job.LocalHost when empty).
	Host string
	// Spawn allows launching workers when no worker can take a job.
	Spawn bool
	// Launcher starts local worker processes (the Workers kept running,
	// and on-demand workers when there is no capacity provider); nil
	// disables them.
	Launcher serverpool.Launcher
	// Servers, when set, places on-demand workers on the hosts of a
	// capacity provider, sized by its policy; it also gives the hosts'
	// cores (for MinCores) and takes back the reservations of workers
	// that vanish without giving them back (kill -9, a lost machine).
	Servers *serverpool.ServerPool
	// IdleStop stops on-demand workers that have had nothing to do for this
	// long (DefaultIdleStop when 0; negative: never).
	IdleStop time.Duration
	// ForgetGone drops a gone worker from the pool's table this long after
	// what was queued for it was tidied away (DefaultForgetGone when 0;
	// negative: never). Without it, every worker that ever ran stays in
	// the pool's status and memory; its name may then be given to a new
	// worker.
	ForgetGone time.Duration
	// FillHosts keeps a worker holding all the free threads of every host
	// of Servers (see filler.go).
	FillHosts bool
	// Split decides which jobs that fit no single worker may run as
	// several smaller ones, and into how many parts (see split.go). Nil
	// means DefaultSplit(); NoSplit splits nothing.
	Split SplitPolicy
	// Validator, when set, checks each job's task arguments before a
	// dispatch is placed (see job.Validator); a job it refuses fails the
	// dispatch with ErrInvalidJob and its reason.
	Validator job.Validator
	// Settler, when set, says what became of the jobs of a worker that is
	// gone, before the pool records them (see job.Settler): a job whose
	// task has a settler is settled as soon as its worker misses its
	// heartbeats, and its record tells what happened. Without one, such a
	// job is recorded missed once its worker has been silent for
	// orphanSilence, or has left the registry.
	Settler job.Settler
	// Identities, when set, has the pool answer the broker about the
	// worker processes and workers connecting as themselves (NATS auth
	// callout, see broker.Identities and deploy/nats/hvmind-roles.conf):
	// each is admitted with its own subjects only. The Launcher gives
	// them their passwords.
	Identities *broker.Identities
	// IdentityAccount is the account the identities are admitted to
	// ("$G", the broker's only one without accounts, when empty).
	IdentityAccount string
	// SpawnWait bounds how long a dispatch waits for a launched worker
	// (DefaultSpawnWait when 0).
	SpawnWait time.Duration
	// Heartbeat is the heartbeat interval of workers that do not report
	// their own (DefaultHeartbeat when 0); a worker unseen for five of its
	// intervals is taken as gone.
	Heartbeat time.Duration
	// Tolerance is how far in the past a start may be when dispatched
	// (DefaultTolerance when 0).
	Tolerance time.Duration
	// StopWorkersOnExit asks every live worker to stop when the pool stops,
	// and waits up to StopWait for them to leave (by default workers
	// outlive the pool, so that a restart finds them).
	StopWorkersOnExit bool
	// Storage is the replicas and placement of the job system's streams
	// and buckets (see broker.Storage; the zero value leaves them as they
	// are, and creates them with one replica).
	Storage broker.Storage
	// StopWait bounds that wait (DefaultStopWait when 0).
	StopWait time.Duration
	// Logger receives the pool's logs.
	Logger zerolog.Logger
}

// WithDefaults returns the options with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Threads == 0 {
		o.Threads = DefaultThreads
	}
	if o.Host == "" {
		o.Host = job.LocalHost()
	}
	if o.Identities != nil && o.IdentityAccount == "" {
		o.IdentityAccount = "$G"
	}
	if o.IdleStop == 0 {
		o.IdleStop = DefaultIdleStop
	}
	if o.ForgetGone == 0 {
		o.ForgetGone = DefaultForgetGone
	}
	if o.Split == nil {
		o.Split = DefaultSplit()
	}
	if o.SpawnWait == 0 {
		o.SpawnWait = DefaultSpawnWait
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Tolerance == 0 {
		o.Tolerance = DefaultTolerance
	}
	if o.StopWait == 0 {
		o.StopWait = DefaultStopWait
	}
	return o
}

func (o *Options) validate() error {
	if err := o.Storage.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	switch {
	case o.Workers < 0:
		return fmt.Errorf("%w: workers %d must not be negative", ErrInvalidOption, o.Workers)
	case o.Threads < 0:
		return fmt.Errorf("%w: threads %d must be positive", ErrInvalidOption, o.Threads)
	case !job.ValidWorkerID(job.WorkerIDFor(o.Host)):
		return fmt.Errorf("%w: host %q gives no usable worker id", ErrInvalidOption, o.Host)
	case o.Workers > 0 && o.Launcher == nil:
		return fmt.Errorf("%w: %d local workers wanted but no launcher: %w", ErrInvalidOption, o.Workers, serverpool.ErrNoLauncher)
	case o.FillHosts && o.Servers == nil:
		return fmt.Errorf("%w: filling hosts needs a server pool (Servers)", ErrInvalidOption)
	case o.SpawnWait < 0, o.Heartbeat < 0, o.Tolerance < 0, o.StopWait < 0:
		return fmt.Errorf("%w: spawn wait %s, heartbeat %s, tolerance %s and stop wait %s must be positive",
			ErrInvalidOption, o.SpawnWait, o.Heartbeat, o.Tolerance, o.StopWait)
	}
	return nil
}

// Pool is a running ThreadPool.
type Pool struct {
	opts Options
	nc   *nats.Conn
	res  *broker.Resources
	acks *broker.AckInbox
	// callout answers the broker about worker identities (nil without
	// Options.Identities); launchedProcs is the process the pool launched
	// each worker in (see serverpool.ProcessNamer), guarded by mu.
	callout       *callout
	launchedProcs map[string]string
	log           zerolog.Logger
	svc           micro.Service
	// runCtx is the context of requests in progress (see goRequest);
	// requests counts them, and reqClosed is set once the service stops.
	runCtx    context.Context
	reqMu     sync.Mutex
	reqClosed bool
	requests  sync.WaitGroup

	mu      sync.Mutex
	workers map[string]*workerState
	// processWorkers are, by a worker process's registry entry, the
	// workers it last held (see broker.ProcessEntry): the key is the
	// process's name, then ".<part>" for each part after the first.
	processWorkers map[string]map[string]bool
	// hostCores is the cores of the provider's hosts, for jobs with MinCores
	// (see cores.go); hostCoresAt is when it was read.
	hostCores   map[string]int
	hostCoresAt time.Time
	// order is the workers by capacity, then id: the order placement tries
	// them in. nil when it must be rebuilt.
	order []*workerState
	jobs  map[string]*inflight
	// recent holds the job ids dispatched lately, which stay taken.
	recent *recentIDs
	// replays answers copies of a dispatch request (see HeaderRequestID).
	replays replays
	// stall is the registry's last stall (see stallLoop).
	stall registryStall
	// reconnects is the connection's count of reconnections when the
	// sweeper last looked, and connectedSince when it saw it change (see
	// askSilentProcesses; the sweeper's alone).
	reconnects     uint64
	connectedSince time.Time
	stats          stats
	// metrics are the Prometheus metrics (see Metrics).
	metrics *metrics
	warned  map[string]bool
	// sweepSig and fillSig ask the sweeper and the filler to run now
	// rather than at their next tick.
	sweepSig, fillSig chan struct{}
	// fillFailed is set while the capacity provider does not answer the
	// filler (see fillRetry).
	fillFailed atomic.Bool
	// broken takes the jobs that broke their batches, as they ended, to
	// batchBreakLoop.
	broken chan job.Job
	// watchRev is the last registry revision the watch delivered, and
	// rewatch asks the watch to start again (see stallLoop).
	watchRev atomic.Uint64
	rewatch  chan struct{}
	// util is the busy share of live workers' threads (%), one sample per
	// heartbeat, the last utilSamples of them.
	util []float64
	// all holds every worker's reservations in one timeline: the threads
	// reserved at each instant over the whole pool, for capacity answers
	// in O(log n) (see capacity.go).
	all *timeline.Timeline
	// unheld is when each reservation of the provider's ledger ("host/owner")
	// was first seen held by no live worker (see reconcileLedger).
	unheld map[string]time.Time

	ready chan struct{}
	// relaunching runs the launches of the workers of a process that
	// died (see relaunch.go).
	relaunching sync.WaitGroup
}

// workerState is what the pool knows of one worker.
type workerState struct {
	entry broker.WorkerEntry
	tl    *timeline.Timeline
	// sum summarises tl by the second, for a fast first look.
	sum coarse
	// all is the pool's timeline of every worker's reservations (see
	// Pool.all), which reserve and release keep in step with tl.
	all *timeline.Timeline
	// seen is when the registry last showed the worker; zero if never.
	seen time.Time
	// launched is set while a worker the pool launched has not registered.
	launched time.Time
	// released is set once the reservation of a gone worker was given back.
	released bool
	// tasks is the set of tasks the worker runs, from its entry.
	tasks map[string]bool
	// idleSince is when an on-demand worker was last seen with nothing to
	// do; stopping is set once the pool asked it to stop.
	idleSince time.Time
	stopping  bool
	// exited is the Instance of the worker's process once it was seen to
	// exit (see exitLoop): that instance is gone whatever its last beat.
	exited string
	// tidied is set once what was left queued for the gone worker has
	// been taken out (see tidyGone), at tidiedAt; it is reset when the
	// worker beats.
	tidied   bool
	tidiedAt time.Time
	// announced is whether the last word on hvmind.workers.<id> was that
	// the worker joined.
	announced bool
	// stopAsked is set once the pool asked the worker to stop: it is not
	// launched again when its process exits (see relaunch.go), nor is
	// it when it died relaunchLimit times since relaunchWindow
	// (relaunches).
	stopAsked  bool
	relaunches []time.Time
}

// inflight is a job the pool placed and has no record of yet.
type inflight struct {
	job    job.Job
	worker string
	// seq is the sequence of the job's message in its worker's job
	// stream (0: none yet, or its record is on its way).
	seq        uint64
	start, end float64
	// unsettled: the Settler does not know the job's task.
	unsettled bool
}

// queued names the job's message in the job streams.
func (in *inflight) queued() broker.QueuedMsg { return broker.QueuedOf(in.worker, in.seq) }

// New validates the options and prepares a pool on an open connection.
func New(nc *nats.Conn, opts Options) (*Pool, error) {
	opts = opts.WithDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Pool{
		opts:           opts,
		nc:             nc,
		log:            opts.Logger.With().Str("part", "pool").Logger(),
		workers:        map[string]*workerState{},
		processWorkers: map[string]map[string]bool{},
		connectedSince: time.Now(),
		jobs:           map[string]*inflight{},
		recent:         newRecentIDs(),
		warned:         map[string]bool{},
		sweepSig:       make(chan struct{}, 1),
		broken:         make(chan job.Job, brokenBatches),
		fillSig:        make(chan struct{}, 1),
		rewatch:        make(chan struct{}, 1),
		unheld:         map[string]time.Time{},
		all:            timeline.New(math.MaxInt32),
		stats:          newStats(),
		metrics:        newMetrics(),
		ready:          make(chan struct{}),
	}, nil
}

// Ready is closed once the pool serves requests.
func (p *Pool) Ready() <-chan struct{} { return p.ready }

// requestGrace is how long a stopping pool lets the requests in progress
// finish before it cancels them.
const requestGrace = 5 * time.Second

// Run serves the pool until ctx ends. It owns every goroutine it starts:
// the registry watch, the sweeper, the host filler and the requests in
// progress, and returns only once all of them have ended. A stop lets the
// requests in progress finish (for up to requestGrace), and, with
// StopWorkersOnExit, asks the live workers to stop; jobs in flight stay
// queued on their workers for the next pool.
func (p *Pool) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	var loops sync.WaitGroup
	defer func() {
		stop()
		loops.Wait()
		p.relaunching.Wait()
	}()
	goLoop := func(loop func(context.Context)) {
		loops.Add(1)
		go func() {
			defer loops.Done()
			loop(ctx)
		}()
	}
	// Requests run on a context of their own, so that a stop can let them
	// finish (see stopService).
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	p.runCtx = reqCtx

	res, err := broker.Setup(ctx, p.nc, broker.Options{Storage: p.opts.Storage})
	if err != nil {
		return err
	}
	p.res = res
	if p.acks, err = broker.NewAckInbox(p.nc); err != nil {
		return err
	}
	defer p.acks.Close()
	if p.opts.Identities != nil {
		// Before any worker is launched, and until the last has stopped.
		stopCallout, err := p.startCallout()
		if err != nil {
			return err
		}
		defer stopCallout()
	}
	stopKeeper, err := p.startQueueKeeper()
	if err != nil {
		return err
	}
	defer stopKeeper()
	// Records are followed first: one stored while the pool reads what is
	// in flight is then seen either by the reading or by the collector.
	unfollow, err := p.startCollector()
	if err != nil {
		return err
	}
	defer unfollow()
	oldest, err := p.recover(ctx)
	if err != nil {
		return err
	}
	if err := p.loadRecentIDs(ctx, oldest); err != nil {
		return err
	}
	// The registry is watched until the stop is over: the requests that
	// finish during it wait for workers to register, and the workers to
	// stop at the end are those alive then.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var watch sync.WaitGroup
	defer func() {
		stopWatch()
		watch.Wait()
	}()
	regReady := make(chan struct{})
	watch.Go(func() { p.watchRegistry(watchCtx, regReady) })
	select {
	case <-regReady:
	case <-ctx.Done():
		return nil
	}
	p.checkLocalFit(ctx)
	if err := p.keepLocalWorkers(ctx); err != nil {
		p.log.Warn().Err(err).Msg("launching local workers")
	}
	if p.opts.Workers > 0 {
		goLoop(p.localLoop)
	}
	if err := p.startService(); err != nil {
		return err
	}
	goLoop(p.sweepLoop)
	goLoop(p.batchBreakLoop)
	goLoop(p.stallLoop)
	if w, ok := p.opts.Launcher.(serverpool.ExitWatcher); ok {
		goLoop(func(ctx context.Context) { p.exitLoop(ctx, w) })
	}
	if pc, ok := p.opts.Launcher.(pidChecker); ok {
		goLoop(func(ctx context.Context) { p.adoptedExitLoop(ctx, pc) })
	}
	if p.opts.FillHosts {
		p.fillHosts(ctx)
		goLoop(p.fillLoop)
	}
	close(p.ready)
	p.log.Info().Int("jobs_in_flight", p.inFlight()).Msg("pool ready")
	<-ctx.Done()
	p.stopService(cancelRequests)
	if p.opts.StopWorkersOnExit {
		p.stopAllWorkers()
	}
	p.log.Info().Int("jobs_in_flight", p.inFlight()).Msg("pool stopped; jobs in flight stay queued on their workers")
	return nil
}

// brokerTimeout bounds one call to the broker.
const brokerTimeout = 5 * time.Second

// startupPatience is how long a starting pool asks again while JetStream
// cannot serve it yet: a stream just created on a cluster electing its
// leader, a broker restarted loading its store.
const startupPatience = 30 * time.Second

// missedBeats is how many heartbeats a worker may miss before the pool
// takes it as gone.
const missedBeats = 5

func (p *Pool) inFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.jobs)
}

// warnOnce logs a warning the first time a key is seen.
func (p *Pool) warnOnce(key string, ev func(*zerolog.Event) *zerolog.Event, msg string) {
	p.mu.Lock()
	seen := p.warned[key]
	p.warned[key] = true
	p.mu.Unlock()
	if !seen {
		ev(p.log.Warn()).Msg(msg)
	}
}
