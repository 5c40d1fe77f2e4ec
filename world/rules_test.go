package world_test

import (
	"context"
	"errors"
	"math"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// The world keeps the game's rules whoever asks: the attacks are
// refused with a clear error and change nothing.
func TestRulesForCallers(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	now := func() float64 { return float64(time.Now().UnixNano()) / 1e6 }
	before, err := c.Player(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// "home" has 8 GB: 4 threads of 1.75 GB. The honest worker holds 4.
	if _, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "honest", Threads: 4}); err != nil {
		t.Fatal(err)
	}
	begin := func(id, owner string, threads int, start float64) error {
		_, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: "hack", Target: "n00dles", Host: "home", Owner: owner, Threads: threads, Start: start})
		return err
	}
	for _, tc := range []struct {
		name      string
		id, owner string
		threads   int
		start     float64
		want      error
	}{
		{"a million threads it does not hold", "greedy", "honest", 1_000_000, now(), world.ErrNoRAM},
		{"threads of an owner with no RAM", "stranger", "nobody", 1, now(), world.ErrNoRAM},
		{"no owner", "anonymous", "", 1, now(), world.ErrInvalid},
		{"a start an hour ago, to be over at once", "backdated", "honest", 1, now() - 3600e3, world.ErrInvalid},
		{"a start in the future", "ahead", "honest", 1, now() + 60e3, world.ErrInvalid},
	} {
		if err := begin(tc.id, tc.owner, tc.threads, tc.start); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Within its RAM, one begins; a second that would exceed it does not.
	if err := begin("fair", "honest", 3, now()); err != nil {
		t.Fatalf("a begin within the owner's RAM: %v", err)
	}
	if err := begin("one-too-many", "honest", 2, now()); !errors.Is(err, world.ErrNoRAM) {
		t.Errorf("a begin beyond what its running operations leave: %v, want ErrNoRAM", err)
	}
	// Finishing at once, before the duration the world gave, is refused.
	if _, err := c.Finish(ctx, "fair"); !errors.Is(err, world.ErrInvalid) {
		t.Errorf("a finish before the operation's end: %v, want ErrInvalid", err)
	}
	if _, err := c.FinishAt(context.Background(), "fair", now(), now()); !errors.Is(err, world.ErrInvalid) {
		t.Errorf("a finish stamped before the operation's end: %v, want ErrInvalid", err)
	}
	after, err := c.Player(ctx)
	if err != nil || after.Money != before.Money || after.HackingExp != before.HackingExp {
		t.Errorf("player %+v (%v); want unchanged %+v", after, err, before)
	}
	// The same job id cannot begin as another operation.
	if _, err := c.Begin(ctx, world.BeginRequest{JobID: "fair", Task: "grow", Target: "n00dles", Host: "home", Owner: "honest", Threads: 1, Start: now()}); !errors.Is(err, world.ErrInvalid) {
		t.Errorf("a second begin of a job id: %v, want ErrInvalid", err)
	}
}

// The next operation on the same threads may begin the instant the last
// one ends, as its worker's clock rounds that instant.
func TestRulesThreadsFreeAtTheEnd(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 1000})
	ctx := ctxT(t)
	if _, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w", Threads: 1}); err != nil {
		t.Fatal(err)
	}
	start := float64(time.Now().UnixNano()) / 1e6
	a, err := c.Begin(ctx, world.BeginRequest{JobID: "a", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w", Threads: 1, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	end := start + a.DurationRealMs
	time.Sleep(time.Until(time.UnixMicro(int64(end*1000))) + time.Millisecond)
	// Its end rounded down to the nanosecond.
	next := float64(time.UnixMicro(int64(end*1000)).UnixNano()-1) / 1e6
	if _, err := c.Begin(ctx, world.BeginRequest{JobID: "b", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w", Threads: 1, Start: next}); err != nil {
		t.Errorf("a begin at the end of the last operation on the same threads: %v", err)
	}
}

// An operation settled while it runs (its worker cancelled it) frees its
// threads at once, as a killed script's RAM in the game.
func TestRulesSettledFreesThreads(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	if _, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w", Threads: 1}); err != nil {
		t.Fatal(err)
	}
	now := func() float64 { return float64(time.Now().UnixNano()) / 1e6 }
	begin := func(id string) error {
		_, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: "weaken", Target: "n00dles", Host: "home", Owner: "w", Threads: 1, Start: now()})
		return err
	}
	if err := begin("first"); err != nil {
		t.Fatal(err)
	}
	if err := begin("second"); !errors.Is(err, world.ErrNoRAM) {
		t.Fatalf("a second operation on the one thread: %v, want ErrNoRAM", err)
	}
	if _, err := c.Settle(ctx, world.SettleRequest{JobIDs: []string{"first"}, Reason: "cancelled while it ran"}); err != nil {
		t.Fatal(err)
	}
	if err := begin("third"); err != nil {
		t.Errorf("an operation on the thread of a settled one: %v", err)
	}
}

