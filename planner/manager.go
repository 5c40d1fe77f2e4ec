package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/world"
)

// HackManager runs one target: it preps it (weaken to minimum security,
// grow to maximum money, with the weakens that cover the grows) and then
// runs HWGW batches against it on the pool, checking every record.
//
// Batches run in waves. A wave is n batches whose jobs land in the order
// H, W1, G, W2, Gap apart, batch after batch, and whose jobs all START
// before the wave's first landing: every job starts with the target at
// minimum security and maximum money (its duration is right) and every
// hack lands at maximum money, so a wave cannot desync by construction. n
// is bounded by that timing (hackTime / 4·Gap) and by the threads free.
// Between waves the manager checks the target and re-preps if it has
// drifted (a level-up can make a grow fall short).
type HackManager struct {
	opts   ManagerOptions
	pool   *pool.Client
	world  *world.Client
	log    zerolog.Logger
	events chan Event

	// exp is the player's hacking exp when the target was last observed.
	exp float64

	mu    sync.Mutex
	stats Stats
}

// ManagerOptions configure a HackManager.
type ManagerOptions struct {
	// Target is the server to hack.
	Target string
	// Gap is the real time between two landings of a batch.
	Gap time.Duration
	// Lead is how far ahead of now a wave's first job starts, to leave
	// time for dispatching it.
	Lead time.Duration
	// MaxBatches bounds a wave (0: no bound but timing and threads).
	MaxBatches int
	// Cores is the core count the thread maths assume for grow and weaken.
	Cores int
	// Continuous runs batches as a pipeline (a batch every period, jobs
	// starting only in the half-periods at minimum security) instead of
	// waves.
	Continuous bool
	Logger     zerolog.Logger
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
	Stolen     float64   `json:"stolen"`
	GameMs     float64   `json:"gameMs"`
	LastDesync string    `json:"lastDesync,omitempty"`
}

// Event is one step of the manager, for --json and the dashboard.
type Event struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	Note  string    `json:"note,omitempty"`
	Stats Stats     `json:"stats"`
}

// NewManager prepares a manager.
func NewManager(pc *pool.Client, wc *world.Client, o ManagerOptions) (*HackManager, error) {
	if o.Target == "" {
		return nil, errors.New("a target is required")
	}
	if o.Gap <= 0 {
		o.Gap = 20 * time.Millisecond
	}
	if o.Lead <= 0 {
		o.Lead = 500 * time.Millisecond
	}
	if o.Cores <= 0 {
		o.Cores = 1
	}
	return &HackManager{opts: o, pool: pc, world: wc, log: o.Logger.With().Str("target", o.Target).Logger(),
		events: make(chan Event, 256), stats: Stats{Target: o.Target, Phase: "starting", Started: time.Now()}}, nil
}

// Events delivers what the manager does; it is closed when Run returns.
func (m *HackManager) Events() <-chan Event { return m.events }

