package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/bench"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/serverpool"
)

// On reference-880, where home holds 91.5% of the threads, the pipeline
// pins its grows and hacks to home and plans 99.5% of the threads; the
// weakens fill the small hosts. Once the pipeline is full (a weakenTime
// after its start, where a plan with hacks anywhere had its first
// refusals) the pool still places every batch, and the batches earn.
func TestManagerBenchPlacesEveryBatch(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the manager for 7 game minutes at 60x")
	}
	bin, err := serverpool.FindWorkerBin()
	if err != nil {
		t.Skipf("no hvmind-worker to run (make build): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.RunManager(ctx, bench.ManagerOptions{
		Scenario: "reference-880", Target: "rho-construction", Speed: 60, GameMinutes: 7, Seed: 1,
		SizePolicy: "host", WorkerBin: bin, Spin: time.Millisecond, Tolerance: planner.DefaultSlack,
		Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches, %d refused, %d skipped, %d desyncs, %.1f%% of the limit, plan %s every %.2f ms",
		res.Batches, res.Refused, res.Skipped, res.Desyncs, res.PctOfLimit, res.Plan, res.PeriodMs)
	if res.Refused != 0 {
		t.Errorf("the pool refused %d batches", res.Refused)
	}
	if res.Batches < 100 || !(res.MoneyPerGameMinute > 0) {
		t.Errorf("%d batches landed, earning $%.0f a game minute", res.Batches, res.MoneyPerGameMinute)
	}
}
