// Package tasks plugs the simulated world into the job system: the hack,
// grow and weaken task handlers a worker runs against the world service,
// and the split policy the pool asks about those tasks.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
		h.Register(task, operation{task: task, c: c})
	}
}

// operation is the handler of one of the world's operations: a
// worker.ThreadHolder, and a worker.Resumer that takes up an operation its
// worker's previous process began.
type operation struct {
	task string
	c    *world.Client
}

// HoldsThreads implements worker.ThreadHolder: the threads are the
// operation's until its landing, which the world says; until it has said,
// until the job's start plus its duration.
func (operation) HoldsThreads() bool { return true }

// client is the worker's own client: its requests go through its own
// connection, since a broker that gives each worker an identity lets it
// act only for itself (see world.WorkerSubject).
func (o operation) client(t *worker.Task) *world.Client {
	c := o.c
	if t.Conn != nil {
		c = world.NewClient(t.Conn)
	}
	return c.As(t.Worker)
}

// target is the job's target, args[0].
func (o operation) target(t *worker.Task) (string, error) {
	target, ok := t.Job.StringArg(0)
	if !ok || target == "" {
		return "", fmt.Errorf("%s: args[0] must be the target's hostname (got args %v)", o.task, t.Job.Args)
	}
	return target, nil
}

// Run begins the operation, waits for its landing and finishes it.
func (o operation) Run(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
	c := o.client(t)
	target, err := o.target(t)
	if err != nil {
		return nil, err
	}
	// Its threads are the operation's until its landing (the worker holds
	// them from the start, a ThreadHolder, until the start plus the job's
	// duration when the begin's answer comes later): were they free at
	// the job's scheduled end though it started late, the worker would
	// start the next job on them while the world still counts them, and
	// the world would refuse it.
	req := world.BeginRequest{JobID: t.Job.ID, Task: o.task, Target: target, Host: t.Host, Owner: t.Worker, Threads: t.Job.Threads,
		Start: float64(t.Start.UnixNano()) / 1e6, Due: t.Job.StartTime}
	if t.Job.EndTime > 0 {
		req.LandAt = float64(t.ScheduledEnd.UnixNano()) / 1e6
	}
	var b world.BeginReply
	err = retry(ctx, worldBeginRetry, func(ctx context.Context) error {
		var err error
		b, err = c.Begin(ctx, req)
		return err
	})
	if err != nil {
		if ctx.Err() != nil || world.Retryable(err) {
			// Cancelled, or no answer came, with its begin perhaps on
			// its way or stored: the world must not count its threads,
			// begin it later, or land it while the record says it
			// failed.
			res, aerr := abandon(ctx, c, t)
			if res != nil {
				return res, nil
			}
			err = errors.Join(err, aerr)
		}
		return nil, fmt.Errorf("%s %s: %w", o.task, target, err)
	}
	return o.land(ctx, c, t, b, target)
}

// Resume takes up an operation that the worker's previous process may
// have begun (worker.Resumer): the world says whether it runs (then it is
// finished at its landing, as its own process would have), was applied
// (its result: it landed while no process ran it), or never began (the
// world settles it, and the worker records it as it does any job it
// could not take up).
func (o operation) Resume(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
	c := o.client(t)
	target, err := o.target(t)
	if err != nil {
		return nil, err
	}
	var rep world.ResumeReply
	err = retry(ctx, worldBeginRetry, func(ctx context.Context) error {
		var err error
		rep, err = c.Resume(ctx, world.ResumeRequest{JobID: t.Job.ID})
		return err
	})
	switch {
	case err != nil && ctx.Err() != nil:
		// Cancelled while it asked: as a cancel of a running operation.
		res, aerr := abandon(ctx, c, t)
		if res != nil {
			return res, nil
		}
		return nil, fmt.Errorf("%s %s: %w", o.task, target, errors.Join(err, aerr))
	case err != nil:
		return nil, fmt.Errorf("%s %s: %w: %w", o.task, target, worker.ErrNotResumed, err)
	case rep.Begun != nil:
		b := *rep.Begun
		t.Start = msTime(b.StartedAt)
		return o.land(ctx, c, t, b, target)
	case rep.Settlement != nil && rep.Settlement.Applied && rep.Settlement.Result != nil:
		r := rep.Settlement.Result
		if start, ok := startedAt(*r); ok {
			t.Start, t.EndedAt = msTime(start), msTime(r.LandedAt)
		}
		return json.Marshal(r)
	default:
		return nil, fmt.Errorf("%s %s: %w: the world settled it", o.task, target, worker.ErrNotResumed)
	}
}

