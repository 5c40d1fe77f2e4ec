package planner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Fleet runs a HackManager per target on one pool, sharing the pool's
// threads between them by expected income. With Auto it picks the targets
// itself, as Analyze ranks them, and picks again as the level rises.
type Fleet struct {
	opts   FleetOptions
	pool   *pool.Client
	world  *world.Client
	events chan Event

	mu       sync.Mutex
	managers []*HackManager
	shares   []Share
}

// FleetOptions configure a Fleet.
type FleetOptions struct {
	// Targets are the servers to hack. With Auto they may be empty: the
	// fleet then ranks every server it can hack.
	Targets []string
	// Auto picks the targets (among Targets, or all) by expected income and
	// re-picks them every RerankEvery of game time.
	Auto bool
	// MaxTargets bounds how many targets Auto runs at once (default 3).
	MaxTargets int
	// RerankEvery is the game time between two rankings under Auto
	// (default 10 game minutes).
	RerankEvery time.Duration
	// Manager is what every manager gets; the fleet sets Target and
	// Threads per target.
	Manager ManagerOptions
}

// Share is one target's part of the pool's threads.
type Share struct {
	Target string `json:"target"`
	// Threads is the most threads the target's manager plans for.
	Threads int `json:"threads"`
	// IncomePerThreadSecond is what its best batch earns per thread-second
	// (money per game second).
	IncomePerThreadSecond float64 `json:"incomePerThreadSecond"`
	// Capacity is the most threads its pipeline can keep busy, bounded by
	// timing (no shorter a period than gap and margins allow).
	Capacity int `json:"capacity"`
	// PrepSeconds is how long, in game seconds, the pool's threads take to
	// prep the target (weaken it to its minimum, grow it to its maximum).
	PrepSeconds float64 `json:"prepSeconds"`
	// Companion is set on a target run beside one the user named, to earn
	// while that one preps.
	Companion bool `json:"companion,omitempty"`
}

// score is what a candidate earns per thread-second over horizon (game
// seconds) from now: nothing until its prep is done.
func (s Share) score(horizon float64) float64 {
	return s.IncomePerThreadSecond * max(0, horizon-s.PrepSeconds) / horizon
}

// NewFleet prepares a fleet.
func NewFleet(pc *pool.Client, wc *world.Client, o FleetOptions) (*Fleet, error) {
	if len(o.Targets) == 0 && !o.Auto {
		return nil, errors.New("a target (or --auto) is required")
	}
	if err := o.Manager.Validate(); err != nil {
		return nil, err
	}
	if o.MaxTargets <= 0 {
		o.MaxTargets = 3
	}
	if o.RerankEvery <= 0 {
		o.RerankEvery = 10 * time.Minute
	}
	return &Fleet{opts: o, pool: pc, world: wc, events: make(chan Event, 256)}, nil
}

// Events delivers every manager's events; it is closed when Run returns.
func (f *Fleet) Events() <-chan Event { return f.events }

// Stats is a snapshot of every manager's stats, in share order.
func (f *Fleet) Stats() []Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Stats, len(f.managers))
	for i, m := range f.managers {
		out[i] = m.Stats()
	}
	return out
}

// Shares is the current split of the threads.
func (f *Fleet) Shares() []Share {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Share(nil), f.shares...)
}

