// Package worker is a long-lived HVMind worker: it owns a durable JetStream
// consumer of the jobs placed on it, holds upcoming jobs in a precise timer
// queue, runs them with registered task handlers while never using more
// threads than it offers, stores a completion record for every job, and
// beats a heartbeat into the worker registry.
//
// At most once: a job message is acknowledged only after its completion
// record is stored, so a crash never loses a job. When a worker restarts it
// learns from its consumer which messages its previous process had already
// received; such a job whose start time has come is not run again, since it
// may have started, and ends as missed instead.
package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// Errors of worker options.
var (
	// ErrInvalidID is the error of an id (or process name) that a subject
	// cannot hold.
	ErrInvalidID = errors.New("worker id may hold only letters, digits, '-' and '_'")
	// ErrInvalidThreads is the error of a worker without threads.
	ErrInvalidThreads = errors.New("worker threads must be positive")
	// ErrInvalidOption wraps every other option that is out of range.
	ErrInvalidOption = errors.New("invalid worker option")
)

// Causes of a worker's stop.
var (
	// ErrTakenOver is Run's error when another process registered this
	// worker id: the other process now runs its jobs.
	ErrTakenOver = errors.New("another process took over this worker id")
	// ErrQueueGone says that the worker's durable queue (its consumer, or
	// the job streams) is gone from the broker: a broker with a new store,
	// a consumer deleted by hand. The worker does not stop for it: it
	// creates its queue again (see queueLoop), and logs this error.
	ErrQueueGone = errors.New("this worker's job queue is gone from the broker")
	// ErrStopRequested is the cause of a stop the pool asked for.
	ErrStopRequested = errors.New("stop requested by the pool")
)

// Bounds of the calls to the broker: a call that hangs (the broker gone
// unreachable) must not hold up a worker's start, its heartbeats or its
// stop.
const (
	// brokerTimeout bounds one request to the broker.
	brokerTimeout = 5 * time.Second
	// recordsTimeout bounds reading the records stored since the oldest
	// queued job, which may be many.
	recordsTimeout = time.Minute
)

// brokerCall is ctx bounded for one request to the broker.
func brokerCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, brokerTimeout)
}

// Defaults of Options.
const (
	// DefaultHeartbeat is the interval between registry updates.
	DefaultHeartbeat = time.Second
	// DefaultTolerance is how late a job may start: a few milliseconds
	// absorb the stalls of a busy machine.
	DefaultTolerance = 5 * time.Millisecond
	// DefaultSpin is how long before a due time the timer queue stops
	// sleeping and spins on the clock: an idle CPU can take over a
	// millisecond to wake from a timer.
	DefaultSpin = time.Millisecond
	// DefaultStopGrace is how long a stopping worker lets its running jobs
	// finish, and then waits for their records to be stored.
	DefaultStopGrace = 10 * time.Second
)

// bindWhenAvailable looks the streams up (broker.Bind), asking again while
// the broker does not answer, or they are not there yet.
func bindWhenAvailable(ctx context.Context, nc *nats.Conn) (*broker.Resources, error) {
	for {
		cctx, cancel := brokerCall(ctx)
		res, err := broker.Bind(cctx, nc)
		cancel()
		missing := errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) // the pool makes them
		if err == nil || ctx.Err() != nil || !(broker.Unavailable(err) || missing) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(queueAgainWait):
		}
	}
}

// QueueKeeper makes a worker's durable queue for it and reads which of its
// queued jobs have records, for a worker allowed neither: a worker with an
// identity of its own (see broker.Identities) may consume its queue, not
// create consumers, since a consumer's delivery subject is not checked
// against its creator's permissions.
type QueueKeeper interface {
	// ResetQueue deletes the worker's consumer, if there is one, and
	// creates it again (broker.WorkerConsumerConfig), so that every job
	// queued for it is delivered now; prevDelivered is how far the
	// deleted one had delivered (its stream sequence; 0: none). Asked
	// again with the same token (its answer lost), it resets once.
	ResetQueue(ctx context.Context, worker, token string) (prevDelivered uint64, err error)
	// RecordedIDs are the ids of the worker's jobs with a record stored
	// since its oldest queued message.
	RecordedIDs(ctx context.Context, worker string) ([]string, error)
}

