package pool

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hvmind/hvmind/internal/boxtable"
	"github.com/hvmind/hvmind/job"
)

// Tail redraws the pool's table in place on w every interval until ctx ends.
func (p *Pool) Tail(ctx context.Context, w io.Writer, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	fmt.Fprint(w, "\x1b[2J")
	for {
		var b strings.Builder
		sctx, cancel := context.WithTimeout(ctx, interval)
		RenderStatus(&b, p.Status(sctx))
		cancel()
		// Home, each line cleared to its end, then the rest of the screen.
		frame := "\x1b[H" + strings.ReplaceAll(b.String(), "\n", "\x1b[K\n") + "\x1b[J"
		_, _ = io.WriteString(w, frame)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RenderStatus draws a status as a box-drawn table.
func RenderStatus(w io.Writer, st Status) {
	now := job.Millis(st.Time)
	header := []string{"worker", "host", "threads", "queued", "tasks", "elapsed", "remaining", "drift"}
	var rows [][]string
	for _, ws := range st.Workers {
		threads := fmt.Sprintf("%d / %d", ws.Busy, ws.Threads)
		if !ws.Alive {
			threads = "gone"
		}
		tasks := map[string]int{}
		var firstStart, lastEnd float64
		for _, r := range ws.Running {
			tasks[r.Task]++
			if firstStart == 0 || r.Start < firstStart {
				firstStart = r.Start
			}
			if r.End > lastEnd {
				lastEnd = r.End
			}
		}
		names := make([]string, 0, len(tasks))
		for t, n := range tasks {
			names = append(names, fmt.Sprintf("%s×%d", t, n))
		}
		sort.Strings(names)
		elapsed, remaining := "-", "-"
		if firstStart > 0 {
			elapsed = human(now - firstStart)
			remaining = human(max(0, lastEnd-now))
		}
		drift := "-"
		if ws.LastDriftUS != 0 {
			drift = fmt.Sprintf("%+.1f µs", ws.LastDriftUS)
		}
		rows = append(rows, []string{ws.ID, ws.Host, threads, fmt.Sprint(ws.Queued), strings.Join(names, " "), elapsed, remaining, drift})
	}
	DrawTable(w, header, rows)
	if len(st.Hosts) > 0 {
		workersOn := map[string]int{}
		for _, ws := range st.Workers {
			if ws.Alive {
				workersOn[ws.Host]++
			}
		}
		var hostRows [][]string
		for _, h := range st.Hosts {
			hostRows = append(hostRows, []string{h.Name,
				fmt.Sprintf("%d / %d", h.MaxThreads-h.FreeThreads, h.MaxThreads), fmt.Sprint(h.Cores), fmt.Sprint(workersOn[h.Name])})
		}
		DrawTable(w, []string{"host", "threads held", "cores", "workers"}, hostRows)
	}
	pct := 0.0
	if st.ThreadsTotal > 0 {
		pct = 100 * float64(st.ThreadsBusy) / float64(st.ThreadsTotal)
	}
	fmt.Fprintf(w, "threads busy %d / %d (%.0f%%)  %s\n", st.ThreadsBusy, st.ThreadsTotal, pct, sparkline(st.Utilisation))
	ended := make([]string, 0, len(st.Ended))
	for s, n := range st.Ended {
		ended = append(ended, fmt.Sprintf("%s %d", s, n))
	}
	sort.Strings(ended)
	fmt.Fprintf(w, "in flight %d · accepted %d · %s\n", st.JobsInFlight, st.Accepted, strings.Join(ended, " · "))
	fmt.Fprintf(w, "start drift of the last %d scheduled jobs: p50 %.1f µs · p99 %.1f µs · max %.1f µs\n",
		st.Drift.Jobs, st.Drift.P50, st.Drift.P99, st.Drift.Max)
}

// sparkline draws percentages as a row of bars.
func sparkline(pcts []float64) string {
	bars := []rune("▁▂▃▄▅▆▇█")
	var b strings.Builder
	for _, v := range pcts {
		i := int(v / 100 * float64(len(bars)-1))
		b.WriteRune(bars[max(0, min(i, len(bars)-1))])
	}
	return b.String()
}

func human(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

// DrawTable writes a box-drawn table, every column left-aligned.
func DrawTable(w io.Writer, header []string, rows [][]string) {
	_ = boxtable.Draw(w, header, rows, nil)
}
