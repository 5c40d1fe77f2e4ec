package world_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// serve runs a world service on its own connection to b; it stops when the
// test ends (or earlier, by the caller).
func serve(t *testing.T, b *brokertest.Broker, o world.Options) (*world.Service, *nats.Conn) {
	t.Helper()
	nc := b.Connect(t)
	o.Logger = brokertest.Logger(t)
	if !o.FormulasOnly && !rulesTest(t) {
		// These tests begin and finish operations directly: the rules
		// for callers have tests of their own (rules_test.go).
		o.FormulasOnly = true
	}
	svc, err := world.Serve(context.Background(), nc, o)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(svc.Stop)
	return svc, nc
}

func newWorld(t *testing.T, o world.Options) (*brokertest.Broker, *world.Service, *world.Client) {
	t.Helper()
	b := brokertest.New(t)
	svc, _ := serve(t, b, o)
	return b, svc, world.NewClient(b.Connect(t))
}

func mustScenario(t *testing.T, name string) *game.Scenario {
	t.Helper()
	sc, err := game.LoadScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func mustServer(t *testing.T, sc *game.Scenario, name string) game.Server {
	t.Helper()
	s, ok := sc.Server(name)
	if !ok {
		t.Fatalf("no server %q", name)
	}
	return *s
}

func run(t *testing.T, c *world.Client, id, task, target string, threads int) world.Result {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: task, Target: target, Host: "home", Threads: threads}); err != nil {
		t.Fatalf("begin %s %s %s: %v", id, task, target, err)
	}
	r, err := c.Finish(ctx, id)
	if err != nil {
		t.Fatalf("finish %s: %v", id, err)
	}
	return r
}

// hackID finds a job id whose roll under seed succeeds (or fails) at chance.
func hackID(seed int64, chance float64, success bool) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("hack-%d", i)
		if (world.HackRoll(seed, id) < chance) == success {
			return id
		}
	}
}