// Options configure a Worker.
type Options struct {
	// ID names the worker; its jobs arrive on broker.JobsSubject(ID),
	// hvmind.jobs.<stream>.<ID>. Required.
	ID string
	// Host is where the worker runs (job.LocalHost when empty): the pool
	// places jobs with MinCores by their host's cores, and a Reserver
	// holds the worker's threads on it.
	Host string
	// Threads is the capacity the worker offers. Required.
	Threads int
	// Heartbeat is the interval between registry updates (DefaultHeartbeat
	// when 0).
	Heartbeat time.Duration
	// Tolerance is how late a job may start before it is missed instead
	// (DefaultTolerance when 0: no timer fires exactly on time).
	Tolerance time.Duration
	// Spin is how long before a due time the timer queue spins (DefaultSpin
	// when 0; negative: never spin).
	Spin time.Duration
	// Timers, when set, is a timer queue shared with the other workers of
	// this process, which the caller runs (Spin is then the queue's) until
	// every worker's Run has returned: a worker stopping gracefully waits
	// for its running jobs' end timers. One queue fires every job of the
	// process in time order, even when the process is stalled, and spins
	// on one thread at most.
	Timers *TimerQueue
	// Handlers serve the tasks; nil means NewHandlers (the built-in sleep).
	Handlers *Handlers
	// StopGrace is how long a stopping worker lets its running jobs run
	// before it cancels them, and then waits for their records to be
	// stored (DefaultStopGrace when 0; negative: as long as they take).
	StopGrace time.Duration
	// Reserver, when set, holds the worker's threads on its host while it
	// lives; a host without room stops the worker from starting.
	Reserver Reserver
	// OnDemand marks a worker launched by the pool for a job that did not
	// fit; the pool stops it when it has been idle for a while.
	OnDemand bool
	// Settler, when set, says what became of a job that this worker's
	// previous process may have started (see job.Settler); without one,
	// such a job is recorded missed (failed, for one without a start
	// time), which is true only if it never ran.
	Settler job.Settler
	// QueueKeeper, when set, makes the worker's durable queue and says
	// which of its queued jobs have records, for a worker whose connection
	// may not (see QueueKeeper); nil: the worker does both itself.
	QueueKeeper QueueKeeper
	// Beater, when set, takes the worker's heartbeats instead of the
	// registry: the process that runs it writes them with its other
	// workers' (see Beater). A worker process sets it.
	Beater Beater
	// Logger receives the worker's logs.
	Logger zerolog.Logger
	// Metrics, when set, count the jobs the worker ends (see Metrics);
	// the workers of a process share one.
	Metrics *Metrics

	// res, when set, are the broker's streams and buckets, set up once by
	// the worker process for all its workers (a few API calls each, which
	// a thousand workers made a thousand times).
	res *broker.Resources
	// processChecksQueue says that the worker's process checks that its
	// durable queue is still there, for all its workers in one listing,
	// instead of one consumer-info request per worker every few beats.
	processChecksQueue bool
}

// Reserver keeps the ledger of the threads each worker holds on each host,
// so that workers of different processes share a host's capacity; every
// serverpool.Provider is one. Both calls are idempotent.
type Reserver interface {
	// Reserve sets the threads owner holds on host, or says why it cannot.
	Reserve(ctx context.Context, host, owner string, threads int) error
	// Release frees what owner holds on host.
	Release(ctx context.Context, host, owner string) error
}

// WithDefaults returns the options with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Host == "" {
		o.Host = job.LocalHost()
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Tolerance == 0 {
		o.Tolerance = DefaultTolerance
	}
	if o.Spin == 0 {
		o.Spin = DefaultSpin
	}
	if o.StopGrace == 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.Handlers == nil {
		o.Handlers = NewHandlers()
	}
	return o
}

func (o *Options) validate() error {
	if !job.ValidWorkerID(o.ID) {
		return fmt.Errorf("%w (got %q)", ErrInvalidID, o.ID)
	}
	if o.Threads <= 0 {
		return fmt.Errorf("%w (got %d)", ErrInvalidThreads, o.Threads)
	}
	return validateTiming(o.Heartbeat, o.Tolerance)
}

// validateTiming checks the options a worker and a worker process share.
func validateTiming(heartbeat, tolerance time.Duration) error {
	if heartbeat < 0 {
		return fmt.Errorf("%w: heartbeat %s must not be negative", ErrInvalidOption, heartbeat)
	}
	if tolerance < 0 {
		return fmt.Errorf("%w: tolerance %s must not be negative", ErrInvalidOption, tolerance)
	}
	return nil
}

// Worker runs placed jobs. Create it with New and start it with Run.
type Worker struct {
	opts   Options
	nc     *nats.Conn
	res    *broker.Resources
	timers *TimerQueue
	// ownTimers is set when the worker runs its timer queue itself.
	ownTimers bool
	log       zerolog.Logger
	instance  string
	// beatRev is the registry revision of this worker's last beat (0:
	// none yet, or another writer came since).
	beatRev atomic.Uint64
	// beaten is set once the worker has beaten (to its Beater).
	beaten  atomic.Bool
	started time.Time

	// prevDelivered is the last stream sequence the previous process of this
	// worker received; messages up to it may have been started already.
	prevDelivered uint64
	// queueLost asks Run to create the worker's queue again.
	queueLost chan error
	// createdQueue is set once this worker asked for its consumer: one
	// found after that is its own (see startQueue), not a previous
	// process's to reset.
	createdQueue bool
	// queueToken names the queue reset a QueueKeeper is asked for, until
	// it is done (asked again with it, the reset is done once).
	queueToken string
	// queueAt is when the worker's consumer was last created (Unix ns; 0:
	// not yet): a listing of the consumers begun before then may miss it.
	queueAt atomic.Int64

	mu      sync.Mutex
	active  map[string]*run      // accepted, record not yet stored
	recent  map[string]time.Time // recorded lately, to drop redeliveries
	waiting []*run               // due, waiting for threads
	busy    int
	stop    context.CancelCauseFunc // ends Run's wait for jobs
	done    atomic.Int64
	// stopping is set once the worker takes no new jobs (see Run).
	stopping atomic.Bool
	missed   atomic.Int64

	// tasks is the parent of the tasks' contexts: Run's values, ended
	// once every job has its record. stopped is closed then too.
	tasks   context.Context
	stopped <-chan struct{}

	recMu    sync.Mutex
	recQueue []*run
	recSig   chan struct{}
	fired    *firedQueue    // see firedLoop
	inflight sync.WaitGroup // running handlers
	pending  sync.WaitGroup // records not yet stored
	// callbacks admits the NATS callbacks that outlive their subscription
	// (see gate); retries counts the records waiting to be queued again.
	callbacks gate
	retries   sync.WaitGroup
	// acks are the acknowledgements sent lately; reconnects, the
	// connection's reconnections when the heartbeat loop last looked, and
	// steady when it last found them unchanged (see reackAfterReconnect).
	acks       ackLog
	reconnects uint64
	steady     time.Time
}