// Stats is a snapshot of the manager's counters.
func (m *HackManager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

func (m *HackManager) emit(kind, note string) {
	ev := Event{Time: time.Now(), Kind: kind, Note: note, Stats: m.Stats()}
	select {
	case m.events <- ev:
	default: // a slow reader loses events, never the manager's pace
	}
}

// Run preps the target and runs waves until ctx ends.
func (m *HackManager) Run(ctx context.Context) error {
	defer close(m.events)
	if err := m.awaitInFlight(ctx); err != nil {
		return err
	}
	for ctx.Err() == nil {
		srv, hk, speed, err := m.observe(ctx)
		if err != nil {
			return err
		}
		if err := world.CheckHack(&srv, hk); err != nil {
			return fmt.Errorf("target %s: %w", m.opts.Target, err)
		}
		free, err := m.freeThreads(ctx)
		if err != nil {
			return err
		}
		if !prepped(&srv) {
			m.setPhase("prep")
			err = m.prepWave(ctx, &srv, hk, speed, free)
		} else {
			m.setPhase("batch")
			if m.opts.Continuous {
				err = m.pipeline(ctx, &srv, hk, speed, free)
			} else {
				err = m.batchWave(ctx, &srv, hk, speed, free)
			}
		}
		if errors.Is(err, errNoThreads) {
			m.emit("waiting", "no threads free; waiting")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
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

// awaitInFlight waits until no job on the target is in flight: a manager
// started again while its batches still run lets them land before it looks
// at the target, rather than dispatch into their landings.
func (m *HackManager) awaitInFlight(ctx context.Context) error {
	for {
		st, err := m.pool.Status(ctx)
		if err != nil {
			return err
		}
		n := st.InFlightByTarget[m.opts.Target]
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

func prepped(s *world.Server) bool {
	return s.HackDifficulty <= world.SecurityFloor(s)+1e-9 && s.MoneyAvailable >= s.MoneyMax*(1-1e-9)
}

func (m *HackManager) setPhase(p string) {
	m.mu.Lock()
	m.stats.Phase = p
	m.mu.Unlock()
}

// observe reads the target, the player and the world's speed.
func (m *HackManager) observe(ctx context.Context) (world.Server, world.Hacker, float64, error) {
	srv, err := m.world.Server(ctx, m.opts.Target)
	if err != nil {
		return srv, world.Hacker{}, 0, err
	}
	pl, err := m.world.Player(ctx)
	if err != nil {
		return srv, world.Hacker{}, 0, err
	}
	clk, err := m.world.Clock(ctx)
	if err != nil {
		return srv, world.Hacker{}, 0, err
	}
	m.exp = pl.HackingExp
	hk := pl.Player().Hacker()
	m.mu.Lock()
	m.stats.Money, m.stats.MoneyMax = srv.MoneyAvailable, srv.MoneyMax
	m.stats.Security, m.stats.MinSec = srv.HackDifficulty, world.SecurityFloor(&srv)
	m.stats.Level, m.stats.GameMs = hk.Level, clk.GameTimeMs
	m.mu.Unlock()
	return srv, hk, math.Max(clk.Speed, 1e-9), nil
}

// freeThreads is what the manager may use: the world's free RAM plus the
// idle threads of the live workers (between waves every worker is idle).
func (m *HackManager) freeThreads(ctx context.Context) (int, error) {
	hosts, err := m.world.RAM(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hosts {
		n += h.FreeThreads
	}
	st, err := m.pool.Status(ctx)
	if err != nil {
		return 0, err
	}
	return n + st.ThreadsTotal - st.ThreadsBusy, nil
}

// levelsAtLanding predicts the hacking level at each batch's landing: the
// level now plus the exp of the batches that landed before it (hack exp
// weighted by its chance; a failed hack gives a quarter).
func (m *HackManager) levelsAtLanding(srv *world.Server, hk world.Hacker, plan BatchPlan, n int) []int {
	full := world.ExpPerThread(srv, hk.Mults, true)
	perBatch := full*float64(plan.Weaken1Threads+plan.GrowThreads+plan.Weaken2Threads) +
		full*float64(plan.HackThreads)*(plan.Chance+(1-plan.Chance)/4)
	levels := make([]int, n)
	for i := range levels {
		levels[i] = max(hk.Level, world.HackingLevel(m.exp+float64(i)*perBatch, hk.Mults.Hacking))
	}
	return levels
}

// largestHost is the most threads one worker can have: the largest host.
func (m *HackManager) largestHost(ctx context.Context) (int, error) {
	hosts, err := m.world.RAM(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hosts {
		n = max(n, world.ThreadsForRAM(h.MaxRAM))
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
func (m *HackManager) prepWave(ctx context.Context, srv *world.Server, hk world.Hacker, speed float64, free int) error {
	floor := world.SecurityFloor(srv)
	wpt := world.WeakenPerThread(m.opts.Cores)
	w1 := int(math.Ceil((srv.HackDifficulty - floor) / wpt))
	w1 = min(w1, free)
	free -= w1
	atMin := world.Prepped(srv) // the grows land after the first weaken
	g := world.GrowThreads(&atMin, hk, srv.MoneyAvailable, srv.MoneyMax, m.opts.Cores)
	w2 := 0
	if g > 0 {
		// g grow threads and the weakens that cover them, within what is left.
		per := world.GrowSecurityPerThread / wpt
		g = int(math.Min(float64(g), math.Floor(float64(free)/(1+per))))
		w2 = int(math.Ceil(float64(g) * per))
	}
	if w1+g+w2 == 0 {
		return errNoThreads
	}
	// Durations are fixed at start, and every prep job starts before the
	// first lands: all of them run at the security the target has now.
	hackMs := world.HackTimeMs(srv, hk) / speed
	weakMs, growMs := 4*hackMs, 3.2*hackMs
	gap := float64(m.opts.Gap) / 1e6
	land := job.Now() + float64(m.opts.Lead)/1e6 + weakMs
	var ls []landing
	if w1 > 0 {
		ls = append(ls, landing{world.OpWeaken, w1, land, weakMs})
	}
	if g > 0 {
		ls = append(ls, landing{world.OpGrow, g, land + gap, growMs}, landing{world.OpWeaken, w2, land + 2*gap, weakMs})
	}
	m.emit("prep", fmt.Sprintf("weaken %d, grow %d, weaken %d", w1, g, w2))
	_, err := m.runWave(ctx, [][]landing{ls}, false)
	return err
}

// batchWave runs as many HWGW batches as timing and threads allow.
func (m *HackManager) batchWave(ctx context.Context, srv *world.Server, hk world.Hacker, speed float64, free int) error {
	maxJob, err := m.largestHost(ctx)
	if err != nil {
		return err
	}
	plan, err := BestBatchWithin(srv, hk.Level, hk.Mults, m.opts.Cores, free, maxJob)
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
		if levels[i] != hk.Level {
			if lp, err := PlanAtLevel(srv, levels[i], hk.Mults, m.opts.Cores, plan.HackThreads); err == nil {
				p.Weaken1Threads, p.GrowThreads, p.Weaken2Threads = lp.Weaken1Threads, lp.GrowThreads, lp.Weaken2Threads
			}
		}
		l := land0 + float64(i)*4*gap
		batches[i] = []landing{
			{world.OpHack, p.HackThreads, l, hackMs},
			{world.OpWeaken, p.Weaken1Threads, l + gap, weakMs},
			{world.OpGrow, p.GrowThreads, l + 2*gap, growMs},
			{world.OpWeaken, p.Weaken2Threads, l + 3*gap, weakMs},
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

// check counts a batch's records: money stolen, and desyncs: a job that
// started above minimum security, a hack that landed below maximum money,
// a batch that landed out of order, a missed or failed job.
func (m *HackManager) check(sent, recs []job.Job, hwgw bool) (ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	byID := make(map[string]job.Job, len(recs))
	for _, r := range recs {
		byID[r.ID] = r
	}
	desync := ""
	// The order effects landed in is the world's: the sequence of its
	// changes (a record's end time also carries the finish round trip).
	var seqs []uint64
	for _, s := range sent {
		r := byID[s.ID]
		m.stats.Jobs++
		switch r.Status {
		case job.StatusMissed:
			m.stats.Missed++
			desync = "missed: " + r.Reason
			continue
		case job.StatusDone:
		default:
			m.stats.Failed++
			desync = string(r.Status) + ": " + r.Reason + r.Error
			continue
		}
		var res world.Result
		if err := json.Unmarshal(r.Result, &res); err != nil {
			continue
		}
		m.stats.Stolen += res.Stolen
		seqs = append(seqs, res.Seq)
		if !hwgw {
			continue
		}
		if res.SecurityAtStart > m.stats.MinSec+1e-9 {
			desync = fmt.Sprintf("%s started at security %.3f (min %.3f)", r.Task, res.SecurityAtStart, m.stats.MinSec)
		}
		if r.Task == world.OpHack && res.MoneyBefore < m.stats.MoneyMax*(1-1e-9) {
			desync = fmt.Sprintf("hack landed at %.1f%% money", 100*res.MoneyBefore/m.stats.MoneyMax)
		}
	}
	for i := 1; i < len(seqs) && hwgw; i++ {
		if seqs[i] < seqs[i-1] {
			desync = "landed out of order"
		}
	}
	if hwgw && desync != "" {
		m.stats.Desyncs++
		m.stats.LastDesync = desync
	}
	return desync == ""
}
