package world

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world/game"
)

// The world's request/reply API, a NATS micro service ("nats micro ls").
// Requests and replies are JSON; errors are ErrorReply bodies.
const (
	ServiceName = "hvmind-world"
	// SubjectServers answers every server ([]Server).
	SubjectServers = "hvmind.world.servers"
	// SubjectServer answers one server; the body is its hostname.
	SubjectServer = "hvmind.world.server"
	// SubjectPlayer answers the player (PlayerInfo).
	SubjectPlayer = "hvmind.world.player"
	// SubjectBegin starts an operation: BeginRequest → BeginReply.
	SubjectBegin = "hvmind.world.begin"
	// SubjectFinish applies a begun operation once: FinishRequest → Result.
	SubjectFinish = "hvmind.world.finish"
	// SubjectRAM answers the hosts and their free threads ([]HostRAM).
	SubjectRAM = "hvmind.world.ram"
	// SubjectRAMReserve reserves RAM for an owner: RAMRequest → RAMReply.
	SubjectRAMReserve = "hvmind.world.ram.reserve"
	// SubjectRAMRelease frees an owner's RAM: RAMRequest → RAMReply.
	SubjectRAMRelease = "hvmind.world.ram.release"
	// SubjectClock answers the world's clock (Clock).
	SubjectClock = "hvmind.world.clock"
	// SubjectWorkerPrefix starts the subjects on which a worker asks for
	// its own operations and RAM (see WorkerSubject).
	SubjectWorkerPrefix = "hvmind.world.worker."
)

// The requests a worker makes under its own id (see WorkerSubject).
const (
	WorkerBegin      = "begin"
	WorkerFinish     = "finish"
	WorkerSettle     = "settle"
	WorkerRAMReserve = "ram.reserve"
	WorkerRAMRelease = "ram.release"
)

// WorkerSubject is the subject on which worker asks for request (one of
// the Worker constants): hvmind.world.worker.<worker>.<request>. The
// world answers there only for what is the worker's own: a begin with it
// as Owner, a finish of an operation it began, a reservation it holds,
// a settlement of its operations. A broker that gives each worker its
// own identity (see broker.WorkerPermissions) lets it publish only on its
// own, so that no worker can act for another; the plain subjects
// (SubjectBegin…) are for the pool.
func WorkerSubject(worker, request string) string {
	return SubjectWorkerPrefix + worker + "." + request
}

// WorkerGrants are the world's subjects a worker may publish on: its own
// requests (WorkerSubject) and the world's questions. A broker that gives
// each worker an identity grants it these (broker.Identities.Grants).
func WorkerGrants(worker string) []string {
	return []string{SubjectWorkerPrefix + worker + ".>", SubjectServers, SubjectServer, SubjectPlayer, SubjectClock, SubjectRAM}
}

// AskerOf is the worker a request came from on its own subject ("" on
// the plain ones).
func AskerOf(subject string) string {
	rest, ok := strings.CutPrefix(subject, SubjectWorkerPrefix)
	if !ok {
		return ""
	}
	w, _, _ := strings.Cut(rest, ".")
	return w
}

// notOwner is the error of a request on asker's subject for owner's.
func notOwner(asker, what, owner string) error {
	return fmt.Errorf("%w: worker %s asked for %s, which is worker %s's", ErrNotOwner, asker, what, owner)
}

// Version is reported by the world's micro service.
const Version = "0.1.0"

// DefaultScenario is where a fresh world starts when no scenario is given.
const DefaultScenario = "newgame"

// ResumeHold is how long a world resumed from its store, or whose
// connection to the broker came back, holds the timed requests it
// receives before it applies them, in the order of their stamps: longer than a worker's attempt at a request (600 ms) and its
// wait before the next (at most 500 ms), so that what was lost in flight
// when the world stopped is asked again within it. After a pool kill in
// the chaos test, batches landed out of order without it, and the batcher
// stopped to prep again. And short: an operation begun while the world
// holds, that ends before the hold is over, lands late and out of order.
// With 2.5 s (and 2 s attempts), pool kills on reference-880 at 60x left
// 8 to 33 such per kill and a re-prep each time (income back after 9.4 s,
// median of 6); with 1.1 s, after 3.2 s.
const ResumeHold = 1100 * time.Millisecond

// Defaults of Options.
const (
	DefaultSpeed         = 1
	DefaultRetention     = 24 * time.Hour
	DefaultSnapshotEvery = 250 * time.Millisecond
)

// ErrInvalidOption wraps an option of Serve that is out of range.
var ErrInvalidOption = errors.New("invalid world option")

// Options configure the world service.
type Options struct {
	// Scenario is an embedded scenario's name or a scenario file. A fresh
	// broker starts from it (from DefaultScenario when empty); a broker
	// holding another scenario's world is refused unless Reset. Empty
	// resumes whatever world is stored.
	Scenario string
	// Speed is game time per real time: every duration is divided by it
	// (60: a game hour per real minute; DefaultSpeed when 0).
	Speed float64
	// Seed decides the hack rolls (see HackRoll).
	Seed int64
	// Reset discards the stored world and starts again from Scenario.
	Reset bool
	// Logger receives the service's logs.
	Logger zerolog.Logger
	// FormulasOnly turns off the rules that keep callers honest (an
	// operation's threads backed by RAM its owner holds, its start near
	// now, its finish not before its end; see rules.go), for tests of
	// the formulas that begin and finish operations directly. No program
	// sets it.
	FormulasOnly bool
	// Retention is how long begins and results are kept by job id
	// (DefaultRetention when 0).
	Retention time.Duration
	// SnapshotEvery is the least interval between snapshots of the whole
	// state (DefaultSnapshotEvery when 0).
	SnapshotEvery time.Duration
	// Holdback is how long the world holds a begin stamped with its start,
	// or a finish stamped with its landing, before applying it, so that
	// requests apply in the order of their stamps even when they arrive
	// out of it (DefaultHoldback(Speed) when 0; negative: none).
	Holdback time.Duration
	// Storage is the replicas and placement of the world's bucket (see
	// broker.Storage; the zero value leaves it as it is).
	Storage broker.Storage
}

// FinishRequest names the operation to finish.
type FinishRequest struct {
	JobID string `json:"jobId"`
	// End is when the operation landed (epoch ms; 0: when the world reads
	// the request): operations that began before it do not see it.
	End float64 `json:"end,omitempty"`
	// Due is when the operation was scheduled to land (epoch ms): it
	// orders operations that landed at the same instant.
	Due float64 `json:"due,omitempty"`
}

