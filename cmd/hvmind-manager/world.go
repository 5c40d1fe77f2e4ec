package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// formulas reads JSON lines of formula queries (the input shape of
// world/game/testdata/formulas.jsonl) on standard input and writes one JSON line
// per input with the results.
func (e *env) formulas(_ context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("formulas", flag.ContinueOnError)
	scenario := fs.String("scenario", world.DefaultScenario, "scenario for lines that name none: newgame, reference-880 or a file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hvmind-manager formulas [--scenario NAME|FILE] < queries.jsonl")
		fs.PrintDefaults()
	}
	pos, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	if len(pos) > 0 {
		return 2, cli.Usagef("formulas reads standard input; unexpected arguments %v", pos)
	}
	sc, err := game.LoadScenario(*scenario)
	if err != nil {
		return 2, err
	}
	if err := game.RunFormulas(e.in, e.out, sc); err != nil {
		return 1, err
	}
	return 0, nil
}

// analyze ranks the targets of a scenario (or of the live world) by
// income per thread-second of an HWGW batch.
func (e *env) analyze(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	scenario := fs.String("scenario", world.DefaultScenario, "scenario: newgame, reference-880 or a file")
	live := fs.Bool("live", false, "analyse the running world (servers and player from the world service) instead of --scenario")
	cores := fs.Int("cores", 1, "cores of the host the grows and weakens run on")
	fractionsArg := fs.String("fractions", "", "hack fractions to plan, comma-separated (default 0.01,0.05,0.1,0.25,0.5)")
	plans := fs.Bool("plans", false, "print every target's batch at each fraction (the default when targets are named)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hvmind-manager analyze [TARGET...] [--json] [--scenario NAME|FILE | --live] [--cores N] [--fractions F,...]")
		fs.PrintDefaults()
	}
	targets, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	fractions, err := parseFractions(*fractionsArg)
	if err != nil {
		return 2, err
	}
	var sc *game.Scenario
	if *live {
		if sc, err = e.liveScenario(ctx); err != nil {
			return 1, err
		}
	} else if sc, err = game.LoadScenario(*scenario); err != nil {
		return 2, err
	}
	as, err := planner.Analyze(sc, targets, fractions, *cores)
	if err != nil {
		return 1, err
	}
	if *asJSON {
		if err := planner.WriteAnalysisJSON(e.out, as); err != nil {
			return 1, err
		}
		return 0, nil
	}
	p := sc.Player
	fmt.Fprintf(e.out, "%s: hacking level %d, %s, %d host threads; grows and weakens on %d core(s)\n",
		sc.Name, p.HackingLevel(), planner.FormatMoney(p.Money), planner.TotalHostThreads(sc), *cores)
	if len(as) == 0 {
		fmt.Fprintln(e.out, "no target can be hacked (rooted, with money, within the hacking level)")
		return 0, nil
	}
	if err := planner.RenderAnalysis(e.out, as); err != nil {
		return 1, err
	}
	if *plans || len(targets) > 0 {
		for _, a := range as {
			fmt.Fprintln(e.out)
			if err := planner.RenderPlans(e.out, a); err != nil {
				return 1, err
			}
		}
	}
	return 0, nil
}

// liveScenario reads the running world's servers and player.
func (e *env) liveScenario(ctx context.Context) (*game.Scenario, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := broker.Open(cctx, broker.OpenOptions{URL: e.cfg.NATS, Auth: e.cfg.Auth, Name: "hvmind-manager", Logger: e.log})
	if err != nil {
		return nil, fmt.Errorf("%w (is hvmind-pool or hvmind-world running?)", err)
	}
	defer conn.Close()
	sc, err := world.NewClient(conn.NC).Scenario(cctx)
	if errors.Is(err, world.ErrNotRunning) {
		return nil, fmt.Errorf("%w: start hvmind-pool (which runs the world) or hvmind-world, or analyse a --scenario offline", err)
	}
	return sc, err
}

func parseFractions(s string) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(v > 0 && v <= 1) {
			return nil, fmt.Errorf("--fractions: %q: want numbers with 0 < f <= 1", f)
		}
		out = append(out, v)
	}
	return out, nil
}