func TestOperationsFollowTheFormulas(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "newgame")
	p := sc.Player
	h := p.Hacker()
	const seed = 42
	const speed = 1000
	n00dles := mustServer(t, sc, "n00dles")
	food := mustServer(t, sc, "foodnstuff")
	chance := game.HackChance(&n00dles, h)

	tests := []struct {
		name    string
		task    string
		target  game.Server
		threads int
		id      string
		// want computes the target's money and security after, the
		// stolen money and success, from the formulas.
		wantDuration float64
		want         func(s game.Server) (money, sec, stolen float64, success bool)
	}{
		{
			name: "hack succeeds", task: game.OpHack, target: n00dles, threads: 10,
			id: hackID(seed, chance, true), wantDuration: game.HackTimeMs(&n00dles, h),
			want: func(s game.Server) (float64, float64, float64, bool) {
				pct := game.HackPercent(&s, h)
				stolen := game.HackStolen(s.MoneyAvailable, pct, 10)
				return s.MoneyAvailable - stolen, game.ClampSecurity(&s, s.HackDifficulty+game.HackSecurityIncrease(10, pct)), stolen, true
			},
		},
		{
			name: "hack fails", task: game.OpHack, target: n00dles, threads: 10,
			id: hackID(seed, chance, false), wantDuration: game.HackTimeMs(&n00dles, h),
			want: func(s game.Server) (float64, float64, float64, bool) {
				return s.MoneyAvailable, s.HackDifficulty, 0, false
			},
		},
		{
			name: "grow", task: game.OpGrow, target: food, threads: 100, id: "grow-1",
			wantDuration: game.GrowTimeMs(&food, h),
			want: func(s game.Server) (float64, float64, float64, bool) {
				money, inc := game.GrowEffect(&s, h, 100, 1)
				return money, game.ClampSecurity(&s, s.HackDifficulty+inc), 0, true
			},
		},
		{
			name: "weaken", task: game.OpWeaken, target: food, threads: 20, id: "weaken-1",
			wantDuration: game.WeakenTimeMs(&food, h),
			want: func(s game.Server) (float64, float64, float64, bool) {
				return s.MoneyAvailable, s.HackDifficulty - game.WeakenAmount(20, 1), 0, true
			},
		},
		{
			name: "weaken stops at the minimum", task: game.OpWeaken, target: food, threads: 1000, id: "weaken-2",
			wantDuration: game.WeakenTimeMs(&food, h),
			want: func(s game.Server) (float64, float64, float64, bool) {
				return s.MoneyAvailable, s.MinDifficulty, 0, true
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: speed, Seed: seed})
			ctx := ctxT(t)
			b, err := c.Begin(ctx, world.BeginRequest{JobID: tc.id, Task: tc.task, Target: tc.target.Hostname, Host: "home", Threads: tc.threads})
			if err != nil {
				t.Fatal(err)
			}
			if b.DurationGameMs != tc.wantDuration || b.DurationRealMs != tc.wantDuration/speed {
				t.Errorf("duration %v game / %v real ms, want %v / %v", b.DurationGameMs, b.DurationRealMs, tc.wantDuration, tc.wantDuration/speed)
			}
			if b.LevelAtStart != 1 || b.SecurityAtStart != tc.target.HackDifficulty || b.MoneyAtStart != tc.target.MoneyAvailable || b.Cores != 1 {
				t.Errorf("begin %+v", b)
			}
			r, err := c.Finish(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			money, sec, stolen, success := tc.want(tc.target)
			if r.MoneyAfter != money || r.SecurityAfter != sec || r.Stolen != stolen || r.Success != success {
				t.Errorf("result money %v sec %v stolen %v success %v; want %v %v %v %v",
					r.MoneyAfter, r.SecurityAfter, r.Stolen, r.Success, money, sec, stolen, success)
			}
			if r.MoneyBefore != tc.target.MoneyAvailable || r.SecurityBefore != tc.target.HackDifficulty ||
				r.DurationGameMs != tc.wantDuration || r.LevelAtStart != 1 || r.Seq != 1 {
				t.Errorf("result %+v", r)
			}
			switch tc.task {
			case game.OpGrow:
				if want := money / tc.target.MoneyAvailable; r.GrowMultiplier != want {
					t.Errorf("grow multiplier %v, want %v", r.GrowMultiplier, want)
				}
			case game.OpWeaken:
				want := game.WeakenAmount(tc.threads, 1)
				if sec == tc.target.MinDifficulty {
					want = tc.target.HackDifficulty - sec
				}
				if r.SecurityRemoved != want {
					t.Errorf("security removed %v, want %v", r.SecurityRemoved, want)
				}
			case game.OpHack:
				if r.Roll != world.HackRoll(seed, tc.id) || r.Chance != chance {
					t.Errorf("roll %v chance %v", r.Roll, r.Chance)
				}
			}
			// The world shows the same.
			s, err := c.Server(ctx, tc.target.Hostname)
			if err != nil {
				t.Fatal(err)
			}
			if s.MoneyAvailable != money || s.HackDifficulty != sec {
				t.Errorf("server money %v sec %v, want %v %v", s.MoneyAvailable, s.HackDifficulty, money, sec)
			}
			pl, err := c.Player(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exp := game.ExpPerThread(&tc.target, p.Mults, success) * float64(tc.threads)
			if pl.Money != p.Money+stolen || pl.HackingExp != exp || r.Exp != exp || pl.HackingLevel != game.HackingLevel(exp, 1) {
				t.Errorf("player %+v, result exp %v; want money %v exp %v", pl, r.Exp, p.Money+stolen, exp)
			}
		})
	}
}