// Clock is the world's clock and identity.
type Clock struct {
	Scenario string  `json:"scenario"`
	Speed    float64 `json:"speed"`
	// GameTimeMs is the game time elapsed in this world while a world
	// service ran.
	GameTimeMs float64 `json:"gameTimeMs"`
	Seed       int64   `json:"seed"`
	// Seq is the number of changes applied so far.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// Service is the running world: the single writer of its state.
type Service struct {
	opts  Options
	nc    *nats.Conn
	log   zerolog.Logger
	store *store
	svc   micro.Service

	// begun mirrors the keys of begins (job ids), for the request
	// handlers, which may not read the writer's maps: a finish of an
	// operation the world does not have in memory is read from the store
	// before it is sequenced.
	begun sync.Map
	// landed mirrors the keys of results, likewise: the finish of an
	// operation the world landed on its own (see scheduleLandings) is
	// answered from memory, not read from the store.
	landed sync.Map
	// reconnected tells of the connection coming back (see
	// holdOnReconnect); watchers counts the goroutine that listens.
	reconnected chan nats.Status
	watchers    sync.WaitGroup

	queue chan *item
	// queueMu guards queueClosed; enqueue sends under its read lock.
	queueMu     sync.RWMutex
	queueClosed bool
	// stopCh is closed to stop the writer, which closes writerDone; the
	// lifecycle goroutine closes done once everything has ended (see
	// lifecycle). Stop closes stopReq.
	stopCh     chan struct{}
	writerDone chan struct{}
	done       chan struct{}
	stopReq    chan struct{}
	stopOnce   sync.Once
	// lookups counts the store lookups in progress (see goLookup), run on
	// runCtx; lookupsClosed is set once the service stops taking them.
	runCtx        context.Context
	lookupMu      sync.Mutex
	lookupsClosed bool
	lookups       sync.WaitGroup

	// Owned by the writer goroutine (set before it starts).
	st      *State
	begins  map[string]*begun
	results map[string]*finished
	settled map[string]*settledOp
	running running
	// landing holds the operations begun in the group being run, whose
	// landings are scheduled once their begins are stored.
	landing  []BeginReply
	gameBase float64
	realBase time.Time
	dirty    bool
	lastSnap time.Time
	// broken is set when memory may be ahead of the store; the writer
	// reloads before it serves again.
	broken error
	// installed is when the current world was loaded (Unix ns).
	installed atomic.Int64
	// seq orders timed begins and finishes by their stamps.
	seq *sequencer
}

type begun struct {
	b  BeginReply
	at time.Time
}

// forgetBegin drops a begin, and its threads from the running ones.
func (s *Service) forgetBegin(id string) {
	if b, ok := s.begins[id]; ok {
		s.running.drop(b.b.Host, b.b.Owner, id)
		delete(s.begins, id)
		s.begun.Delete(id)
	}
}

type finished struct {
	r  Result
	at time.Time
}

// item is one request for the writer: run computes the reply (and the
// writes it needs stored first); respond sends it.
type item struct {
	run     func() (any, []write, error)
	respond func(any, error)
	// timed is set for a request ordered by its stamp (epoch ms; see
	// sequencer); loaded is the world's installed when it was handed to
	// the writer. One handed over before the world reloaded its store is
	// answered "retry" rather than run (see runGroup).
	timed  bool
	stamp  float64
	loaded int64
	// batch, when set, is what this item stands for: requests the
	// sequencer released together, in stamp order; after, when set, runs
	// once they are applied, stored and answered (see sequencer.release).
	batch []*item
	after func()
}

// wraps reports whether it only stands for a batch (see item.batch).
func (it *item) wraps() bool { return it.batch != nil || it.after != nil }

const (
	maxGroup       = 512
	queueSize      = 8192
	ackTimeout     = 10 * time.Second
	resultCacheAge = 10 * time.Minute
	// lookupTimeout bounds one lookup of the store.
	lookupTimeout = 5 * time.Second
)

// errLookup asks the handler to read the store and try again.
var errLookup = errors.New("look up the store")

var errStopping = fmt.Errorf("%w: the world service is stopping", ErrUnavailable)

// WithDefaults returns the options with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Speed == 0 {
		o.Speed = DefaultSpeed
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = DefaultSnapshotEvery
	}
	if o.Holdback == 0 {
		o.Holdback = DefaultHoldback(o.Speed)
	}
	return o
}

func (o *Options) validate() error {
	if err := o.Storage.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	switch {
	case !(o.Speed > 0) || o.Speed > 1e9:
		return fmt.Errorf("%w: speed %v: want a positive number up to 1e9", ErrInvalidOption, o.Speed)
	case o.Retention < 0:
		return fmt.Errorf("%w: retention %s must be positive", ErrInvalidOption, o.Retention)
	case o.SnapshotEvery < 0:
		return fmt.Errorf("%w: snapshot interval %s must be positive", ErrInvalidOption, o.SnapshotEvery)
	}
	return nil
}

// Serve loads the world from the broker (or starts it from the scenario)
// and answers the world's API until ctx ends or Stop is called.
func Serve(ctx context.Context, nc *nats.Conn, o Options) (*Service, error) {
	o = o.WithDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("world: %w", err)
	}
	log := o.Logger.With().Str("part", "world").Logger()
	var want *game.Scenario
	if o.Scenario != "" || o.Reset {
		name := o.Scenario
		if name == "" {
			name = DefaultScenario
		}
		var err error
		if want, err = game.LoadScenario(name); err != nil {
			return nil, fmt.Errorf("world: %w", err)
		}
	}
	if err := checkNotRunning(nc); err != nil {
		return nil, err
	}
	st, err := openStore(ctx, nc, o.Retention, o.Storage, log)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	l, err := st.load(lctx, want, o.Reset)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("world: %w", err)
	}
	s := &Service{
		opts: o, nc: nc, log: log, store: st,
		queue: make(chan *item, queueSize), stopCh: make(chan struct{}), writerDone: make(chan struct{}),
		done: make(chan struct{}), stopReq: make(chan struct{}), runCtx: context.WithoutCancel(ctx),
		lastSnap: time.Now(),
	}
	s.seq = newSequencer(o.Holdback, s.enqueue)
	if !l.fresh && o.Holdback > 0 {
		// Workers retry what they could not send while the world was
		// away, each within an attempt's time: hold it all for that
		// long, so that it is applied in the order it happened.
		s.seq.holdFor(ResumeHold)
	}
	// What the ready line says is read before the writer starts changing it.
	scenario, seq, replayed, pending := l.st.Scenario, l.st.Seq, len(l.replayed), len(l.pending)
	s.install(l)
	go s.writer()
	if o.Holdback > 0 {
		s.reconnected = nc.StatusChanged(nats.CONNECTED)
		s.watchers.Add(1)
		go s.holdOnReconnect()
	}
	err = s.startMicro()
	go s.lifecycle(ctx) // after s.svc is set
	if err != nil {
		s.Stop()
		return nil, err
	}
	ev := log.Info().Str("scenario", scenario).Uint64("seq", seq).Float64("speed", o.Speed).Int64("seed", o.Seed).Dur("holdback", o.Holdback)
	if l.fresh {
		ev.Msg("world service ready: a new world")
	} else {
		ev.Int("replayed", replayed).Int("to_land", pending).Msg("world service ready: resumed the stored world")
	}
	return s, nil
}

