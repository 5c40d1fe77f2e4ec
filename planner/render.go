package planner

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/hvmind/hvmind/internal/boxtable"
)

// RenderAnalysis writes the analyses as a box-drawn table, one row per
// target in the given order, showing its best plan.
func RenderAnalysis(w io.Writer, as []Analysis) error {
	header := []string{"#", "target", "req", "min sec", "max money", "hack", "weaken", "chance", "$/thread",
		"best f", "H/W/G/W", "$/batch", "$/thread·s"}
	rows := make([][]string, 0, len(as))
	for i, a := range as {
		b := a.Best
		rows = append(rows, []string{
			strconv.Itoa(i + 1),
			a.Server,
			strconv.Itoa(a.RequiredHackingSkill),
			strconv.FormatFloat(a.MinSecurity, 'f', -1, 64),
			FormatMoney(a.MoneyMax),
			FormatDuration(a.HackTimeMs),
			FormatDuration(a.WeakenTimeMs),
			formatPercent(a.Chance),
			FormatMoney(a.MoneyPerThread),
			formatPercent(b.ActualFraction),
			threadsCell(b),
			FormatMoney(b.MoneyPerBatch),
			FormatMoney(b.IncomePerThreadSecond),
		})
	}
	if err := renderTable(w, header, rows, map[int]bool{1: true}); err != nil {
		return fmt.Errorf("render analysis: %w", err)
	}
	return nil
}

// RenderPlans writes one target's plans, one row per fraction, as a
// box-drawn table.
func RenderPlans(w io.Writer, a Analysis) error {
	header := []string{"fraction", "actual", "hack", "weaken1", "grow", "weaken2", "threads",
		"$/batch", "thread·s", "$/thread·s"}
	rows := make([][]string, 0, len(a.Plans))
	for _, p := range a.Plans {
		rows = append(rows, []string{
			formatPercent(p.Fraction),
			formatPercent(p.ActualFraction),
			strconv.Itoa(p.HackThreads),
			strconv.Itoa(p.Weaken1Threads),
			strconv.Itoa(p.GrowThreads),
			strconv.Itoa(p.Weaken2Threads),
			strconv.Itoa(p.Threads()),
			FormatMoney(p.MoneyPerBatch),
			strconv.FormatFloat(p.ThreadSeconds, 'f', 0, 64),
			FormatMoney(p.IncomePerThreadSecond),
		})
	}
	if _, err := fmt.Fprintf(w, "%s: hack %s, grow %s, weaken %s, chance %s\n", a.Server,
		FormatDuration(a.HackTimeMs), FormatDuration(a.GrowTimeMs), FormatDuration(a.WeakenTimeMs),
		formatPercent(a.Chance)); err != nil {
		return fmt.Errorf("render plans: %w", err)
	}
	if err := renderTable(w, header, rows, nil); err != nil {
		return fmt.Errorf("render plans: %w", err)
	}
	return nil
}

// WriteAnalysisJSON writes the analyses as an indented JSON array.
func WriteAnalysisJSON(w io.Writer, as []Analysis) error {
	if as == nil {
		as = []Analysis{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(as); err != nil {
		return fmt.Errorf("write analysis JSON: %w", err)
	}
	return nil
}

func threadsCell(p BatchPlan) string {
	return fmt.Sprintf("%d/%d/%d/%d", p.HackThreads, p.Weaken1Threads, p.GrowThreads, p.Weaken2Threads)
}

// renderTable draws a table whose columns are right-aligned but for those
// in leftAlign.
func renderTable(w io.Writer, header []string, rows [][]string, leftAlign map[int]bool) error {
	right := make(map[int]bool, len(header))
	for i := range header {
		right[i] = !leftAlign[i]
	}
	return boxtable.Draw(w, header, rows, right)
}

// FormatMoney writes an amount the way Bitburner players read it, with three
// significant digits and a suffix: $950, $1.23k, $45.6m, $1.23b, $118t, $2.00q.
func FormatMoney(v float64) string {
	switch {
	case math.IsNaN(v):
		return "$NaN"
	case v < 0:
		return "-" + FormatMoney(-v)
	case math.IsInf(v, 1):
		return "$∞"
	}
	units := []string{"", "k", "m", "b", "t", "q"}
	i, scaled := 0, v
	for scaled >= 1000 && i < len(units)-1 {
		scaled /= 1000
		i++
	}
	if i == 0 && v == math.Trunc(v) {
		return fmt.Sprintf("$%.0f", v)
	}
	digits := threeDigits(scaled)
	if digits == "1000" && i < len(units)-1 { // rounds up into the next unit
		i++
		scaled /= 1000
		digits = threeDigits(scaled)
	}
	if scaled >= 999.5 && i == len(units)-1 {
		return fmt.Sprintf("$%.3g", v)
	}
	return "$" + digits + units[i]
}

// threeDigits formats v (0 <= v < 1000) with three significant digits.
func threeDigits(v float64) string {
	switch {
	case v < 10:
		if s := fmt.Sprintf("%.2f", v); s != "10.00" {
			return s
		}
		return "10.0"
	case v < 100:
		if s := fmt.Sprintf("%.1f", v); s != "100.0" {
			return s
		}
		return "100"
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// FormatDuration writes a duration given in milliseconds for people:
// 850ms, 12.3s, 4m07s, 2h05m.
func FormatDuration(ms float64) string {
	if math.IsNaN(ms) || math.IsInf(ms, 0) || ms < 0 {
		return fmt.Sprint(ms) + "ms"
	}
	if ms < 1000 {
		return fmt.Sprintf("%.0fms", ms)
	}
	s := ms / 1000
	if s < 59.95 {
		return fmt.Sprintf("%.1fs", s)
	}
	secs := int64(math.Round(s))
	if secs < 3600 {
		return fmt.Sprintf("%dm%02ds", secs/60, secs%60)
	}
	mins := int64(math.Round(s / 60))
	return fmt.Sprintf("%dh%02dm", mins/60, mins%60)
}

func formatPercent(f float64) string {
	p := f * 100
	switch {
	case p == 0:
		return "0%"
	case p < 1:
		return fmt.Sprintf("%.3f%%", p)
	case p < 10:
		return fmt.Sprintf("%.2f%%", p)
	default:
		return fmt.Sprintf("%.1f%%", p)
	}
}
