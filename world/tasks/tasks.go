// Package tasks plugs the simulated world into the job system: the hack,
// grow and weaken task handlers a worker runs against the world service,
// and the split policy the pool asks about those tasks.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hvmind/hvmind/worker"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// How long a world task keeps retrying a request the world could not
// answer (no world service, a restart, a store hiccup). Begin retries for
// a while: the world fixes the operation's duration as of its stamped
// start, however late the begin arrives, so a begin answered within a
// restart of the world (its start, then world.ResumeHold) still lands on
// time. Finish retries for longer, since it is safe to repeat and the work
// has been done.
var (
	worldBeginRetry  = 6 * time.Second
	worldFinishRetry = 30 * time.Second
	// attemptTimeout bounds one request: longer than the world's holdback
	// (at most 200 ms) and a store's round trip; and short, since a world
	// that restarts holds what it receives for an attempt and some
	// (world.ResumeHold), and the shorter that hold, the fewer operations
	// land out of order after it.
	attemptTimeout = 600 * time.Millisecond
)

// Register registers the world's operations hack, grow and weaken, which
// act on the world through c. Each takes args: [target]
// and runs as in the game: the world fixes its duration when it starts
// (from the target's security and the player's level then), the task
// waits that long, precisely (or until the job's endTime, when that is
// later), and then the world applies its effect (with
// the security and level at the end); grow and weaken use the cores of the
// worker's host. The job's result is the world's Result. A task cancelled
// before its end applies nothing, like a killed script.
func Register(h *worker.Handlers, c *world.Client) {
	for _, task := range []string{game.OpHack, game.OpGrow, game.OpWeaken} {
		h.Register(task, operation(task, c))
	}
}

// operation is the handler of one of the world's operations.
func operation(task string, c *world.Client) worker.HoldingHandlerFunc {
	return func(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
		// The worker's own requests, through its own connection: a
		// broker that gives each worker an identity lets it act only
		// for itself (see world.WorkerSubject).
		c := c
		if t.Conn != nil {
			c = world.NewClient(t.Conn)
		}
		c = c.As(t.Worker)
		target, ok := t.Job.StringArg(0)
		if !ok || target == "" {
			return nil, fmt.Errorf("%s: args[0] must be the target's hostname (got args %v)", task, t.Job.Args)
		}
		// Its threads are the operation's until the world says how long
		// it runs (the worker holds them from the start: a
		// HoldingHandlerFunc): were they free at the job's scheduled end
		// before the begin's answer came (a world slow to answer, or this
		// goroutine run late, under load), the worker would start the
		// next job on them while the world still counts them, and the
		// world would refuse it.
		req := world.BeginRequest{JobID: t.Job.ID, Task: task, Target: target, Host: t.Host, Owner: t.Worker, Threads: t.Job.Threads,
			Start: float64(t.Start.UnixNano()) / 1e6, Due: t.Job.StartTime}
		var b world.BeginReply
		err := retry(ctx, worldBeginRetry, func(ctx context.Context) error {
			var err error
			b, err = c.Begin(ctx, req)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				// Cancelled with its begin perhaps on its way: the
				// world must not count its threads, nor begin it later.
				err = errors.Join(err, abandon(ctx, c, t.Job.ID))
			}
			return nil, fmt.Errorf("%s %s: %w", task, target, err)
		}
		// The operation lands when the world's duration is over, or at the
		// job's endTime if that is later, like the game's additionalMsec:
		// a caller that starts a job a little early (to absorb a late start,
		// or a duration shortened by a level-up since it planned) still
		// lands it on its schedule.
		end := t.Start.Add(time.Duration(b.DurationRealMs * float64(time.Millisecond)))
		if t.Job.EndTime > 0 && t.ScheduledEnd.After(end) {
			end = t.ScheduledEnd
		}
		t.HoldThreadsUntil(end) // past ScheduledEnd when it overruns its reservation
		if err := t.SleepUntil(ctx, end); err != nil {
			// Cancelled: nothing is applied, and, as a killed script's
			// in the game, its RAM is free at once. The world hears it
			// (a settle, which also refuses a finish from now on), else
			// it counts the threads as running until the operation's end
			// and refuses the next job on them: a repair's cancels made
			// the next prep fail three times over (make chaos).
			return nil, errors.Join(err, abandon(ctx, c, t.Job.ID)) // killed: nothing is applied
		}
		// The operation has run its course: its threads are free (the game
		// frees a script's RAM when its hack returns), and it is finished
		// even if the job is cancelled now, so that the record tells what
		// the world did.
		t.Release()
		fctx := context.WithoutCancel(ctx)
		var r world.Result
		err = retry(fctx, worldFinishRetry, func(ctx context.Context) error {
			var err error
			r, err = c.FinishAt(ctx, t.Job.ID, float64(t.EndedAt.UnixNano())/1e6, float64(end.UnixNano())/1e6)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", task, target, err)
		}
		data, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode result: %w", task, target, err)
		}
		return data, nil
	}
}

// abandon tells the world that a job's operation will not finish (its task
// was cancelled): a settle, after which the world neither counts its
// threads nor begins or finishes it.
func abandon(ctx context.Context, c *world.Client, id string) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
	defer cancel()
	if _, err := c.Settle(sctx, world.SettleRequest{JobIDs: []string{id}, Reason: "cancelled while it ran"}); err != nil {
		return fmt.Errorf("tell the world it was cancelled: %w", err)
	}
	return nil
}

// retry calls f until it succeeds, fails for good, or the time is up.
func retry(ctx context.Context, within time.Duration, f func(context.Context) error) error {
	deadline := time.Now().Add(within)
	wait := 20 * time.Millisecond
	for {
		// Each attempt has a short time of its own: a reply lost (the
		// world, or the broker, restarted meanwhile) is asked again in
		// seconds, not at the end of the whole time. Begin and finish are
		// idempotent: asking twice applies once.
		rctx, cancel := context.WithTimeout(ctx, min(attemptTimeout, max(time.Until(deadline), time.Second)))
		err := f(rctx)
		cancel()
		if err == nil || !world.Retryable(err) || time.Now().After(deadline) {
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}