// delivery is one message from the worker's queue: a job, or a JSON array
// of the jobs the pool placed here together. It is acknowledged, which takes
// it off the queue, once each of its jobs this process took on has its
// record stored.
type delivery struct {
	w    *Worker
	msg  jetstream.Msg
	left atomic.Int32
}

// recorded counts one of the delivery's records as stored.
func (d *delivery) recorded() {
	if d != nil && d.left.Add(-1) == 0 {
		d.w.ack(d.msg)
	}
}

// run is one accepted job inside the worker.
type run struct {
	job      job.Job
	del      *delivery
	asap     bool
	start    time.Time // scheduled start (arrival for asap jobs)
	timer    *Timer
	end      *endTimer // fires at the scheduled end; see Task
	deadline *Timer    // ends a wait for threads
	started  bool
	ended    bool
	// resumed is set for a job its previous process received and may have
	// started, given to its Resumer.
	resumed bool
	// released is set once the job's threads are given back: at its
	// scheduled end, when its handler returns, or when the task says its
	// work has ended. holdUntil, set by a task whose work runs past its
	// scheduled end, keeps them past it.
	released  bool
	holdUntil time.Time
	cancel    context.CancelFunc
	// cancelReason is set when a running job is cancelled.
	cancelReason string

	// out is the job's outcome: its start when it starts, the rest when
	// it ends.
	out outcome
	// recMsg is the record message.
	recMsg *nats.Msg
}

// outcome is how a job ended: what its record adds to the job.
type outcome struct {
	status job.Status
	reason string
	// start is when the job started (zero if it never did) and end when
	// its work ended; the record carries them only for a job that started.
	start, end time.Time
	// result and err are what its task returned.
	result json.RawMessage
	err    string
}

// New validates the options and prepares a worker on an open connection.
func New(nc *nats.Conn, opts Options) (*Worker, error) {
	opts = opts.WithDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ownTimers := opts.Timers == nil
	if ownTimers {
		opts.Timers = NewTimerQueue(opts.Spin)
	}
	return &Worker{
		ownTimers: ownTimers,
		opts:      opts,
		nc:        nc,
		timers:    opts.Timers,
		log:       opts.Logger.With().Str("worker", opts.ID).Logger(),
		instance:  nuid.Next(),
		active:    map[string]*run{},
		recent:    map[string]time.Time{},
		queueLost: make(chan error, 1),
		recSig:    make(chan struct{}, 1),
		fired:     newFiredQueue(),
	}, nil
}

// Run registers the worker and runs jobs until ctx ends, then stops
// gracefully: it takes no new jobs, lets running ones finish, stores their
// records and leaves queued jobs in its durable queue for its next start.
// It returns once every goroutine it started has ended.
func (w *Worker) Run(ctx context.Context) error {
	w.started = time.Now()
	res := w.opts.res
	if res == nil {
		var err error
		if w.opts.QueueKeeper != nil {
			// Its queue is the keeper's: it only looks the streams up
			// (it may not create or change them).
			res, err = bindWhenAvailable(ctx, w.nc)
		} else {
			res, err = broker.Setup(ctx, w.nc, broker.Options{})
		}
		if err != nil {
			return err
		}
	}
	w.res = res
	if m := w.opts.Metrics; m != nil {
		m.join(w)
		defer m.leave(w)
	}
	// What still has to happen once ctx has ended (running jobs finish and
	// store their records, the worker deregisters) runs on keep: ctx's
	// values without its end.
	keep := context.WithoutCancel(ctx)

	if w.opts.Reserver != nil {
		if err := w.reserve(ctx); err != nil {
			return fmt.Errorf("worker %s: %w", w.opts.ID, err)
		}
		defer w.release(keep)
	}
	cons, err := w.startQueue(ctx)
	if err != nil {
		return err
	}
	if err := w.beat(ctx); err != nil {
		return err
	}

	// The timer queue, the fired timers' loop and the record storer serve
	// the running jobs until their records are stored, after ctx has ended.
	bg, stopBG := context.WithCancel(keep)
	w.tasks, w.stopped = bg, bg.Done()
	var loops sync.WaitGroup
	defer func() {
		stopBG()
		loops.Wait()
		// The storer has unsubscribed; an acknowledgement it was handed
		// before may still be running, and may arm a retry.
		w.callbacks.close()
		w.retries.Wait()
	}()
	if w.ownTimers {
		loops.Go(func() { w.timers.Run(bg) })
	}
	loops.Go(func() { w.firedLoop(bg) })
	loops.Go(func() { w.storeRecords(bg) })

	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	w.mu.Lock()
	w.stop = stopRun
	w.mu.Unlock()
	// The heartbeats go on, marked stopping, until the worker deregisters:
	// the pool takes a worker whose beats stop for gone, and its running
	// jobs for missed.
	beatCtx, stopBeats := context.WithCancel(keep)
	defer stopBeats()
	var beats sync.WaitGroup
	beats.Go(func() { w.heartbeatLoop(beatCtx, stopRun) })

	cc, err := w.consume(cons)
	if err != nil {
		err = fmt.Errorf("worker %s: consume: %w", w.opts.ID, err)
		stopRun(err)
	} else {
		w.log.Info().Str("host", w.opts.Host).Int("threads", w.opts.Threads).
			Uint64("resume_after_seq", w.prevDelivered).Msg("worker ready")
		cc = w.queueLoop(runCtx, cc)
		// Closed is closed once the last call of intake has returned.
		cc.Drain()
		<-cc.Closed()
	}
	cause := context.Cause(runCtx)
	takenOver := errors.Is(cause, ErrTakenOver)
	w.log.Info().Msg("stopping: no new jobs; letting running jobs finish")
	w.stopping.Store(true)
	w.shelveQueued()
	if !takenOver {
		if err := w.beat(keep); err != nil {
			w.log.Debug().Err(err).Msg("stopping heartbeat")
		}
	}
	w.finishRunning()
	if !waitFor(&w.pending, w.opts.StopGrace) {
		w.log.Warn().Dur("grace", w.opts.StopGrace).
			Msg("the records of some jobs could not be stored (is the broker up?); their messages stay queued, and this worker's next start ends them")
	}
	// The last heartbeat has ended before the deregistration, which it
	// would otherwise undo.
	stopBeats()
	beats.Wait()
	if !takenOver {
		w.deregister(keep)
	}
	w.log.Info().Int64("done", w.done.Load()).Int64("missed", w.missed.Load()).Msg("worker stopped")
	switch {
	case err != nil:
		return err
	case takenOver:
		return cause
	}
	return nil
}

