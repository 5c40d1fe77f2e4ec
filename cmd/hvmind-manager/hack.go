package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hvmind/hvmind/internal/boxtable"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/world"
)

// hack runs the HackManager on one target with a live dashboard (or JSON
// events with --json).
func (e *env) hack(ctx context.Context, target string, args []string) (int, error) {
	fs := flag.NewFlagSet("hack", flag.ContinueOnError)
	o := planner.ManagerOptions{Target: target, Logger: e.log}
	fs.DurationVar(&o.Gap, "gap", planner.DefaultGap, "real time from a hack's (or grow's) landing to its weaken's")
	fs.DurationVar(&o.Margin, "margin", planner.DefaultMargin, "how far every start keeps from the windows of raised security")
	fs.DurationVar(&o.Slack, "slack", planner.DefaultSlack, "how late a job may start and still land on time")
	fs.Float64Var(&o.Utilisation, "utilisation", 1, "share of the free threads the pipeline plans to keep busy")
	fs.DurationVar(&o.Lead, "lead", time.Second, "how far ahead of now a wave starts")
	fs.IntVar(&o.MaxBatches, "max-batches", 0, "most batches in a wave (0: as timing and RAM allow)")
	fs.IntVar(&o.Cores, "cores", 0, "cores the thread maths assume for grow and weaken (0: the fewest of the pool's hosts)")
	fs.BoolVar(&o.Waves, "waves", false, "run batches in waves (every job of a wave starts before its first landing) instead of the continuous pipeline")
	asJSON := fs.Bool("json", false, "stream events as JSON lines instead of the dashboard")
	duration := fs.Duration("for", 0, "stop after this long (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	conn, pc, err := e.connect(ctx)
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	defer pc.Close()
	// The pool may be starting (make run starts both at once).
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, err := pc.Status(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 1, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	m, err := planner.NewManager(pc, world.NewClient(conn.NC), o)
	if err != nil {
		return 2, err
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	enc := json.NewEncoder(e.out)
	events := m.Events()
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
				drawDashboard(e.out, m.Stats())
			}
		case err := <-done:
			st := m.Stats()
			if !*asJSON {
				drawDashboard(e.out, st)
			} else {
				_ = enc.Encode(planner.Event{Time: time.Now(), Kind: "stopped", Stats: st})
			}
			if err != nil {
				return 1, err
			}
			return 0, nil
		}
	}
}

func drawDashboard(w io.Writer, st planner.Stats) {
	now := time.Now()
	limit := "-"
	if st.LimitPerGameSecond > 0 {
		limit = fmt.Sprintf("%.1f%%", st.PctOfLimit(now))
	}
	moneyPct := 0.0
	if st.MoneyMax > 0 {
		moneyPct = 100 * st.Money / st.MoneyMax
	}
	var b strings.Builder
	_ = boxtable.Draw(&b,
		[]string{"target", "phase", "money", "security", "level", "batches", "in flight", "jobs", "stolen", "$/s game", "$/s real", "of limit", "desyncs", "missed"},
		[][]string{{st.Target, st.Phase, fmt.Sprintf("%.1f%%", moneyPct), fmt.Sprintf("+%.3f", st.Security-st.MinSec),
			fmt.Sprint(st.Level), fmt.Sprint(st.Batches), fmt.Sprint(st.InFlight), fmt.Sprint(st.Jobs),
			planner.FormatMoney(st.Stolen), planner.FormatMoney(st.PerGameSecond(now)), planner.FormatMoney(st.PerRealSecond(now)),
			limit, fmt.Sprint(st.Desyncs), fmt.Sprint(st.Missed)}},
		map[int]bool{2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 8: true, 9: true, 10: true, 11: true, 12: true, 13: true})
	if st.LastDesync != "" {
		b.WriteString("last desync: " + st.LastDesync + "\n")
	}
	frame := "\x1b[H" + strings.ReplaceAll(b.String(), "\n", "\x1b[K\n") + "\x1b[J"
	_, _ = io.WriteString(w, frame)
}
