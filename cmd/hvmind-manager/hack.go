package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hvmind/hvmind/internal/boxtable"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/world"
)

// hack runs a HackManager per target (a Fleet sharing the pool's threads
// between them) with a live dashboard, or JSON events with --json.
func (e *env) hack(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("hack", flag.ContinueOnError)
	fo := planner.FleetOptions{Manager: planner.ManagerOptions{Logger: e.log}}
	o := &fo.Manager
	fs.BoolVar(&fo.Auto, "auto", false, "pick the targets by expected income (among those named, or all) and re-pick as the level rises")
	fs.IntVar(&fo.MaxTargets, "max-targets", 3, "most targets --auto runs at once")
	fs.DurationVar(&fo.RerankEvery, "rerank", 10*time.Minute, "game time between two rankings under --auto")
	fs.DurationVar(&o.Gap, "gap", planner.DefaultGap, "real time from a hack's (or grow's) landing to its weaken's")
	fs.DurationVar(&o.Margin, "margin", planner.DefaultMargin, "how far every start keeps from the windows of raised security")
	fs.DurationVar(&o.Slack, "slack", planner.DefaultSlack, "how late a job may start and still land on time")
	fs.Float64Var(&o.Utilisation, "utilisation", 0, fmt.Sprintf("share of the free threads the pipeline plans to keep busy (planning all of them gets batches refused, and each refusal wastes the threads around it); 0: %v with grows and hacks pinned to the hosts with the most threads, else %v; a plan bound by the batches in flight at one instant (a few small hosts) plans that peak for every thread", planner.PinnedUtilisation, planner.DefaultUtilisation))
	fs.DurationVar(&o.Lead, "lead", time.Second, "how far ahead of its first start a batch (or wave) is dispatched")
	fs.IntVar(&o.MaxBatches, "max-batches", 0, "most batches in a wave (0: as timing and RAM allow)")
	fs.IntVar(&o.Cores, "cores", 0, "cores the thread maths assume for grow and weaken (0: the fewest of the pool's hosts)")
	fs.BoolVar(&o.Waves, "waves", false, "run batches in waves (every job of a wave starts before its first landing) instead of the continuous pipeline")
	asJSON := fs.Bool("json", false, "stream events as JSON lines instead of the dashboard")
	duration := fs.Duration("for", 0, "stop after this long (0: run until interrupted)")
	httpAddr := fs.String("http", "", "serve the batcher's Prometheus metrics at http://ADDR/metrics (empty: off)")
	timeline := fs.String("timeline", "", "the address of the pool's web UI, shown under the dashboard (make run sets it)")
	targets, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	fo.Targets = targets
	if err := fo.Manager.Validate(); err != nil {
		return 2, err
	}
	// The batcher waits for what it needs (the broker, the pool, the
	// world) for as long as it is not stopped: make run starts them at
	// once, and any of them may restart.
	conn, pc, err := e.connectBy(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 1, err
	}
	defer conn.Close()
	defer pc.Close()
	wc := world.NewClient(conn.NC)
	if err := waitFor(ctx, e, "the pool", func(ctx context.Context) error { _, err := pc.Status(ctx); return err }); err != nil {
		return 1, err
	}
	if err := waitFor(ctx, e, "the world", func(ctx context.Context) error { return checkTargets(ctx, wc, fo.Targets) }); err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 2, err
	}
	f, err := planner.NewFleet(pc, wc, fo)
	if err != nil {
		return 2, err
	}
	if *httpAddr != "" {
		ms, err := cli.ServeMetrics(*httpAddr, e.log, f.Metrics())
		if err != nil {
			return 1, err
		}
		defer ms.Close()
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	enc := json.NewEncoder(e.out)
	events := f.Events()
	var income incomeMeter
	player := ""
	busy, total := 0, 0
	var lastRead time.Time
	draw := func() {
		// The batcher's own figures are redrawn every tick; the pool's and
		// the player's are asked every dashboardReadEvery (each ask is a
		// request on hvmind.>, which a person may be watching).
		if time.Since(lastRead) >= dashboardReadEvery {
			lastRead = time.Now()
			// A pool that has gone (stopped with the same Ctrl-C) must not
			// hold the dashboard.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 400*time.Millisecond)
			if st, err := pc.Status(sctx); err == nil {
				busy, total = st.ThreadsBusy, st.ThreadsTotal
			}
			if pl, err := wc.Player(sctx); err == nil {
				if clk, err := wc.Clock(sctx); err == nil {
					income.add(clk.GameTimeMs, pl.Money)
				}
				player = fmt.Sprintf("player: %s · level %d · %s per game minute over the last game minute",
					planner.FormatMoney(pl.Money), pl.HackingLevel, planner.FormatMoney(income.perGameMinute()))
			}
			cancel()
		}
		drawDashboard(e.out, f.Stats(), busy, total, player, *timeline)
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if *asJSON {
				_ = enc.Encode(ev)
			}
		case <-tick.C:
			if !*asJSON {
				draw()
			}
		case err := <-done:
			if !*asJSON {
				draw()
			} else {
				for _, st := range f.Stats() {
					_ = enc.Encode(planner.Event{Time: time.Now(), Kind: "stopped", Stats: st})
				}
			}
			if err != nil {
				return 1, err
			}
			return 0, nil
		}
	}
}

// dashboardReadEvery is how often the dashboard asks the pool's status and
// the player.
const dashboardReadEvery = 2 * time.Second