// queueGone reports whether err says the worker's consumer or its stream
// no longer exists.
func queueGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// finishRunning lets the running jobs finish within StopGrace, then
// cancels those still running (their records say so) and waits for them.
func (w *Worker) finishRunning() {
	if waitFor(&w.inflight, w.opts.StopGrace) {
		return
	}
	reason := fmt.Sprintf("the worker stopped and the job was still running after its grace of %s", w.opts.StopGrace)
	w.mu.Lock()
	n := 0
	for _, r := range w.active {
		if r.started && !r.ended && r.cancelReason == "" {
			r.cancelReason = reason
			r.cancel()
			n++
		}
	}
	w.mu.Unlock()
	w.log.Warn().Int("jobs", n).Dur("grace", w.opts.StopGrace).Msg("cancelled the jobs still running at the end of the stop's grace")
	w.inflight.Wait()
}

// waitFor waits for wg, for at most d (forever when d is negative); it
// reports whether wg was done. The goroutine left waiting when it was not
// ends when wg is done.
func waitFor(wg *sync.WaitGroup, d time.Duration) bool {
	if d < 0 {
		wg.Wait()
		return true
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// deregister deletes the worker's registry entry, so that the pool sees it
// gone at once rather than when its heartbeats are missed.
func (w *Worker) deregister(ctx context.Context) {
	if w.opts.Beater != nil {
		w.opts.Beater.Leave(w.opts.ID)
		return
	}
	cctx, cancel := brokerCall(ctx)
	defer cancel()
	if err := w.res.Workers.Delete(cctx, w.opts.ID); err != nil {
		w.log.Debug().Err(err).Msg("deregister")
	}
}

// startQueue opens the worker's queue and reads which of its jobs have
// records, asking again while the broker is too busy to answer in time: a
// broker creating thousands of consumers at once (each checked against
// every other on a work-queue stream) queues the requests for longer than
// one call's bound, and a worker that ended for it would be started again
// by its process and add one more consumer to create.
func (w *Worker) startQueue(ctx context.Context) (jetstream.Consumer, error) {
	wait := startRetryFirst
	for try := 1; ; try++ {
		cons, err := w.openConsumer(ctx)
		if err == nil {
			if err = w.loadRecorded(ctx); err == nil {
				return cons, nil
			}
		}
		if ctx.Err() != nil || !broker.Unavailable(err) {
			return nil, err
		}
		ev := w.log.Debug()
		if try == 1 {
			ev = w.log.Warn()
		}
		ev.Err(err).Dur("again_in", wait).Msg("the broker is slow to set up this worker's queue; asking again")
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait + time.Duration(rand.Int64N(int64(wait)))):
		}
		wait = min(2*wait, startRetryMax)
	}
}

// The waits of startQueue between tries: doubling, with up to as much
// again at random, so that workers started together do not ask together.
const (
	startRetryFirst = 250 * time.Millisecond
	startRetryMax   = 5 * time.Second
)

