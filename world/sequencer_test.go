package world

import (
	"sync"
	"testing"
	"time"

	"github.com/hvmind/hvmind/world/game"
)

// Requests that arrive out of the order of their stamps are handed on in
// it, once their stamps are a holdback old; ties go by due.
func TestSequencerOrdersByStamp(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	q := newSequencer(30*time.Millisecond, func(it *item) {
		// Requests due together come as one batch, in order.
		for _, it := range append([]*item{it}, it.batch...) {
			if it.run == nil {
				continue
			}
			v, _, _ := it.run()
			mu.Lock()
			got = append(got, v.(string))
			if len(got) == 4 {
				close(done)
			}
			mu.Unlock()
		}
	})
	now := float64(time.Now().UnixNano()) / 1e6
	add := func(name string, stamp, due float64) {
		q.add(stamp, due, &item{run: func() (any, []write, error) { return name, nil, nil }})
	}
	add("late landing", now+2, now+1)
	add("tie, due later", now+1, now+5)
	add("tie, due first", now+1, now+3)
	add("first", now, now)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the sequencer held its requests")
	}
	want := []string{"first", "tie, due first", "tie, due later", "late landing"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %q, want %q", got, want)
		}
	}
}

// A begin stamped before a landing that the world applied first sees the
// target as it was before that landing.
func TestBeginSeesTheWorldAtItsStart(t *testing.T) {
	t.Parallel()
	sc, err := game.LoadScenario("newgame")
	if err != nil {
		t.Fatal(err)
	}
	st := NewState(sc)
	req := BeginRequest{JobID: "h", Task: game.OpHack, Target: "n00dles", Host: "home", Threads: 1}
	b, err := st.Begin(req)
	if err != nil {
		t.Fatal(err)
	}
	// Land a hack (roll 0: it succeeds) at t=1000, raising security.
	if _, err := st.FinishAt(b, 0, 1000); err != nil {
		t.Fatal(err)
	}
	srv, _ := st.Server("n00dles")
	if !(srv.HackDifficulty > b.SecurityAtStart) {
		t.Fatalf("the hack raised no security: %v", srv.HackDifficulty)
	}
	before := BeginRequest{JobID: "w1", Task: game.OpWeaken, Target: "n00dles", Host: "home", Threads: 1, Start: 999}
	after := before
	after.JobID, after.Start = "w2", 1001
	for _, tc := range []struct {
		req  BeginRequest
		want float64
	}{{before, b.SecurityAtStart}, {after, srv.HackDifficulty}} {
		got, err := st.Begin(tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if got.SecurityAtStart != tc.want {
			t.Errorf("begin at %v saw security %v, want %v", tc.req.Start, got.SecurityAtStart, tc.want)
		}
	}
}

// The requests held by a hold go to the writer as one batch; what comes
// while the writer applies it waits until it is applied, and then goes in
// stamp order with what the writer queued meanwhile (the landings of the
// operations begun in the batch), not straight on ahead of them.
func TestSequencerHoldsWhileTheHeldAreApplied(t *testing.T) {
	t.Parallel()
	out := make(chan *item, 16)
	q := newSequencer(20*time.Millisecond, func(it *item) { out <- it })
	named := func(name string) *item {
		return &item{run: func() (any, []write, error) { return name, nil, nil }}
	}
	names := func(its []*item) []string {
		var s []string
		for _, it := range its {
			v, _, _ := it.run()
			s = append(s, v.(string))
		}
		return s
	}
	now := float64(time.Now().UnixNano()) / 1e6
	q.holdFor(100 * time.Millisecond)
	q.add(now-40, now-40, named("held 2"))
	q.add(now-50, now-50, named("held 1"))
	var batch *item
	select {
	case batch = <-out:
	case <-time.After(5 * time.Second):
		t.Fatal("the hold did not end")
	}
	if got := names(batch.batch); len(got) != 2 || got[0] != "held 1" || got[1] != "held 2" || batch.after == nil {
		t.Fatalf("the end of the hold handed on %q (after set: %v), want one batch of the two held, in order", got, batch.after != nil)
	}
	// While the writer applies the batch: a late request, and a landing
	// the writer schedules, stamped before it.
	q.add(now-30, now-30, named("came meanwhile"))
	q.queue(now-35, now-35, named("landing"))
	select {
	case it := <-out:
		t.Fatalf("%q went on before the held batch was applied", names([]*item{it}))
	case <-time.After(100 * time.Millisecond):
	}
	batch.after()
	var got []*item
	for len(got) < 2 {
		select {
		case it := <-out:
			got = append(got, append([]*item{it}, it.batch...)...)
		case <-time.After(5 * time.Second):
			t.Fatal("nothing went on once the held batch was applied")
		}
		if got[0].run == nil {
			got = got[1:]
		}
	}
	if n := names(got); n[0] != "landing" || n[1] != "came meanwhile" {
		t.Errorf("then %q, want the landing first, by its stamp", n)
	}
}

// A hold asked for while the writer applies a held batch (the world
// reloads its store) goes on once the batch is applied.
func TestSequencerKeepsAHoldAskedForWhileTheHeldAreApplied(t *testing.T) {
	t.Parallel()
	out := make(chan *item, 16)
	q := newSequencer(20*time.Millisecond, func(it *item) { out <- it })
	now := float64(time.Now().UnixNano()) / 1e6
	q.holdFor(50 * time.Millisecond)
	q.add(now-40, now-40, &item{run: func() (any, []write, error) { return nil, nil, nil }})
	var batch *item
	select {
	case batch = <-out:
	case <-time.After(5 * time.Second):
		t.Fatal("the hold did not end")
	}
	q.holdFor(ResumeHold)
	batch.after()
	if !q.holding() {
		t.Fatal("the hold asked for while the batch was applied ended with it")
	}
	q.add(now-30, now-30, &item{run: func() (any, []write, error) { return nil, nil, nil }})
	select {
	case <-out:
		t.Fatal("a request went on during the hold")
	case <-time.After(ResumeHold / 2):
	}
}
