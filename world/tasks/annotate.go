package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/webui"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// incomeWindow is the real time the income figure averages over.
const incomeWindow = time.Minute

// clockEvery is how often the annotator asks the world its speed.
const clockEvery = 30 * time.Second

// Annotator reads the game's records for the pool's web UI: each landing
// charts its target's security and money after it, and the hacks' money
// makes the income per game minute in the header.
func Annotator(c *world.Client) webui.Annotator { return &annotator{c: c} }

type annotator struct {
	c *world.Client

	mu      sync.Mutex
	stolen  []stolenAt // the hacks' takings, in arrival order
	first   float64    // when the first record came (epoch ms)
	speed   float64
	speedAt time.Time
}

type stolenAt struct{ at, dollars float64 }

// Points charts the target after a landing.
func (a *annotator) Points(rec *job.Job) []webui.Point {
	if len(rec.Result) == 0 {
		return nil
	}
	var res world.Result
	if json.Unmarshal(rec.Result, &res) != nil || res.Target == "" {
		return nil
	}
	at := res.LandedAt
	if at == 0 {
		at = rec.ActualEndTime
	}
	a.mu.Lock()
	if res.Task == game.OpHack && res.Stolen > 0 {
		a.stolen = append(a.stolen, stolenAt{at, res.Stolen})
	}
	if a.first == 0 {
		a.first = at
	}
	a.trimLocked(job.Now())
	a.mu.Unlock()
	return []webui.Point{
		{Chart: res.Target + " security", Time: at, Value: res.SecurityAfter, Job: rec.ID},
		{Chart: res.Target + " money", Time: at, Value: res.MoneyAfter, Job: rec.ID},
	}
}

// Facts is the income per game minute over the last real minute, and the
// world's speed.
func (a *annotator) Facts(ctx context.Context) []webui.Fact {
	a.mu.Lock()
	stale := time.Since(a.speedAt) > clockEvery
	a.mu.Unlock()
	if stale {
		if clk, err := a.c.Clock(ctx); err == nil {
			a.mu.Lock()
			a.speed, a.speedAt = clk.Speed, time.Now()
			a.mu.Unlock()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := job.Now()
	cut := a.trimLocked(now)
	sum := 0.0
	for _, s := range a.stolen {
		sum += s.dollars
	}
	var facts []webui.Fact
	if a.speed > 0 {
		facts = append(facts, webui.Fact{Name: "game speed", Value: fmt.Sprintf("%gx", a.speed)})
		// Over the last minute, or since the first landing seen.
		spanMs := now - max(cut, a.first)
		if a.first > 0 && spanMs >= 1000 {
			perGameMinute := sum / (spanMs * a.speed / 60000)
			facts = append(facts, webui.Fact{Name: "income / game min", Value: "$" + money(perGameMinute)})
		}
	}
	return facts
}

// trimLocked forgets the takings older than incomeWindow (records come
// whether or not a page asks for the figure) and returns the cut.
func (a *annotator) trimLocked(now float64) float64 {
	cut := now - incomeWindow.Seconds()*1000
	i := 0
	for i < len(a.stolen) && a.stolen[i].at < cut {
		i++
	}
	if i > 0 {
		a.stolen = append(a.stolen[:0:0], a.stolen[i:]...)
	}
	return cut
}

// money writes dollars the way the game does: 1.23m, 4.56b.
func money(v float64) string {
	switch {
	case v >= 1e12:
		return fmt.Sprintf("%.3ft", v/1e12)
	case v >= 1e9:
		return fmt.Sprintf("%.3fb", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.3fm", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3fk", v/1e3)
	}
	return fmt.Sprintf("%.2f", v)
}
