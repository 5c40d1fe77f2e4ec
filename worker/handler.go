package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nats-io/nats.go"
	"sort"
	"sync"
	"time"

	"github.com/hvmind/hvmind/job"
)

// ErrUnknownTask is returned for a job whose task no handler serves.
var ErrUnknownTask = errors.New("unknown task")

// Handler runs one task. It returns the task's result (any JSON value, or
// nil; a result that is not JSON fails the job) or an error. A handler must honour ctx: it is cancelled when the job
// is cancelled. A worker that stops gracefully lets it run to its end.
type Handler interface {
	Run(ctx context.Context, t *Task) (json.RawMessage, error)
}

// ThreadHolder is a Handler whose work may outlast its job's reservation
// by a length it learns only once running (an operation whose duration
// another service gives, from the job's actual start). Until the handler
// says how long (Task.HoldThreadsUntil) or gives them back (Task.Release),
// the worker holds the job's threads until the landing the job's own
// figures predict: its actual start plus its duration, or its scheduled
// end if that is later. Were they free at the scheduled end, a job that
// started late, whose handler runs late on a busy machine and has not
// said so yet, would have the next job placed on them start while it
// still runs. Were they held until the handler says, however long, a
// handler whose answer is slow (the service restarting) would keep the
// next jobs from starting on time.
type ThreadHolder interface {
	Handler
	HoldsThreads() bool
}

// Resumer is a Handler that can take up a job that this worker's previous
// process received and whose start time has passed: a job that may be
// running outside the worker (an operation in another service, which a
// process's death does not stop). Without one such a job is never run
// again: it is settled (see Settler) or recorded missed.
//
// The worker calls Resume in place of Run, at once, holding the job's
// threads as for Run, until its scheduled end even for a ThreadHolder
// (which says with Task.HoldThreadsUntil if they are needed longer). Resume sets Task.Start to when the job actually
// started, which the record carries (none if it does not), and ends as
// Run would have. It
// returns an error wrapping ErrNotResumed when the job did not start, or
// cannot be taken up: the worker then settles it or records it missed,
// as for a task without a Resumer.
type Resumer interface {
	Handler
	Resume(ctx context.Context, t *Task) (json.RawMessage, error)
}

// ErrNotResumed is wrapped by a Resumer's error when it did not take the
// job up.
var ErrNotResumed = errors.New("the job was not taken up")

// HoldingHandlerFunc is a HandlerFunc that is a ThreadHolder.
type HoldingHandlerFunc func(ctx context.Context, t *Task) (json.RawMessage, error)

// Run calls f.
func (f HoldingHandlerFunc) Run(ctx context.Context, t *Task) (json.RawMessage, error) {
	return f(ctx, t)
}

// HoldsThreads implements ThreadHolder.
func (HoldingHandlerFunc) HoldsThreads() bool { return true }

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, t *Task) (json.RawMessage, error)

// Run calls f.
func (f HandlerFunc) Run(ctx context.Context, t *Task) (json.RawMessage, error) { return f(ctx, t) }

// Task is what a handler gets: the job, where it runs, and a precise clock.
type Task struct {
	// Job is the job being run; handlers must not change it.
	Job *job.Job
	// Worker and Host identify where the task runs.
	Worker string
	Host   string
	// Conn is the worker's connection to the broker: requests the task
	// makes for the job go through it, under the worker's identity (its
	// own, when the broker gives each worker one).
	Conn *nats.Conn
	// Start is when the job actually started: for a job taken up after a
	// restart (Resumed), when Resume was called, until Resume sets it (a
	// record of a job whose Resume did not set it carries no start).
	Start time.Time
	// Resumed is set for a job this worker's previous process received and
	// may have started, given to Resumer.Resume.
	Resumed bool
	// ScheduledEnd is when the job is meant to end.
	ScheduledEnd time.Time
	// EndedAt, when a handler sets it, is when its work ended, if that was
	// before it returned; the record's actualEndTime uses it. SleepUntil
	// sets it to the instant its timer fired, so a sleep's end is not
	// blurred by the goroutine hand-off that follows.
	EndedAt time.Time

	timers  *TimerQueue
	release func(at time.Time)
	hold    func(until time.Time)
	// end fires at ScheduledEnd. The worker arms it with the start timer,
	// so that a handler that the Go scheduler runs late still wakes at
	// ScheduledEnd.
	end *endTimer
}