// Run runs the managers until ctx ends; under Auto it stops them (they
// let their batches land) and starts new ones when the ranking changes.
func (f *Fleet) Run(ctx context.Context) error {
	defer close(f.events)
	idle, said := time.Duration(0), ""
	for ctx.Err() == nil {
		shares, speed, err := f.allocate(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while asking
			}
			if !Unavailable(err) {
				return err
			}
			// Started before the pool or the world, or across a restart:
			// wait for them.
			if err.Error() != said {
				said = err.Error()
				f.emit("waiting", "waiting for the pool and the world to answer: "+said)
			}
			idle = min(max(2*idle, 50*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
			case <-time.After(idle):
			}
			continue
		}
		idle, said = 0, ""
		if len(shares) == 0 {
			return errors.New("no target can be hacked with the threads of the pool")
		}
		rctx, stop := context.WithCancel(ctx)
		errs := f.start(rctx, shares)
		if !f.opts.Auto && !hasCompanion(shares) {
			err := <-errs
			stop()
			return err
		}
		// Re-rank every RerankEvery of game time; restart only on a change.
		tick := time.NewTicker(time.Duration(float64(f.opts.RerankEvery) / math.Max(speed, 1e-9)))
		var runErr error
	wait:
		for {
			select {
			case <-ctx.Done():
				break wait
			case runErr = <-errs:
				break wait
			case <-tick.C:
				next, _, err := f.allocate(ctx)
				if err == nil && !sameTargets(shares, next) {
					f.emit("rerank", fmt.Sprintf("targets now %s (were %s)", targetList(next), targetList(shares)))
					break wait
				}
			}
		}
		tick.Stop()
		stop()
		if runErr == nil {
			runErr = <-errs
		}
		if runErr != nil && ctx.Err() == nil {
			return runErr
		}
	}
	return nil
}

// start runs a manager per share; the channel yields once, when all have
// returned (the first error, if any).
func (f *Fleet) start(ctx context.Context, shares []Share) <-chan error {
	managers := make([]*HackManager, 0, len(shares))
	out := make(chan error, 1)
	for _, s := range shares {
		o := f.opts.Manager
		o.Target, o.Threads = s.Target, s.Threads
		m, err := NewManager(f.pool, f.world, o)
		if err != nil {
			out <- err
			return out
		}
		managers = append(managers, m)
	}
	f.mu.Lock()
	f.managers, f.shares = managers, shares
	f.mu.Unlock()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, m := range managers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := m.Run(ctx); err != nil {
				once.Do(func() { first = fmt.Errorf("%s: %w", m.opts.Target, err) })
			}
		}()
		go func() {
			defer wg.Done()
			for ev := range m.Events() {
				select {
				case f.events <- ev:
				default: // a slow reader loses events
				}
			}
		}()
	}
	go func() { wg.Wait(); out <- first }()
	return out
}

func (f *Fleet) emit(kind, note string) {
	select {
	case f.events <- Event{Time: time.Now(), Kind: kind, Note: note}:
	default:
	}
}