// openConsumer recreates the worker's durable consumer so that every job
// still queued for it is delivered now rather than after an ack timeout, and
// remembers how far the previous process had got.
func (w *Worker) openConsumer(ctx context.Context) (jetstream.Consumer, error) {
	name := broker.WorkerConsumer(w.opts.ID)
	if k := w.opts.QueueKeeper; k != nil {
		// Made by the keeper (the pool); this worker only reads it. Once
		// made for this start, a try again reads it (made again, its
		// previous delivery would be this one's: nothing).
		if !w.createdQueue {
			if w.queueToken == "" {
				w.queueToken = nuid.Next()
			}
			prev, err := k.ResetQueue(ctx, w.opts.ID, w.queueToken)
			if err != nil {
				return nil, fmt.Errorf("worker %s: reset queue: %w", w.opts.ID, err)
			}
			w.prevDelivered, w.createdQueue, w.queueToken = prev, true, ""
		}
		cctx, cancel := brokerCall(ctx)
		defer cancel()
		c, err := w.res.JobsOf(w.opts.ID).Consumer(cctx, name)
		if err != nil {
			return nil, fmt.Errorf("worker %s: consumer: %w", w.opts.ID, err)
		}
		w.queueAt.Store(time.Now().UnixNano())
		return c, nil
	}
	cctx, cancel := brokerCall(ctx)
	prev, err := w.res.JobsOf(w.opts.ID).Consumer(cctx, name)
	cancel()
	switch {
	case err == nil && w.createdQueue:
		// This worker's own, from a try whose answer came too late.
		w.queueAt.Store(time.Now().UnixNano())
		return prev, nil
	case err == nil:
		// The info that came with the consumer, just now.
		w.prevDelivered = prev.CachedInfo().Delivered.Stream
		cctx, cancel = brokerCall(ctx)
		e, err := broker.GetWorker(cctx, w.res.Workers, w.opts.ID)
		cancel()
		if err == nil && e.Instance != "" {
			w.log.Warn().Int("previous_pid", e.PID).Time("previous_beat", e.Beat).
				Msg("taking over a worker id whose last heartbeat has not expired yet")
		}
		cctx, cancel = brokerCall(ctx)
		err = w.res.JobsOf(w.opts.ID).DeleteConsumer(cctx, name)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("worker %s: reset consumer: %w", w.opts.ID, err)
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("worker %s: consumer: %w", w.opts.ID, err)
	}
	cctx, cancel = brokerCall(ctx)
	defer cancel()
	w.createdQueue = true
	c, err := w.res.JobsOf(w.opts.ID).CreateOrUpdateConsumer(cctx, broker.WorkerConsumerConfig(w.opts.ID))
	if err != nil {
		return nil, fmt.Errorf("worker %s: create consumer: %w", w.opts.ID, err)
	}
	w.queueAt.Store(time.Now().UnixNano())
	return c, nil
}

// loadRecorded takes as recorded the jobs of this worker that have a
// record stored since its oldest queued message: a message stays queued
// until every job in it has a record, and the jobs in it that have one
// (from this worker's last process, or from the pool, which records the
// jobs of a gone worker) must not be taken on again. The records stream
// drops a second record with the same id only within its 10-minute window.
func (w *Worker) loadRecorded(ctx context.Context) error {
	if k := w.opts.QueueKeeper; k != nil {
		ids, err := k.RecordedIDs(ctx, w.opts.ID)
		if err != nil {
			return fmt.Errorf("worker %s: recorded jobs: %w", w.opts.ID, err)
		}
		now := time.Now()
		w.mu.Lock()
		for _, id := range ids {
			w.recent[id] = now
		}
		w.mu.Unlock()
		return nil
	}
	cctx, cancel := brokerCall(ctx)
	first, err := w.res.JobsOf(w.opts.ID).GetMsg(cctx, 1, jetstream.WithGetMsgSubject(broker.JobsSubject(w.opts.ID)))
	cancel()
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker %s: oldest queued job: %w", w.opts.ID, err)
	}
	now := time.Now()
	rctx, cancel := context.WithTimeout(ctx, recordsTimeout)
	defer cancel()
	missing, err := w.res.RecordIDs(rctx, first.Time, broker.DoneSubject(w.opts.ID), func(id, _ string, _ time.Time) {
		w.mu.Lock()
		w.recent[id] = now
		w.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("worker %s: %w", w.opts.ID, err)
	}
	if missing > 0 {
		w.log.Warn().Uint64("records", missing).Msg("records since the oldest queued job did not all come")
	}
	return nil
}

// stopAsked stops the worker for a stop the pool asked for, by a message
// on its queue or through its process. It reports false when the worker
// is not taking jobs yet (or any more), and so could not be stopped so.
func (w *Worker) stopAsked(reason string) bool {
	w.mu.Lock()
	stop := w.stop
	w.mu.Unlock()
	if stop == nil {
		return false
	}
	w.log.Info().Str("reason", reason).Msg("the pool asked this worker to stop")
	stop(fmt.Errorf("%w: %s", ErrStopRequested, reason))
	return true
}

