package live_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/hvmind/hvmind/live"
	"github.com/hvmind/hvmind/world"
)

// Faults around one job: what dies or races when, and the rule it must
// keep (an operation runs at most once; a settlement that says it never
// lands is true).

// A settle that reaches the service while a begin of the same job is
// talking to the executor.
func TestSettleWhileItsBeginRunsNeverLetsItLandUnsaid(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	type out struct {
		id  string
		st  world.Settlement
		err error
		b   error
	}
	var mu sync.Mutex
	var outs []out
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("race%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := float64(time.Now().UnixNano()) / 1e6
			bdone := make(chan error, 1)
			go func() {
				_, err := wc.Begin(ctx, world.BeginRequest{JobID: id, Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now, LandAt: now + 600})
				bdone <- err
			}()
			time.Sleep(2 * time.Millisecond)
			sts, err := wc.Settle(ctx, world.SettleRequest{JobIDs: []string{id}, Reason: "cancelled"})
			o := out{id: id, err: err, b: <-bdone}
			if len(sts) == 1 {
				o.st = sts[0]
			}
			mu.Lock()
			outs = append(outs, o)
			mu.Unlock()
		}()
	}
	wg.Wait()
	time.Sleep(1500 * time.Millisecond)
	bad := 0
	for _, o := range outs {
		if o.err == nil && !o.st.Applied && len(r.landingsOf(o.id)) > 0 {
			bad++
			res, ferr := wc.Finish(ctx, o.id)
			t.Logf("%s: settled %+v (begin err %v), but it landed in the game; finish now: %+v %v", o.id, o.st, o.b, res.SecurityRemoved, ferr)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d jobs settled as not applied landed in the game", bad, len(outs))
	}
}

// A landing the executor read from its port but nobody confirmed is lost
// when the executor restarts; a settle then says "begun, never lands".
func TestALandingNotYetConfirmedSurvivesTheExecutorsRestart(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	now := float64(time.Now().UnixNano()) / 1e6
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "lost", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1, Start: now, LandAt: now + 500}); err != nil {
		t.Fatal(err)
	}
	r.svc.Stop() // the pool restarts...
	r.waitFor(3*time.Second, "the landing", func() bool { return len(r.landingsOf("lost")) > 0 })
	r.send("kill-executor") // ...and so does the executor
	r.waitFor(5*time.Second, "the executor to end", func() bool { return r.out.has("executor killed") })
	r.send("start-executor")
	r.serve()
	time.Sleep(1500 * time.Millisecond)
	_, ferr := wc.Finish(ctx, "lost")
	var sts []world.Settlement
	var err error
	r.waitFor(5*time.Second, "a settle", func() bool {
		sts, err = wc.Settle(ctx, world.SettleRequest{JobIDs: []string{"lost"}, Reason: "gave up"})
		return err == nil
	})
	t.Logf("finish: %v; settle: %+v; landings seen: %d", ferr, sts, len(r.landingsOf("lost")))
	if len(sts) == 1 && !sts[0].Applied {
		t.Errorf("applied in the game (landing %+v), settled as %+v", r.landingsOf("lost")[0].Result, sts[0])
	}
}

// An operation that lands while no executor runs is reported by the next
// one without its operation: the result loses its task and what it did.
func TestALandingWhileNoExecutorRunsKeepsItsOperation(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	now := float64(time.Now().UnixNano()) / 1e6
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "dn", Task: "hack", Target: "n00dles", Host: "home", Owner: "w1", Threads: 2, Start: now, LandAt: now + 400}); err != nil {
		t.Fatal(err)
	}
	r.send("kill-executor")
	r.waitFor(5*time.Second, "the executor to end", func() bool { return r.out.has("executor killed") })
	time.Sleep(800 * time.Millisecond)
	r.send("start-executor")
	var res world.Result
	var err error
	r.waitFor(5*time.Second, "the finish", func() bool {
		res, err = wc.Finish(ctx, "dn")
		return err == nil
	})
	t.Logf("result: %+v", res)
	if res.Task != "hack" || res.Stolen != 200 {
		t.Errorf("hack's result after the executor's restart: task %q stolen %v", res.Task, res.Stolen)
	}
}

// The service kept the landing but not the begin; the executor restarted
// since: a begin (the task's retry) runs the operation a second time.
func TestABeginOfALandedJobDoesNotRunItAgain(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	s := r.state()
	r.run(live.RunRequest{ID: "z", Op: "grow", Host: "home", Target: "n00dles", Threads: 1, LandAt: s.Now + 400})
	r.waitFor(3*time.Second, "the landing", func() bool { return len(r.landingsOf("z")) > 0 })
	time.Sleep(300 * time.Millisecond)
	r.send("kill-executor")
	r.waitFor(5*time.Second, "the executor to end", func() bool { return r.out.has("executor killed") })
	r.send("start-executor")
	var err error
	r.waitFor(5*time.Second, "a begin", func() bool {
		_, err = wc.Begin(ctx, world.BeginRequest{JobID: "z", Task: "grow", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1})
		return err == nil
	})
	time.Sleep(1200 * time.Millisecond)
	seen := map[float64]bool{}
	for _, l := range r.landingsOf("z") {
		seen[l.LandedAt] = true
	}
	if len(seen) > 1 {
		t.Errorf("job z landed %d times in the game", len(seen))
	}
}

// A begin reports the target as the game had it when the operation
// started, not as a state read up to a second before had it: the batcher
// takes a hack begun at raised security for a desynced batch.
func TestABeginReportsTheTargetAsTheOperationStarted(t *testing.T) {
	t.Parallel()
	r, wc := setupService(t)
	ctx := context.Background()
	if _, err := wc.Servers(ctx); err != nil { // the state the begins may use
		t.Fatal(err)
	}
	now := float64(time.Now().UnixNano()) / 1e6
	if _, err := wc.Begin(ctx, world.BeginRequest{JobID: "wk", Task: "weaken", Target: "n00dles", Host: "home", Owner: "w1", Threads: 2, Start: now}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(3*time.Second, "the weaken's landing", func() bool { return len(r.landingsOf("wk")) > 0 })
	b, err := wc.Begin(ctx, world.BeginRequest{JobID: "hk", Task: "hack", Target: "n00dles", Host: "home", Owner: "w1", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(b.SecurityAtStart-4.9) > 1e-9 || b.LevelAtStart != 10 {
		t.Errorf("the hack began at security %v level %d, want 4.9 (after the weaken) and 10", b.SecurityAtStart, b.LevelAtStart)
	}
}