// The duration is fixed when an operation starts; its effect uses the
// target's security and the player's level when it ends.
func TestDurationAtStartEffectAtEnd(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "newgame")
	h := sc.Player.Hacker()
	food := mustServer(t, sc, "foodnstuff")
	_, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 100})
	ctx := ctxT(t)

	// A weaken begins at security 10; a grow then raises security; the
	// weaken's effect starts from the grown security.
	b, err := c.Begin(ctx, world.BeginRequest{JobID: "w", Task: game.OpWeaken, Target: "foodnstuff", Host: "home", Threads: 5})
	if err != nil {
		t.Fatal(err)
	}
	g := run(t, c, "g", game.OpGrow, "foodnstuff", 200)
	if !(g.SecurityAfter > food.HackDifficulty) {
		t.Fatalf("grow did not raise security: %+v", g)
	}
	w, err := c.Finish(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if w.DurationGameMs != game.WeakenTimeMs(&food, h) || w.DurationGameMs != b.DurationGameMs {
		t.Errorf("weaken duration %v, want the one at its start %v", w.DurationGameMs, game.WeakenTimeMs(&food, h))
	}
	if w.SecurityAtStart != food.HackDifficulty || w.SecurityBefore != g.SecurityAfter {
		t.Errorf("weaken security at start %v before %v; want %v and the grown %v", w.SecurityAtStart, w.SecurityBefore, food.HackDifficulty, g.SecurityAfter)
	}
	if want := g.SecurityAfter - game.WeakenAmount(5, 1); w.SecurityAfter != want {
		t.Errorf("weaken security after %v, want %v", w.SecurityAfter, want)
	}
	if w.LevelAtEnd != game.HackingLevel(g.Exp, 1) {
		t.Errorf("level at end %d, want the level after the grow's exp %d", w.LevelAtEnd, game.HackingLevel(g.Exp, 1))
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	begin := func(task, target, host string, threads int) error {
		_, err := c.Begin(ctx, world.BeginRequest{JobID: "e-" + task + "-" + target + "-" + host, Task: task, Target: target, Host: host, Threads: threads})
		return err
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"unknown target", begin(game.OpHack, "nowhere", "home", 1), world.ErrUnknownTarget},
		{"no root on the target", begin(game.OpWeaken, "CSEC", "home", 1), game.ErrNoRoot},
		{"level too low", begin(game.OpHack, "joesguns", "home", 1), game.ErrLevelTooLow},
		{"unknown host", begin(game.OpGrow, "n00dles", "elsewhere", 1), world.ErrUnknownHost},
		{"host without root", begin(game.OpGrow, "n00dles", "CSEC", 1), game.ErrNoRoot},
		{"no threads", begin(game.OpGrow, "n00dles", "home", 0), world.ErrInvalid},
		{"unknown task", begin("share", "n00dles", "home", 1), world.ErrInvalid},
		{"finish without begin", func() error { _, err := c.Finish(ctx, "never"); return err }(), world.ErrNotBegun},
		{"RAM that does not fit", func() error {
			_, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: 5}) // 8.75 GB of 8
			return err
		}(), world.ErrNoRAM},
		{"RAM on an unknown host", func() error {
			_, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "elsewhere", Owner: "w1", Threads: 1})
			return err
		}(), world.ErrUnknownHost},
		{"RAM on a host without root", func() error {
			_, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "CSEC", Owner: "w1", Threads: 1})
			return err
		}(), game.ErrNoRoot},
		{"unknown server", func() error { _, err := c.Server(ctx, "nowhere"); return err }(), world.ErrUnknownTarget},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("error %v, want %v", tc.err, tc.want)
			}
			t.Logf("%v", tc.err)
		})
	}
	// Nothing of that changed the world.
	pl, err := c.Player(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pl.HackingExp != 0 || pl.Money != mustScenario(t, "newgame").Player.Money {
		t.Errorf("player changed: %+v", pl)
	}
}

func TestFinishTwiceAppliesOnce(t *testing.T) {
	t.Parallel()
	const seed = 7
	sc := mustScenario(t, "newgame")
	n00dles := mustServer(t, sc, "n00dles")
	_, _, c := newWorld(t, world.Options{Scenario: "newgame", Seed: seed})
	ctx := ctxT(t)
	id := hackID(seed, game.HackChance(&n00dles, sc.Player.Hacker()), true)
	first := run(t, c, id, game.OpHack, "n00dles", 50)
	if !first.Success || !(first.Stolen > 0) {
		t.Fatalf("hack: %+v", first)
	}
	second, err := c.Finish(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, second) {
		t.Errorf("second finish %+v, want %+v", second, first)
	}
	// Beginning it again is answered with its begin, and finishing with
	// the same result.
	b, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpHack, Target: "n00dles", Host: "home", Threads: 50})
	if err != nil || b.DurationGameMs != first.DurationGameMs {
		t.Errorf("begin again: %+v, %v", b, err)
	}
	third, err := c.Finish(ctx, id)
	if err != nil || !reflect.DeepEqual(first, third) {
		t.Errorf("third finish %+v, %v", third, err)
	}
	pl, err := c.Player(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Money != sc.Player.Money+first.Stolen || pl.HackingExp != first.Exp {
		t.Errorf("player money %v exp %v; want %v %v (applied once)", pl.Money, pl.HackingExp, sc.Player.Money+first.Stolen, first.Exp)
	}
	s, err := c.Server(ctx, "n00dles")
	if err != nil || s.MoneyAvailable != first.MoneyAfter || s.HackDifficulty != first.SecurityAfter {
		t.Errorf("n00dles %+v, %v", s, err)
	}
}

