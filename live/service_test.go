package live_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/live"
	"github.com/hvmind/hvmind/world"
)

// setupService starts the live game's service beside the executor in the
// fake game, and a world client of it.
func setupService(t *testing.T) (*gameRig, *world.Client) {
	t.Helper()
	r := setupGame(t)
	r.mu.Lock()
	r.observe = true
	r.mu.Unlock()
	r.serve()
	return r, world.NewClient(r.nc)
}

// serve starts the live game's service (stopped at the test's end).
func (r *gameRig) serve() *live.Service {
	r.t.Helper()
	svc, err := live.Serve(context.Background(), r.nc, live.ServiceOptions{Logger: zerolog.Nop()})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(svc.Stop)
	r.svc = svc
	return svc
}

func TestServiceAnswersTheWorldsQuestionsFromTheGame(t *testing.T) {
	t.Parallel()
	_, wc := setupService(t)
	ctx := context.Background()
	servers, err := wc.Servers(ctx)
	if err != nil || len(servers) != 4 {
		t.Fatalf("servers: %d %v", len(servers), err)
	}
	srv, err := wc.Server(ctx, "n00dles")
	if err != nil || srv.MoneyAvailable != 1e6 || srv.HackDifficulty != 5 {
		t.Errorf("n00dles: %+v %v", srv, err)
	}
	if _, err := wc.Server(ctx, "nowhere"); !errors.Is(err, world.ErrUnknownTarget) {
		t.Errorf("an unknown server: %v", err)
	}
	pl, err := wc.Player(ctx)
	if err != nil || pl.HackingLevel != 10 || pl.Money != 1000 {
		t.Errorf("player: %+v %v", pl, err)
	}
	clk, err := wc.Clock(ctx)
	if err != nil || clk.Speed != 1 || clk.Scenario != "live" || math.Abs(clk.GameTimeMs-float64(time.Now().UnixMilli())) > 1000 {
		t.Errorf("clock: %+v %v", clk, err)
	}
	// RAM: the rooted servers with RAM (fortress is not rooted), in
	// threads of 1.75 GB.
	hosts, err := wc.RAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	free := map[string]int{}
	for _, h := range hosts {
		free[h.Hostname] = h.FreeThreads
	}
	if len(free) != 3 || free["home"] != 36 || free["n00dles"] != 2 || free["foodnstuff"] != 9 {
		t.Errorf("free threads %v", free)
	}
	rep, err := wc.ReserveRAM(ctx, world.RAMRequest{Host: "foodnstuff", Owner: "w1", Threads: 6})
	if err != nil || rep.Threads != 6 || rep.FreeThreads != 3 {
		t.Errorf("reserve: %+v %v", rep, err)
	}
	if _, err := wc.ReserveRAM(ctx, world.RAMRequest{Host: "foodnstuff", Owner: "w2", Threads: 4}); !errors.Is(err, world.ErrNoRAM) {
		t.Errorf("a reservation past the free threads: %v", err)
	}
	if _, err := wc.As("w2").ReserveRAM(ctx, world.RAMRequest{Host: "foodnstuff", Owner: "w1", Threads: 1}); !errors.Is(err, world.ErrNotOwner) {
		t.Errorf("a worker reserving for another: %v", err)
	}
	if rep, err := wc.ReleaseRAM(ctx, world.RAMRequest{Host: "foodnstuff", Owner: "w1"}); err != nil || rep.FreeThreads != 9 {
		t.Errorf("release: %+v %v", rep, err)
	}
}

func TestServiceRunsAnOperationInTheGameAndFinishesItWithTheGamesResult(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	w := wc.As("w1")
	if _, err := w.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: 10}); err != nil {
		t.Fatal(err)
	}
	now := float64(time.Now().UnixNano()) / 1e6
	landAt := now + 500
	b, err := w.Begin(ctx, world.BeginRequest{JobID: "h1", Task: "hack", Target: "n00dles", Host: "home", Owner: "w1", Threads: 4, Start: now, LandAt: landAt})
	if err != nil {
		t.Fatal(err)
	}
	if b.DurationRealMs != fakeHackMs || b.Speed != 1 || math.Abs(b.LandsAt-landAt) > 5 || b.SecurityAtStart != 5 || b.MoneyAtStart != 1e6 {
		t.Errorf("begin: %+v", b)
	}
	again, err := w.Begin(ctx, world.BeginRequest{JobID: "h1", Task: "hack", Target: "n00dles", Host: "home", Owner: "w1", Threads: 4, Start: now, LandAt: landAt})
	if err != nil || again.StartedAt != b.StartedAt {
		t.Errorf("a second begin: %+v %v", again, err)
	}
	// Asked before it lands: not yet, which the task asks again after.
	if _, err := w.Finish(ctx, "h1"); !errors.Is(err, world.ErrUnavailable) || !world.Retryable(err) {
		t.Errorf("finish before the landing: %v", err)
	}
	time.Sleep(time.Until(time.UnixMilli(int64(landAt))))
	var res world.Result
	r.waitFor(3*time.Second, "the finish", func() bool {
		res, err = w.Finish(ctx, "h1")
		return err == nil
	})
	if res.Stolen != 400 || !res.Success || res.MoneyBefore != 1e6 || res.MoneyAfter != 1e6-400 || res.Threads != 4 || res.Host != "home" {
		t.Errorf("result: %+v", res)
	}
	if math.Abs(res.LandedAt-landAt) > 150 {
		t.Errorf("landed %.1f ms from its landAt", res.LandedAt-landAt)
	}
	if _, err := wc.As("w2").Finish(ctx, "h1"); !errors.Is(err, world.ErrNotOwner) {
		t.Errorf("another worker's finish: %v", err)
	}
	if _, err := w.Finish(ctx, "never"); !errors.Is(err, world.ErrNotBegun) {
		t.Errorf("finish of a job never begun: %v", err)
	}
}

