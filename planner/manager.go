package planner

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// HackManager runs one target: it preps it (weaken to minimum security,
// grow to maximum money, with the weakens that cover the grows) and then
// runs HWGW batches against it on the pool, checking every record.
//
// Batches run as a continuous pipeline (see pipeline.go): a batch lands
// every period, each job starting only while the target is at minimum
// security, with as many batches in flight as the threads allow.
//
// With Waves set they run in waves instead. A wave is n batches whose jobs
// land in the order H, W1, G, W2, Gap apart, batch after batch, and whose
// jobs all START before the wave's first landing, so a wave cannot desync
// by construction; but n is bounded by that timing (hackTime / 4·Gap), so
// most threads sit idle on a target with short times. Between waves the
// manager checks the target and re-preps if it has drifted.
type HackManager struct {
	opts   ManagerOptions
	pool   *pool.Client
	world  *world.Client
	log    zerolog.Logger
	events chan Event

	// exp is the player's hacking exp when the target was last observed.
	exp float64
	// cores is the core count the thread maths use (see Options.Cores).
	cores int
	// weakCores is the core count weakens are sized for: cores, or the
	// fewest of the pool's hosts when grows are pinned.
	weakCores int
	// pinCores, when set, is the MinCores of every grow: the pool's hosts
	// have different cores, and grows are sized for the cores of the host
	// with the most threads. pinShare is the share of the pool's threads
	// on hosts with that many cores. The pipeline pins its hacks there
	// too (see pipeline). Weakens, small and sized for the fewest cores,
	// go anywhere: first to the small hosts, which they fill.
	pinCores int
	pinShare float64
	// secSlack is the security above minimum a job's start may see (see
	// secSlackFor); 0 when starts keep clear of raised security.
	secSlack float64

	mu    sync.Mutex
	stats Stats
	// startErrs is each checked job's start error, in microseconds.
	startErrs []float64
	// endErrs is each done job's landing error, in microseconds.
	endErrs []float64
	// lastSeq is the world sequence of the latest result seen.
	lastSeq uint64
}

// ManagerOptions configure a HackManager.
type ManagerOptions struct {
	// Target is the server to hack.
	Target string
	// Gap is the real time between a hack's landing and its weaken's (and
	// between a grow's and its weaken's): the target's security is raised
	// for that long, and a landing late by less than Gap keeps its order.
	Gap time.Duration
	// Margin is how far the pipeline keeps every start from the windows
	// of raised security.
	Margin time.Duration
	// Slack is how late a job may start and still land on time: the
	// pipeline starts every job at least Slack before its landing minus
	// its duration, and the job waits for its endTime.
	Slack time.Duration
	// Utilisation is the share of the free threads the pipeline plans to
	// keep busy (0: PinnedUtilisation when grows and hacks are pinned to
	// the hosts with the most threads, see Cores; else DefaultUtilisation).
	// A set Utilisation also bounds the peak of a plan whose batches are a
	// good share of the threads (see peakRoom); by default the peak may
	// take every thread.
	Utilisation float64
	// Lead is how far ahead of now a wave's first job starts, to leave
	// time for dispatching it.
	Lead time.Duration
	// MaxBatches bounds a wave (0: no bound but timing and threads).
	MaxBatches int
	// Cores is the core count the thread maths assume for grow and weaken.
	// 0 chooses from the hosts the pool may use: when the hosts with the
	// most threads' cores hold most of the threads, grows are sized for
	// those cores and pinned to them (job MinCores), the pipeline's hacks
	// with them, and weakens for the fewest cores; otherwise both for the
	// fewest cores, so that a grow or weaken is never short wherever the
	// pool places it.
	Cores int
	// Waves runs batches in waves instead of the continuous pipeline.
	Waves bool
	// Threads is the most threads the manager plans for (0: every thread
	// the pool may use): its share when several managers share a pool.
	Threads int
	Logger  zerolog.Logger
}

// Stats is what the manager has done so far.
type Stats struct {
	Target     string    `json:"target"`
	Phase      string    `json:"phase"`
	Started    time.Time `json:"started"`
	Money      float64   `json:"money"`
	MoneyMax   float64   `json:"moneyMax"`
	Security   float64   `json:"security"`
	MinSec     float64   `json:"minSecurity"`
	Level      int       `json:"level"`
	Waves      int       `json:"waves"`
	Batches    int       `json:"batches"`
	InFlight   int       `json:"batchesInFlight"`
	Jobs       int       `json:"jobs"`
	Desyncs    int       `json:"desyncs"`
	Missed     int       `json:"missed"`
	Failed     int       `json:"failed"`
	Cancelled  int       `json:"cancelled"`
	Stolen     float64   `json:"stolen"`
	GameMs     float64   `json:"gameMs"`
	LastDesync string    `json:"lastDesync,omitempty"`
	// FirstDesync is the first desync's reason: later ones often follow
	// from it.
	FirstDesync string `json:"firstDesync,omitempty"`
	// Plan is the pipeline's batch (H/W1/G/W2 threads) and PeriodMs the
	// real time between two of its batches.
	Plan     string  `json:"plan,omitempty"`
	PeriodMs float64 `json:"periodMs,omitempty"`
	// Skipped counts pipeline slots passed because dispatch fell behind;
	// Refused those the pool had no threads for.
	Skipped int `json:"skipped"`
	Refused int `json:"refused"`
	// ThreadMs is the real thread-milliseconds the manager's jobs held.
	ThreadMs float64 `json:"threadMs"`
	// Speed is the world's speed (game time per real time).
	Speed float64 `json:"speed"`
	// Note is what the manager last said it does or waits for.
	Note string `json:"note,omitempty"`
	// LimitPerGameSecond is the RAM limit of the pipeline's threads: the
	// most money per game second any batcher could take with them.
	LimitPerGameSecond float64 `json:"limitPerGameSecond,omitempty"`
	// PrepWaves counts the prep waves dispatched; PrepStart and PrepLand
	// are the latest one's dispatch and last landing (epoch ms, real
	// time), and PrepLast says that it leaves the target prepped.
	PrepWaves int     `json:"prepWaves,omitempty"`
	PrepStart float64 `json:"prepStart,omitempty"`
	PrepLand  float64 `json:"prepLand,omitempty"`
	PrepLast  bool    `json:"prepLast,omitempty"`
}