func TestBeginWithoutFinishAppliesNothing(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "newgame")
	_, _, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	for i, task := range []string{game.OpHack, game.OpGrow, game.OpWeaken} {
		if _, err := c.Begin(ctx, world.BeginRequest{JobID: fmt.Sprint("dead-", i), Task: task, Target: "foodnstuff", Host: "home", Threads: 100}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sc.Servers) {
		t.Error("servers changed by operations that never finished")
	}
	pl, err := c.Player(ctx)
	if err != nil || pl.Player() != sc.Player {
		t.Errorf("player %+v, %v; want %+v", pl, err, sc.Player)
	}
}

func TestRAM(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	steps := []struct {
		name      string
		release   bool
		req       world.RAMRequest
		wantFree  int
		wantUsed  float64
		wantErr   error
		wantOwner int
	}{
		{"reserve", false, world.RAMRequest{Host: "foodnstuff", Owner: "w1", Threads: 4}, 5, 7, nil, 4},
		{"again: idempotent", false, world.RAMRequest{Host: "foodnstuff", Owner: "w1", Threads: 4}, 5, 7, nil, 4},
		{"another owner", false, world.RAMRequest{Host: "foodnstuff", Owner: "w2", Threads: 5}, 0, 15.75, nil, 5},
		{"does not fit", false, world.RAMRequest{Host: "foodnstuff", Owner: "w3", Threads: 1}, 0, 15.75, world.ErrNoRAM, 0},
		{"shrink", false, world.RAMRequest{Host: "foodnstuff", Owner: "w1", Threads: 1}, 3, 10.5, nil, 1},
		{"release", true, world.RAMRequest{Host: "foodnstuff", Owner: "w2"}, 8, 1.75, nil, 0},
		{"release again", true, world.RAMRequest{Host: "foodnstuff", Owner: "w2"}, 8, 1.75, nil, 0},
		{"release the last", true, world.RAMRequest{Host: "foodnstuff", Owner: "w1"}, 9, 0, nil, 0},
	}
	for _, st := range steps {
		var r world.RAMReply
		var err error
		if st.release {
			r, err = c.ReleaseRAM(ctx, st.req)
		} else {
			r, err = c.ReserveRAM(ctx, st.req)
		}
		if st.wantErr != nil {
			if !errors.Is(err, st.wantErr) {
				t.Errorf("%s: error %v, want %v", st.name, err, st.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if r.FreeThreads != st.wantFree || r.RAMUsed != st.wantUsed || r.Threads != st.wantOwner {
			t.Errorf("%s: free %d used %v owner %d; want %d %v %d", st.name, r.FreeThreads, r.RAMUsed, r.Threads, st.wantFree, st.wantUsed, st.wantOwner)
		}
	}
	if _, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "home", Owner: "w1", Threads: 4}); err != nil {
		t.Fatal(err)
	}
	hosts, err := c.RAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 8 || hosts[0].Hostname != "home" || hosts[0].FreeThreads != 0 || hosts[0].Reservations["w1"] != 4 {
		t.Errorf("hosts %+v", hosts)
	}
}

// ops runs a fixed mix of operations sequentially and returns the results.
func ops(t *testing.T, c *world.Client, prefix string, n int) []world.Result {
	t.Helper()
	targets := []string{"n00dles", "foodnstuff"}
	out := make([]world.Result, 0, n)
	for i := 0; i < n; i++ {
		task := []string{game.OpHack, game.OpHack, game.OpGrow, game.OpWeaken}[i%4]
		out = append(out, run(t, c, fmt.Sprintf("%s-%d", prefix, i), task, targets[(i/4)%2], 1+i%7))
	}
	return out
}

func stateOf(t *testing.T, c *world.Client) ([]game.Server, world.PlayerInfo, []world.HostRAM) {
	t.Helper()
	ctx := ctxT(t)
	servers, err := c.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := c.Player(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := c.RAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return servers, pl, hosts
}

func sameState(t *testing.T, what string, c *world.Client, servers []game.Server, pl world.PlayerInfo, hosts []world.HostRAM) {
	t.Helper()
	s2, p2, h2 := stateOf(t, c)
	if !reflect.DeepEqual(s2, servers) || !reflect.DeepEqual(p2, pl) || !reflect.DeepEqual(h2, hosts) {
		t.Errorf("%s: state not resumed:\nplayer %+v\nwant   %+v", what, p2, pl)
	}
}

func TestServiceRestartResumes(t *testing.T) {
	t.Parallel()
	for _, crash := range []bool{false, true} {
		name := "stop"
		if crash {
			name = "crash" // no last snapshot: the journal is replayed
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := brokertest.New(t)
			// Snapshots only at stop: a crash leaves the whole journal to replay.
			o := world.Options{Scenario: "newgame", Speed: 1000, Seed: 3, SnapshotEvery: time.Hour}
			svc, nc := serve(t, b, o)
			c := world.NewClient(b.Connect(t))
			ctx := ctxT(t)
			before := ops(t, c, "batch.7.op", 40) // dots in ids are escaped in keys
			if _, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "foodnstuff", Owner: "w1", Threads: 3}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Begin(ctx, world.BeginRequest{JobID: ".open.", Task: game.OpGrow, Target: "n00dles", Host: "home", Threads: 9}); err != nil {
				t.Fatal(err)
			}
			servers, pl, hosts := stateOf(t, c)
			if crash {
				nc.Close() // the last snapshot cannot be written
			}
			svc.Stop()

			// Serve again: without --scenario it resumes whatever is stored.
			serve(t, b, world.Options{Speed: 1000, Seed: 3})
			sameState(t, "after restart", c, servers, pl, hosts)
			// A finish repeated after the restart returns the same result
			// and applies nothing; so does a begin and finish again.
			for _, r := range before[len(before)-5:] {
				again, err := c.Finish(ctx, r.JobID)
				if err != nil || !reflect.DeepEqual(again, r) {
					t.Errorf("finish %s again: %+v, %v; want %+v", r.JobID, again, err, r)
				}
				if _, err := c.Begin(ctx, world.BeginRequest{JobID: r.JobID, Task: r.Task, Target: r.Target, Host: "home", Threads: r.Threads}); err != nil {
					t.Error(err)
				}
				if again, err := c.Finish(ctx, r.JobID); err != nil || !reflect.DeepEqual(again, r) {
					t.Errorf("begin+finish %s again: %+v, %v", r.JobID, again, err)
				}
			}
			sameState(t, "after repeated finishes", c, servers, pl, hosts)
			// The operation begun before the restart finishes after it.
			g, err := c.Finish(ctx, ".open.")
			if err != nil || g.Task != game.OpGrow || g.Threads != 9 || g.Seq != uint64(len(before))+2 {
				t.Errorf("finish of an operation begun before the restart: %+v, %v", g, err)
			}
		})
	}
}