// A worker asking on its own subjects (world.WorkerSubject, which a
// broker that gives each worker an identity limits it to) acts only for
// itself: it begins, finishes and settles its own operations and holds
// and releases its own RAM, and is refused another's, which stays as it
// was.
func TestRulesWorkersActOnlyForThemselves(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 1000})
	ctx := ctxT(t)
	w1, w2 := c.As("w1"), c.As("w2")
	for name, w := range map[string]*world.Client{"w1": w1, "w2": w2} {
		if _, err := w.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: name, Threads: 2}); err != nil {
			t.Fatal(err)
		}
	}
	now := float64(time.Now().UnixNano()) / 1e6
	// It lands in two seconds, while the others try.
	b, err := w1.Begin(ctx, world.BeginRequest{JobID: "op-1", Task: game.OpWeaken, Target: "n00dles", Host: "home", Owner: "w1", Threads: 2, Start: now, LandAt: now + 2000})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"begin as another", func() error {
			_, err := w2.Begin(ctx, world.BeginRequest{JobID: "op-2", Task: game.OpWeaken, Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now})
			return err
		}},
		{"finish another's", func() error { _, err := w2.FinishAt(ctx, "op-1", now, 0); return err }},
		{"settle another's", func() error {
			_, err := w2.Settle(ctx, world.SettleRequest{JobIDs: []string{"op-2", "op-1"}, Reason: "sabotage"})
			return err
		}},
		{"resume another's", func() error { _, err := w2.Resume(ctx, world.ResumeRequest{JobID: "op-1"}); return err }},
		{"resume as another", func() error {
			_, err := w2.Resume(ctx, world.ResumeRequest{JobID: "op-1", Owner: "w1"})
			return err
		}},
		{"reserve for another", func() error {
			_, err := w2.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: 1})
			return err
		}},
		{"release another's", func() error { _, err := w2.ReleaseRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1"}); return err }},
	}
	for _, tc := range tests {
		if err := tc.call(); !errors.Is(err, world.ErrNotOwner) {
			t.Errorf("%s: %v, want ErrNotOwner", tc.name, err)
		}
	}
	// Nothing of w1's changed: its RAM is held, op-2 (in the refused
	// settlement) may still begin, and op-1 finishes for w1.
	hosts, err := c.RAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Hostname == "home" && h.Reservations["w1"] != 2 {
			t.Errorf("w1 holds %d threads on home, want 2", h.Reservations["w1"])
		}
	}
	time.Sleep(time.Until(time.UnixMicro(int64(b.LandsAt*1000))) + 250*time.Millisecond)
	if r, err := w1.FinishAt(ctx, "op-1", b.LandsAt, 0); err != nil || !r.Success {
		t.Errorf("w1 finishing its own: %+v, %v", r, err)
	}
	if _, err := w2.Begin(ctx, world.BeginRequest{JobID: "op-2", Task: game.OpWeaken, Target: "n00dles", Host: "home", Owner: "w2", Threads: 2,
		Start: float64(time.Now().UnixNano()) / 1e6}); err != nil {
		t.Errorf("w2 beginning its own: %v", err)
	}
	if _, err := w2.ReleaseRAM(ctx, world.RAMRequest{Host: "home", Owner: "w2"}); err != nil {
		t.Errorf("w2 releasing its own: %v", err)
	}
}

