package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
	"github.com/hvmind/hvmind/world/tasks"
)

// worldEnv is a broker, a world service and a worker on host "home" that
// runs the world's tasks, with the worker's completion records.
type worldEnv struct {
	b      *brokertest.Broker
	w      *worker.Worker
	client *world.Client

	mu      sync.Mutex
	records map[string]job.Job
	arrived chan struct{}
}

const worldWorkerID = "ww"

// newWorldEnv: the tasks run against a world with FormulasOnly: these
// tests are of the handlers' timing and results; the rules for callers
// are tested in package world and end to end.
func newWorldEnv(t *testing.T, speed float64) *worldEnv {
	t.Helper()
	b := brokertest.New(t)
	svc, err := world.Serve(context.Background(), b.Connect(t), world.Options{Scenario: "newgame", Speed: speed, Seed: 1, FormulasOnly: true, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	e := &worldEnv{b: b, client: world.NewClient(b.Connect(t)), records: map[string]job.Job{}, arrived: make(chan struct{}, 64)}

	h := worker.NewHandlers()
	tasks.Register(h, world.NewClient(b.Connect(t)))
	e.w, err = worker.New(b.Connect(t), worker.Options{
		ID: worldWorkerID, Host: "home", Threads: 64, Tolerance: 100 * time.Millisecond,
		Spin: 500 * time.Microsecond, Heartbeat: 100 * time.Millisecond, Handlers: h, Logger: brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = e.w.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := broker.GetWorker(context.Background(), b.Res.Workers, worldWorkerID); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker did not register")
		}
	}

	cons, err := b.Res.JS.OrderedConsumer(context.Background(), broker.StreamDone, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		j, err := job.Parse(m.Data())
		if err != nil {
			t.Errorf("unreadable record %s: %v", m.Data(), err)
			return
		}
		e.mu.Lock()
		e.records[j.ID] = j
		e.mu.Unlock()
		select {
		case e.arrived <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return e
}

func (e *worldEnv) publish(t *testing.T, j job.Job) {
	t.Helper()
	data, err := job.Encode(&j)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Res.JS.Publish(context.Background(), broker.JobsSubject(worldWorkerID), data); err != nil {
		t.Fatal(err)
	}
}

func (e *worldEnv) record(t *testing.T, id string) job.Job {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		e.mu.Lock()
		r, ok := e.records[id]
		e.mu.Unlock()
		if ok {
			return r
		}
		select {
		case <-e.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no record of %s", id)
		}
	}
}

func TestWorldTasks(t *testing.T) {
	t.Parallel()
	const speed = 1000
	e := newWorldEnv(t, speed)
	sc, err := game.LoadScenario("newgame")
	if err != nil {
		t.Fatal(err)
	}
	food, _ := sc.Server("foodnstuff")
	h := sc.Player.Hacker()

	tests := []struct {
		name    string
		job     job.Job
		wantErr string
		check   func(t *testing.T, r world.Result)
	}{
		{
			name: "weaken lowers security",
			job:  job.Job{ID: "weaken-food", Task: "weaken", Args: []any{"foodnstuff"}, Threads: 8, Duration: game.WeakenTimeMs(food, h) / speed},
			check: func(t *testing.T, r world.Result) {
				if r.SecurityBefore != 10 || r.SecurityAfter != 10-game.WeakenAmount(8, 1) || r.SecurityRemoved != game.WeakenAmount(8, 1) {
					t.Errorf("weaken: security %v → %v, removed %v", r.SecurityBefore, r.SecurityAfter, r.SecurityRemoved)
				}
				if r.DurationGameMs != game.WeakenTimeMs(food, h) {
					t.Errorf("weaken took %v game ms, want %v", r.DurationGameMs, game.WeakenTimeMs(food, h))
				}
			},
		},
		{
			name: "scheduled weaken",
			job:  job.Job{ID: "weaken-sigma", Task: "weaken", Args: []any{"sigma-cosmetics"}, Threads: 60, StartTime: job.Now() + 300},
			check: func(t *testing.T, r world.Result) {
				if r.SecurityBefore != 10 || r.SecurityAfter != 10-game.WeakenAmount(60, 1) || r.SecurityRemoved != game.WeakenAmount(60, 1) || !r.Success {
					t.Errorf("weaken sigma-cosmetics: %+v", r)
				}
			},
		},
		{
			name: "grow",
			job:  job.Job{ID: "grow-n00dles", Task: "grow", Args: []any{"n00dles"}, Threads: 5},
			check: func(t *testing.T, r world.Result) {
				if !(r.GrowMultiplier > 1) || math.Abs(r.MoneyAfter-r.MoneyBefore*r.GrowMultiplier) > 1e-9*r.MoneyAfter {
					t.Errorf("grow: %+v", r)
				}
			},
		},
		{
			name: "hack",
			job:  job.Job{ID: "hack-n00dles", Task: "hack", Args: []any{"n00dles"}, Threads: 3},
			check: func(t *testing.T, r world.Result) {
				if r.Success != (r.Roll < r.Chance) || (r.Success && r.Stolen != r.MoneyBefore-r.MoneyAfter) {
					t.Errorf("hack: %+v", r)
				}
			},
		},
		{name: "no target", job: job.Job{ID: "no-target", Task: "hack", Threads: 1}, wantErr: "args[0]"},
		{name: "unknown target", job: job.Job{ID: "bad-target", Task: "grow", Args: []any{"nowhere"}, Threads: 1}, wantErr: "unknown target"},
		{name: "level too low", job: job.Job{ID: "too-hard", Task: "hack", Args: []any{"joesguns"}, Threads: 1}, wantErr: "level too low"},
	}
	for _, tc := range tests {
		e.publish(t, tc.job)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.record(t, tc.job.ID)
			if tc.wantErr != "" {
				if rec.Status != job.StatusFailed || !strings.Contains(rec.Error, tc.wantErr) {
					t.Fatalf("record %s / %q, want failed with %q", rec.Status, rec.Error, tc.wantErr)
				}
				return
			}
			if rec.Status != job.StatusDone {
				t.Fatalf("record %s (%s %s), want done", rec.Status, rec.Reason, rec.Error)
			}
			var r world.Result
			if err := json.Unmarshal(rec.Result, &r); err != nil {
				t.Fatalf("result %s: %v", rec.Result, err)
			}
			if r.JobID != tc.job.ID || r.Task != tc.job.Task || r.Host != "home" || r.Threads != tc.job.Threads || r.LevelAtStart < 1 {
				t.Errorf("result %s", rec.Result)
			}
			// The task lasts the duration the world gave.
			took := rec.ActualEndTime - rec.ActualStartTime
			if r.DurationRealMs != r.DurationGameMs/speed || math.Abs(took-r.DurationRealMs) > 50 {
				t.Errorf("ran %.3f ms; the world gave %.3f ms (%.3f game ms)", took, r.DurationRealMs, r.DurationGameMs)
			}
			tc.check(t, r)
		})
	}
	s, err := e.client.Server(context.Background(), "foodnstuff")
	if err != nil || s.HackDifficulty != 10-game.WeakenAmount(8, 1) {
		t.Errorf("foodnstuff after the weaken: %+v, %v", s, err)
	}
}

// A task killed before its end applies nothing, as a killed script.
func TestWorldTaskCancelledAppliesNothing(t *testing.T) {
	t.Parallel()
	e := newWorldEnv(t, 1) // a hack of n00dles lasts about 50 s
	ctx := context.Background()
	serversBefore, err := e.client.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	playerBefore, err := e.client.Player(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, job.Job{ID: "killed", Task: "hack", Args: []any{"n00dles"}, Threads: 10})
	// Cancel once it runs (it has begun in the world by then, or is about to).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if we, err := broker.GetWorker(ctx, e.b.Res.Workers, worldWorkerID); err == nil && len(we.Running) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hack did not start")
		}
	}
	time.Sleep(100 * time.Millisecond)
	if !e.w.Cancel("killed", "test kills it") {
		t.Fatal("job not found to cancel")
	}
	rec := e.record(t, "killed")
	if rec.Status != job.StatusCancelled {
		t.Fatalf("record %s (%s), want cancelled", rec.Status, rec.Reason)
	}
	time.Sleep(300 * time.Millisecond) // the world's holdback, for the settle
	// The world was told: it refuses the operation's finish (and has let
	// go of its threads).
	if _, err := e.client.FinishAt(ctx, "killed", 0, 0); !errors.Is(err, world.ErrSettled) {
		t.Errorf("a finish of the cancelled operation: %v, want ErrSettled", err)
	}
	serversAfter, err := e.client.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	playerAfter, err := e.client.Player(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if playerAfter != playerBefore {
		t.Errorf("player changed: %+v → %+v", playerBefore, playerAfter)
	}
	for i := range serversBefore {
		if serversBefore[i] != serversAfter[i] {
			t.Errorf("server %s changed", serversBefore[i].Hostname)
		}
	}
}