func TestScenarioMismatchAndReset(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	svc, _ := serve(t, b, world.Options{Scenario: "newgame"})
	c := world.NewClient(b.Connect(t))
	run(t, c, "w", game.OpWeaken, "foodnstuff", 1)
	if _, err := world.Serve(context.Background(), b.Connect(t), world.Options{Scenario: "newgame"}); !errors.Is(err, world.ErrAlreadyRunning) {
		t.Errorf("second service: %v, want ErrAlreadyRunning", err)
	}
	svc.Stop()
	_, err := world.Serve(context.Background(), b.Connect(t), world.Options{Scenario: "reference-880"})
	if !errors.Is(err, world.ErrScenarioMismatch) {
		t.Fatalf("other scenario: %v, want ErrScenarioMismatch", err)
	}
	t.Log(err)
	serve(t, b, world.Options{Scenario: "reference-880", Reset: true})
	ref := mustScenario(t, "reference-880")
	servers, pl, _ := stateOf(t, c)
	if !reflect.DeepEqual(servers, ref.Servers) || pl.Player() != ref.Player {
		t.Error("reset did not start from reference-880")
	}
	if _, err := c.Finish(ctxT(t), "w"); !errors.Is(err, world.ErrNotBegun) {
		t.Errorf("an operation of the discarded world: %v, want ErrNotBegun", err)
	}
}