// An operation lands at its landing whether or not its worker says so,
// like a script whose starter was killed; one settled before it lands
// never does.
func TestRulesOperationsLandWithoutTheirWorker(t *testing.T) {
	t.Parallel()
	c, w1, ctx := workerHolding(t, 4)
	before, err := c.Server(ctx, "joesguns")
	if err != nil {
		t.Fatal(err)
	}
	now := float64(time.Now().UnixNano()) / 1e6
	begin := func(id string) world.BeginReply {
		t.Helper()
		b, err := w1.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpWeaken, Target: "joesguns", Host: "home", Owner: "w1", Threads: 2, Start: now, LandAt: now + 400})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := begin("lands")
	begin("cancelled")
	if b.LandsAt != max(now+400, b.StartedAt+b.DurationRealMs) {
		t.Errorf("lands at %.0f, want at its LandAt %.0f or the end of its duration %.0f", b.LandsAt, now+400, b.StartedAt+b.DurationRealMs)
	}
	if st, err := w1.Settle(ctx, world.SettleRequest{JobIDs: []string{"cancelled"}, Reason: "cancelled"}); err != nil || st[0].Applied {
		t.Fatalf("settle: %+v, %v", st, err)
	}
	time.Sleep(time.Until(time.UnixMicro(int64(b.LandsAt*1000))) + world.MaxHoldback + 200*time.Millisecond)
	after, err := c.Server(ctx, "joesguns")
	if err != nil {
		t.Fatal(err)
	}
	if want := before.HackDifficulty - 2*0.05; math.Abs(after.HackDifficulty-want) > 1e-9 {
		t.Errorf("joesguns security %v, want %v: the one operation not settled landed, without its worker", after.HackDifficulty, want)
	}
	st, err := c.Settle(ctx, world.SettleRequest{JobIDs: []string{"lands", "cancelled"}, Reason: "worker gone"})
	if err != nil || !st[0].Applied || st[0].Result == nil || st[0].Result.LandedAt != b.LandsAt || st[1].Applied {
		t.Errorf("settlements %+v, %v: want the first applied at its landing, the second not", st, err)
	}
	if r, err := w1.FinishAt(ctx, "lands", b.LandsAt, b.LandsAt); err != nil || r.LandedAt != b.LandsAt {
		t.Errorf("its worker's finish: %+v, %v; want the result of its landing", r, err)
	}
}

// An operation lands at its landing, however late its worker's finish
// comes, as a script in the game lands on the game's clock: a worker
// process whose timers run late (restarted on a busy machine) must not
// land a batch's hack after the weaken planned after it.
func TestRulesOperationsLandAtTheirLanding(t *testing.T) {
	t.Parallel()
	_, w1, ctx := workerHolding(t, 3)
	now := float64(time.Now().UnixNano()) / 1e6
	b, err := w1.Begin(ctx, world.BeginRequest{JobID: "op", Task: game.OpWeaken, Target: "joesguns", Host: "home", Owner: "w1", Threads: 2, Start: now, LandAt: now + 300})
	if err != nil {
		t.Fatal(err)
	}
	late, err := w1.Begin(ctx, world.BeginRequest{JobID: "late", Task: game.OpWeaken, Target: "joesguns", Host: "home", Owner: "w1", Threads: 1, Start: now, LandAt: now + 300})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.UnixMicro(int64(b.LandsAt * 1000))))
	lateDone := make(chan struct{})
	go func() {
		defer close(lateDone)
		r, err := w1.FinishAt(ctx, "late", late.LandsAt+20, late.LandsAt)
		if err != nil || r.LandedAt != late.LandsAt {
			t.Errorf("a finish 20 ms late: %+v, %v; want it landed at its landing %.3f", r, err, late.LandsAt)
		}
	}()
	r, err := w1.FinishAt(ctx, "op", b.LandsAt+0.25, b.LandsAt)
	if err != nil || r.LandedAt != b.LandsAt {
		t.Errorf("a finish a quarter of a millisecond late: %+v, %v; want it landed at its landing %.3f", r, err, b.LandsAt)
	}
	<-lateDone
}

// workerHolding runs a world at speed 1000 where worker w1 holds threads
// on home, and returns a client, w1's client, and the test's context.
func workerHolding(t *testing.T, threads int) (*world.Client, *world.Client, context.Context) {
	t.Helper()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 1000})
	ctx := ctxT(t)
	w1 := c.As("w1")
	if _, err := w1.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: threads}); err != nil {
		t.Fatal(err)
	}
	return c, w1, ctx
}