// A job whose endTime is later than its start plus the world's duration
// lands at its endTime, like the game's additionalMsec; one whose endTime
// is earlier lands when the world's duration is over.
func TestWorldTaskLandsAtEndTime(t *testing.T) {
	t.Parallel()
	const speed = 1000
	e := newWorldEnv(t, speed)
	weakenMs := n00dlesWeakenMs(t, speed)
	start := job.Now() + 300
	tests := []struct {
		name    string
		endTime float64
		wantEnd float64
	}{
		{name: "later endTime pads", endTime: start + weakenMs + 400, wantEnd: start + weakenMs + 400},
		{name: "earlier endTime does not cut", endTime: start + weakenMs/2, wantEnd: start + weakenMs},
	}
	for i, tc := range tests {
		e.publish(t, job.Job{ID: fmt.Sprintf("pad-%d", i), Task: "weaken", Args: []any{"n00dles"}, Threads: 1,
			Duration: tc.endTime - start, StartTime: start, EndTime: tc.endTime})
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.record(t, fmt.Sprintf("pad-%d", i))
			if rec.Status != job.StatusDone {
				t.Fatalf("record %s (%s %s), want done", rec.Status, rec.Reason, rec.Error)
			}
			if math.Abs(rec.ActualEndTime-tc.wantEnd) > 30 {
				t.Errorf("ended %.3f ms from %.3f, want within 30 ms", rec.ActualEndTime-tc.wantEnd, tc.wantEnd)
			}
		})
	}
}