func TestBrokerRestartResumes(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	o := world.Options{Scenario: "newgame", Speed: 1000, Seed: 5}
	svc, _ := serve(t, b, o)
	c := world.NewClient(b.Connect(t))
	ctx := ctxT(t)
	ops(t, c, "a", 30)
	if _, err := c.ReserveRAM(ctx, world.RAMRequest{Host: "joesguns", Owner: "w9", Threads: 2}); err != nil {
		t.Fatal(err)
	}
	// A service that stays up while the broker restarts carries on.
	b.Stop()
	b = brokertest.Start(t, b.Dir, u.Host)
	var r world.Result
	deadline := time.Now().Add(15 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.Begin(actx, world.BeginRequest{JobID: "after", Task: game.OpWeaken, Target: "foodnstuff", Host: "home", Threads: 1})
		if err == nil {
			r, err = c.Finish(actx, "after")
		}
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after the broker restarted: %v", err)
	}
	servers, pl, hosts := stateOf(t, c)
	if r.SecurityAfter != serverOf(t, servers, "foodnstuff").HackDifficulty {
		t.Error("the operation after the broker restart was not applied")
	}

	// Stop both; start the broker, then the service: the world is there.
	svc.Stop()
	b.Stop()
	b = brokertest.Start(t, b.Dir, u.Host)
	serve(t, b, o)
	sameState(t, "after restarting broker and service", c, servers, pl, hosts)
}

func serverOf(t *testing.T, servers []game.Server, name string) game.Server {
	t.Helper()
	for _, s := range servers {
		if s.Hostname == name {
			return s
		}
	}
	t.Fatalf("no server %s", name)
	return game.Server{}
}

// The player's money rises by exactly the sum of what the hacks stole.
// Operations run concurrently; summing the stolen money in the order the
// world applied the hacks (by Seq) repeats the world's own additions, so
// the totals are equal to the last bit.
func TestMoneyIsConserved(t *testing.T) {
	t.Parallel()
	for _, scenario := range []string{"newgame", "reference-880"} {
		t.Run(scenario, func(t *testing.T) {
			t.Parallel()
			sc := mustScenario(t, scenario)
			b, svc, c := newWorld(t, world.Options{Scenario: scenario, Speed: 1e6, Seed: 11})
			var targets []string
			for _, s := range sc.Servers {
				if s.HasAdminRights && s.MoneyMax > 0 && s.RequiredHackingSkill <= sc.Player.HackingLevel()+20 {
					targets = append(targets, s.Hostname)
				}
			}
			sort.Strings(targets)
			const workers, perWorker = 8, 200 // 1,600 operations
			var (
				mu       sync.Mutex
				results  []world.Result
				tooLow   int
				failures []error
			)
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := ctxT(t)
					for i := 0; i < perWorker; i++ {
						id := fmt.Sprintf("w%d-%d", w, i)
						task := []string{game.OpHack, game.OpHack, game.OpGrow, game.OpWeaken}[(i+w)%4]
						target := targets[(i*7+w)%len(targets)]
						_, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: task, Target: target, Host: "home", Threads: 1 + (i*13+w)%40})
						if errors.Is(err, game.ErrLevelTooLow) {
							mu.Lock()
							tooLow++
							mu.Unlock()
							continue
						}
						var r world.Result
						if err == nil {
							r, err = c.Finish(ctx, id)
						}
						mu.Lock()
						if err != nil {
							failures = append(failures, err)
						} else {
							results = append(results, r)
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(failures) > 0 {
				t.Fatalf("%d operations failed, first: %v", len(failures), failures[0])
			}
			sort.Slice(results, func(i, j int) bool { return results[i].Seq < results[j].Seq })
			money, exp := sc.Player.Money, sc.Player.HackingExp
			hacks, successes := 0, 0
			for i, r := range results {
				if r.Seq != uint64(i+1) {
					t.Fatalf("result %d has seq %d", i, r.Seq)
				}
				money += r.Stolen
				exp += r.Exp
				if r.Task == game.OpHack {
					hacks++
					if r.Success {
						successes++
					}
				} else if r.Stolen != 0 {
					t.Fatalf("%s stole %v", r.Task, r.Stolen)
				}
			}
			pl, err := c.Player(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d operations (%d hacks, %d succeeded; %d refused for level), player money %s → %s",
				len(results), hacks, successes, tooLow, fmtMoney(sc.Player.Money), fmtMoney(pl.Money))
			if pl.Money != money {
				t.Errorf("player money %v, want initial + sum of stolen = %v (diff %g)", pl.Money, money, pl.Money-money)
			}
			if pl.HackingExp != exp {
				t.Errorf("player exp %v, want %v", pl.HackingExp, exp)
			}
			if successes == 0 || (scenario == "newgame" && successes == hacks) {
				t.Errorf("%d of %d hacks succeeded: want a mix", successes, hacks)
			}
			// And it survives a restart.
			svc.Stop()
			serve(t, b, world.Options{Speed: 1e6, Seed: 11})
			if pl2, err := c.Player(ctxT(t)); err != nil || pl2.Money != money {
				t.Errorf("after restart: player money %v (%v), want %v", pl2.Money, err, money)
			}
		})
	}
}