// checkNotRunning refuses to start a second writer of the same world.
func checkNotRunning(nc *nats.Conn) error {
	msg, err := nc.Request(SubjectClock, nil, 500*time.Millisecond)
	if err != nil {
		return nil // no responders (or no answer): nobody is serving
	}
	if msg.Header.Get(micro.ErrorHeader) != "" {
		// A service that is stopping answers with an error: it serves no
		// more (a world restarted at once was refused as a second one).
		return nil
	}
	var c Clock
	_ = json.Unmarshal(msg.Data, &c)
	return fmt.Errorf("%w on this broker (scenario %q, speed %v); stop it first, or use it", ErrAlreadyRunning, c.Scenario, c.Speed)
}

func (s *Service) startMicro() error {
	svc, err := broker.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "HVMind simulated world: servers, player, and the hack/grow/weaken operations",
	},
		broker.Endpoint{Name: "servers", Subject: SubjectServers, Handler: s.handleServers, Description: "every server of the world, as the game shows them"},
		broker.Endpoint{Name: "server", Subject: SubjectServer, Handler: s.handleServer, Description: "one server by name"},
		broker.Endpoint{Name: "player", Subject: SubjectPlayer, Handler: s.handlePlayer, Description: "the player: hacking level, skills, money"},
		broker.Endpoint{Name: "begin", Subject: SubjectBegin, Handler: s.handleBegin, Description: "a hack, grow or weaken starts: checks the RAM its worker holds and fixes the inputs of its effect"},
		broker.Endpoint{Name: "finish", Subject: SubjectFinish, Handler: s.handleFinish, Description: "a hack, grow or weaken ends: applies its effect once, after its time has passed"},
		broker.Endpoint{Name: "ram", Subject: SubjectRAM, Handler: s.handleRAM, Description: "free and used RAM of every host"},
		broker.Endpoint{Name: "ram-reserve", Subject: SubjectRAMReserve, Handler: s.handleReserve, Description: "a worker takes threads of RAM on a host"},
		broker.Endpoint{Name: "ram-release", Subject: SubjectRAMRelease, Handler: s.handleRelease, Description: "a worker gives its RAM on a host back"},
		broker.Endpoint{Name: "clock", Subject: SubjectClock, Handler: s.handleClock, Description: "the time of the world and its speed"},
		broker.Endpoint{Name: "settle", Subject: SubjectSettle, Handler: s.handleSettle, Description: "whether the world applied the operations of jobs whose worker is gone"},
		broker.Endpoint{Name: "resume", Subject: SubjectResume, Handler: s.handleResume, Description: "what became of an operation whose worker restarted: running (to be taken up), applied or settled"},
		broker.Endpoint{Name: "worker-begin", Subject: WorkerSubject("*", WorkerBegin), Handler: s.handleBegin, Description: "begin, asked by a worker for itself"},
		broker.Endpoint{Name: "worker-finish", Subject: WorkerSubject("*", WorkerFinish), Handler: s.handleFinish, Description: "finish, asked by a worker of an operation it began"},
		broker.Endpoint{Name: "worker-settle", Subject: WorkerSubject("*", WorkerSettle), Handler: s.handleSettle, Description: "settle, asked by a worker of its own operations"},
		broker.Endpoint{Name: "worker-resume", Subject: WorkerSubject("*", WorkerResume), Handler: s.handleResume, Description: "resume, asked by a worker of its own operations"},
		broker.Endpoint{Name: "worker-ram-reserve", Subject: WorkerSubject("*", WorkerRAMReserve), Handler: s.handleReserve, Description: "ram-reserve, asked by a worker for itself"},
		broker.Endpoint{Name: "worker-ram-release", Subject: WorkerSubject("*", WorkerRAMRelease), Handler: s.handleRelease, Description: "ram-release, asked by a worker of its own RAM"},
	)
	if err != nil {
		return fmt.Errorf("world service: %w", err)
	}
	s.svc = svc
	return nil
}

// Stop stops answering, lets the lookups in progress and the requests held
// for their order reach the writer, lets the writer finish what it was
// given and write a last snapshot, and returns once every goroutine the
// service started has ended. It is safe to call more than once, and is
// called when the context given to Serve ends.
func (s *Service) Stop() {
	s.stopOnce.Do(func() { close(s.stopReq) })
	<-s.done
}

// lifecycle waits for ctx to end or Stop, then stops the service in order.
func (s *Service) lifecycle(ctx context.Context) {
	defer close(s.done)
	select {
	case <-ctx.Done():
	case <-s.stopReq:
	}
	if s.svc != nil {
		_ = s.svc.Stop()
	}
	if s.reconnected != nil {
		s.nc.RemoveStatusListener(s.reconnected) // ends holdOnReconnect
	}
	s.watchers.Wait()
	s.lookupMu.Lock()
	s.lookupsClosed = true
	s.lookupMu.Unlock()
	s.lookups.Wait()
	s.seq.flush()
	s.queueMu.Lock()
	s.queueClosed = true
	s.queueMu.Unlock()
	close(s.stopCh)
	<-s.writerDone
	s.store.close()
}

// holdOnReconnect holds the timed requests for ResumeHold each time the
// connection to the broker comes back. While it was away, the workers'
// begins and finishes found no world; they ask again, each within an
// attempt's time, and arrive together, in any order: held, they are
// applied in the order they happened. Without it a broker restart in the
// chaos test applied a pipeline's hacks before its grows and drained the
// target to 4% of its money.
func (s *Service) holdOnReconnect() {
	defer s.watchers.Done()
	for range s.reconnected {
		s.seq.holdFor(ResumeHold)
		s.log.Info().Dur("hold", ResumeHold).Msg("the broker is back: holding the timed requests, to apply them in order")
	}
}

