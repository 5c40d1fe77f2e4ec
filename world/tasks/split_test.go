package tasks

import (
	"context"
	"math"
	"testing"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

func TestHackSplitChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		pct     float64
		threads int
		parts   int
		want    float64
	}{
		{"whole", 0.001, 10, 1, 0},
		{"two halves", 0.001, 10, 2, 1 - (1-(1-0.005)*(1-0.005))/0.01},
		{"nothing to steal", 0, 10, 5, 0},
		// A hack that would take everything takes everything in parts too,
		// less what the first parts left.
		{"all of it", 0.1, 10, 2, 1 - (1 - 0.5*0.5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := hackSplitChange(tc.pct, tc.threads, tc.parts); math.Abs(got-math.Abs(tc.want)) > 1e-12 {
				t.Errorf("hackSplitChange(%v, %d, %d) = %v, want %v", tc.pct, tc.threads, tc.parts, got, math.Abs(tc.want))
			}
		})
	}
}

// The more parts, the further a hack's or grow's effect moves: maxParts
// stops at the last count within the tolerance.
func TestMaxPartsWithinTolerance(t *testing.T) {
	t.Parallel()
	sc, err := game.LoadScenario("newgame")
	if err != nil {
		t.Fatal(err)
	}
	// foodnstuff grows slowly: 40 threads do not reach its maximum from a
	// tenth of it.
	food, _ := sc.Server("foodnstuff")
	food.MoneyAvailable = food.MoneyMax / 10
	h := sc.Player.Hacker()
	for _, task := range []string{game.OpHack, game.OpGrow} {
		for _, tol := range []float64{1e-6, 0.001, 0.01, 0.1} {
			n := maxParts(task, food, h, 40, tol)
			var at, next float64
			if task == game.OpHack {
				pct := game.HackPercent(food, h)
				at, next = hackSplitChange(pct, 40, n), hackSplitChange(pct, 40, n+1)
			} else {
				at, next = growSplitChange(food, h, 40, n), growSplitChange(food, h, 40, n+1)
			}
			if at == 0 && next == 0 {
				t.Fatalf("%s: no change of effect at all: the case tests nothing", task)
			}
			if n < 1 || (n > 1 && at > tol) || (n < min(40, maxEstimatedParts) && next <= tol) {
				t.Errorf("%s within %v: %d parts (change %v; %d parts: %v)", task, tol, n, at, n+1, next)
			}
		}
	}
}

// The policy of a pool running the world's tasks asks the world about
// hack and grow only.
func TestSplitPolicy(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	svc, err := world.Serve(context.Background(), b.Connect(t), world.Options{Scenario: "newgame", Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	c := world.NewClient(b.Connect(t))
	ctx := context.Background()
	loose, none := SplitPolicy(c, 0.05), SplitPolicy(c, 0)
	for _, tc := range []struct {
		name    string
		policy  pool.SplitPolicy
		job     job.Job
		atMost  int
		atLeast int
	}{
		{"sleep splits exactly", loose, job.Job{Task: "sleep", Threads: 10}, pool.Unlimited, pool.Unlimited},
		{"weaken splits exactly", none, job.Job{Task: game.OpWeaken, Args: []any{"n00dles"}, Threads: 10}, pool.Unlimited, pool.Unlimited},
		{"hack within tolerance", loose, job.Job{Task: game.OpHack, Args: []any{"n00dles"}, Threads: 10}, 10, 2},
		{"grow within tolerance", loose, job.Job{Task: game.OpGrow, Args: []any{"n00dles"}, Threads: 10}, 10, 2},
		{"no tolerance, no split", none, job.Job{Task: game.OpHack, Args: []any{"n00dles"}, Threads: 10}, 1, 1},
		{"unknown target", loose, job.Job{Task: game.OpHack, Args: []any{"nowhere"}, Threads: 10}, 1, 1},
		{"no target", loose, job.Job{Task: game.OpGrow, Threads: 10}, 1, 1},
		{"another task", loose, job.Job{Task: "resize", Threads: 10}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if n := tc.policy.MaxParts(ctx, &tc.job); n < tc.atLeast || n > tc.atMost {
				t.Errorf("MaxParts = %d, want %d to %d", n, tc.atLeast, tc.atMost)
			}
		})
	}
}