// allocate ranks the targets for the player's level now and shares the
// pool's threads between them.
func (f *Fleet) allocate(ctx context.Context) ([]Share, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	st, err := f.pool.Status(ctx)
	if err != nil {
		return nil, 0, err
	}
	threads, cores := 0, 0
	for i, h := range st.Hosts {
		threads += h.MaxThreads
		if i == 0 || h.Cores < cores {
			cores = h.Cores
		}
	}
	if threads == 0 {
		threads = st.ThreadsTotal
	}
	if f.opts.Manager.Cores > 0 {
		cores = f.opts.Manager.Cores
	}
	cores = max(cores, 1)
	servers, err := f.world.Servers(ctx)
	if err != nil {
		return nil, 0, err
	}
	pl, err := f.world.Player(ctx)
	if err != nil {
		return nil, 0, err
	}
	clk, err := f.world.Clock(ctx)
	if err != nil {
		return nil, 0, err
	}
	hk := pl.Player().Hacker()
	want := map[string]bool{}
	for _, t := range f.opts.Targets {
		want[t] = true
	}
	var cands []Share
	for i := range servers {
		s := &servers[i]
		if len(want) > 0 && !want[s.Hostname] {
			continue
		}
		c, err := candidate(s, hk, cores, clk.Speed, f.opts.Manager, threads)
		if err != nil {
			if len(want) > 0 && !f.opts.Auto {
				return nil, 0, fmt.Errorf("target %s: %w", s.Hostname, err)
			}
			continue
		}
		cands = append(cands, c)
	}
	if len(want) > 0 && !f.opts.Auto && len(cands) < len(want) {
		for t := range want {
			if _, ok := findServer(servers, t); !ok {
				return nil, 0, fmt.Errorf("target %s: %w", t, world.ErrUnknownTarget)
			}
		}
	}
	horizon := f.horizon()
	if f.opts.Auto {
		// Money over the horizon, prep counted: a target whose prep
		// outlasts it earns nothing in it.
		for i := range cands {
			cands[i].IncomePerThreadSecond = cands[i].score(horizon)
		}
		kept := cands[:0]
		for _, c := range cands {
			if c.IncomePerThreadSecond > 0 {
				kept = append(kept, c)
			}
		}
		cands = kept
	}
	shares := AllocateThreads(cands, threads)
	if f.opts.Auto && len(shares) > f.opts.MaxTargets {
		shares = shares[:f.opts.MaxTargets]
	}
	if !f.opts.Auto {
		if c, ok := f.companion(cands, servers, hk, cores, clk.Speed, threads, horizon); ok {
			// The named targets prep on half the threads; the companion
			// earns on the rest.
			for i := range cands {
				cands[i].Threads = max(cands[i].Threads, threads/2/len(cands))
			}
			c.Threads = threads - threads/2
			return append(cands, c), clk.Speed, nil
		}
	}
	if !f.opts.Auto {
		// A target the user named runs even when the threads left for it
		// are fewer than its best pipeline wants: its manager plans with
		// whatever threads are free (Threads 0).
		for _, c := range cands {
			if !hasShare(shares, c.Target) {
				c.Threads = 0
				shares = append(shares, c)
			}
		}
	}
	return shares, clk.Speed, nil
}

func findServer(servers []game.Server, name string) (*game.Server, bool) {
	for i := range servers {
		if servers[i].Hostname == name {
			return &servers[i], true
		}
	}
	return nil, false
}

// candidate is a target's income per thread-second and the threads its
// pipeline can keep busy, for a player hk, with grows and weakens on
// cores cores, at world speed speed. A pipeline keeps more threads busy
// with bigger batches, which earn a little less per thread-second: the
// capacity is that of the biggest batch within 5% of the best.
func candidate(s *game.Server, hk game.Hacker, cores int, speed float64, o ManagerOptions, threads int) (Share, error) {
	t, err := newTarget(s, hk.Level, hk.Mults, cores)
	if err != nil {
		return Share{}, err
	}
	best, err := BestBatch(s, hk.Level, hk.Mults, cores)
	if err != nil {
		return Share{}, err
	}
	gap, margin, slack := durOr(o.Gap, DefaultGap), durOr(o.Margin, DefaultMargin), durOr(o.Slack, DefaultSlack)
	minPeriod := 2 * (gap + 2*margin) * 1.01
	big := best
	for h := best.HackThreads + 1; h <= int(math.Min(math.Ceil(1/t.pct), 100_000)); h++ {
		p := t.plan(0, h)
		if p.IncomePerThreadSecond < 0.95*best.IncomePerThreadSecond {
			break
		}
		big = p
	}
	held := big.ThreadSeconds*1000/math.Max(speed, 1e-9) + float64(big.Threads())*(minPeriod/4+slack)
	smallest := t.plan(0, 1)
	return Share{Target: s.Hostname, IncomePerThreadSecond: best.IncomePerThreadSecond,
		Capacity: int(held / minPeriod), Threads: smallest.Threads(), PrepSeconds: prepSeconds(s, hk, cores, threads)}, nil
}