// goLookup runs a store lookup for a request off the writer, on a
// goroutine the service waits for when it stops; a stopping service
// answers it with errStopping instead.
func (s *Service) goLookup(req micro.Request, lookup func(ctx context.Context)) {
	s.lookupMu.Lock()
	if s.lookupsClosed {
		s.lookupMu.Unlock()
		s.refuse(req, errStopping)
		return
	}
	s.lookups.Add(1)
	s.lookupMu.Unlock()
	// One that came in a hold holds it until it is in (see
	// sequencer.reading).
	held := s.seq.holding()
	if held {
		s.seq.reading.Add(1)
	}
	go func() {
		defer s.lookups.Done()
		if held {
			defer s.seq.reading.Add(-1)
		}
		ctx, cancel := context.WithTimeout(s.runCtx, lookupTimeout)
		defer cancel()
		lookup(ctx)
	}()
}

// Done is closed once the service has stopped.
func (s *Service) Done() <-chan struct{} { return s.done }

// LateRequests is how many timed requests (begins and finishes) arrived
// after their stamp was Holdback old, so that their order among the others
// was not guaranteed, and the latest of them (arrival minus stamp).
func (s *Service) LateRequests() (n int64, latest time.Duration) {
	return s.seq.late.Load(), time.Duration(s.seq.lateMax.Load()) * time.Microsecond
}

// install makes a loaded world the current one.
func (s *Service) install(l *loaded) {
	s.st = l.st
	s.begins = map[string]*begun{}
	s.begun.Clear()
	s.landed.Clear()
	s.settled = map[string]*settledOp{}
	s.running = running{}
	s.results = make(map[string]*finished, len(l.replayed))
	now := time.Now()
	for _, r := range l.replayed {
		s.results[r.JobID] = &finished{r: r, at: now}
		s.landed.Store(r.JobID, struct{}{})
	}
	// The operations begun before and still to land land at their
	// landings, as they would have, with or without their workers: after
	// a restart of the pool, a worker process killed with operations in
	// flight that had begun before it had its hacks land on time and the
	// grows and weakens between them only when its next process finished
	// them, later, and the target was drained. Held with the requests that
	// come again after a restart (see Serve and reload), they land in
	// order among them.
	for _, p := range l.pending {
		b := p.b
		s.begins[b.JobID] = &begun{b: b, at: p.at}
		s.begun.Store(b.JobID, struct{}{})
		s.running.add(b.Host, b.Owner, b.JobID, b.Threads, b.LandsAt)
		if s.opts.Holdback > 0 && !s.opts.FormulasOnly {
			s.scheduleLanding(b)
		}
	}
	s.gameBase, s.realBase = l.gameMs, now
	s.installed.Store(now.UnixNano())
	// Fold a replayed journal into a new snapshot soon.
	s.dirty = len(l.replayed) > 0 || l.purged > 0
	s.broken = nil
}

func (s *Service) gameNow() float64 {
	return s.gameBase + float64(time.Since(s.realBase))/float64(time.Millisecond)*s.opts.Speed
}

// ---- the writer ----

func (s *Service) writer() {
	defer close(s.writerDone)
	snap := time.NewTicker(s.opts.SnapshotEvery)
	defer snap.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	group := make([]*item, 0, maxGroup)
	for {
		select {
		case it := <-s.queue:
			group = append(group[:0], it)
		fill:
			for len(group) < maxGroup {
				select {
				case it := <-s.queue:
					group = append(group, it)
				default:
					break fill
				}
			}
			s.runGroup(group)
		case <-snap.C:
			if s.broken != nil {
				_ = s.reload()
			}
			s.maybeSnapshot(false)
		case <-sweep.C:
			s.sweep(time.Now())
		case <-s.stopCh:
			for drained := false; !drained; {
				select {
				case it := <-s.queue:
					s.runGroup([]*item{it})
				default:
					drained = true
				}
			}
			s.maybeSnapshot(true)
			s.log.Info().Uint64("seq", s.st.Seq).Msg("world service stopped")
			return
		}
	}
}

type outcome struct {
	v   any
	err error
}

// runGroup runs requests that arrived together, stores their writes, and
// answers them once everything is stored (or all with an error).
func (s *Service) runGroup(group []*item) {
	if slices.ContainsFunc(group, (*item).wraps) {
		var flat []*item
		for _, it := range group {
			if !it.wraps() {
				flat = append(flat, it)
				continue
			}
			flat = append(flat, it.batch...)
			if it.after != nil {
				defer it.after()
			}
		}
		if group = flat; len(group) == 0 {
			return
		}
	}
	if s.broken != nil {
		if err := s.reload(); err != nil {
			for _, it := range group {
				it.respond(nil, fmt.Errorf("%w: %v", ErrUnavailable, err))
			}
			return
		}
	}
	// Timed requests handed over before the world reloaded its store
	// (they waited for the broker to come back) are asked again: run now,
	// they would apply ahead of the requests the workers could not send
	// meanwhile, which the reload holds, and in the chaos test a broker
	// kill landed a pipeline's grows and weakens before the hacks that
	// landed between them. The world's own landings among them are no
	// longer needed: the operations' workers finish them.
	if loaded := s.installed.Load(); slices.ContainsFunc(group, func(it *item) bool { return it.timed && it.loaded != loaded }) {
		fresh := group[:0:0]
		for _, it := range group {
			if it.timed && it.loaded != loaded {
				it.respond(nil, fmt.Errorf("%w: the world reloaded its store since this request came; nothing was applied, retry", ErrUnavailable))
				continue
			}
			fresh = append(fresh, it)
		}
		if group = fresh; len(group) == 0 {
			return
		}
	}
	var (
		futures []jetstream.PubAckFuture
		pubErr  error
	)
	outs := make([]outcome, 0, len(group))
	for i := 0; i < len(group); i++ {
		if pubErr != nil {
			break // all of the group fails below
		}
		it := group[i]
		begun := len(s.landing)
		v, writes, err := s.safeRun(it.run)
		outs = append(outs, outcome{v, err})
		if begun < len(s.landing) {
			group = s.landAmong(group, i+1, begun)
		}
		for _, w := range writes {
			f, err := s.store.publish(w)
			if err != nil {
				pubErr = err
				break
			}
			futures = append(futures, f)
		}
	}
	if pubErr == nil {
		pubErr = waitAcks(futures)
	}
	if pubErr == nil {
		s.scheduleLandings()
	} else {
		s.landing = s.landing[:0]
	}
	if pubErr != nil {
		s.log.Error().Err(pubErr).Int("requests", len(group)).Msg("world: storing changes failed; reloading the stored world")
		s.broken = pubErr
		if err := s.reload(); err != nil {
			s.log.Error().Err(err).Msg("world: reload failed; retrying before the next request")
		}
		outs = outs[:0]
	}
	for i, it := range group {
		if i >= len(outs) {
			// Not run (a write failed), or run and not stored.
			it.respond(nil, fmt.Errorf("%w: %v; nothing was applied, retry", ErrUnavailable, pubErr))
			continue
		}
		it.respond(outs[i].v, outs[i].err)
	}
	s.maybeSnapshot(false)
}