// A world task gives its threads back when it lands, not when the world
// has answered its finish: a job due just after, waiting for the threads,
// starts on time, and never before its own start.
func TestWorldTaskFreesThreadsAtLanding(t *testing.T) {
	t.Parallel()
	const speed = 1000
	e := newWorldEnv(t, speed)
	weakenMs := n00dlesWeakenMs(t, speed)
	start := job.Now() + 300
	first := job.Job{ID: "first", Task: "weaken", Args: []any{"n00dles"}, Threads: 64,
		Duration: weakenMs + 5, StartTime: start, EndTime: start + weakenMs + 5}
	next := job.Job{ID: "next", Task: "weaken", Args: []any{"n00dles"}, Threads: 64,
		Duration: weakenMs, StartTime: first.EndTime + 1, EndTime: first.EndTime + 1 + weakenMs}
	e.publish(t, first)
	e.publish(t, next)
	a, b := e.record(t, "first"), e.record(t, "next")
	if a.Status != job.StatusDone || b.Status != job.StatusDone {
		t.Fatalf("records %s (%s), %s (%s); want done", a.Status, a.Reason, b.Status, b.Reason)
	}
	if late := b.ActualStartTime - b.StartTime; late < 0 || late > 20 {
		t.Errorf("the next job started %.3f ms from its start time; want within 20 ms, never early", late)
	}
}

// n00dlesWeakenMs is a weaken's real duration on newgame's n00dles.
func n00dlesWeakenMs(t *testing.T, speed float64) float64 {
	t.Helper()
	sc, err := game.LoadScenario("newgame")
	if err != nil {
		t.Fatal(err)
	}
	n00dles, _ := sc.Server("n00dles")
	return game.WeakenTimeMs(n00dles, sc.Player.Hacker()) / speed
}

func TestValidatorRefusesAtTheDoor(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	nc := b.Connect(t)
	svc, err := world.Serve(context.Background(), nc, world.Options{Scenario: "newgame", Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	v := tasks.Validator(world.NewClient(b.Connect(t)))
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		j    job.Job
		want error
	}{
		{"a rooted target", job.Job{Task: "hack", Args: []any{"n00dles"}}, nil},
		{"an unknown target", job.Job{Task: "grow", Args: []any{"nowhere"}}, world.ErrUnknownTarget},
		{"no root", job.Job{Task: "weaken", Args: []any{"CSEC"}}, game.ErrNoRoot},
		{"no args", job.Job{Task: "hack"}, errAny},
		{"a number", job.Job{Task: "hack", Args: []any{7.0}}, errAny},
		{"another task", job.Job{Task: "sleep", Args: []any{"anything"}}, nil},
	} {
		err := v.Validate(ctx, tc.j)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v, want accepted", tc.name, err)
		case tc.want == errAny && err == nil:
			t.Errorf("%s: accepted, want refused", tc.name)
		case tc.want != nil && tc.want != errAny && !errors.Is(err, tc.want):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

var errAny = errors.New("any error")
