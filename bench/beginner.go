package bench

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// The game's beginner script, as a baseline strategy: Getting Started's
// early-hack-template.js, run with as many threads as fit on every rooted
// host with RAM, all against one target:
//
//	while (true) {
//	    if (security > minSecurity + 5) await ns.weaken(target);
//	    else if (money < maxMoney * 0.75) await ns.grow(target);
//	    else await ns.hack(target);
//	}
//
// A script thread costs 2.4 GB in the game (the script's RAM), and each
// host runs one copy of the loop, one operation after the other. Here each
// loop drives the world service directly, as a script drives the game: it
// reads the target, begins an operation with its threads (the world fixes
// its duration, as the game does), sleeps that long, and finishes it.

// BeginnerScriptRAM is the RAM of one thread of early-hack-template.js, GB.
const BeginnerScriptRAM = 2.4

// beginnerLoop runs the script on one host until ctx ends, and counts
// its operations.
func beginnerLoop(ctx context.Context, wc *world.Client, host, target string, threads int, ops *atomic.Int64) error {
	for n := 0; ctx.Err() == nil; n++ {
		srv, err := wc.Server(ctx, target)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		task := game.OpHack
		switch {
		case srv.HackDifficulty > srv.MinDifficulty+5:
			task = game.OpWeaken
		case srv.MoneyAvailable < srv.MoneyMax*0.75:
			task = game.OpGrow
		}
		id := fmt.Sprintf("script-%s-%d", host, n)
		start := time.Now()
		b, err := wc.Begin(ctx, world.BeginRequest{JobID: id, Task: task, Target: target, Host: host, Threads: threads,
			Start: float64(start.UnixNano()) / 1e6})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s on %s: %w", task, host, err)
		}
		end := start.Add(time.Duration(b.DurationRealMs * float64(time.Millisecond)))
		select {
		case <-ctx.Done():
			return nil // killed: nothing applied
		case <-time.After(time.Until(end)):
		}
		endMs := float64(end.UnixNano()) / 1e6
		if _, err := wc.FinishAt(context.WithoutCancel(ctx), id, endMs, endMs); err != nil {
			return fmt.Errorf("%s on %s: %w", task, host, err)
		}
		ops.Add(1)
	}
	return nil
}

// runBeginner runs the script on every rooted host with RAM of the world
// until ctx ends, and returns how many operations it finished.
func runBeginner(ctx context.Context, wc *world.Client, target string) (int64, error) {
	servers, err := wc.Servers(ctx)
	if err != nil {
		return 0, err
	}
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(servers))
	for _, s := range servers {
		threads := int(math.Floor(s.MaxRAM / BeginnerScriptRAM))
		if !s.HasAdminRights || threads < 1 {
			continue
		}
		wg.Go(func() {
			if err := beginnerLoop(ctx, wc, s.Hostname, target, threads, &ops); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return ops.Load(), <-errs
}