func (s *Service) safeRun(run func() (any, []write, error)) (v any, w []write, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Interface("panic", p).Msg("world: request panicked")
			v, w, err = nil, nil, fmt.Errorf("internal error: %v", p)
		}
	}()
	return run()
}

func waitAcks(futures []jetstream.PubAckFuture) error {
	if len(futures) == 0 {
		return nil
	}
	timer := time.NewTimer(ackTimeout)
	defer timer.Stop()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("store %s: %w", f.Msg().Subject, err)
		case <-timer.C:
			return fmt.Errorf("store %s: no acknowledgement within %s", f.Msg().Subject, ackTimeout)
		}
	}
	return nil
}

// reload replaces memory with what the store holds.
func (s *Service) reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.store.js.Stream(ctx, bucketStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		// The broker lost the bucket (its store wiped): memory is the
		// world; it goes into a new bucket.
		sn := s.st.snapshot(s.gameNow())
		sn.PendingSince = s.pendingSince()
		if err := s.store.restore(ctx, sn, s.opts.Storage); err != nil {
			s.broken = err
			return err
		}
		s.broken = nil
		s.log.Warn().Uint64("seq", s.st.Seq).Msg("the broker had lost the world's bucket; stored the world again from memory")
		return nil
	}
	l, err := s.store.load(ctx, nil, false)
	if err != nil {
		s.broken = err
		return err
	}
	// The requests answered "retry" meanwhile come again, with the
	// requests that found no world while the store was away: held, they
	// apply in the order of their stamps, with the landings install
	// schedules.
	s.seq.holdFor(ResumeHold)
	s.install(l)
	s.log.Info().Uint64("seq", l.st.Seq).Int("to_land", len(l.pending)).Dur("hold", ResumeHold).Msg("world reloaded from the store")
	return nil
}

// pendingSince is when the earliest operation still to land was begun
// (now when none is): see snapshot.PendingSince. One whose landing passed
// more than pendingStale ago is not: its landing failed, or its worker
// never finished it (a world without landings of its own), and a begin
// kept for the retention time would have every load read a day of begins.
func (s *Service) pendingSince() *time.Time {
	now := time.Now()
	since, stale := now, ms(time.Duration(now.UnixNano())-pendingStale)
	for _, b := range s.begins {
		if b.at.Before(since) && b.b.LandsAt >= stale {
			since = b.at
		}
	}
	return &since
}

// pendingStale: see pendingSince.
const pendingStale = time.Minute