// intake accepts one message from the worker's queue.
func (w *Worker) intake(msg jetstream.Msg) {
	if reason := msg.Headers().Get(broker.HeaderStop); reason != "" {
		w.ack(msg)
		w.stopAsked(reason)
		return
	}
	if id := msg.Headers().Get(broker.HeaderCancel); id != "" {
		w.Cancel(id, string(msg.Data()))
		w.ack(msg)
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Msg("message without metadata")
		return
	}
	d := &delivery{w: w, msg: msg}
	jobs, err := job.ParseMany(msg.Data())
	if err != nil {
		j := job.Job{ID: fmt.Sprintf("%s-seq%d", w.opts.ID, meta.Sequence.Stream), Task: "?"}
		j.Set("raw", jsonString(msg.Data()))
		d.left.Store(1)
		reason := err.Error()
		if !errors.Is(err, job.ErrMalformed) { // its text says so already
			reason = "malformed job: " + reason
		}
		w.endNow(&run{job: j, del: d}, job.StatusFailed, reason)
		return
	}
	now := time.Now()
	runs := make([]*run, 0, len(jobs))
	for _, j := range jobs {
		if j.ID == "" {
			j.ID = nuid.Next()
		}
		if (j.Worker != "" && j.Worker != w.opts.ID) || j.Status != "" {
			// Not a job placed on this worker: one placed on another, or
			// a record, delivered here (a pull request's reply subject,
			// which the broker does not check, can be any queue's).
			w.log.Warn().Str("job", j.ID).Str("worker", j.Worker).Str("status", string(j.Status)).
				Msg("a message on this worker's queue that is not a job placed on it: dropped")
			continue
		}
		if j.Worker == "" {
			j.Worker = w.opts.ID
		}
		r := &run{job: j, del: d, asap: j.StartTime == 0}
		if r.asap {
			r.start = now
		} else {
			r.start = job.Time(j.StartTime)
		}
		runs = append(runs, r)
	}

	// A redelivery to this process (its acknowledgement is held while jobs
	// wait) is dropped while any of its jobs is held, and acknowledged once
	// all of them have their records.
	w.mu.Lock()
	fresh := runs[:0]
	seen := make(map[string]bool, len(runs))
	for _, r := range runs {
		if _, dup := w.active[r.job.ID]; dup {
			w.mu.Unlock()
			return
		}
		if _, dup := w.recent[r.job.ID]; !dup && !seen[r.job.ID] {
			fresh = append(fresh, r)
		}
		seen[r.job.ID] = true
	}
	if len(fresh) == 0 {
		w.mu.Unlock()
		w.ack(msg)
		return
	}
	// Counted before any of them can end.
	d.left.Store(int32(len(fresh)))
	for _, r := range fresh {
		w.active[r.job.ID] = r
	}
	w.mu.Unlock()
	for _, r := range fresh {
		w.take(r, meta.Sequence.Stream, now)
	}
}

// take starts a job's wait for its start time, or ends it at once when it
// cannot run: it came too late, it may have started in a previous process
// (seq is its message's stream sequence), or the worker cannot run it.
func (w *Worker) take(r *run, seq uint64, now time.Time) {
	j := &r.job
	late := now.Sub(r.start)
	switch {
	case seq <= w.prevDelivered && (r.asap || late >= 0):
		if h, ok := w.resumerOf(j.Task); ok {
			w.mu.Lock()
			w.startLocked(r, now, h, true)
			w.mu.Unlock()
			return
		}
		w.endMayHaveStarted(r)
	case !r.asap && late > r.job.StartWithin(w.opts.Tolerance):
		w.endNow(r, job.StatusMissed, fmt.Sprintf("arrived %.3f ms after its start time (tolerance %s)", ms(late), r.job.StartWithin(w.opts.Tolerance)))
	case j.Threads > w.opts.Threads || j.Threads <= 0:
		w.endNow(r, job.StatusFailed, fmt.Sprintf("needs %d threads; this worker has %d", j.Threads, w.opts.Threads))
	default:
		if _, err := w.opts.Handlers.Lookup(j.Task); err != nil {
			w.endNow(r, job.StatusFailed, err.Error())
			return
		}
		if r.asap {
			// Due now: no trip through the timer queue's goroutine, whose
			// locked thread makes every hand-off a futex call.
			w.due(r, now)
			return
		}
		w.mu.Lock()
		r.timer = w.timers.At(r.start, w.handOff(func(now time.Time) { w.due(r, now) }))
		r.end = armEnd(w.timers, job.Time(r.job.ScheduledEnd(j.StartTime)), w.releaseAtEnd(r))
		w.mu.Unlock()
	}
}

// due starts a job at its start time, or makes it wait for threads; now is
// when its timer fired (handed off, see firedLoop), or its arrival for an
// as-soon-as-possible job.
func (w *Worker) due(r *run, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.ended || r.started {
		return
	}
	tolerance := r.job.StartWithin(w.opts.Tolerance)
	if late := now.Sub(r.start); !r.asap && late > tolerance {
		w.endLocked(r, outcome{status: job.StatusMissed, reason: fmt.Sprintf("the worker could not start it until %.3f ms after its start time (tolerance %s)", ms(late), tolerance)})
		return
	}
	if w.busy+r.job.Threads <= w.opts.Threads && len(w.waiting) == 0 {
		w.beginLocked(r, now)
		return
	}
	// Threads are busy: a job ending at this same instant may free them.
	// Wait up to the tolerance (forever for an as-soon-as-possible job).
	w.waiting = append(w.waiting, r)
	if !r.asap {
		r.deadline = w.timers.At(r.start.Add(tolerance), w.handOff(func(time.Time) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if r.started || r.ended {
				return
			}
			w.removeWaitingLocked(r)
			w.endLocked(r, outcome{status: job.StatusMissed, reason: fmt.Sprintf("its %d threads were not free within %s of its start time", r.job.Threads, tolerance)})
		}))
	}
}

// beginLocked starts a job's handler.
func (w *Worker) beginLocked(r *run, now time.Time) {
	handler, err := w.opts.Handlers.Lookup(r.job.Task)
	if err != nil {
		w.endLocked(r, outcome{status: job.StatusFailed, reason: err.Error()})
		return
	}
	w.startLocked(r, now, handler, false)
}

// resumerOf is the Resumer of task, if its handler is one.
func (w *Worker) resumerOf(task string) (Resumer, bool) {
	h, err := w.opts.Handlers.Lookup(task)
	if err != nil {
		return nil, false
	}
	rs, ok := h.(Resumer)
	return rs, ok
}