// endTimer is a job's timer for its scheduled end.
type endTimer struct {
	timer *Timer
	fired chan time.Time // gets the instant it fired
}

// armEnd arms a timer for at; also, when set, is called on the timer
// queue's thread when it fires.
func armEnd(q *TimerQueue, at time.Time, also func(now time.Time)) *endTimer {
	e := &endTimer{fired: make(chan time.Time, 1)}
	e.timer = q.AtFirst(at, func(now time.Time) {
		e.fired <- now
		if also != nil {
			also(now)
		}
	})
	return e
}

// stop stops the timer if it has not fired.
func (e *endTimer) stop() {
	if e != nil {
		e.timer.Stop()
	}
}

// Release gives the job's threads back now (at EndedAt, when set), before
// the handler returns: for a task whose work has ended and that only has
// bookkeeping left, such as reporting what it did. Jobs waiting for the
// threads start at once, as they would have when the work ended.
func (t *Task) Release() {
	if t.release != nil {
		at := t.EndedAt
		if at.IsZero() {
			at = time.Now()
		}
		t.release(at)
	}
}

// HoldThreadsUntil tells the worker that the task's work runs until until:
// its threads, otherwise free at ScheduledEnd (the end of the job's
// reservation; for a ThreadHolder, see there), stay taken until then or
// until Release.
func (t *Task) HoldThreadsUntil(until time.Time) {
	if t.hold != nil {
		t.hold(until)
	}
}

// SleepUntil blocks until the instant until, precisely (see TimerQueue),
// or until ctx ends, and sets EndedAt to when it woke.
func (t *Task) SleepUntil(ctx context.Context, until time.Time) error {
	if t.end != nil && until.Equal(t.ScheduledEnd) {
		select {
		case woke := <-t.end.fired:
			t.end.fired <- woke // a second sleep until the same instant returns too
			t.EndedAt = woke
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	woke, err := sleepUntil(ctx, t.timers, until)
	if err == nil {
		t.EndedAt = woke
	}
	return err
}

// sleepUntil waits on q until the instant until, or until ctx ends, and
// returns when it woke.
func sleepUntil(ctx context.Context, q *TimerQueue, until time.Time) (time.Time, error) {
	if now := time.Now(); !now.Before(until) {
		return now, ctx.Err()
	}
	if q == nil {
		// A Task made by hand (a handler's unit test) has no timer queue:
		// the runtime's timer, less precise, does.
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case woke := <-t.C:
			return woke, nil
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
	ch := make(chan time.Time, 1)
	tm := q.AtFirst(until, func(now time.Time) { ch <- now })
	select {
	case woke := <-ch:
		return woke, nil
	case <-ctx.Done():
		tm.Stop()
		return time.Time{}, ctx.Err()
	}
}

// Handlers maps task names to handlers. It is safe for concurrent use.
type Handlers struct {
	mu sync.RWMutex
	m  map[string]Handler
}

// NewHandlers returns a registry holding the built-in "sleep" task.
func NewHandlers() *Handlers {
	h := &Handlers{m: map[string]Handler{}}
	h.Register("sleep", HandlerFunc(Sleep))
	return h
}

// Register adds or replaces the handler of a task.
func (h *Handlers) Register(task string, handler Handler) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[task] = handler
}

// Lookup returns the handler of a task.
func (h *Handlers) Lookup(task string) (Handler, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if hd, ok := h.m[task]; ok {
		return hd, nil
	}
	return nil, fmt.Errorf("%w %q (this worker runs: %v)", ErrUnknownTask, task, h.namesLocked())
}

// Names lists the registered tasks, sorted.
func (h *Handlers) Names() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.namesLocked()
}

// namesLocked lists the registered tasks, sorted; h.mu is held.
func (h *Handlers) namesLocked() []string {
	names := make([]string, 0, len(h.m))
	for n := range h.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Sleep is the built-in "sleep" task: it does nothing until the job's
// scheduled end. Tests and benchmarks use it to measure timing.
func Sleep(ctx context.Context, t *Task) (json.RawMessage, error) {
	if err := t.SleepUntil(ctx, t.ScheduledEnd); err != nil {
		return nil, err
	}
	return nil, nil
}