func (s *Service) maybeSnapshot(force bool) {
	if !s.dirty || s.broken != nil {
		return
	}
	if !force && time.Since(s.lastSnap) < s.opts.SnapshotEvery {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sn := s.st.snapshot(s.gameNow())
	sn.PendingSince = s.pendingSince()
	if err := s.store.saveSnapshot(ctx, sn); err != nil {
		s.log.Warn().Err(err).Msg("world: snapshot not saved; reloading before the next request")
		s.broken = err
		return
	}
	s.dirty = false
	s.lastSnap = time.Now()
}

// sweep forgets old begins (their keys expire in the store too) and old
// cached results (the store still answers for them).
func (s *Service) sweep(now time.Time) {
	for id, b := range s.begins {
		if now.Sub(b.at) > s.opts.Retention {
			s.forgetBegin(id)
		}
	}
	for id, r := range s.results {
		if now.Sub(r.at) > resultCacheAge {
			delete(s.results, id)
			s.landed.Delete(id)
		}
	}
	for id, st := range s.settled {
		if now.Sub(st.at) > s.opts.Retention {
			delete(s.settled, id)
		}
	}
}

// enqueue hands a request to the writer.
//
// Once the writer is told to stop (queueClosed, set before stopCh closes)
// it answers errStopping instead: an item sent after the writer's last
// drain would never be answered.
func (s *Service) enqueue(it *item) {
	it.loaded = s.installed.Load()
	for _, b := range it.batch {
		b.loaded = it.loaded
	}
	s.queueMu.RLock()
	closed := s.queueClosed
	if !closed {
		s.queue <- it // the writer runs until queueClosed is set
	}
	s.queueMu.RUnlock()
	if !closed {
		return
	}
	// Replies: not under the lock.
	if !it.wraps() {
		it.respond(nil, errStopping)
		return
	}
	for _, b := range it.batch {
		b.respond(nil, errStopping)
	}
	if it.after != nil {
		it.after()
	}
}

// keepResult keeps an operation's result in memory (run by the writer).
func (s *Service) keepResult(id string, r Result) {
	s.results[id] = &finished{r: r, at: time.Now()}
	s.landed.Store(id, struct{}{})
}

// inMemory reports whether the writer holds job id's operation, begun or
// landed (for the request handlers).
func (s *Service) inMemory(id string) bool {
	if _, ok := s.begun.Load(id); ok {
		return true
	}
	_, ok := s.landed.Load(id)
	return ok
}

// ---- operations (run by the writer) ----

func (s *Service) begin(req BeginRequest, looked *Result, settled *Settlement, lookErr error) (any, []write, error) {
	if st, ok := s.settled[req.JobID]; ok {
		return nil, nil, errSettledf(st.st)
	}
	if b, ok := s.begins[req.JobID]; ok {
		if b.b.BeginRequest != req {
			return nil, nil, invalidf("job %s already began as %s of %s by %d threads on %s", req.JobID, b.b.Task, b.b.Target, b.b.Threads, b.b.Host)
		}
		return b.b, nil, nil
	}
	if r, ok := s.results[req.JobID]; ok {
		return s.begunOf(&r.r), nil, nil
	}
	if lookErr != nil {
		return nil, nil, lookErr
	}
	if settled != nil {
		s.settled[req.JobID] = &settledOp{st: *settled, at: time.Now()}
		return nil, nil, errSettledf(*settled)
	}
	if looked != nil {
		s.keepResult(req.JobID, *looked)
		return s.begunOf(looked), nil, nil
	}
	b, err := s.st.Begin(req)
	if err != nil {
		return nil, nil, err
	}
	start, err := s.checkBegin(req, nowMs())
	if err != nil {
		return nil, nil, err
	}
	b.StartedAt = start
	b.Speed = s.opts.Speed
	b.DurationRealMs = b.DurationGameMs / s.opts.Speed
	b.LandsAt = max(start+b.DurationRealMs, req.LandAt)
	if !s.opts.FormulasOnly && b.LandsAt > start+b.DurationRealMs+ms(MaxLandDelay) {
		return nil, nil, invalidf("%s %s: it lands at %.0f, %.0f ms after its duration is over (at most %s)",
			req.Task, req.JobID, b.LandsAt, b.LandsAt-start-b.DurationRealMs, MaxLandDelay)
	}
	b.GameTimeMs = s.gameNow()
	data, err := json.Marshal(b)
	if err != nil {
		return nil, nil, err
	}
	s.begins[req.JobID] = &begun{b: b, at: time.Now()}
	s.begun.Store(req.JobID, struct{}{})
	s.log.Debug().Str("job", req.JobID).Str("task", req.Task).Float64("security", b.SecurityAtStart).
		Float64("started_at", start).Float64("lands_at", b.LandsAt).Msg("begun")
	s.running.add(b.Host, b.Owner, b.JobID, b.Threads, b.LandsAt)
	if !s.opts.FormulasOnly {
		s.landing = append(s.landing, b)
	}
	return b, []write{{key: beginKey(req.JobID), data: data, expires: true}}, nil
}

// An operation that has begun lands at its LandsAt, as a script in the
// game does, whether or not its worker is there to say so: killing the
// program that started a script does not kill the script. So the world
// applies it then on its own, in the order of the landings (through the
// sequencer, stamped LandsAt), unless it was settled (cancelled) before.
// Its worker's finish, stamped with the same landing, gets the result.
// Across a restart or a reload of the world, the operations begun before
// it are read again from the store, and land so too (see install).

// scheduleLandings hands the landings of the operations begun in the
// group just stored to the sequencer (run by the writer, once the begins
// are stored). One already due, whose begin the world answered late (held
// while its broker came back), lands as soon as the sequencer hands it on,
// in order among what it still holds, rather than when its worker's
// finish comes, late too, after operations that landed after it.
func (s *Service) scheduleLandings() {
	if s.opts.Holdback <= 0 {
		s.landing = s.landing[:0]
		return
	}
	for _, b := range s.landing {
		s.scheduleLanding(b)
	}
	s.landing = s.landing[:0]
}

// scheduleLanding has the sequencer land b's operation at its landing.
func (s *Service) scheduleLanding(b BeginReply) {
	id, at := b.JobID, b.LandsAt
	s.seq.queue(at, at, &item{run: func() (any, []write, error) { return s.land(id) }, respond: s.ownLanding(id)})
}

// ownLanding is the respond of the world's own landing of job id's operation.
func (s *Service) ownLanding(id string) func(any, error) {
	return func(_ any, err error) {
		switch {
		case errors.Is(err, ErrUnavailable):
			// Its worker's finish lands it (see runGroup).
			s.log.Debug().Err(err).Str("job", id).Msg("landing an operation")
		case err != nil:
			s.log.Warn().Err(err).Str("job", id).Msg("landing an operation")
		}
	}
}

// landAmong puts the landings of the operations begun by the request just
// run (s.landing from begun on) among the timed requests of group after
// next that are stamped later, where the sequencer would have put them
// had they been known when it released the group: after the hold that
// follows a broker's or the world's return, an operation begun late (its
// begin waited out the hold) may already be due, and, scheduled once the
// group is stored, it landed after every landing released with it, out
// of order (broker kills in the chaos test landed a pipeline's hacks
// after the grows and weakens of the next second, and drained the
// target). The others are scheduled once the group is stored.
func (s *Service) landAmong(group []*item, next, begun int) []*item {
	if s.opts.Holdback <= 0 {
		return group
	}
	keep := s.landing[:begun]
	for _, b := range s.landing[begun:] {
		at := b.LandsAt
		i := next
		for i < len(group) && !(group[i].timed && group[i].stamp > at) {
			i++
		}
		if i == len(group) {
			keep = append(keep, b)
			continue
		}
		id := b.JobID
		landing := &item{run: func() (any, []write, error) { return s.land(id) }, respond: s.ownLanding(id),
			timed: true, stamp: at, loaded: s.installed.Load()}
		group = slices.Insert(group, i, landing)
	}
	s.landing = keep
	return group
}

// MaxLandDelay bounds how long after its duration is over an operation
// may land (BeginRequest.LandAt): its threads are held until then.
const MaxLandDelay = 10 * time.Minute

// land applies a begun operation at its landing, LandsAt, unless it was
// finished, settled, or dropped by a reload. Every operation lands at its
// LandsAt, as a script's in the game lands on the game's clock, whenever
// its worker's finish comes: once a worker's own clock stamped the
// landing, and a worker process restarted on a busy machine, its timers a
// few ms late, landed hacks after the weakens planned after them
// (worker-process kills in the chaos test desynced a batch so, one time in
// three). That was kept while starts could be as late as the landings the
// same clock stamped: a start stamped late after a landing the world had
// put on time saw the target changed. A batch's jobs now start no later
// than the next landing (job.Job.Tolerance), or not at all.
func (s *Service) land(id string) (any, []write, error) {
	b, ok := s.begins[id]
	if !ok {
		return nil, nil, nil
	}
	return s.apply(b.b, b.b.LandsAt)
}

// begunOf answers a begin of an operation that has already finished: with
// its begin, so that the task waits and then gets the same result.
func (s *Service) begunOf(r *Result) BeginReply {
	b := r.Begun()
	b.Speed = s.opts.Speed
	return b
}

// lookup is what the store holds of a job's operation, read in that order:
// its result, else its settlement, else its begin.
type lookup struct {
	result  *Result
	settled *Settlement
	begin   *BeginReply
	err     error
}

func (s *Service) finish(id, asker string, end float64, lk *lookup) (any, []write, error) {
	if r, ok := s.results[id]; ok {
		return r.r, nil, nil
	}
	if st, ok := s.settled[id]; ok {
		return nil, nil, errSettledf(st.st)
	}
	if b, ok := s.begins[id]; ok {
		if asker != "" && b.b.Owner != asker {
			return nil, nil, notOwner(asker, "the finish of job "+id, b.b.Owner)
		}
		return s.applyFinished(b.b, end)
	}
	if lk == nil {
		return nil, nil, errLookup
	}
	switch {
	case lk.err != nil:
		return nil, nil, lk.err
	case lk.result != nil:
		s.keepResult(id, *lk.result)
		return *lk.result, nil, nil
	case lk.settled != nil:
		s.settled[id] = &settledOp{st: *lk.settled, at: time.Now()}
		return nil, nil, errSettledf(*lk.settled)
	case lk.begin != nil:
		if asker != "" && lk.begin.Owner != asker {
			return nil, nil, notOwner(asker, "the finish of job "+id, lk.begin.Owner)
		}
		return s.applyFinished(*lk.begin, end)
	}
	return nil, nil, fmt.Errorf("finish %s: %w (or it began more than %s ago)", id, ErrNotBegun, s.opts.Retention)
}

// applyFinished applies a begun operation its worker says ended at epoch
// ms end (0: now): at its landing, LandsAt (see land), once end shows it
// has run its course.
func (s *Service) applyFinished(b BeginReply, end float64) (any, []write, error) {
	if end > 0 && b.LandsAt > 0 {
		if err := s.checkFinish(b, end, nowMs()); err != nil {
			return nil, nil, err
		}
		end = b.LandsAt
	}
	return s.apply(b, end)
}

// landingStamp is the stamp a finish is sequenced by: the landing its
// worker says it waited for (due), when it woke later (end), since the
// world lands it then (see land).
func landingStamp(end, due float64) float64 {
	if due > 0 && due < end {
		return due
	}
	return end
}

// apply applies a begun operation's effect, landed at epoch ms end.
func (s *Service) apply(b BeginReply, end float64) (any, []write, error) {
	if err := s.checkFinish(b, end, nowMs()); err != nil {
		return nil, nil, err
	}
	r, err := s.st.FinishAt(b, HackRoll(s.opts.Seed, b.JobID), end)
	if err != nil {
		return nil, nil, err
	}
	data, err := json.Marshal(s.st.finishEntry(&r))
	if err != nil {
		return nil, nil, err
	}
	s.forgetBegin(b.JobID)
	s.keepResult(b.JobID, r)
	s.dirty = true
	s.log.Debug().Str("job", r.JobID).Str("task", r.Task).Str("target", r.Target).Bool("success", r.Success).
		Float64("stolen", r.Stolen).Float64("security", r.SecurityAfter).Float64("money", r.MoneyAfter).
		Float64("started_at", r.StartedAt).Float64("landed_at", r.LandedAt).Msg("applied")
	return r, []write{{key: opKey(b.JobID), data: data, expires: true}}, nil
}

func (s *Service) ram(req RAMRequest, reserve bool) (any, []write, error) {
	var (
		reply   RAMReply
		changed bool
		err     error
	)
	if reserve {
		reply, changed, err = s.st.Reserve(req)
	} else {
		reply, changed, err = s.st.Release(req)
	}
	if err != nil || !changed {
		return reply, nil, err
	}
	change := RAMRequest{Host: req.Host, Owner: req.Owner, Threads: reply.Threads}
	data, err := json.Marshal(journalEntry{Seq: s.st.Seq, RAM: &change, Time: time.Now().UTC()})
	if err != nil {
		return nil, nil, err
	}
	s.dirty = true
	return reply, []write{{key: ramKey(s.st.Seq), data: data, expires: true}}, nil
}

// ---- handlers ----

// handle queues a request for the writer goroutine, which answers it
// once its changes are stored (through broker.AsyncReply: see there why).
func (s *Service) handle(req micro.Request, run func() (any, []write, error)) {
	r := broker.ReplyLater(s.nc, req)
	s.enqueue(&item{run: run, respond: func(v any, err error) { Reply(r, v, err) }})
}

// refuse answers req with err.
func (s *Service) refuse(req micro.Request, err error) {
	Reply(broker.ReplyLater(s.nc, req), nil, err)
}

// Reply answers req with v as JSON, or with err as the world's error
// answer (ErrorReply, its code and micro status): a second service that
// answers the world's requests (the live game) answers as the world does.
func Reply(req broker.AsyncReply, v any, err error) {
	if err == nil {
		var data []byte
		if data, err = json.Marshal(v); err == nil {
			_ = req.Respond(data)
			return
		}
	}
	code, status := errorCode(err)
	body, _ := json.Marshal(ErrorReply{Error: err.Error(), Code: code})
	_ = req.Error(status, firstLine(err.Error()), body)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func decode(req micro.Request, v any) error {
	dec := json.NewDecoder(bytes.NewReader(req.Data()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("malformed request to %s: %v", req.Subject(), err)
	}
	return nil
}

func (s *Service) handleServers(req micro.Request) {
	s.handle(req, func() (any, []write, error) { return s.st.Servers(), nil, nil })
}

func (s *Service) handleServer(req micro.Request) {
	name := nameArg(req.Data())
	s.handle(req, func() (any, []write, error) {
		srv, ok := s.st.Server(name)
		if !ok {
			return nil, nil, fmt.Errorf("%w: no server %q", ErrUnknownTarget, name)
		}
		return srv, nil, nil
	})
}

// nameArg reads a body that is a name, bare or as a JSON string.
func nameArg(data []byte) string {
	data = bytes.TrimSpace(data)
	var s string
	if json.Unmarshal(data, &s) == nil {
		return s
	}
	return string(data)
}

func (s *Service) handlePlayer(req micro.Request) {
	s.handle(req, func() (any, []write, error) { return s.st.PlayerInfo(), nil, nil })
}

func (s *Service) handleRAM(req micro.Request) {
	s.handle(req, func() (any, []write, error) { return s.st.Hosts(), nil, nil })
}

func (s *Service) handleClock(req micro.Request) {
	s.handle(req, func() (any, []write, error) {
		return Clock{Scenario: s.st.Scenario, Speed: s.opts.Speed, GameTimeMs: s.gameNow(), Seed: s.opts.Seed, Seq: s.st.Seq, Time: time.Now()}, nil, nil
	})
}

func (s *Service) handleBegin(req micro.Request) {
	var br BeginRequest
	if err := decode(req, &br); err != nil {
		s.refuse(req, err)
		return
	}
	if !job.ValidID(br.JobID) {
		s.refuse(req, invalidJobID("", br.JobID))
		return
	}
	if a := AskerOf(req.Subject()); a != "" && br.Owner != a {
		s.refuse(req, notOwner(a, "a begin of job "+br.JobID, br.Owner))
		return
	}
	// An operation that finished before a restart is known only to the
	// store; look for it first, off the writer, so that beginning it again
	// cannot apply it twice. One that started after this world was loaded
	// cannot have finished before: it goes straight to the writer, since
	// a lookup's time is time the request would spend in flight.
	if !s.opts.FormulasOnly && br.Start > nowMs()+ms(MaxBeginAhead) {
		// Refused before the sequencer, which would hold it until then.
		s.refuse(req, invalidf("%s %s: its start %.0f is %.0f ms ahead of the world's clock (at most %s)",
			br.Task, br.JobID, br.Start, br.Start-nowMs(), MaxBeginAhead))
		return
	}
	if br.Start > 0 && br.Start*1e6 > float64(s.installed.Load()) {
		r := broker.ReplyLater(s.nc, req)
		s.seq.add(br.Start, br.Due, &item{run: func() (any, []write, error) { return s.begin(br, nil, nil, nil) },
			respond: func(v any, err error) { Reply(r, v, err) }})
		return
	}
	s.goLookup(req, func(ctx context.Context) {
		r, err := s.store.getResult(ctx, br.JobID)
		var st *Settlement
		if r == nil && err == nil {
			st, err = s.store.getSettled(ctx, br.JobID)
		}
		run := func() (any, []write, error) { return s.begin(br, r, st, err) }
		if br.Start <= 0 {
			s.handle(req, run)
			return
		}
		// Then through the sequencer, by its start, as any begin: a
		// begin stamped before a reload of the world (while its broker
		// was away) applied straight away went ahead of the landings the
		// reload held, and a hack begun so found the target as the store
		// had it, a grow landed and its weaken not yet (broker kills in
		// the chaos test desynced a batch so, each a re-prep).
		rep := broker.ReplyLater(s.nc, req)
		s.seq.add(br.Start, br.Due, &item{run: run, respond: func(v any, err error) { Reply(rep, v, err) }})
	})
}

func (s *Service) handleFinish(req micro.Request) {
	var fr FinishRequest
	if data := bytes.TrimSpace(req.Data()); len(data) > 0 && data[0] != '{' {
		fr.JobID = nameArg(data)
	} else if err := decode(req, &fr); err != nil {
		s.refuse(req, err)
		return
	}
	if !job.ValidID(fr.JobID) {
		s.refuse(req, invalidJobID("", fr.JobID))
		return
	}
	id, end, asker := fr.JobID, fr.End, AskerOf(req.Subject())
	if end > nowMs()+ms(MaxBeginAhead) {
		// A landing in the future: refused before the sequencer holds it.
		s.refuse(req, invalidf("finish %s: it lands at %.0f, %.0f ms ahead of the world's clock", id, end, end-nowMs()))
		return
	}
	if end > 0 && (s.seq.holding() || !s.inMemory(id)) {
		// An operation begun before a restart (or a reload after a
		// failed write) is known only to the store. Read it first, then
		// sequence the finish, so that it is applied in the order it
		// landed among the others; read once released, it was applied
		// after every operation the world had in memory (a pool kill in
		// the chaos test applied a batch's hacks before the grows and
		// weakens begun before it, and drained the target; after a
		// broker kill, grows begun before the world's reload landed
		// after the next batch's hack).
		s.finishFromStore(req, id, asker, end, fr.Due)
		return
	}
	enqueue := s.enqueue
	if end > 0 {
		enqueue = func(it *item) { s.seq.add(landingStamp(end, fr.Due), fr.Due, it) }
	}
	enqueue(&item{
		run: func() (any, []write, error) { return s.finish(id, asker, end, nil) },
		respond: func(v any, err error) {
			if !errors.Is(err, errLookup) {
				Reply(broker.ReplyLater(s.nc, req), v, err)
				return
			}
			// Not in memory: begun or finished before a restart, or a
			// reload (a write that failed). Read, it goes through the
			// sequencer again: past its time it is applied at once, as
			// before; while the world holds (its broker came back, the
			// writes failed while it was away), it waits with the others
			// and is applied in their order, not ahead of them (a broker
			// kill in the chaos test applied two such in the hold).
			s.finishFromStore(req, id, asker, end, fr.Due)
		},
	})
}

// finishFromStore reads a finish's operation from the store (off the
// writer), then applies the finish: through the sequencer, by its landing
// (at once when that is past and nothing is held), or, without a landing,
// straight away.
func (s *Service) finishFromStore(req micro.Request, id, asker string, end, due float64) {
	s.goLookup(req, func(ctx context.Context) {
		lk := s.store.lookup(ctx, id)
		run := func() (any, []write, error) { return s.finish(id, asker, end, lk) }
		if end <= 0 {
			s.handle(req, run)
			return
		}
		s.seq.add(landingStamp(end, due), due, &item{
			run:     run,
			respond: func(v any, err error) { Reply(broker.ReplyLater(s.nc, req), v, err) },
		})
	})
}

func (s *Service) handleReserve(req micro.Request) {
	var rr RAMRequest
	if err := decode(req, &rr); err != nil {
		s.refuse(req, err)
		return
	}
	if a := AskerOf(req.Subject()); a != "" && rr.Owner != a {
		s.refuse(req, notOwner(a, "a reservation on "+rr.Host, rr.Owner))
		return
	}
	s.handle(req, func() (any, []write, error) { return s.ram(rr, true) })
}

func (s *Service) handleRelease(req micro.Request) {
	var rr RAMRequest
	if err := decode(req, &rr); err != nil {
		s.refuse(req, err)
		return
	}
	if a := AskerOf(req.Subject()); a != "" && rr.Owner != a {
		s.refuse(req, notOwner(a, "the release of a reservation on "+rr.Host, rr.Owner))
		return
	}
	s.handle(req, func() (any, []write, error) { return s.ram(rr, false) })
}
