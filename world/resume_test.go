package world_test

import (
	"errors"
	"testing"

	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// TestResume: a worker's new process learns what became of each operation
// its previous process may have begun: a running one to take up, across a
// restart of the world too; one that never began is settled, so that a
// begin still on its way is refused.
func TestResume(t *testing.T) {
	t.Parallel()
	b, svc, c := newWorld(t, world.Options{Scenario: "newgame"})
	ctx := ctxT(t)
	w1 := c.As("w1")
	begin := func(id string) (world.BeginReply, error) {
		return w1.Begin(ctx, world.BeginRequest{JobID: id, Task: game.OpGrow, Target: "foodnstuff", Host: "home", Threads: 10, Owner: "w1"})
	}
	running, err := begin("running")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := begin("finished"); err != nil {
		t.Fatal(err)
	}
	applied, err := w1.Finish(ctx, "finished")
	if err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		got, err := w1.Resume(ctx, world.ResumeRequest{JobID: "running"})
		if err != nil || got.Begun == nil || got.Settlement != nil {
			t.Fatalf("%s: resume of a running operation: %+v, %v; want it begun", when, got, err)
		}
		if got.Begun.StartedAt != running.StartedAt || got.Begun.DurationGameMs != running.DurationGameMs || got.Begun.Threads != 10 {
			t.Errorf("%s: resumed %+v, want the begin %+v", when, *got.Begun, running)
		}
		got, err = w1.Resume(ctx, world.ResumeRequest{JobID: "finished"})
		if err != nil || got.Settlement == nil || !got.Settlement.Applied || got.Settlement.Result == nil || got.Settlement.Result.JobID != applied.JobID {
			t.Errorf("%s: resume of an applied operation: %+v, %v; want applied", when, got, err)
		}
		got, err = w1.Resume(ctx, world.ResumeRequest{JobID: "unborn"})
		if err != nil || got.Settlement == nil || got.Settlement.Applied || got.Settlement.Begun || got.Begun != nil {
			t.Errorf("%s: resume of an operation that never began: %+v, %v; want it settled", when, got, err)
		}
		if _, err := begin("unborn"); !errors.Is(err, world.ErrSettled) {
			t.Errorf("%s: begin after the resume found nothing: %v, want ErrSettled", when, err)
		}
		if _, err := c.As("w2").Resume(ctx, world.ResumeRequest{JobID: "running"}); !errors.Is(err, world.ErrNotOwner) {
			t.Errorf("%s: another worker's resume: %v, want ErrNotOwner", when, err)
		}
	}
	check("same service")
	svc.Stop()
	serve(t, b, world.Options{Scenario: "newgame"})
	check("after a restart")

	// The operation taken up finishes as its own process would have.
	r, err := w1.Finish(ctx, "running")
	if err != nil || r.JobID != "running" || r.Task != game.OpGrow {
		t.Errorf("finish of the resumed operation: %+v, %v", r, err)
	}
	if _, err := w1.Resume(ctx, world.ResumeRequest{JobID: "bad id"}); !errors.Is(err, world.ErrInvalid) {
		t.Errorf("a bad id: %v, want ErrInvalid", err)
	}
}