func fmtMoney(v float64) string { return fmt.Sprintf("$%.3e", v) }

func TestDeterministicRolls(t *testing.T) {
	t.Parallel()
	runWith := func(seed int64) []world.Result {
		_, _, c := newWorld(t, world.Options{Scenario: "newgame", Speed: 1000, Seed: seed})
		return ops(t, c, "d", 60)
	}
	var a, b, other []world.Result
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a = runWith(1) }()
	go func() { defer wg.Done(); b = runWith(1) }()
	go func() { defer wg.Done(); other = runWith(2) }()
	wg.Wait()
	if t.Failed() {
		return
	}
	// The same but for when they ran.
	for _, rs := range [][]world.Result{a, b, other} {
		for i := range rs {
			rs[i].StartedAt, rs[i].LandedAt = 0, 0
		}
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Error("the same seed and operations gave different results")
	}
	differ := 0
	for i := range a {
		if a[i].Task == game.OpHack && a[i].Success != other[i].Success {
			differ++
		}
	}
	if differ == 0 {
		t.Error("another seed gave the same hack outcomes")
	}
}

func TestHackRoll(t *testing.T) {
	t.Parallel()
	const n = 20000
	sum := 0.0
	below := 0
	for i := 0; i < n; i++ {
		r := world.HackRoll(99, fmt.Sprint("job-", i))
		if r < 0 || r >= 1 {
			t.Fatalf("roll %v out of [0, 1)", r)
		}
		if r != world.HackRoll(99, fmt.Sprint("job-", i)) {
			t.Fatal("roll not deterministic")
		}
		sum += r
		if r < 0.25 {
			below++
		}
	}
	if mean := sum / n; math.Abs(mean-0.5) > 0.01 {
		t.Errorf("mean roll %v, want about 0.5", mean)
	}
	if f := float64(below) / n; math.Abs(f-0.25) > 0.01 {
		t.Errorf("%v of rolls below 0.25, want about 0.25", f)
	}
}

