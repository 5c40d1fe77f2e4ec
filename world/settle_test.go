package world_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// TestSettle: settling tells what became of an operation whose worker is
// gone, and makes sure nothing more of it happens, across a restart too.
func TestSettle(t *testing.T) {
	t.Parallel()
	b, svc, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	begin := func(id string) error {
		_, err := c.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpGrow, Target: "foodnstuff", Host: "home", Threads: 10})
		return err
	}
	finished := run(t, c, "finished", game.OpWeaken, "foodnstuff", 10)
	if err := begin("running"); err != nil {
		t.Fatal(err)
	}
	before, err := c.Server(ctx, "foodnstuff")
	if err != nil {
		t.Fatal(err)
	}

	req := world.SettleRequest{JobIDs: []string{"finished", "running", "unborn"}, Reason: "its worker is gone"}
	got, err := c.Settle(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("settlements %+v, want 3", got)
	}
	if !got[0].Applied || got[0].Result == nil || !reflect.DeepEqual(*got[0].Result, finished) {
		t.Errorf("finished: %+v, want applied with %+v", got[0], finished)
	}
	if got[1].Applied || !got[1].Begun {
		t.Errorf("running: %+v, want begun, not applied", got[1])
	}
	if got[2].Applied || got[2].Begun {
		t.Errorf("unborn: %+v, want neither begun nor applied", got[2])
	}
	again, err := c.Settle(ctx, req)
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Errorf("settling again: %+v, %v; want %+v", again, err, got)
	}

	refused := func(when string) {
		t.Helper()
		if _, err := c.Finish(ctx, "running"); !errors.Is(err, world.ErrSettled) {
			t.Errorf("%s: finish of a settled operation: %v, want ErrSettled", when, err)
		}
		if err := begin("unborn"); !errors.Is(err, world.ErrSettled) {
			t.Errorf("%s: begin of a settled job: %v, want ErrSettled", when, err)
		}
		after, err := c.Server(ctx, "foodnstuff")
		if err != nil || after.MoneyAvailable != before.MoneyAvailable || after.HackDifficulty != before.HackDifficulty {
			t.Errorf("%s: foodnstuff %+v, %v; want it as before the settle %+v", when, after, err, before)
		}
	}
	refused("same service")

	// A new world service reads the settlements from the store.
	svc.Stop()
	serve(t, b, world.Options{Scenario: "newgame"})
	refused("after a restart")
	again, err = c.Settle(ctx, req)
	if err != nil || len(again) != 3 || !again[0].Applied || !again[1].Begun || again[2].Begun {
		t.Errorf("settling after a restart: %+v, %v", again, err)
	}
}

func TestSettleRefusesBadRequests(t *testing.T) {
	t.Parallel()
	_, _, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	for _, req := range []world.SettleRequest{{}, {JobIDs: []string{"a b"}}, {JobIDs: make([]string, 5000)}} {
		if _, err := c.Settle(ctx, req); !errors.Is(err, world.ErrInvalid) {
			t.Errorf("settle %d ids: %v, want ErrInvalid", len(req.JobIDs), err)
		}
	}
}
