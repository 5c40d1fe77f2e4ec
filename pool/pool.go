// Package pool is HVMind's ThreadPool. It keeps the registry of live
// workers, a timeline of reserved threads per worker, places each job on the
// smallest worker that has its threads free over the job's whole window
// (launching a local worker when none has), places batches whole or not at
// all, and collects every job's completion record.
//
// The pool's state can always be rebuilt from the broker: the registry
// bucket says which workers live, the jobs stream holds every job that has
// not ended (a worker removes a message once every job in it has its record
// stored), and the records stream tells which of those have ended and which
// job ids were used lately. Killing the pool loses nothing.
package pool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool/timeline"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
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
)

// Options configure a Pool.
type Options struct {
	// Workers and Threads: local workers to keep at start, each of Threads.
	Workers int
	Threads int
	// Spawn allows launching local workers when no worker can take a job.
	Spawn bool
	// Launcher starts local worker processes (the --workers kept running,
	// and on-demand workers when there is no world); nil disables them.
	Launcher serverpool.Launcher
	// Servers, when set, places on-demand workers on the world's hosts with
	// free RAM, sized by its policy.
	Servers *serverpool.ServerPool
	// IdleStop stops on-demand workers that have had nothing to do for this
	// long; zero keeps them.
	IdleStop time.Duration
	// FillHosts keeps a worker holding all the free RAM of every host of
	// Servers (see filler.go).
	FillHosts bool
	// Split lets a job that fits no single worker be split over several, for
	// the tasks whose effect splits cleanly (see split.go).
	Split bool
	// SplitTolerance is the largest relative change of a hack's or grow's
	// effect that splitting may cause.
	SplitTolerance float64
	// World reads target state for the split estimate; nil allows splitting
	// only weaken and sleep.
	World *world.Client
	// Host names the host of launched workers.
	Host string
	// SpawnWait bounds how long a dispatch waits for a launched worker.
	SpawnWait time.Duration
	// Heartbeat is the workers' heartbeat interval; a worker unseen for five
	// of them is taken as gone.
	Heartbeat time.Duration
	// Tolerance is how far in the past a start may be when dispatched, and
	// how late a worker may start a job.
	Tolerance time.Duration
	// RAM, when set, gives back the world RAM of workers that vanish
	// without giving it back themselves (kill -9, a lost machine).
	RAM RAMReleaser
	// StopWorkersOnExit asks every live worker to stop when the pool stops
	// (by default workers outlive the pool, so that a restart finds them).
	StopWorkersOnExit bool
	// Logger receives the pool's logs.
	Logger zerolog.Logger
}

// RAMReleaser gives back the RAM a worker held on its host.
type RAMReleaser interface {
	Release(ctx context.Context, host, owner string) error
}

// Pool is a running ThreadPool.
type Pool struct {
	opts Options
	nc   *nats.Conn
	res  *broker.Resources
	acks *broker.AckInbox
	log  zerolog.Logger
	svc  micro.Service

	mu      sync.Mutex
	workers map[string]*workerState
	// hostCores is the cores of the world's hosts, for jobs with MinCores
	// (see cores.go); hostCoresAt is when it was read.
	hostCores   map[string]int
	hostCoresAt time.Time
	// order is the workers by capacity, then id: the order placement tries
	// them in. nil when it must be rebuilt.
	order []*workerState
	jobs  map[string]*inflight
	// recent holds the job ids dispatched lately, which stay taken.
	recent *recentIDs
	stats  stats
	warned map[string]bool
	// util is the busy share of live workers' threads (%), one sample per
	// heartbeat, the last utilSamples of them.
	util []float64

	ready chan struct{}
}

// workerState is what the pool knows of one worker.
type workerState struct {
	entry broker.WorkerEntry
	tl    *timeline.Timeline
	// sum summarises tl by the second, for a fast first look.
	sum coarse
	// seen is when the registry last showed the worker; zero if never.
	seen time.Time
	// launched is set while a worker the pool launched has not registered.
	launched time.Time
	// ramReleased is set once the RAM of a gone worker was given back.
	ramReleased bool
	// tasks is the set of tasks the worker runs, from its entry.
	tasks map[string]bool
	// idleSince is when an on-demand worker was last seen with nothing to
	// do; stopping is set once the pool asked it to stop.
	idleSince time.Time
	stopping  bool
}

// inflight is a job the pool placed and has no record of yet.
type inflight struct {
	job        job.Job
	worker     string
	seq        uint64
	start, end float64
}

// New prepares a pool on an open connection.
func New(nc *nats.Conn, opts Options) (*Pool, error) {
	if opts.Threads <= 0 {
		opts.Threads = 64
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if opts.SpawnWait <= 0 {
		opts.SpawnWait = 10 * time.Second
	}
	if opts.Host == "" {
		opts.Host = "home"
	}
	if opts.Tolerance <= 0 {
		opts.Tolerance = 5 * time.Millisecond
	}
	return &Pool{
		opts:    opts,
		nc:      nc,
		log:     opts.Logger.With().Str("part", "pool").Logger(),
		workers: map[string]*workerState{},
		jobs:    map[string]*inflight{},
		recent:  newRecentIDs(),
		warned:  map[string]bool{},
		stats:   newStats(),
		ready:   make(chan struct{}),
	}, nil
}

// Ready is closed once the pool serves requests.
func (p *Pool) Ready() <-chan struct{} { return p.ready }

// Run serves the pool until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	res, err := broker.Setup(ctx, p.nc, broker.Options{})
	if err != nil {
		return err
	}
	p.res = res
	if p.acks, err = broker.NewAckInbox(p.nc); err != nil {
		return err
	}
	defer p.acks.Close()
	// Records are followed first: one stored while the pool reads what is
	// in flight is then seen either by the reading or by the collector.
	if err := p.startCollector(ctx); err != nil {
		return err
	}
	oldest, err := p.recover(ctx)
	if err != nil {
		return err
	}
	if err := p.loadRecentIDs(ctx, oldest); err != nil {
		return err
	}
	regReady := make(chan struct{})
	go p.watchRegistry(ctx, regReady)
	select {
	case <-regReady:
	case <-ctx.Done():
		return nil
	}
	if err := p.keepLocalWorkers(ctx); err != nil {
		p.log.Warn().Err(err).Msg("launching local workers")
	}
	if err := p.startService(); err != nil {
		return err
	}
	go p.sweepLoop(ctx)
	if p.opts.FillHosts && p.opts.Servers != nil {
		p.fillHosts(ctx)
		go p.fillLoop(ctx)
	}
	close(p.ready)
	p.log.Info().Int("jobs_in_flight", p.inFlight()).Msg("pool ready")
	<-ctx.Done()
	if p.svc != nil {
		_ = p.svc.Stop()
	}
	if p.opts.StopWorkersOnExit {
		p.stopAllWorkers()
	}
	p.log.Info().Int("jobs_in_flight", p.inFlight()).Msg("pool stopped; jobs in flight stay queued on their workers")
	return nil
}

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