// PrepProgress is how far the latest prep wave is at now: the share of
// its time gone, and the real time until it lands; ok is false when no
// prep wave is in flight.
func (s Stats) PrepProgress(now time.Time) (share float64, left time.Duration, ok bool) {
	t := job.Millis(now)
	if s.Phase != "prep" || s.PrepLand <= s.PrepStart || t >= s.PrepLand {
		return 0, 0, false
	}
	share = min(max((t-s.PrepStart)/(s.PrepLand-s.PrepStart), 0), 1)
	return share, time.Duration((s.PrepLand - t) * float64(time.Millisecond)), true
}

// PerRealSecond is the money stolen per real second since the start.
func (s Stats) PerRealSecond(now time.Time) float64 {
	if el := now.Sub(s.Started).Seconds(); el > 0 {
		return s.Stolen / el
	}
	return 0
}

// PerGameSecond is the money stolen per game second since the start.
func (s Stats) PerGameSecond(now time.Time) float64 {
	if s.Speed > 0 {
		return s.PerRealSecond(now) / s.Speed
	}
	return 0
}

// PctOfLimit is PerGameSecond as a share (%) of LimitPerGameSecond.
func (s Stats) PctOfLimit(now time.Time) float64 {
	if s.LimitPerGameSecond > 0 {
		return 100 * s.PerGameSecond(now) / s.LimitPerGameSecond
	}
	return 0
}

// Event is one step of the manager, for --json and the dashboard.
type Event struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	Note  string    `json:"note,omitempty"`
	Stats Stats     `json:"stats"`
}

// Defaults of ManagerOptions.
const (
	DefaultGap    = 2 * time.Millisecond
	DefaultMargin = time.Millisecond
	// DefaultSlack covers the stalls of a busy virtual machine: a
	// real-time thread that did nothing but sleep 1 ms saw gaps of up to
	// 40 ms, and with 30 ms about one manager bench in three at speed
	// 60 lost a batch to a job that started 31-37 ms late. Each job holds
	// its threads Slack longer: 20 ms more cost about 0.7% of the income
	// at speed 60.
	DefaultSlack = 50 * time.Millisecond
	// DefaultUtilisation leaves headroom where every job may go to any
	// host. A batch is placed whole or refused, and a pipeline planned for
	// every thread gets a refusal whenever the threads are short at one
	// instant of one of its four windows; the threads it would have used
	// around that instant stay idle. Hacks are short and coarse: on small
	// hosts they leave gaps too short for the weakens' long windows. On
	// reference-880 (bench, speed 60) with hacks anywhere, a plan for 100%
	// of the threads refused 20% of its batches and earned 83% of the limit
	// once full; 96%: 11%, 88%; 93%: 1%, 93%; 90%: none, 91%.
	DefaultUtilisation = 0.93
	// PinnedUtilisation is the default when grows and hacks are pinned to
	// the hosts with the most threads (see ManagerOptions.Cores): the
	// small hosts then take only weakens, whose few threads pack them
	// full. On reference-880 (bench, speed 60): 97%, 99% and 99.5% refused
	// no batch (97%, 97.4-97.7% and 98.5-98.9% of the limit once full);
	// 100% refused 84.
	PinnedUtilisation = 0.995
)

