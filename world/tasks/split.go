package tasks

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Splitting a job over several workers runs the same threads as several
// smaller jobs over the same window. That changes nothing for weaken
// (security falls by the same amount per thread, floor aside). For hack
// and grow the parts land one after the other on a target the earlier
// parts have changed: n hacks of t/n threads steal 1 - (1 - p*t/n)^n of
// the money rather than p*t, and n grows of t/n threads add their threads
// to the money n times before multiplying. Such a job is split only into
// as many parts as keep that change of effect within a tolerance, computed
// with the world's formulas on the target now.

// DefaultSplitTolerance is the largest relative change of a hack's or
// grow's effect that splitting may cause, unless a program says otherwise.
const DefaultSplitTolerance = 0.01

// maxEstimatedParts bounds the parts the estimate considers.
const maxEstimatedParts = 64

// SplitPolicy is the pool's split policy for a pool whose workers run the
// world's tasks: sleep and weaken split into any number of parts, hack and
// grow within tolerance (the largest relative change of their effect a
// split may cause; 0 or less: they do not split), and nothing else.
func SplitPolicy(c *world.Client, tolerance float64) pool.SplitByTask {
	split := pool.DefaultSplit()
	split[game.OpWeaken] = pool.SplitExactly
	if tolerance > 0 {
		est := &splitEstimate{client: c, tolerance: tolerance, servers: map[string]readAt[game.Server]{}}
		split[game.OpHack], split[game.OpGrow] = est, est
	}
	return split
}

// splitReadFor is how long the estimate uses a read of the target and the
// player. The pool asks for every hack and grow it places, and the answer
// is an estimate on the target as it is now (not as the job will find
// it): a read a second old serves as well, and spares the world (and
// whoever watches hvmind.>) two requests a job.
const splitReadFor = time.Second

// splitEstimate lets a hack or grow split into as many parts as change its
// effect by at most tolerance, on the target as the world has it now.
type splitEstimate struct {
	client    *world.Client
	tolerance float64

	mu      sync.Mutex
	servers map[string]readAt[game.Server]
	player  readAt[world.PlayerInfo]
}

// readAt is a value read from the world, and when.
type readAt[T any] struct {
	v  T
	at time.Time
}

// MaxParts reads the target and the player (or takes a read of less than
// splitReadFor ago) and tries 2, 3, … parts.
func (e *splitEstimate) MaxParts(ctx context.Context, j *job.Job) int {
	target, ok := j.StringArg(0)
	if !ok || e.client == nil {
		return 1
	}
	now := time.Now()
	e.mu.Lock()
	srv, srvOK := e.servers[target]
	pl := e.player
	e.mu.Unlock()
	if !srvOK || now.Sub(srv.at) > splitReadFor {
		s, err := e.client.Server(ctx, target)
		if err != nil {
			return 1
		}
		srv = readAt[game.Server]{s, now}
	}
	if now.Sub(pl.at) > splitReadFor {
		p, err := e.client.Player(ctx)
		if err != nil {
			return 1
		}
		pl = readAt[world.PlayerInfo]{p, now}
	}
	e.mu.Lock()
	e.servers[target], e.player = srv, pl
	e.mu.Unlock()
	return maxParts(j.Task, &srv.v, pl.v.Player().Hacker(), j.Threads, e.tolerance)
}

// maxParts is how many parts a task of threads may split into on s with
// its effect changed by at most tolerance.
func maxParts(task string, s *game.Server, h game.Hacker, threads int, tolerance float64) int {
	best := 1
	for n := 2; n <= threads && n <= maxEstimatedParts; n++ {
		var diff float64
		if task == game.OpHack {
			diff = hackSplitChange(game.HackPercent(s, h), threads, n)
		} else {
			diff = growSplitChange(s, h, threads, n)
		}
		if diff > tolerance {
			break
		}
		best = n
	}
	return best
}

// hackSplitChange is the relative change of the fraction stolen when a
// hack of t threads at pct per thread is split into n near-equal parts.
func hackSplitChange(pct float64, t, n int) float64 {
	whole := math.Min(1, pct*float64(t))
	if whole == 0 {
		return 0
	}
	left := 1.0
	for _, part := range parts(t, n) {
		left *= 1 - math.Min(1, pct*float64(part))
	}
	return math.Abs(whole-(1-left)) / whole
}

// growSplitChange is the relative change of the money a grow of t threads
// adds when split into n near-equal parts, on the target as it is now.
func growSplitChange(s *game.Server, h game.Hacker, t, n int) float64 {
	whole := game.GrowMoney(s, h, s.MoneyAvailable, t, 1) - s.MoneyAvailable
	if whole <= 0 {
		return 0
	}
	money := s.MoneyAvailable
	for _, part := range parts(t, n) {
		money = game.GrowMoney(s, h, money, part, 1)
	}
	return math.Abs(whole-(money-s.MoneyAvailable)) / whole
}

// parts divides t into n near-equal parts.
func parts(t, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = t / n
		if i < t%n {
			out[i]++
		}
	}
	return out
}