// The service is a NATS micro service: `nats micro ls` finds it.
func TestMicroService(t *testing.T) {
	t.Parallel()
	b, _, _ := newWorld(t, world.Options{})
	msg, err := b.Connect(t).Request("$SRV.INFO."+world.ServiceName, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Name      string `json:"name"`
		Endpoints []struct {
			Subject string `json:"subject"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != world.ServiceName || len(info.Endpoints) != 17 { // 11, and 6 a worker asks on for itself
		t.Errorf("service info %s", msg.Data)
	}
	// Raw requests, as from the nats CLI.
	nc := b.Connect(t)
	reply, err := nc.Request(world.SubjectServer, []byte("n00dles"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var s game.Server
	if err := json.Unmarshal(reply.Data, &s); err != nil || s.Hostname != "n00dles" {
		t.Errorf("server reply %s (%v)", reply.Data, err)
	}
	reply, err = nc.Request(world.SubjectBegin, []byte(`{"jobId": "x", "task": "hack", "bogus": 1}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var er world.ErrorReply
	if err := json.Unmarshal(reply.Data, &er); err != nil || er.Code != world.CodeInvalid {
		t.Errorf("malformed begin: %s", reply.Data)
	}
}

// rulesTest reports whether t tests the rules for callers.
func rulesTest(t *testing.T) bool { return strings.HasPrefix(t.Name(), "TestRules") }

// A world that resumes after a restart holds the finishes it receives and
// applies them in the order they landed, those of operations begun before
// the restart (which it must read from its store) among the others: the
// chaos test saw a pool kill apply a batch's hacks before the grows and
// weakens begun before the kill, and drain the target.
func TestResumeOrdersOperationsBegunBeforeTheRestart(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	o := world.Options{Scenario: "newgame", Speed: 60, Seed: 5}
	svc, _ := serve(t, b, o)
	c := world.NewClient(b.Connect(t))
	ctx := ctxT(t)
	begin := func(id string) {
		t.Helper()
		if _, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpWeaken, Target: "n00dles", Host: "home", Threads: 1}); err != nil {
			t.Fatalf("begin %s: %v", id, err)
		}
	}
	for i := range 5 {
		begin(fmt.Sprintf("old-%d", i))
	}
	svc.Stop()
	serve(t, b, world.Options{Speed: 60, Seed: 5})
	for i := range 5 {
		begin(fmt.Sprintf("new-%d", i))
	}
	// They landed alternately, old-0 first; the new ones' finishes come
	// first, as after a restart the workers' retries come in any order.
	t0 := float64(time.Now().Add(-time.Second).UnixMilli())
	var wg sync.WaitGroup
	seqs := map[string]uint64{}
	var mu sync.Mutex
	finish := func(id string, end float64) {
		defer wg.Done()
		r, err := c.FinishAt(ctx, id, end, end)
		if err != nil {
			t.Errorf("finish %s: %v", id, err)
			return
		}
		mu.Lock()
		seqs[id] = r.Seq
		mu.Unlock()
	}
	for i := range 5 {
		wg.Add(1)
		go finish(fmt.Sprintf("new-%d", i), t0+float64(20*i+10))
	}
	time.Sleep(100 * time.Millisecond)
	for i := range 5 {
		wg.Add(1)
		go finish(fmt.Sprintf("old-%d", i), t0+float64(20*i))
	}
	wg.Wait()
	order := make([]string, 0, 10)
	for id := range seqs {
		order = append(order, id)
	}
	sort.Slice(order, func(i, j int) bool { return seqs[order[i]] < seqs[order[j]] })
	want := []string{"old-0", "new-0", "old-1", "new-1", "old-2", "new-2", "old-3", "new-3", "old-4", "new-4"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("applied in the order %v, want %v", order, want)
	}
}

// A world whose broker comes back holds the finishes its workers send
// again and applies them in the order they landed, not as they arrive.
func TestBrokerBackOrdersLateFinishes(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := serve(t, b, world.Options{Scenario: "newgame", Speed: 60, Seed: 5})
	c := world.NewClient(b.Connect(t))
	ctx := ctxT(t)
	for _, id := range []string{"a", "b"} {
		if _, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpWeaken, Target: "n00dles", Host: "home", Threads: 1}); err != nil {
			t.Fatal(err)
		}
	}
	t0 := float64(time.Now().UnixMilli())
	b.Stop()
	b = brokertest.Start(t, b.Dir, u.Host)
	// Both landed while the broker was away, a first; b's finish comes
	// back first.
	seqs := map[string]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	finish := func(id string, end float64) {
		defer wg.Done()
		for deadline := time.Now().Add(15 * time.Second); ; {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := c.FinishAt(actx, id, end, end)
			cancel()
			if err == nil {
				mu.Lock()
				seqs[id] = r.Seq
				mu.Unlock()
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("finish %s: %v", id, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wg.Add(1)
	go finish("b", t0+10)
	time.Sleep(300 * time.Millisecond)
	wg.Add(1)
	go finish("a", t0)
	wg.Wait()
	svc.Stop() // while its broker runs: it saves its snapshot
	if seqs["a"] == 0 || seqs["a"] > seqs["b"] {
		t.Errorf("applied b (seq %d) before a (seq %d), which landed first", seqs["b"], seqs["a"])
	}
}