// drawDashboard redraws the table in place: a row per target, then the
// pool's threads in use.
func drawDashboard(w io.Writer, stats []planner.Stats, busy, total int, player, timeline string) {
	now := time.Now()
	var rows [][]string
	var lastDesync []string
	for _, st := range stats {
		limit := "-"
		if st.LimitPerGameSecond > 0 {
			limit = fmt.Sprintf("%.1f%%", st.PctOfLimit(now))
		}
		moneyPct := 0.0
		if st.MoneyMax > 0 {
			moneyPct = 100 * st.Money / st.MoneyMax
		}
		rows = append(rows, []string{st.Target, st.Phase, fmt.Sprintf("%.1f%%", moneyPct), fmt.Sprintf("+%.3f", st.Security-st.MinSec),
			fmt.Sprint(st.Level), fmt.Sprint(st.Batches), fmt.Sprint(st.InFlight), fmt.Sprint(st.Jobs),
			planner.FormatMoney(st.Stolen), planner.FormatMoney(st.PerGameSecond(now)), planner.FormatMoney(st.PerRealSecond(now)),
			limit, fmt.Sprint(st.Desyncs), fmt.Sprint(st.Missed)})
		if st.LastDesync != "" {
			lastDesync = append(lastDesync, st.Target+": "+st.LastDesync)
		}
	}
	var b strings.Builder
	_ = boxtable.Draw(&b,
		[]string{"target", "phase", "money", "security", "level", "batches", "in flight", "jobs", "stolen", "$/s game", "$/s real", "of limit", "desyncs", "missed"},
		rows, map[int]bool{2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 8: true, 9: true, 10: true, 11: true, 12: true, 13: true})
	if player != "" {
		b.WriteString(player + "\n")
	}
	if total > 0 {
		fmt.Fprintf(&b, "threads in use: %d / %d (%.1f%%)\n", busy, total, 100*float64(busy)/float64(total))
	}
	for _, st := range stats {
		if share, left, ok := st.PrepProgress(now); ok {
			b.WriteString(prepBar(st, share, left) + "\n")
		}
		if st.Note != "" {
			b.WriteString(st.Target + ": " + st.Note + "\n")
		}
	}
	for _, d := range lastDesync {
		b.WriteString("last desync, " + d + "\n")
	}
	if timeline != "" {
		b.WriteString("the jobs' timeline: " + timeline + "\n")
	}
	frame := "\x1b[H" + strings.ReplaceAll(b.String(), "\n", "\x1b[K\n") + "\x1b[J"
	_, _ = io.WriteString(w, frame)
}

// checkTargets refuses a word that is no server of the world: a mistyped
// command is not a target.
// waitFor asks until ask succeeds, fails otherwise than by no answer
// (planner.Unavailable), or ctx ends (then nil); it says what it waits
// for after a few seconds, and every half minute after that.
func waitFor(ctx context.Context, e *env, what string, ask func(context.Context) error) error {
	start, said := time.Now(), time.Time{}
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ask(actx)
		cancel()
		switch {
		case err == nil:
			if !said.IsZero() {
				e.log.Info().Msgf("%s answers", what)
			}
			return nil
		case ctx.Err() != nil:
			return nil
		case !planner.Unavailable(err):
			return err
		}
		if time.Since(start) > 3*time.Second && time.Since(said) > 30*time.Second {
			said = time.Now()
			e.log.Warn().Err(err).Msgf("waiting for %s (is hvmind-pool running?)", what)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func checkTargets(ctx context.Context, wc *world.Client, targets []string) error {
	if len(targets) == 0 {
		return nil
	}
	servers, err := wc.Servers(ctx)
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(servers))
	for _, s := range servers {
		known[s.Hostname] = true
	}
	for _, t := range targets {
		if !known[t] {
			names := make([]string, 0, len(commands))
			for c := range commands {
				names = append(names, c)
			}
			sort.Strings(names)
			return cli.Usagef("%q is neither a command (%s) nor a server of the world", t, strings.Join(names, ", "))
		}
	}
	return nil
}

// incomeMeter is the player's money over game time, for the dashboard's
// income per game minute.
type incomeMeter struct {
	samples []moneyAt
}

type moneyAt struct{ gameMs, money float64 }

func (m *incomeMeter) add(gameMs, money float64) {
	m.samples = append(m.samples, moneyAt{gameMs, money})
	// Keep a little over a game minute.
	for len(m.samples) > 2 && gameMs-m.samples[1].gameMs >= 60_000 {
		m.samples = m.samples[1:]
	}
}

// perGameMinute is the money made over the last game minute (or since the
// first sample), per game minute.
func (m *incomeMeter) perGameMinute() float64 {
	if len(m.samples) < 2 {
		return 0
	}
	a, b := m.samples[0], m.samples[len(m.samples)-1]
	if b.gameMs <= a.gameMs {
		return 0
	}
	return (b.money - a.money) / (b.gameMs - a.gameMs) * 60_000
}

// prepBar draws a target's prep wave in flight: how far it is, and how long
// until it lands, in real and in game time.
func prepBar(st planner.Stats, share float64, left time.Duration) string {
	const width = 30
	n := int(share * width)
	last := "more waves to come"
	if st.PrepLast {
		last = "the last"
	}
	game := ""
	if st.Speed > 0 {
		game = fmt.Sprintf(", %s of game time", time.Duration(float64(left)*st.Speed).Round(time.Second))
	}
	return fmt.Sprintf("%s: prep wave %d (%s) [%s%s] %3.0f%%, lands in %s%s", st.Target, st.PrepWaves, last,
		strings.Repeat("#", n), strings.Repeat(".", width-n), 100*share, left.Round(100*time.Millisecond), game)
}