// startedAt is when the world began an operation it applied: as its
// result says, or, for one begun before results said (StartedAt 0), its
// landing less its duration, as the settler's records have it.
func startedAt(r world.Result) (float64, bool) {
	switch {
	case r.LandedAt <= 0:
		return 0, false
	case r.StartedAt > 0:
		return r.StartedAt, true
	default:
		return r.LandedAt - r.DurationRealMs, true
	}
}

// msTime is the instant of epoch ms.
func msTime(ms float64) time.Time { return time.Unix(0, int64(math.Round(ms*1e6))) }

// landing is when a begun operation lands: when the world's duration is
// over, or at the job's endTime if that is later, like the game's
// additionalMsec: a caller that starts a job a little early (to absorb a
// late start, or a duration shortened by a level-up since it planned)
// still lands it on its schedule.
func (o operation) landing(t *worker.Task, b world.BeginReply) time.Time {
	end := t.Start.Add(time.Duration(b.DurationRealMs * float64(time.Millisecond)))
	if t.Job.EndTime > 0 && t.ScheduledEnd.After(end) {
		end = t.ScheduledEnd
	}
	return end
}

// land waits for a begun operation's landing and finishes it.
func (o operation) land(ctx context.Context, c *world.Client, t *worker.Task, b world.BeginReply, target string) (json.RawMessage, error) {
	end := o.landing(t, b)
	t.HoldThreadsUntil(end) // past ScheduledEnd when it overruns its reservation
	if !time.Now().Before(end) && t.Resumed {
		// Taken up after its landing: it landed then (the world lands
		// an operation on its own, unless it has restarted since).
		t.EndedAt = end
	} else if err := t.SleepUntil(ctx, end); err != nil {
		// Cancelled: nothing is applied, and, as a killed script's
		// in the game, its RAM is free at once. The world hears it
		// (a settle, which also refuses a finish from now on), else
		// it counts the threads as running until the operation's end
		// and refuses the next job on them: a repair's cancels made
		// the next prep fail three times over (make chaos). Unless it
		// landed before the world heard: then the record tells that.
		res, aerr := abandon(ctx, c, t)
		if res != nil {
			return res, nil
		}
		return nil, errors.Join(err, aerr)
	}
	// The operation has run its course: its threads are free (the game
	// frees a script's RAM when its hack returns), and it is finished
	// even if the job is cancelled now, so that the record tells what
	// the world did.
	t.Release()
	fctx := context.WithoutCancel(ctx)
	var r world.Result
	err := retry(fctx, worldFinishRetry, func(ctx context.Context) error {
		var err error
		r, err = c.FinishAt(ctx, t.Job.ID, float64(t.EndedAt.UnixNano())/1e6, float64(end.UnixNano())/1e6)
		return err
	})
	if err != nil && world.Retryable(err) {
		// The world lands it on its own: what did it do? A settle
		// says, and makes sure of it.
		res, aerr := abandon(fctx, c, t)
		if res != nil {
			return res, nil
		}
		err = errors.Join(err, aerr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", o.task, target, err)
	}
	if r.LandedAt > 0 {
		// The record ends when the operation landed, which the world
		// says, not when this worker woke to finish it.
		t.EndedAt = msTime(r.LandedAt)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: encode result: %w", o.task, target, err)
	}
	return data, nil
}

// abandon tells the world that a job's operation will not finish (its task
// was cancelled, or its worker gives up on asking): a settle, after which the world neither counts its
// threads nor begins or finishes it. The operation may have landed before
// the settle reached the world (the world lands it on its own): then
// abandon returns its result, which the job's record must carry.
func abandon(ctx context.Context, c *world.Client, t *worker.Task) (json.RawMessage, error) {
	var sts []world.Settlement
	// As long as a finish: a settle is as safe to repeat, and one given
	// up leaves a record that may contradict the world. The chaos test
	// found 407 operations recorded failed that the world had applied: a
	// worker process cut off from the broker for some 10 s after it
	// restarted gave up on their begins after 6 s, and on their settles
	// 6 s later, while the begins it had sent were being applied.
	err := retry(context.WithoutCancel(ctx), worldFinishRetry, func(sctx context.Context) error {
		var err error
		sts, err = c.Settle(sctx, world.SettleRequest{JobIDs: []string{t.Job.ID}, Reason: "cancelled while it ran"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tell the world it was cancelled: %w", err)
	}
	if len(sts) == 1 && sts[0].Applied && sts[0].Result != nil {
		if start, ok := startedAt(*sts[0].Result); ok {
			// When the world began and landed it: a job taken up after a
			// restart and cancelled before Resume learned it has no
			// other start.
			t.Start, t.EndedAt = msTime(start), msTime(sts[0].Result.LandedAt)
		}
		data, err := json.Marshal(sts[0].Result)
		if err != nil {
			return nil, fmt.Errorf("encode the result of an operation that landed before its cancel: %w", err)
		}
		return data, nil
	}
	return nil, nil
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