// NewManager prepares a manager.
func NewManager(pc *pool.Client, wc *world.Client, o ManagerOptions) (*HackManager, error) {
	if o.Target == "" {
		return nil, errors.New("a target is required")
	}
	if o.Gap <= 0 {
		o.Gap = DefaultGap
	}
	if o.Margin <= 0 {
		o.Margin = DefaultMargin
	}
	if o.Slack <= 0 {
		o.Slack = DefaultSlack
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Lead <= 0 {
		o.Lead = 500 * time.Millisecond
	}
	return &HackManager{opts: o, pool: pc, world: wc, log: o.Logger.With().Str("target", o.Target).Logger(),
		events: make(chan Event, 256), stats: Stats{Target: o.Target, Phase: "starting", Started: time.Now()}}, nil
}

// Validate reports an option out of its range. Zero values stand for the
// defaults.
func (o ManagerOptions) Validate() error {
	if o.Utilisation < 0 || o.Utilisation > 1 {
		return fmt.Errorf("utilisation %v: want a share of the threads, over 0 and at most 1 (0: the default)", o.Utilisation)
	}
	return nil
}

// Options are the manager's options, defaults filled in (Utilisation
// stays 0 for the default, which depends on the hosts).
func (m *HackManager) Options() ManagerOptions { return m.opts }

// Events delivers what the manager does; it is closed when Run returns.
func (m *HackManager) Events() <-chan Event { return m.events }

// Stats is a snapshot of the manager's counters.
func (m *HackManager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

func (m *HackManager) emit(kind, note string) {
	if note != "" && kind != "batch" && kind != "landed" {
		m.mu.Lock()
		m.stats.Note = note
		m.mu.Unlock()
	}
	ev := Event{Time: time.Now(), Kind: kind, Note: note, Stats: m.Stats()}
	select {
	case m.events <- ev:
	default: // a slow reader loses events, never the manager's pace
	}
}

// Run preps the target and runs waves until ctx ends.
func (m *HackManager) Run(ctx context.Context) error {
	defer close(m.events)
	// What an earlier manager left in flight: waves wait for it to land;
	// the pipeline lands its first batch after it (see resumeSpan).
	var resume [2]float64
	if m.opts.Waves {
		if err := m.awaitInFlight(ctx); err != nil {
			return err
		}
	} else {
		var err error
		if resume, err = m.resumeSpan(ctx); err != nil {
			return err
		}
	}
	// While no threads are free, wait briefly, then longer: a fixed
	// second would cost a game minute at 60x.
	idle := noThreadsWait
	var away waiter
	for ctx.Err() == nil {
		srv, hk, speed, err := m.observe(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while asking
			}
			if away.wait(ctx, m, err) {
				continue
			}
			return err
		}
		if err := game.CheckHack(&srv, hk); err != nil {
			return fmt.Errorf("target %s: %w", m.opts.Target, err)
		}
		// A prep wave holds its threads from now to its landing, a
		// weakenTime (at the security now) and the lead from now.
		window := time.Duration(game.WeakenTimeMs(&srv, hk)/speed*float64(time.Millisecond)) + m.opts.Lead
		free, err := m.freeThreads(ctx, window)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if away.wait(ctx, m, err) {
				continue
			}
			return err
		}
		away.back(m)
		if m.opts.Threads > 0 {
			free = min(free, m.opts.Threads)
		}
		switch {
		case resume[1] > job.Now():
			// The jobs in flight are an earlier manager's prep wave or
			// batches, which leave the target prepped when they land:
			// the pipeline plans from that and lands after them, instead
			// of waiting a weakenTime for them and another for its own
			// first batch. If they leave it otherwise, its first batch
			// desyncs and the target is prepared again.
			at := game.Prepped(&srv)
			m.setPhase("batch")
			after := resume
			if srv.HackDifficulty > game.SecurityFloor(&srv)+1e-9 {
				// A landing of theirs has already raised security (a
				// hack or grow whose weaken is still in flight): no job
				// of the pipeline starts before they have all landed.
				// A weaken started at the raised security desynced the
				// first batch after a batcher kill in the chaos test.
				after[0] = job.Now()
			}
			err = m.pipelineAfter(ctx, &at, hk, speed, free, nil, after)
			if !errors.Is(err, errNoThreads) {
				resume = [2]float64{}
			}
		case !prepped(&srv):
			m.setPhase("prep")
			err = m.prepWave(ctx, &srv, hk, speed, free)
		default:
			m.setPhase("batch")
			if m.opts.Waves {
				err = m.batchWave(ctx, &srv, hk, speed, free)
			} else {
				err = m.pipeline(ctx, &srv, hk, speed, free, nil)
			}
		}
		if errors.Is(err, errNoThreads) {
			m.emit("waiting", "waiting for threads: every thread the pool may use is busy")
			select {
			case <-ctx.Done():
			case <-time.After(idle):
			}
			idle = min(2*idle, noThreadsWaitMax)
			continue
		}
		idle = noThreadsWait
		if err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("wave")
			m.emit("error", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

var errNoThreads = errors.New("no threads free")

// readTimeout bounds the manager's questions to the pool and the world: a
// reply lost to a restart is noticed in seconds, and asked again, where
// the clients' own timeouts are 10 and 30 s.
const readTimeout = 2 * time.Second

// waiter waits, instead of giving up, while the broker, the pool or the
// world does not answer: started before them, or across a restart, the
// manager carries on when they are back.
type waiter struct {
	idle time.Duration
	said string
}

// wait reports whether err says that something the manager needs does
// not answer (yet); it then says so once and waits a little, longer each
// time up to a second. Any other error is the caller's.
func (w *waiter) wait(ctx context.Context, m *HackManager, err error) bool {
	if !Unavailable(err) {
		return false
	}
	if msg := err.Error(); msg != w.said {
		w.said = msg
		m.setPhase("waiting")
		m.emit("waiting", "waiting for the pool and the world to answer: "+msg)
		m.log.Warn().Err(err).Msg("waiting for the pool and the world to answer")
	}
	w.idle = min(max(2*w.idle, 50*time.Millisecond), time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(w.idle):
	}
	return true
}

// back notes that the waiting is over.
func (w *waiter) back(m *HackManager) {
	if w.said != "" {
		m.emit("back", "the pool and the world answer again")
		m.log.Info().Msg("the pool and the world answer again")
	}
	*w = waiter{}
}

// Unavailable reports whether err is a request that nothing answered, or
// that timed out, a connection that is reconnecting, or a pool that is
// stopping: what waiting mends. An answer that refuses (an unknown
// target) is not.
func Unavailable(err error) bool {
	return world.Retryable(err) || errors.Is(err, pool.ErrStopping)
}

// How long the manager waits for threads to come free: noThreadsWait at
// first, doubling up to noThreadsWaitMax.
const (
	noThreadsWait    = 10 * time.Millisecond
	noThreadsWaitMax = time.Second
)

// status asks the pool for its status, waiting while it does not answer;
// ok is false when ctx ended first.
func (m *HackManager) status(ctx context.Context) (st pool.Status, ok bool, err error) {
	var away waiter
	for {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		st, err := m.pool.Status(rctx)
		cancel()
		if err == nil {
			away.back(m)
			return st, true, nil
		}
		if ctx.Err() != nil {
			return st, false, nil
		}
		if !away.wait(ctx, m, err) {
			return st, false, err
		}
	}
}

// resumeSpan reports when the jobs on the target left in flight by an
// earlier manager land (zero when none are), waiting while the pool does
// not answer.
func (m *HackManager) resumeSpan(ctx context.Context) ([2]float64, error) {
	st, ok, err := m.status(ctx)
	if !ok {
		return [2]float64{}, err
	}
	n := st.InFlightByArg[m.opts.Target]
	span := st.InFlightEndsByArg[m.opts.Target]
	if n > 0 && span[1] > 0 {
		m.emit("resuming", fmt.Sprintf("%d jobs on %s still in flight, landing within %s: the first batch lands after them",
			n, m.opts.Target, time.Duration((span[1]-job.Now())*float64(time.Millisecond)).Round(time.Millisecond)))
	}
	return span, nil
}

// awaitInFlight waits until no job on the target is in flight: a manager
// started again while its batches still run lets them land before it looks
// at the target, rather than dispatch into their landings.
func (m *HackManager) awaitInFlight(ctx context.Context) error {
	for {
		st, ok, err := m.status(ctx)
		if !ok {
			return err
		}
		n := st.InFlightByArg[m.opts.Target]
		if n == 0 {
			return nil
		}
		m.setPhase("resuming")
		m.emit("resuming", fmt.Sprintf("%d jobs on %s still in flight; letting them land", n, m.opts.Target))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func prepped(s *game.Server) bool {
	return s.HackDifficulty <= game.SecurityFloor(s)+1e-9 && s.MoneyAvailable >= s.MoneyMax*(1-1e-9)
}

// count changes the stats under the lock.
func (m *HackManager) count(f func(*Stats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

// StartErrorsUs is how late (or early, negative) each job started against
// its schedule, in microseconds, for the jobs checked so far (the last
// 1,000,000 at most).
func (m *HackManager) StartErrorsUs() []float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float64(nil), m.startErrs...)
}

// EndErrorsUs is how late (or early, negative) each done job ended
// against its endTime, in microseconds (the last 1,000,000 at most).
func (m *HackManager) EndErrorsUs() []float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float64(nil), m.endErrs...)
}

func (m *HackManager) setPhase(p string) {
	m.mu.Lock()
	m.stats.Phase = p
	m.mu.Unlock()
}

// observe reads the target, the player and the world's speed.
func (m *HackManager) observe(ctx context.Context) (game.Server, game.Hacker, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	srv, err := m.world.Server(ctx, m.opts.Target)
	if err != nil {
		return srv, game.Hacker{}, 0, err
	}
	pl, err := m.world.Player(ctx)
	if err != nil {
		return srv, game.Hacker{}, 0, err
	}
	clk, err := m.world.Clock(ctx)
	if err != nil {
		return srv, game.Hacker{}, 0, err
	}
	m.exp = pl.HackingExp
	hk := pl.Player().Hacker()
	m.cores, m.weakCores, m.pinCores, m.pinShare = m.opts.Cores, m.opts.Cores, 0, 0
	if m.cores <= 0 {
		m.cores, m.weakCores = 1, 1
		if st, err := m.pool.Status(ctx); err == nil && len(st.Hosts) > 0 {
			m.cores, m.weakCores, m.pinCores, m.pinShare = chooseCores(st.Hosts)
		}
	}
	m.mu.Lock()
	m.stats.Money, m.stats.MoneyMax = srv.MoneyAvailable, srv.MoneyMax
	m.stats.Security, m.stats.MinSec = srv.HackDifficulty, game.SecurityFloor(&srv)
	m.stats.Level, m.stats.GameMs, m.stats.Speed = hk.Level, clk.GameTimeMs, clk.Speed
	m.mu.Unlock()
	return srv, hk, math.Max(clk.Speed, 1e-9), nil
}

// pinnedShareMin is the share of the threads that hosts with the most
// threads' cores must hold for grows to be pinned to them: a batch's grows
// take most of its thread-time.
const pinnedShareMin = 0.75

// chooseCores picks the cores the thread maths assume for grows and
// weakens (see Options.Cores) and, when grows must be pinned, their
// MinCores and the share of the threads they may use.
func chooseCores(hosts []serverpool.Host) (cores, weakCores, pin int, share float64) {
	big, fewest, total := hosts[0], hosts[0].Cores, 0
	for _, h := range hosts {
		if h.MaxThreads > big.MaxThreads {
			big = h
		}
		fewest = min(fewest, h.Cores)
		total += h.MaxThreads
	}
	fewest = max(fewest, 1)
	if big.Cores <= fewest || total == 0 {
		return fewest, fewest, 0, 0
	}
	pinned := 0
	for _, h := range hosts {
		if h.Cores >= big.Cores {
			pinned += h.MaxThreads
		}
	}
	share = float64(pinned) / float64(total)
	if share < pinnedShareMin {
		return fewest, fewest, 0, 0
	}
	return big.Cores, fewest, big.Cores, share
}

// utilisation is the share of the threads the pipeline plans to keep busy.
func (m *HackManager) utilisation() float64 {
	switch {
	case m.opts.Utilisation > 0:
		return m.opts.Utilisation
	case m.pinCores > 1:
		return PinnedUtilisation
	}
	return DefaultUtilisation
}

// pin sets MinCores on the jobs of jobs whose task is one of tasks (see
// pinCores).
func (m *HackManager) pin(jobs []job.Job, tasks ...string) {
	if m.pinCores <= 1 {
		return
	}
	for i := range jobs {
		if slices.Contains(tasks, jobs[i].Task) {
			jobs[i].MinCores = m.pinCores
		}
	}
}

// freeThreads is what the manager may use over the next window: the
// world's free RAM (for workers the pool may launch) and what the pool
// says its workers have free over the whole window, from the timelines it
// places on (not the workers' heartbeats, which tell a worker's busy
// threads up to its interval late: a wave sized just after the last one
// landed was sized for two threads).
func (m *HackManager) freeThreads(ctx context.Context, window time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	hosts, err := m.world.RAM(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hosts {
		n += h.FreeThreads
	}
	c, err := m.pool.Capacity(ctx, pool.CapacityRequest{Duration: float64(window) / 1e6})
	if err != nil {
		return 0, err
	}
	return n + c.Free, nil
}

// levelsAtLanding predicts the hacking level at each batch's landing: the
// level now plus the exp of the batches that landed before it (hack exp
// weighted by its chance; a failed hack gives a quarter).
func (m *HackManager) levelsAtLanding(srv *game.Server, hk game.Hacker, plan BatchPlan, n int) []int {
	full := game.ExpPerThread(srv, hk.Mults, true)
	perBatch := full*float64(plan.Weaken1Threads+plan.GrowThreads+plan.Weaken2Threads) +
		full*float64(plan.HackThreads)*(plan.Chance+(1-plan.Chance)/4)
	levels := make([]int, n)
	for i := range levels {
		levels[i] = max(hk.Level, game.HackingLevel(m.exp+float64(i)*perBatch, hk.Mults.Hacking))
	}
	return levels
}

// largestHost is the most threads one worker can have: the largest host.
func (m *HackManager) largestHost(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	hosts, err := m.world.RAM(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hosts {
		n = max(n, game.ThreadsForRAM(h.MaxRAM))
	}
	return n, nil
}

// landing is one job of a wave: what, how many threads, when it lands and
// how long it runs (real ms).
type landing struct {
	task     string
	threads  int
	land     float64
	duration float64
}

func (l landing) job(target string) job.Job {
	return job.Job{Task: l.task, Args: []any{target}, Threads: l.threads,
		StartTime: l.land - l.duration, EndTime: l.land, Duration: l.duration}
}

// prepWave weakens the target to its minimum security and grows it to its
// maximum money, as far as the threads allow, landing W, G, W2.
func (m *HackManager) prepWave(ctx context.Context, srv *game.Server, hk game.Hacker, speed float64, free int) error {
	ls, full, err := m.prepLandings(srv, hk, speed, free)
	if err != nil {
		return err
	}
	if full && !m.opts.Waves {
		return m.prepThenPipeline(ctx, srv, hk, speed, free, ls)
	}
	_, err = m.runWave(ctx, [][]landing{ls}, false)
	return err
}

// prepThenPipeline dispatches a prep wave that leaves the target prepped
// and starts the pipeline at once, its first batch landing just after the
// prep: waiting for the prep to land first left the threads it did not use
// idle for a weakenTime, and nothing landed for another (on a new game,
// n00dles' prep is 34 of the 60 threads for 3.5 game minutes).
func (m *HackManager) prepThenPipeline(ctx context.Context, srv *game.Server, hk game.Hacker, speed float64, free int, ls []landing) error {
	jobs := make([]job.Job, len(ls))
	for i, l := range ls {
		jobs[i] = l.job(m.opts.Target)
	}
	m.pin(jobs, game.OpGrow)
	d, err := m.pool.DispatchJobs(ctx, jobs)
	if errors.Is(err, pool.ErrNoCapacity) {
		return errNoThreads
	}
	if err != nil {
		return err
	}
	m.count(func(s *Stats) { s.InFlight++ })
	at := game.Prepped(srv)
	return m.pipeline(ctx, &at, hk, speed, free, d)
}

// prepLandings is a prep wave for the threads free: it weakens the target
// towards its minimum security and grows it towards its maximum money.
// full reports whether the wave leaves the target prepped, and needs no
// weaken before its grow (so jobs may start while it runs).
func (m *HackManager) prepLandings(srv *game.Server, hk game.Hacker, speed float64, free int) (ls []landing, full bool, err error) {
	floor := game.SecurityFloor(srv)
	wpt := game.WeakenPerThread(m.weakCores)
	wantW1 := int(math.Ceil((srv.HackDifficulty - floor) / wpt))
	w1 := min(wantW1, free)
	free -= w1
	atMin := game.Prepped(srv) // the grows land after the first weaken
	g := game.GrowThreads(&atMin, hk, srv.MoneyAvailable, srv.MoneyMax, m.cores)
	need := g
	w2 := 0
	if g > 0 {
		// g grow threads and the weakens that cover them, within what is left.
		per := game.GrowSecurityPerThread / wpt
		g = int(math.Min(float64(g), math.Floor(float64(free)/(1+per))))
		w2 = int(math.Ceil(float64(g) * per))
	}
	if w1+g+w2 == 0 {
		return nil, false, errNoThreads
	}
	// Durations are fixed at start, and every prep job starts before the
	// first lands: all of them run at the security the target has now.
	hackMs := game.HackTimeMs(srv, hk) / speed
	weakMs, growMs := 4*hackMs, 3.2*hackMs
	gap := float64(m.opts.Gap) / 1e6
	land := job.Now() + float64(m.opts.Lead)/1e6 + weakMs
	if w1 > 0 {
		ls = append(ls, landing{game.OpWeaken, w1, land, weakMs})
	}
	if g > 0 {
		ls = append(ls, landing{game.OpGrow, g, land + gap, growMs}, landing{game.OpWeaken, w2, land + 2*gap, weakMs})
	}
	last := w1 == 0 && srv.HackDifficulty <= floor+1e-9 && g == need
	end := land
	if g > 0 {
		end = land + 2*gap
	}
	m.count(func(s *Stats) {
		s.PrepWaves++
		s.PrepStart, s.PrepLand, s.PrepLast = job.Now(), end, w1 == wantW1 && g == need
	})
	m.emit("prep", fmt.Sprintf("prep wave: weaken %d, grow %d, weaken %d threads, landing in %s of game time (security +%.2f, money %.1f%% of max)",
		w1, g, w2, time.Duration((land-job.Now())*speed*float64(time.Millisecond)).Round(time.Second),
		srv.HackDifficulty-floor, 100*srv.MoneyAvailable/max(srv.MoneyMax, 1)))
	return ls, last, nil
}

// batchWave runs as many HWGW batches as timing and threads allow.
func (m *HackManager) batchWave(ctx context.Context, srv *game.Server, hk game.Hacker, speed float64, free int) error {
	maxJob, err := m.largestHost(ctx)
	if err != nil {
		return err
	}
	plan, err := BestBatchWithin(srv, hk.Level, hk.Mults, m.cores, free, maxJob)
	if errors.Is(err, ErrNoThreads) {
		return errNoThreads
	}
	if err != nil {
		return err
	}
	hackMs := plan.HackTimeMs / speed
	growMs, weakMs := plan.GrowTimeMs/speed, plan.WeakenTimeMs/speed
	gap := float64(m.opts.Gap) / 1e6
	byTime := int(hackMs / (4 * gap))
	n := min(byTime, free/max(1, plan.Threads()))
	if m.opts.MaxBatches > 0 {
		n = min(n, m.opts.MaxBatches)
	}
	if n <= 0 {
		if byTime <= 0 {
			return fmt.Errorf("hack time %.1f ms is shorter than a batch (4 × %s): lower --gap", hackMs, m.opts.Gap)
		}
		return errNoThreads
	}
	// The first job to start is W1 of the first batch: it starts Lead from
	// now. Every job of the wave starts before its first landing.
	land0 := job.Now() + float64(m.opts.Lead)/1e6 + weakMs - gap
	// Level-ups: every landing gives exp, and the level at a batch's landing
	// decides how much its hack takes. Durations are all fixed at the
	// wave's start, but each batch's weakens and grow are sized for the level
	// it will land at, predicted from the exp of the batches before it.
	levels := m.levelsAtLanding(srv, hk, plan, n)
	batches := make([][]landing, n)
	for i := range batches {
		p := plan
		if lp, err := planAtLevel(srv, levels[i], hk.Mults, m.cores, m.weakCores, plan.HackThreads); err == nil {
			p.Weaken1Threads, p.GrowThreads, p.Weaken2Threads = lp.Weaken1Threads, lp.GrowThreads, lp.Weaken2Threads
		}
		l := land0 + float64(i)*4*gap
		batches[i] = []landing{
			{game.OpHack, p.HackThreads, l, hackMs},
			{game.OpWeaken, p.Weaken1Threads, l + gap, weakMs},
			{game.OpGrow, p.GrowThreads, l + 2*gap, growMs},
			{game.OpWeaken, p.Weaken2Threads, l + 3*gap, weakMs},
		}
	}
	m.emit("wave", fmt.Sprintf("%d batches of %d/%d/%d/%d threads", n, plan.HackThreads, plan.Weaken1Threads, plan.GrowThreads, plan.Weaken2Threads))
	_, err = m.runWave(ctx, batches, true)
	return err
}

// runWave dispatches each batch whole, waits for every record and checks
// them. A batch the pool refuses is dropped (the wave goes on with fewer).
func (m *HackManager) runWave(ctx context.Context, batches [][]landing, hwgw bool) (int, error) {
	var ds []*pool.Dispatch
	for _, b := range batches {
		jobs := make([]job.Job, len(b))
		for i, l := range b {
			jobs[i] = l.job(m.opts.Target)
		}
		if jobs[0].StartTime < job.Now() {
			break // out of time for the rest of the wave
		}
		m.pin(jobs, game.OpGrow)
		d, err := m.pool.DispatchJobs(ctx, jobs)
		if errors.Is(err, pool.ErrNoCapacity) {
			break
		}
		if err != nil {
			return len(ds), err
		}
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return 0, errNoThreads
	}
	m.mu.Lock()
	m.stats.InFlight = len(ds)
	if hwgw {
		m.stats.Waves++
	}
	m.mu.Unlock()
	for _, d := range ds {
		recs, err := d.Wait(ctx)
		if err != nil {
			return len(ds), err
		}
		m.check(d.Jobs, recs, hwgw)
		m.mu.Lock()
		m.stats.InFlight--
		if hwgw {
			m.stats.Batches++
		}
		m.mu.Unlock()
	}
	m.emit("landed", fmt.Sprintf("%d batch(es)", len(ds)))
	return len(ds), nil
}

// moneySlack is how far below its maximum money a hack may land without
// a desync: it steals that much less, and the deficit stays that small
// (its batch's grow multiplies back what the hack took, with threads for a
// level above the forecast to spare). The chaos test's restarts left
// hacks landing at 99.99% of the maximum, and each cost a re-prep.
const moneySlack = 1e-3

// check counts a batch's records: money stolen, and desyncs: a job that
// started above minimum security, a hack that landed below maximum money,
// a batch that landed out of order, a missed or failed job. It reports
// whether the target is left intact: every desync but a missed hack may
// leave it off its minimum security or maximum money.
func (m *HackManager) check(sent, recs []job.Job, hwgw bool) (intact bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	byID := make(map[string]job.Job, len(recs))
	for _, r := range recs {
		byID[r.ID] = r
	}
	desync := ""
	broken := false // the target may be off its minimum security or max money
	// unstarted: a job missed its start or failed; moved: the hack or the
	// grow landed.
	unstarted, moved := false, false
	// The order effects landed in is the world's: the sequence of its
	// changes (a record's end time also carries the finish round trip).
	// A batch's jobs land in groups (its hack, or its grow, may be in
	// parts that land at one instant, in any order among themselves):
	// the groups must land in order.
	var groups [][]uint64
	// firstHack is the seq and money of the hack part that landed first:
	// the others land on what it left.
	var firstHack uint64
	hackMoney := -1.0
	// The groups in the order they land (a batch is dispatched in the
	// order the pool should place it, see placeOrder).
	sent = slices.Clone(sent)
	slices.SortStableFunc(sent, func(a, b job.Job) int { return cmp.Compare(a.EndTime, b.EndTime) })
	for i, s := range sent {
		r := byID[s.ID]
		if i == 0 || s.Task != sent[i-1].Task {
			groups = append(groups, nil)
		}
		m.stats.Jobs++
		// A record may carry no start (a job taken up after a restart
		// whose start the worker could not learn).
		if r.Status == job.StatusDone && s.StartTime > 0 && r.ActualStartTime > 0 && len(m.startErrs) < 1_000_000 {
			m.startErrs = append(m.startErrs, (r.ActualStartTime-s.StartTime)*1000)
		}
		if r.Status == job.StatusDone && s.EndTime > 0 && r.ActualEndTime > 0 && len(m.endErrs) < 1_000_000 {
			m.endErrs = append(m.endErrs, (r.ActualEndTime-s.EndTime)*1000)
		}
		if r.ActualEndTime > r.ActualStartTime {
			m.stats.ThreadMs += float64(r.Threads) * (r.ActualEndTime - r.ActualStartTime)
		}
		// A hack or grow that ended otherwise than done may still have
		// landed (a cancel that came too late, a part of a split job).
		if (s.Task == game.OpHack || s.Task == game.OpGrow) && (r.Status == job.StatusDone || mayHaveLanded(r)) {
			moved = true
		}
		switch r.Status {
		case job.StatusMissed:
			m.stats.Missed++
			desync = "missed: " + r.Reason
			// A missed hack leaves the target as it was (its grow then
			// finds it at max money and adds no security; its weakens find
			// it at minimum): a desync that needs no repair.
			if s.Task != game.OpHack || !hwgw {
				unstarted = true
			}
			continue
		case job.StatusDone:
		case job.StatusCancelled:
			// Cancelled by a repair, or with the rest of a batch one of
			// whose jobs could not start: the desync that caused it is
			// counted.
			m.stats.Cancelled++
			continue
		default:
			m.stats.Failed++
			desync, unstarted = string(r.Status)+": "+r.Reason+r.Error, true
			continue
		}
		var res world.Result
		if err := json.Unmarshal(r.Result, &res); err != nil {
			continue
		}
		m.stats.Stolen += res.Stolen
		groups[len(groups)-1] = append(groups[len(groups)-1], res.Seq)
		if res.Seq > m.lastSeq { // the target as the latest landing left it
			m.lastSeq = res.Seq
			m.stats.Money, m.stats.Security, m.stats.Level = res.MoneyAfter, res.SecurityAfter, max(m.stats.Level, res.LevelAtEnd)
		}
		if !hwgw {
			continue
		}
		if res.SecurityAtStart > m.stats.MinSec+m.secSlack+1e-9 {
			desync, broken = fmt.Sprintf("%s started at security %.3f (min %.3f)", r.Task, res.SecurityAtStart, m.stats.MinSec), true
		}
		if r.Task == game.OpHack && (hackMoney < 0 || res.Seq < firstHack) {
			firstHack, hackMoney = res.Seq, res.MoneyBefore
		}
	}
	if hwgw && hackMoney >= 0 && hackMoney < m.stats.MoneyMax*(1-moneySlack) {
		desync, broken = fmt.Sprintf("hack landed at %.1f%% money", 100*hackMoney/m.stats.MoneyMax), true
	}
	for i := 1; i < len(groups) && hwgw; i++ {
		if len(groups[i-1]) > 0 && len(groups[i]) > 0 && slices.Min(groups[i]) < slices.Max(groups[i-1]) {
			desync, broken = "landed out of order", true
		}
	}
	// A job that did not start breaks the target only if the batch's hack
	// or grow landed without it. The pipeline cancels the rest of such a
	// batch at once (see collect); when its hack and grow never landed, the
	// target is as it was and needs no re-prep.
	if unstarted && (moved || !hwgw) {
		broken = true
	}
	if hwgw && desync != "" {
		m.stats.Desyncs++
		m.stats.LastDesync = desync
		if m.stats.FirstDesync == "" {
			m.stats.FirstDesync = desync + " [" + describeBatch(sent, byID) + "]"
		}
		m.markDesync(sent, desync)
	}
	return !broken
}

// markDesync tells the watchers of the jobs' timeline (the pool's web UI,
// nats sub 'hvmind.marks.>') that a batch desynced, at its first landing.
func (m *HackManager) markDesync(sent []job.Job, why string) {
	if len(sent) == 0 || sent[0].Batch == "" || !job.ValidWorkerID(m.opts.Target) {
		return
	}
	at := sent[0].EndTime
	mk := pool.Mark{Time: at, Source: m.opts.Target, Kind: "desync", Level: "error", Note: why, Batch: sent[0].Batch}
	if err := m.pool.Mark(mk); err != nil {
		m.log.Debug().Err(err).Msg("mark a desync")
	}
}

// mayHaveLanded reports whether a job that did not end done may still
// have changed the target: its record carries a result, or it was split
// and a part's record does (or the parts cannot be read).
func mayHaveLanded(r job.Job) bool {
	if len(r.Result) > 0 {
		return true
	}
	raw, ok := r.Get("parts")
	if !ok {
		return false
	}
	parts, err := job.ParseMany(raw)
	if err != nil {
		return true
	}
	for _, p := range parts {
		if p.Status == job.StatusDone || len(p.Result) > 0 {
			return true
		}
	}
	return false
}

// describeBatch lists a batch's jobs: task, threads, and the start and end
// of each against its schedule, for a desync's report.
func describeBatch(sent []job.Job, recs map[string]job.Job) string {
	var b []byte
	for i, s := range sent {
		r := recs[s.ID]
		if i > 0 {
			b = append(b, "; "...)
		}
		status := string(r.Status)
		if status == "" {
			status = "no record"
		}
		b = fmt.Appendf(b, "%s×%d %s", s.Task, s.Threads, status)
		// A job that never started (missed, cancelled) has no actual times.
		if r.ActualStartTime > 0 {
			b = fmt.Appendf(b, " start %+.3f ms", r.ActualStartTime-s.StartTime)
			if r.ActualEndTime > 0 {
				b = fmt.Appendf(b, " end %+.3f ms", r.ActualEndTime-s.EndTime)
			}
		}
		var res world.Result
		if json.Unmarshal(r.Result, &res) == nil {
			b = fmt.Appendf(b, " sec@start %.3f sec %.3f→%.3f money $%.4g→$%.4g seq %d", res.SecurityAtStart,
				res.SecurityBefore, res.SecurityAfter, res.MoneyBefore, res.MoneyAfter, res.Seq)
		}
	}
	return string(b)
}