func TestServiceSettlesByKillingWhatHasNotLanded(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	now := float64(time.Now().UnixNano()) / 1e6
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "wk", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 2, Start: now, LandAt: now + 1500}); err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "gr", Task: "grow", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(3*time.Second, "the grow's landing", func() bool { return len(r.landingsOf("gr")) > 0 })
	sts, err := wc.Settle(ctx, world.SettleRequest{JobIDs: []string{"wk", "gr", "nb"}, Reason: "its worker is gone"})
	if err != nil || len(sts) != 3 {
		t.Fatalf("settle: %+v %v", sts, err)
	}
	if !sts[0].Begun || sts[0].Applied || !sts[1].Applied || sts[1].Result.GrowMultiplier != 1.5 || sts[2].Begun || sts[2].Applied {
		t.Errorf("settlements: %+v", sts)
	}
	time.Sleep(1700 * time.Millisecond)
	if l := r.landingsOf("wk"); len(l) != 0 {
		t.Errorf("the settled weaken landed: %+v", l)
	}
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "nb", Task: "hack", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1}); !errors.Is(err, world.ErrSettled) {
		t.Errorf("a begin of a settled job: %v", err)
	}
	if _, err := wc.Finish(ctx, "wk"); !errors.Is(err, world.ErrSettled) {
		t.Errorf("a finish of a settled job: %v", err)
	}
	// Resume: a running one is taken up, a landed one is its result.
	now = float64(time.Now().UnixNano()) / 1e6
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "run", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now, LandAt: now + 800}); err != nil {
		t.Fatal(err)
	}
	rr, err := wc.As("w1").Resume(ctx, world.ResumeRequest{JobID: "run"})
	if err != nil || rr.Begun == nil || rr.Begun.JobID != "run" {
		t.Errorf("resume of a running operation: %+v %v", rr, err)
	}
	rr, err = wc.As("w1").Resume(ctx, world.ResumeRequest{JobID: "gr"})
	if err != nil || rr.Settlement == nil || !rr.Settlement.Applied {
		t.Errorf("resume of a landed operation: %+v %v", rr, err)
	}
}

func TestServiceKeepsWhatItKnowsAcrossItsRestart(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	now := float64(time.Now().UnixNano()) / 1e6
	if _, err := wc.ReserveRAM(ctx, world.RAMRequest{Host: "foodnstuff", Owner: "w9", Threads: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "k1", Task: "hack", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now, LandAt: now + 300}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(3*time.Second, "k1's landing", func() bool { return len(r.landingsOf("k1")) > 0 })
	// A second service on the same broker: refused while the first runs.
	if _, err := live.Serve(ctx, r.nc, live.ServiceOptions{Logger: zerolog.Nop()}); !errors.Is(err, world.ErrAlreadyRunning) {
		t.Errorf("a second service: %v", err)
	}
	// Stopped and started again, with a weaken begun in between that
	// lands while no service runs: the executor sends it until answered.
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "k2", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now, LandAt: now + 700}); err != nil {
		t.Fatal(err)
	}
	r.svc.Stop()
	time.Sleep(800 * time.Millisecond)
	r.serve()
	res, err := wc.Finish(ctx, "k1")
	if err != nil || res.Stolen != 100 {
		t.Errorf("k1 after the restart: %+v %v", res, err)
	}
	r.waitFor(5*time.Second, "k2's result after the restart", func() bool {
		res, err = wc.Finish(ctx, "k2")
		return err == nil
	})
	if res.SecurityRemoved != 0.05 {
		t.Errorf("k2: %+v", res)
	}
	hosts, err := wc.RAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Hostname == "foodnstuff" && (h.Reservations["w9"] != 5 || h.FreeThreads != 4) {
			t.Errorf("foodnstuff after the restart: %+v", h)
		}
	}
}

func TestServicePlaysOneGameWhenTwoAreConnected(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	played := r.gamesHeard()[0]
	begin := func(id string) {
		t.Helper()
		now := float64(time.Now().UnixNano()) / 1e6
		if _, err := wc.Begin(ctx, world.BeginRequest{JobID: id, Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now}); err != nil {
			t.Fatalf("begin %s: %v", id, err)
		}
	}
	begin("one")
	// A second game, its executor connected to the same broker.
	r.startFakeGame(r.emb.WebSocketURL())
	r.waitFor(10*time.Second, "the second game's hello", func() bool { return len(r.gamesHeard()) == 2 })
	begin("two")
	r.waitFor(3*time.Second, "the landings", func() bool { return len(r.landingsOf("one")) > 0 && len(r.landingsOf("two")) > 0 })
	time.Sleep(time.Second)
	for _, id := range []string{"one", "two"} {
		ls := r.landingsOf(id)
		if len(ls) != 1 || ls[0].Game != played {
			t.Errorf("%s landed %d times (%+v), want once, in game %s", id, len(ls), ls, played)
		}
	}
	// The played game's executor stops for good: the other one is played.
	r.send("kill-executor")
	r.waitFor(20*time.Second, "a begin in the other game", func() bool {
		id := fmt.Sprintf("next-%d", time.Now().UnixNano())
		now := float64(time.Now().UnixNano()) / 1e6
		_, err := wc.Begin(ctx, world.BeginRequest{JobID: id, Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now})
		return err == nil
	})
}

func TestASecondExecutorInOneGameDoesNotStart(t *testing.T) {
	t.Parallel()
	r := setupGame(t)
	r.send("second-executor")
	r.waitFor(5*time.Second, "the second executor's refusal", func() bool {
		return r.out.has("already runs") && r.out.has("second executor ended")
	})
}