// After its broker comes back, the world holds the requests its workers
// send again and applies them in the order of their stamps. An operation
// begun while the broker was away, whose landing has passed by the end of
// the hold, lands in its place among them: before a finish stamped after
// its landing, not after everything the hold let through (a broker kill in
// the chaos test landed hacks begun so after the weakens stamped after
// them, and drained the target).
func TestRulesBrokerBackLandsAnOperationBegunMeanwhileInItsPlace(t *testing.T) {
	t.Parallel()
	b, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 1000})
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	w1 := c.As("w1")
	if _, err := w1.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: 2}); err != nil {
		t.Fatal(err)
	}
	// Asks as a worker does, until the world answers.
	again := func(what string, f func(context.Context) error) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := f(actx)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v", what, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t0 := float64(time.Now().UnixNano()) / 1e6
	later, err := w1.Begin(ctx, world.BeginRequest{JobID: "later", Task: game.OpWeaken, Target: "joesguns", Host: "home", Owner: "w1", Threads: 1, Start: t0, LandAt: t0 + 900})
	if err != nil {
		t.Fatal(err)
	}
	b.Stop()
	t1 := float64(time.Now().UnixNano()) / 1e6
	b = brokertest.Start(t, b.Dir, u.Host)
	var meanwhile world.BeginReply
	var wg sync.WaitGroup
	wg.Go(func() {
		again("begin meanwhile", func(ctx context.Context) (err error) {
			meanwhile, err = w1.Begin(ctx, world.BeginRequest{JobID: "meanwhile", Task: game.OpWeaken, Target: "joesguns", Host: "home", Owner: "w1", Threads: 1, Start: t1, LandAt: t1 + 50})
			return err
		})
	})
	var landed world.Result
	wg.Go(func() {
		time.Sleep(time.Until(time.UnixMicro(int64(later.LandsAt * 1000))))
		again("finish later", func(ctx context.Context) (err error) {
			landed, err = w1.FinishAt(ctx, "later", later.LandsAt, later.LandsAt)
			return err
		})
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	if meanwhile.LandsAt >= later.LandsAt {
		t.Fatalf("meanwhile lands at %.3f, not before later's %.3f: no order to check", meanwhile.LandsAt, later.LandsAt)
	}
	var first world.Result
	again("finish meanwhile", func(ctx context.Context) (err error) {
		first, err = w1.FinishAt(ctx, "meanwhile", meanwhile.LandsAt, meanwhile.LandsAt)
		return err
	})
	if first.LandedAt != meanwhile.LandsAt || first.Seq == 0 || first.Seq > landed.Seq {
		t.Errorf("meanwhile landed at %.3f (seq %d), later at %.3f (seq %d): want meanwhile first, at its landing %.3f",
			first.LandedAt, first.Seq, landed.LandedAt, landed.Seq, meanwhile.LandsAt)
	}
}

// An operation begun before the world restarts, or reloads its store
// after its broker came back, still lands at its landing without its
// worker; one that landed before does not land again, and one settled
// before never lands. After a pool kill in the chaos test, a worker
// process killed next had its hacks land on time and the grows and
// weakens begun before the restart only when its next process finished
// them, and the target was drained.
func TestRulesOperationsBegunBeforeARestartLandWithoutTheirWorker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		restart func(t *testing.T, b *brokertest.Broker, svc *world.Service)
	}{
		{"world restarts", func(t *testing.T, b *brokertest.Broker, svc *world.Service) {
			svc.Stop()
			serve(t, b, world.Options{Speed: 1000})
		}},
		{"broker restarts", func(t *testing.T, b *brokertest.Broker, _ *world.Service) {
			u, err := url.Parse(b.URL)
			if err != nil {
				t.Fatal(err)
			}
			b.Stop()
			brokertest.Start(t, b.Dir, u.Host)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, svc, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 1000})
			ctx := ctxT(t)
			w1 := c.As("w1")
			if _, err := w1.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: 4}); err != nil {
				t.Fatal(err)
			}
			before, err := c.Server(ctx, "joesguns")
			if err != nil {
				t.Fatal(err)
			}
			now := float64(time.Now().UnixNano()) / 1e6
			begin := func(id string, threads int, landAt float64) world.BeginReply {
				t.Helper()
				b, err := w1.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpWeaken, Target: "joesguns", Host: "home", Owner: "w1",
					Threads: threads, Start: now, LandAt: landAt})
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			early := begin("early", 1, now+50)
			lands := begin("lands", 2, now+1500)
			begin("settled", 1, now+1500)
			if st, err := w1.Settle(ctx, world.SettleRequest{JobIDs: []string{"settled"}, Reason: "cancelled"}); err != nil || st[0].Applied {
				t.Fatalf("settle: %+v, %v", st, err)
			}
			// early lands on its own before the restart.
			time.Sleep(time.Until(time.UnixMicro(int64(early.LandsAt*1000))) + world.MaxHoldback + 100*time.Millisecond)
			tt.restart(t, b, svc)
			time.Sleep(time.Until(time.UnixMicro(int64(lands.LandsAt*1000))) + world.ResumeHold + world.MaxHoldback + 300*time.Millisecond)
			var after game.Server
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if after, err = c.Server(ctx, "joesguns"); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := before.HackDifficulty - 3*0.05; math.Abs(after.HackDifficulty-want) > 1e-9 {
				t.Errorf("joesguns security %v, want %v: the 1 thread landed before the restart and the 2 begun before it and landing after it, once each, not the 1 settled",
					after.HackDifficulty, want)
			}
			if r, err := w1.FinishAt(ctx, "lands", lands.LandsAt, lands.LandsAt); err != nil || r.LandedAt != lands.LandsAt {
				t.Errorf("its worker's finish: %+v, %v; want the result of its landing", r, err)
			}
		})
	}
}