// startLocked runs a job's handler on its threads: Run, or, for a job its
// previous process may have started (resumed), Resume. A resumed job's
// threads are taken beyond the worker's capacity if need be: they were
// the previous process's, which the new one's jobs have not started on.
func (w *Worker) startLocked(r *run, now time.Time, handler Handler, resumed bool) {
	if r.deadline != nil {
		r.deadline.Stop()
	}
	w.busy += r.job.Threads
	r.started = true
	r.resumed = resumed
	r.out.start = now
	ctx, cancel := context.WithCancel(w.tasks)
	r.cancel = cancel
	end := job.Time(r.job.ScheduledEnd(job.Millis(r.start)))
	if r.asap {
		end = now.Add(time.Duration(r.job.Duration * float64(time.Millisecond)))
	}
	t := &Task{Job: &r.job, Worker: w.opts.ID, Host: w.opts.Host, Conn: w.nc, Start: now, ScheduledEnd: end, Resumed: resumed, timers: w.timers}
	if r.end == nil && end.After(now) {
		r.end = armEnd(w.timers, end, w.releaseAtEnd(r))
	}
	t.end = r.end
	t.release = func(at time.Time) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.releaseLocked(r, at)
	}
	t.hold = func(until time.Time) {
		w.mu.Lock()
		defer w.mu.Unlock()
		r.holdUntil = until
	}
	if h, ok := handler.(ThreadHolder); ok && h.HoldsThreads() && !resumed {
		// Until the handler says how long, the threads are held until
		// the landing the job's own figures predict: its actual start
		// plus its duration, or its scheduled end if later. Set before
		// its goroutine runs, which may be after the end timer has
		// fired: a job started late runs past its scheduled end. Not
		// forever: a handler whose answer is slow (the service that
		// says is restarting, or the broker) would keep the next jobs
		// placed on those threads from starting, and they would be
		// missed, or start late, out of their order. Not for a job taken
		// up: it ran in the previous process, which said so long ago.
		r.holdUntil = end
		if predicted := now.Add(time.Duration(r.job.Duration * float64(time.Millisecond))); predicted.After(end) {
			r.holdUntil = predicted
			w.timers.AtFirst(predicted, w.releaseAtEnd(r))
		}
	}
	w.inflight.Add(1)
	go w.execute(ctx, r, handler, t)
}

// execute runs a started job's handler and ends the job with what it
// returned.
func (w *Worker) execute(ctx context.Context, r *run, h Handler, t *Task) {
	defer w.inflight.Done()
	var result json.RawMessage
	var err error
	if r.resumed {
		result, err = safeResume(ctx, h.(Resumer), t)
		if errors.Is(err, ErrNotResumed) {
			w.notResumed(r, err)
			return
		}
	} else {
		result, err = safeRun(ctx, h, t)
	}
	if len(result) > 0 && !json.Valid(result) {
		// The record carries the result as it is: one that is not JSON
		// would make the whole record unreadable.
		err = errors.Join(err, fmt.Errorf("its result is not JSON: %q", truncate(result, 200)))
		result = nil
	}
	r.end.stop()
	end := time.Now()
	if !t.EndedAt.IsZero() && t.EndedAt.Before(end) {
		end = t.EndedAt
	}
	o := outcome{status: job.StatusDone, end: end, result: result}
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.resumed {
		// As Resume learned it. Not learned (the task cancelled while
		// it asked), the job's start is unknown: the time it was taken
		// up is not it, and a record said a weaken began 1.8 s late.
		if t.Start.Equal(r.out.start) {
			r.out.start = time.Time{}
		} else {
			r.out.start = t.Start
		}
	}
	r.cancel()
	w.releaseLocked(r, end)
	switch {
	case r.cancelReason != "" && err == nil && len(result) > 0:
		// The task did its work before the cancel reached it (its
		// result says what it did): the record tells what happened.
		o.reason = "cancelled after its work was done: " + r.cancelReason
	case r.cancelReason != "":
		o.status, o.reason = job.StatusCancelled, r.cancelReason
	case err != nil:
		o.status, o.reason, o.err = job.StatusFailed, "the task returned an error", err.Error()
	}
	w.endLocked(r, o)
}

// notResumed ends a job its Resumer did not take up as one without a
// Resumer (endMayHaveStarted).
func (w *Worker) notResumed(r *run, err error) {
	r.end.stop()
	w.mu.Lock()
	r.cancel()
	w.releaseLocked(r, time.Now())
	r.started, r.out.start = false, time.Time{}
	w.mu.Unlock()
	w.log.Debug().Err(err).Str("job", r.job.ID).Msg("a job the previous process received was not taken up")
	w.endMayHaveStarted(r)
}

// endMayHaveStarted ends a job the previous process received whose start
// has passed, and which no Resumer takes up: settled, or recorded as what
// the worker cannot know (it may have started), never run twice.
func (w *Worker) endMayHaveStarted(r *run) {
	if r.asap {
		w.settleOrEnd(r, job.StatusFailed, "interrupted: the worker restarted after receiving this job, which may have started; it is not run twice")
	} else {
		w.settleOrEnd(r, job.StatusMissed, "the worker restarted after this job's start time; it may have started and is not run twice")
	}
}

// safeResume is safeRun for a Resumer's Resume.
func safeResume(ctx context.Context, h Resumer, t *Task) (res []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("task panicked: %v", p)
		}
	}()
	return h.Resume(ctx, t)
}