// prepSeconds estimates, in game seconds, how long threads threads take to
// prep s: the thread-seconds of the weakens to its minimum security, of
// the grows to its maximum money and of their covering weakens, spread
// over the threads, and at least a weakenTime if anything is to do.
func prepSeconds(s *game.Server, hk game.Hacker, cores, threads int) float64 {
	floor := game.SecurityFloor(s)
	at := *s
	at.HackDifficulty = floor
	growThreads := 0
	if s.MoneyAvailable < s.MoneyMax {
		growThreads = game.GrowThreads(&at, hk, s.MoneyAvailable, s.MoneyMax, cores)
	}
	weaken := (s.HackDifficulty-floor)/game.WeakenPerThread(cores) +
		game.GrowSecurityIncrease(growThreads, growThreads)/game.WeakenPerThread(cores)
	if growThreads == 0 && weaken < 1e-9 {
		return 0
	}
	weakenS := game.WeakenTimeMs(s, hk) / 1000
	ts := weaken*weakenS + float64(growThreads)*game.GrowTimeMs(&at, hk)/1000
	return max(weakenS, ts/float64(max(threads, 1)))
}

// horizon is the game time, in seconds, over which --auto weighs what a
// target earns against its prep, and beyond which a named target's prep
// gets a companion: three rankings.
func (f *Fleet) horizon() float64 { return 3 * f.opts.RerankEvery.Seconds() }

// companion is the target that earns most over the horizon, to run beside
// named targets every one of whose prep outlasts the horizon (a new game's
// foodnstuff takes hours to grow to its maximum): the fleet earns while
// they prep, and says so.
func (f *Fleet) companion(named []Share, servers []game.Server, hk game.Hacker, cores int, speed float64, threads int, horizon float64) (Share, bool) {
	for _, c := range named {
		if c.PrepSeconds <= horizon {
			return Share{}, false
		}
	}
	var best Share
	for i := range servers {
		s := &servers[i]
		if hasShare(named, s.Hostname) || !s.HasAdminRights || s.MoneyMax <= 0 || s.RequiredHackingSkill > hk.Level {
			continue
		}
		c, err := candidate(s, hk, cores, speed, f.opts.Manager, threads)
		if err == nil && c.score(horizon) > best.score(horizon) {
			best = c
		}
	}
	if best.Target == "" || best.score(horizon) <= 0 {
		return Share{}, false
	}
	best.Companion = true
	f.emit("companion", fmt.Sprintf("earning on %s while %s preps (about %s of game time)", best.Target, targetList(named),
		time.Duration(named[0].PrepSeconds*float64(time.Second)).Round(time.Minute)))
	return best, true
}

func durOr(d, def time.Duration) float64 {
	if d <= 0 {
		d = def
	}
	return float64(d) / 1e6
}

// AllocateThreads shares threads between candidates, the best income per
// thread-second first: each gets what its pipeline can keep busy (its
// Capacity), until no threads are left. A candidate's Threads, on input,
// is its smallest useful share (one batch); one that would get less gets
// none. The result is in order of income per thread-second.
func AllocateThreads(cands []Share, threads int) []Share {
	cs := append([]Share(nil), cands...)
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].IncomePerThreadSecond != cs[j].IncomePerThreadSecond {
			return cs[i].IncomePerThreadSecond > cs[j].IncomePerThreadSecond
		}
		return cs[i].Target < cs[j].Target
	})
	var out []Share
	for _, c := range cs {
		if threads <= 0 {
			break
		}
		n := min(threads, max(c.Capacity, c.Threads))
		if n < c.Threads {
			continue
		}
		c.Threads = n
		threads -= n
		out = append(out, c)
	}
	return out
}

func sameTargets(a, b []Share) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Target != b[i].Target {
			return false
		}
	}
	return true
}

func targetList(s []Share) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s (%d threads)", x.Target, x.Threads)
	}
	return out
}

func hasShare(shares []Share, target string) bool {
	for _, s := range shares {
		if s.Target == target {
			return true
		}
	}
	return false
}

func hasCompanion(shares []Share) bool {
	for _, s := range shares {
		if s.Companion {
			return true
		}
	}
	return false
}