// safeRun turns a handler's panic into an error: a bad task never takes the
// worker down.
func safeRun(ctx context.Context, h Handler, t *Task) (res []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("task panicked: %v", p)
		}
	}()
	return h.Run(ctx, t)
}

// admitWaitingLocked starts the jobs waiting for threads that now fit, at
// the instant the threads were freed (never before a job's own start), in
// the order they began to wait, until the first that does not fit.
func (w *Worker) admitWaitingLocked(now time.Time) {
	for len(w.waiting) > 0 {
		r := w.waiting[0]
		if w.busy+r.job.Threads > w.opts.Threads {
			return
		}
		w.waiting = w.waiting[1:]
		at := now
		if at.Before(r.start) {
			at = r.start
		}
		// Its deadline's timer may not have run yet: a job freed from
		// its wait past its tolerance is missed here.
		if tolerance := r.job.StartWithin(w.opts.Tolerance); !r.asap && at.Sub(r.start) > tolerance {
			w.endLocked(r, outcome{status: job.StatusMissed, reason: fmt.Sprintf("its %d threads were not free within %s of its start time", r.job.Threads, tolerance)})
			continue
		}
		w.beginLocked(r, at)
	}
}

// releaseAtEnd returns the end timer's callback that gives a started job's
// threads back at its scheduled end, the end of its reservation, on the
// fired-timer goroutine, unless its task holds them longer (see
// Task.HoldThreadsUntil). The handler gives them back too when it returns,
// but its goroutine may run milliseconds later on a busy machine, and a job
// placed on those threads from that instant on would wait for them and
// start late. The fired timers run in the order they fired: at one instant,
// the ends (armed with AtFirst) before the starts.
func (w *Worker) releaseAtEnd(r *run) func(now time.Time) {
	return w.handOff(func(now time.Time) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if r.started && !r.holdUntil.After(now) {
			w.releaseLocked(r, now)
		}
	})
}

// releaseLocked gives a job's threads back (once), at instant at, and
// starts the jobs that were waiting for them.
func (w *Worker) releaseLocked(r *run, at time.Time) {
	if r.released {
		return
	}
	r.released = true
	w.busy -= r.job.Threads
	w.admitWaitingLocked(at)
}

// removeWaitingLocked takes a job out of the wait for threads.
func (w *Worker) removeWaitingLocked(r *run) {
	for i, x := range w.waiting {
		if x == r {
			w.waiting = append(w.waiting[:i], w.waiting[i+1:]...)
			return
		}
	}
}

// Cancel ends a job that has not ended: a queued job, or one waiting for
// threads, never starts and is recorded cancelled; a running one has its
// context cancelled and is recorded when its handler returns (done, if it
// returned a result without an error: its work was done). It reports
// whether the job was found.
func (w *Worker) Cancel(id, reason string) bool {
	if reason == "" {
		reason = "cancelled"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.active[id]
	if !ok || r.ended {
		return false
	}
	if r.started {
		r.cancelReason = reason
		r.cancel()
		return true
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	if r.deadline != nil {
		r.deadline.Stop()
	}
	w.removeWaitingLocked(r)
	w.endLocked(r, outcome{status: job.StatusCancelled, reason: reason})
	return true
}

// shelveQueued drops the jobs that have not started, without a record:
// their messages stay unacknowledged in the durable queue for the next
// start.
func (w *Worker) shelveQueued() {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for id, r := range w.active {
		if r.started || r.ended {
			continue
		}
		if r.timer != nil {
			r.timer.Stop()
		}
		if r.deadline != nil {
			r.deadline.Stop()
		}
		r.end.stop()
		r.ended = true
		delete(w.active, id)
		n++
	}
	w.waiting = nil
	if n > 0 {
		w.log.Info().Int("jobs", n).Msg("queued jobs left in the durable queue for this worker's next start")
	}
}

// endNow ends a job that never started; one that is not active yet (a
// malformed message's) is until its record is stored.
func (w *Worker) endNow(r *run, status job.Status, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.active[r.job.ID]; !ok && r.job.ID != "" {
		w.active[r.job.ID] = r
	}
	w.endLocked(r, outcome{status: status, reason: reason})
}

// endLocked ends a job with its outcome (its start is the run's) and hands
// its record to the storer.
func (w *Worker) endLocked(r *run, o outcome) {
	if r.ended {
		return
	}
	r.ended = true
	r.end.stop()
	o.start = r.out.start
	r.out = o
	j := &r.job
	j.Status = o.status
	j.Reason = o.reason
	if !o.start.IsZero() {
		j.ActualStartTime = job.Millis(o.start)
		j.ActualEndTime = job.Millis(o.end)
	}
	j.Result = o.result
	j.Error = o.err
	if m := w.opts.Metrics; m != nil {
		m.record(j)
	}
	if o.status == job.StatusMissed {
		w.missed.Add(1)
	} else {
		w.done.Add(1)
	}
	w.pending.Add(1)
	w.queueRecord(r)
}

// truncate is b cut to at most n bytes.
func truncate(b []byte, n int) []byte { return b[:min(len(b), n)] }

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// jsonString renders raw bytes as a JSON string, for a record to quote a
// message it could not read: encoding/json writes every control character
// as a JSON escape and each byte that is not UTF-8 as U+FFFD (Go's %q
// writes escapes such as \x00 that JSON does not have). HTML characters
// stay as they are: records are read by people too.
func jsonString(b []byte) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(string(b)) // a string always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
