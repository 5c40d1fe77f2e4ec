package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Service is the live game as a world: it answers the world service's
// requests (package world's subjects, so that the pool's capacity, the
// tasks and the batcher work unchanged) from the game, through its
// executor.
//
//   - servers, server, player, clock: the executor's state, asked each time.
//   - ram, ram.reserve, ram.release: the rooted servers with RAM, less what
//     the game's other scripts use (the executor's own among them); the
//     threads each worker holds are kept by the service.
//   - begin runs the operation in the game, landing at the job's endTime;
//     finish answers with its landing once the game has reported it.
//   - settle and resume: an operation that has not landed is killed in the
//     game before the service says it never will.
//
// What it keeps (each operation, landing, settlement and reservation)
// is in the bucket Bucket, so that a restarted service answers as before.
// Game time is wall time: Speed is 1, and the game's clock is compared
// with this machine's at every state (Executor.Offset).
type Service struct {
	nc   *nats.Conn
	ex   *Executor
	kv   jetstream.KeyValue
	log  zerolog.Logger
	svc  micro.Service
	subs *nats.Subscription

	mu sync.Mutex
	// offset is the game's clock less this machine's (ms).
	offset float64
	// last is the executor's last state, read at lastAt (see recent).
	last   State
	lastAt time.Time
	ops    map[string]*record
	ram    map[string]map[string]int // host -> owner -> threads
	// known is each target's security and money as last seen after a
	// landing: the "before" of the next one.
	known map[string]targetSeen
	seq   uint64
	// landed wakes the finishes waiting for a landing.
	landed *sync.Cond

	wg      sync.WaitGroup
	stopped chan struct{}
	once    sync.Once
}

// Bucket is the key-value bucket of the live game's service.
const Bucket = "hvmind_live"

// finishWait is how long a finish waits for the game's report of a
// landing before it answers "not yet" (world.ErrUnavailable, which the
// task asks again after): shorter than the task's attempt.
const finishWait = 400 * time.Millisecond

// executorTimeout bounds one request to the executor.
const executorTimeout = 2 * time.Second

// stateFresh is how old a state a begin may use for what it reports of
// the target and the player at its start: a begin asks the executor once
// (to run the operation), not twice, when another request read the state
// this recently. The operation's own time is the game's, at its start.
const stateFresh = time.Second

// recent is the executor's state, read again when older than stateFresh.
func (s *Service) recent(ctx context.Context) (State, error) {
	s.mu.Lock()
	st, at := s.last, s.lastAt
	s.mu.Unlock()
	if !at.IsZero() && time.Since(at) < stateFresh {
		return st, nil
	}
	return s.state(ctx)
}

// record is what the service keeps of one job's operation.
type record struct {
	Begin   *world.BeginReply `json:"begin,omitempty"`
	Op      *Op               `json:"op,omitempty"`
	Result  *world.Result     `json:"result,omitempty"`
	Settled *world.Settlement `json:"settled,omitempty"`
}

type targetSeen struct {
	Security, Money float64
}

// ServiceOptions configure the live game's service.
type ServiceOptions struct {
	// Storage is the bucket's replicas and placement.
	Storage broker.Storage
	Logger  zerolog.Logger
}

// Serve starts answering the world's requests from the game's executor,
// and keeps the executor's landings. It fails with world.ErrAlreadyRunning
// when a world service answers already.
func Serve(ctx context.Context, nc *nats.Conn, o ServiceOptions) (*Service, error) {
	if m, err := nc.Request(world.SubjectClock, nil, 500*time.Millisecond); err == nil && m.Header.Get(micro.ErrorCodeHeader) == "" {
		return nil, fmt.Errorf("%w on this broker", world.ErrAlreadyRunning)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("live game: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "HVMind live game: operations, landings, settlements and reservations",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(o.Storage.Replicas, 1), Placement: placement(o.Storage),
	})
	if err != nil {
		return nil, fmt.Errorf("live game: bucket %s: %w", Bucket, err)
	}
	s := &Service{nc: nc, ex: NewExecutor(nc), kv: kv, log: o.Logger.With().Str("part", "live").Logger(),
		ops: map[string]*record{}, ram: map[string]map[string]int{}, known: map[string]targetSeen{}, stopped: make(chan struct{})}
	s.landed = sync.NewCond(&s.mu)
	if err := s.load(cctx); err != nil {
		return nil, err
	}
	if s.subs, err = HandleLandings(nc, s.takeLanding); err != nil {
		return nil, err
	}
	if err := s.startMicro(); err != nil {
		_ = s.subs.Unsubscribe()
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.stopped:
		}
	}()
	return s, nil
}

func placement(st broker.Storage) *jetstream.Placement {
	if len(st.Tags) == 0 {
		return nil
	}
	return &jetstream.Placement{Tags: st.Tags}
}

// Stop stops answering and returns once every request in progress has
// been answered.
func (s *Service) Stop() {
	s.once.Do(func() {
		close(s.stopped)
		if s.svc != nil {
			_ = s.svc.Stop()
		}
		_ = s.subs.Unsubscribe()
		s.mu.Lock()
		s.landed.Broadcast()
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// load reads what the service kept.
func (s *Service) load(ctx context.Context) error {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("live game: list %s: %w", Bucket, err)
	}
	for k := range keys.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		switch kind, rest, _ := strings.Cut(k, "."); kind {
		case "op":
			var r record
			if json.Unmarshal(e.Value(), &r) == nil {
				s.ops[rest] = &r
				if r.Result != nil && r.Result.Seq > s.seq {
					s.seq = r.Result.Seq
				}
			}
		case "ram":
			var v struct {
				Host, Owner string
				Threads     int
			}
			if json.Unmarshal(e.Value(), &v) == nil && v.Threads > 0 {
				if s.ram[v.Host] == nil {
					s.ram[v.Host] = map[string]int{}
				}
				s.ram[v.Host][v.Owner] = v.Threads
			}
		}
	}
	return nil
}

func (s *Service) putOp(ctx context.Context, id string, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, "op."+id, b); err != nil {
		return fmt.Errorf("%w: %v", world.ErrUnavailable, err)
	}
	return nil
}

func (s *Service) putRAM(ctx context.Context, host, owner string, threads int) error {
	key := "ram." + host + "." + owner
	var err error
	if threads <= 0 {
		err = s.kv.Delete(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			err = nil
		}
	} else {
		b, _ := json.Marshal(map[string]any{"Host": host, "Owner": owner, "Threads": threads})
		_, err = s.kv.Put(ctx, key, b)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", world.ErrUnavailable, err)
	}
	return nil
}

func (s *Service) startMicro() error {
	h := func(run func(ctx context.Context, req micro.Request) (any, error)) micro.HandlerFunc {
		return func(req micro.Request) {
			r := broker.ReplyLater(s.nc, req)
			subject, data := req.Subject(), bytes.Clone(req.Data())
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				v, err := run(ctx, copied{subject: subject, data: data, Request: req})
				reply(r, v, err)
			}()
		}
	}
	svc, err := broker.AddService(s.nc, micro.Config{
		Name:        world.ServiceName,
		Version:     world.Version,
		Description: "HVMind live game: the world's requests, answered by the game through its executor",
	},
		broker.Endpoint{Name: "servers", Subject: world.SubjectServers, Handler: h(s.servers), Description: "every server of the game"},
		broker.Endpoint{Name: "server", Subject: world.SubjectServer, Handler: h(s.server), Description: "one server by name"},
		broker.Endpoint{Name: "player", Subject: world.SubjectPlayer, Handler: h(s.player), Description: "the player"},
		broker.Endpoint{Name: "clock", Subject: world.SubjectClock, Handler: h(s.clock), Description: "the game's clock (speed 1)"},
		broker.Endpoint{Name: "ram", Subject: world.SubjectRAM, Handler: h(s.hosts), Description: "free and used RAM of every rooted host"},
		broker.Endpoint{Name: "ram-reserve", Subject: world.SubjectRAMReserve, Handler: h(s.reserve), Description: "a worker takes threads of RAM on a host"},
		broker.Endpoint{Name: "ram-release", Subject: world.SubjectRAMRelease, Handler: h(s.release), Description: "a worker gives its RAM on a host back"},
		broker.Endpoint{Name: "begin", Subject: world.SubjectBegin, Handler: h(s.begin), Description: "runs a hack, grow or weaken in the game, landing at the job's endTime"},
		broker.Endpoint{Name: "finish", Subject: world.SubjectFinish, Handler: h(s.finish), Description: "the game's result of an operation, once it has landed"},
		broker.Endpoint{Name: "settle", Subject: world.SubjectSettle, Handler: h(s.settle), Description: "what became of the operations of gone workers; those not landed are killed"},
		broker.Endpoint{Name: "resume", Subject: world.SubjectResume, Handler: h(s.resume), Description: "what became of an operation whose worker restarted"},
		broker.Endpoint{Name: "worker-begin", Subject: world.WorkerSubject("*", world.WorkerBegin), Handler: h(s.begin), Description: "begin, asked by a worker for itself"},
		broker.Endpoint{Name: "worker-finish", Subject: world.WorkerSubject("*", world.WorkerFinish), Handler: h(s.finish), Description: "finish, asked by a worker"},
		broker.Endpoint{Name: "worker-settle", Subject: world.WorkerSubject("*", world.WorkerSettle), Handler: h(s.settle), Description: "settle, asked by a worker"},
		broker.Endpoint{Name: "worker-resume", Subject: world.WorkerSubject("*", world.WorkerResume), Handler: h(s.resume), Description: "resume, asked by a worker"},
		broker.Endpoint{Name: "worker-ram-reserve", Subject: world.WorkerSubject("*", world.WorkerRAMReserve), Handler: h(s.reserve), Description: "ram-reserve, asked by a worker"},
		broker.Endpoint{Name: "worker-ram-release", Subject: world.WorkerSubject("*", world.WorkerRAMRelease), Handler: h(s.release), Description: "ram-release, asked by a worker"},
	)
	if err != nil {
		return fmt.Errorf("live game: %w", err)
	}
	s.svc = svc
	return nil
}

// copied is a request whose subject and data outlive the handler.
type copied struct {
	micro.Request
	subject string
	data    []byte
}

func (c copied) Subject() string { return c.subject }
func (c copied) Data() []byte    { return c.data }

func reply(r broker.AsyncReply, v any, err error) {
	if err == nil {
		data, merr := json.Marshal(v)
		if merr == nil {
			_ = r.Respond(data)
			return
		}
		err = merr
	}
	code, status := world.ErrorCode(err)
	body, _ := json.Marshal(world.ErrorReply{Error: err.Error(), Code: code})
	_ = r.Error(status, strings.SplitN(err.Error(), "\n", 2)[0], body)
}

// asker is the worker that asked on its own subject, or "".
func asker(subject string) string {
	rest, ok := strings.CutPrefix(subject, world.SubjectWorkerPrefix)
	if !ok {
		return ""
	}
	w, _, _ := strings.Cut(rest, ".")
	return w
}

func decode(req micro.Request, v any) error {
	if err := json.Unmarshal(req.Data(), v); err != nil {
		return fmt.Errorf("%w: malformed request to %s: %v", world.ErrInvalid, req.Subject(), err)
	}
	return nil
}

// unavailable turns a failed request to the executor into an error the
// world's callers ask again after.
func unavailable(err error) error {
	if errors.Is(err, ErrExecutor) {
		return err
	}
	return fmt.Errorf("%w: the game's executor did not answer (is hvmind.js running in the game?): %v", world.ErrUnavailable, err)
}

// state asks the executor, and updates the clock's offset.
func (s *Service) state(ctx context.Context) (State, error) {
	cctx, cancel := context.WithTimeout(ctx, executorTimeout)
	defer cancel()
	off, _, st, err := s.ex.Offset(cctx)
	if err != nil {
		return st, unavailable(err)
	}
	s.mu.Lock()
	s.offset, s.last, s.lastAt = off, st, time.Now()
	for _, srv := range st.Servers {
		if _, ok := s.known[srv.Hostname]; !ok {
			s.known[srv.Hostname] = targetSeen{Security: srv.HackDifficulty, Money: srv.MoneyAvailable}
		}
	}
	s.mu.Unlock()
	return st, nil
}

func (s *Service) servers(ctx context.Context, _ micro.Request) (any, error) {
	st, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]game.Server, len(st.Servers))
	for i, srv := range st.Servers {
		out[i] = srv.Server
	}
	return out, nil
}

func (s *Service) server(ctx context.Context, req micro.Request) (any, error) {
	name := strings.TrimSpace(string(req.Data()))
	var quoted string
	if json.Unmarshal(req.Data(), &quoted) == nil {
		name = quoted
	}
	st, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	for _, srv := range st.Servers {
		if srv.Hostname == name {
			return srv.Server, nil
		}
	}
	return nil, fmt.Errorf("%w: no server %q in the game", world.ErrUnknownTarget, name)
}

func playerInfo(p PlayerState) world.PlayerInfo {
	return world.PlayerInfo{HackingExp: p.Exp.Hacking, HackingLevel: p.Skills.Hacking, Money: p.Money, Mults: p.Mults}
}

func (s *Service) player(ctx context.Context, _ micro.Request) (any, error) {
	st, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	return playerInfo(st.Player), nil
}

func (s *Service) clock(ctx context.Context, _ micro.Request) (any, error) {
	st, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return world.Clock{Scenario: "live", Speed: 1, GameTimeMs: st.Now, Seq: s.seq, Time: time.Now()}, nil
}

// scriptRAM is the RAM per thread of an operation's script.
func scriptRAM(op string) float64 {
	if op == game.OpHack {
		return HackScriptRAM
	}
	return GrowScriptRAM
}

// threadRAM is the RAM a worker's thread holds: the largest operation's.
const threadRAM = GrowScriptRAM

// hostsLocked is the RAM of every rooted server with RAM: what the game's
// scripts use, less the operations this service runs (they use the
// threads their workers hold), and the reservations.
func (s *Service) hostsLocked(st State) []world.HostRAM {
	ours := map[string]float64{}
	for _, op := range st.Ops {
		ours[op.Host] += scriptRAM(op.Op) * float64(op.Threads)
	}
	var out []world.HostRAM
	for _, srv := range st.Servers {
		if !srv.HasAdminRights || srv.MaxRAM <= 0 {
			continue
		}
		others := math.Max(0, srv.RAMUsed-ours[srv.Hostname])
		reserved := 0
		res := map[string]int{}
		for owner, n := range s.ram[srv.Hostname] {
			reserved += n
			res[owner] = n
		}
		free := int(math.Floor((srv.MaxRAM-others)/threadRAM+1e-9)) - reserved
		out = append(out, world.HostRAM{Hostname: srv.Hostname, MaxRAM: srv.MaxRAM, RAMUsed: others + float64(reserved)*threadRAM,
			CPUCores: max(srv.CPUCores, 1), FreeThreads: max(free, 0), Reservations: res})
	}
	return out
}

func (s *Service) hosts(ctx context.Context, _ micro.Request) (any, error) {
	st, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostsLocked(st), nil
}

func (s *Service) reserve(ctx context.Context, req micro.Request) (any, error) {
	return s.setRAM(ctx, req, true)
}

func (s *Service) release(ctx context.Context, req micro.Request) (any, error) {
	return s.setRAM(ctx, req, false)
}

func (s *Service) setRAM(ctx context.Context, req micro.Request, take bool) (any, error) {
	var r world.RAMRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	if a := asker(req.Subject()); a != "" && a != r.Owner {
		return nil, fmt.Errorf("%w: worker %s asked for the RAM of %s", world.ErrNotOwner, a, r.Owner)
	}
	if r.Owner == "" || r.Host == "" || (take && r.Threads <= 0) {
		return nil, fmt.Errorf("%w: a reservation needs a host, an owner and threads", world.ErrInvalid)
	}
	st, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var host *world.HostRAM
	hosts := s.hostsLocked(st)
	for i := range hosts {
		if hosts[i].Hostname == r.Host {
			host = &hosts[i]
		}
	}
	if host == nil {
		return nil, fmt.Errorf("%w: %s is not a rooted server with RAM in the game", world.ErrUnknownHost, r.Host)
	}
	threads := 0
	if take {
		had := s.ram[r.Host][r.Owner]
		if r.Threads-had > host.FreeThreads {
			return nil, fmt.Errorf("%w: %s has %d threads free, %s asks %d more", world.ErrNoRAM, r.Host, host.FreeThreads, r.Owner, r.Threads-had)
		}
		threads = r.Threads
	}
	if err := s.putRAM(ctx, r.Host, r.Owner, threads); err != nil {
		return nil, err
	}
	if threads > 0 {
		if s.ram[r.Host] == nil {
			s.ram[r.Host] = map[string]int{}
		}
		s.ram[r.Host][r.Owner] = threads
	} else {
		delete(s.ram[r.Host], r.Owner)
	}
	for _, h := range s.hostsLocked(st) {
		if h.Hostname == r.Host {
			return world.RAMReply{HostRAM: h, Owner: r.Owner, Threads: threads}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", world.ErrUnknownHost, r.Host)
}

func (s *Service) begin(ctx context.Context, req micro.Request) (any, error) {
	var br world.BeginRequest
	if err := decode(req, &br); err != nil {
		return nil, err
	}
	if !job.ValidID(br.JobID) {
		return nil, fmt.Errorf("%w: job id %q", world.ErrInvalid, br.JobID)
	}
	if a := asker(req.Subject()); a != "" && br.Owner != a {
		return nil, fmt.Errorf("%w: worker %s asked to begin job %s of %s", world.ErrNotOwner, a, br.JobID, br.Owner)
	}
	if !game.IsOperation(br.Task) {
		return nil, fmt.Errorf("%w: %q is not hack, grow or weaken", world.ErrInvalid, br.Task)
	}
	s.mu.Lock()
	r := s.ops[br.JobID]
	switch {
	case r != nil && r.Settled != nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: job %s", world.ErrSettled, br.JobID)
	case r != nil && r.Begin != nil:
		b := *r.Begin
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	st, err := s.recent(ctx)
	if err != nil {
		return nil, err
	}
	var target, host *ServerState
	for i := range st.Servers {
		switch st.Servers[i].Hostname {
		case br.Target:
			target = &st.Servers[i]
		}
		if st.Servers[i].Hostname == br.Host {
			host = &st.Servers[i]
		}
	}
	switch {
	case target == nil:
		return nil, fmt.Errorf("%w: no server %q in the game", world.ErrUnknownTarget, br.Target)
	case host == nil:
		return nil, fmt.Errorf("%w: no server %q in the game", world.ErrUnknownHost, br.Host)
	}
	s.mu.Lock()
	offset := s.offset
	s.mu.Unlock()
	run := RunRequest{ID: br.JobID, Op: br.Task, Host: br.Host, Target: br.Target, Threads: br.Threads}
	if br.LandAt > 0 {
		run.LandAt = br.LandAt + offset
	}
	cctx, cancel := context.WithTimeout(ctx, executorTimeout)
	rep, err := s.ex.Run(cctx, run)
	cancel()
	if err != nil {
		if errors.Is(err, ErrExecutor) && strings.Contains(err.Error(), "RAM") {
			return nil, fmt.Errorf("%w: %v", world.ErrNoRAM, err)
		}
		return nil, unavailable(err)
	}
	pl := st.Player.Player()
	h := pl.Hacker()
	b := world.BeginReply{BeginRequest: br, Cores: max(host.CPUCores, 1), Speed: 1, LevelAtStart: st.Player.Skills.Hacking,
		SecurityAtStart: target.HackDifficulty, MoneyAtStart: target.MoneyAvailable, GameTimeMs: st.Now}
	h.Level = st.Player.Skills.Hacking
	if br.Task == game.OpHack {
		srv := target.Server
		b.ChanceAtStart = game.HackChance(&srv, h)
	}
	rec := &record{}
	if rep.Landed != nil {
		// Begun before, by a service that lost its record: landed already.
		rec.Op = &rep.Landed.Op
		b.DurationGameMs, b.DurationRealMs = rep.Landed.DurationMs, rep.Landed.DurationMs
		b.StartedAt, b.LandsAt = rep.Landed.StartedAt-offset, rep.Landed.LandedAt-offset
		rec.Begin = &b
		rec.Result = s.result(rep.Landed, offset)
	} else {
		op := rep.Op
		rec.Op = &op
		b.DurationGameMs, b.DurationRealMs = op.DurationMs, op.DurationMs
		b.StartedAt, b.LandsAt = op.StartedAt-offset, op.LandsAt-offset
		rec.Begin = &b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.ops[br.JobID]; old != nil && old.Result != nil && rec.Result == nil {
		rec.Result = old.Result // its landing came in first
	}
	if err := s.putOp(ctx, br.JobID, rec); err != nil {
		return nil, err
	}
	s.ops[br.JobID] = rec
	return b, nil
}

// result is the world's Result of a landing.
func (s *Service) result(l *Landing, offset float64) *world.Result {
	r := &world.Result{JobID: l.ID, Task: l.Op.Op, Target: l.Target, Host: l.Host, Threads: l.Threads, Success: true,
		DurationGameMs: l.DurationMs, DurationRealMs: l.DurationMs, StartedAt: l.StartedAt - offset, LandedAt: l.LandedAt - offset}
	seen, ok := s.known[l.Target]
	if l.After != nil {
		r.SecurityAfter, r.MoneyAfter = l.After.HackDifficulty, l.After.MoneyAvailable
		if !ok {
			seen = targetSeen{Security: r.SecurityAfter, Money: r.MoneyAfter}
		}
		s.known[l.Target] = targetSeen{Security: r.SecurityAfter, Money: r.MoneyAfter}
	}
	r.SecurityBefore, r.MoneyBefore = seen.Security, seen.Money
	switch l.Op.Op {
	case game.OpHack:
		r.Stolen, r.Success = l.Result, l.Result > 0
		r.MoneyBefore = r.MoneyAfter + l.Result
	case game.OpGrow:
		r.GrowMultiplier = l.Result
		if l.Result > 0 && r.MoneyAfter > 0 {
			r.MoneyBefore = r.MoneyAfter / l.Result
		}
	case game.OpWeaken:
		r.SecurityRemoved = l.Result
		r.SecurityBefore = r.SecurityAfter + l.Result
	}
	s.seq++
	r.Seq = s.seq
	return r
}

// takeLanding keeps a landing the executor reported.
func (s *Service) takeLanding(l Landing) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.ops[l.ID]
	if r != nil && r.Result != nil {
		return nil // a report sent again
	}
	if r == nil {
		r = &record{}
	}
	if r.Op == nil {
		op := l.Op
		r.Op = &op
	}
	res := s.result(&l, s.offset)
	if r.Begin != nil {
		res.Cores, res.LevelAtStart = r.Begin.Cores, r.Begin.LevelAtStart
		res.SecurityAtStart, res.MoneyAtStart = r.Begin.SecurityAtStart, r.Begin.MoneyAtStart
	}
	next := *r
	next.Result = res
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.putOp(ctx, l.ID, &next); err != nil {
		s.log.Warn().Err(err).Str("job", l.ID).Msg("could not keep a landing; the executor sends it again")
		return err
	}
	s.ops[l.ID] = &next
	s.landed.Broadcast()
	return nil
}

func (s *Service) finish(ctx context.Context, req micro.Request) (any, error) {
	var fr world.FinishRequest
	if data := bytes.TrimSpace(req.Data()); len(data) > 0 && data[0] != '{' {
		fr.JobID = strings.Trim(string(data), `"`)
	} else if err := decode(req, &fr); err != nil {
		return nil, err
	}
	a := asker(req.Subject())
	deadline := time.Now().Add(finishWait)
	wake := time.AfterFunc(finishWait, func() {
		s.mu.Lock()
		s.landed.Broadcast()
		s.mu.Unlock()
	})
	defer wake.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		r := s.ops[fr.JobID]
		switch {
		case r == nil || (r.Begin == nil && r.Result == nil && r.Settled == nil):
			return nil, fmt.Errorf("%w: job %s", world.ErrNotBegun, fr.JobID)
		case a != "" && r.Begin != nil && r.Begin.Owner != a:
			return nil, fmt.Errorf("%w: worker %s asked to finish job %s of %s", world.ErrNotOwner, a, fr.JobID, r.Begin.Owner)
		case r.Result != nil:
			return *r.Result, nil
		case r.Settled != nil:
			return nil, fmt.Errorf("%w: job %s", world.ErrSettled, fr.JobID)
		}
		select {
		case <-s.stopped:
			return nil, fmt.Errorf("%w: stopping", world.ErrUnavailable)
		default:
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: the game has not reported job %s's landing yet", world.ErrUnavailable, fr.JobID)
		}
		s.landed.Wait()
	}
}

func (s *Service) settle(ctx context.Context, req micro.Request) (any, error) {
	var sr world.SettleRequest
	if err := decode(req, &sr); err != nil {
		return nil, err
	}
	if len(sr.JobIDs) > world.MaxSettle {
		return nil, fmt.Errorf("%w: at most %d jobs a settle", world.ErrInvalid, world.MaxSettle)
	}
	a := asker(req.Subject())
	out := make([]world.Settlement, 0, len(sr.JobIDs))
	for _, id := range sr.JobIDs {
		st, err := s.settleOne(ctx, id, sr.Reason, a)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// settleOne says what became of a job's operation, and makes sure that
// nothing of it happens after: one running in the game is killed.
func (s *Service) settleOne(ctx context.Context, id, reason, asker string) (world.Settlement, error) {
	s.mu.Lock()
	r := s.ops[id]
	if r != nil && asker != "" && r.Begin != nil && r.Begin.Owner != asker {
		s.mu.Unlock()
		return world.Settlement{}, fmt.Errorf("%w: worker %s asked to settle job %s of %s", world.ErrNotOwner, asker, id, r.Begin.Owner)
	}
	switch {
	case r != nil && r.Result != nil:
		res := *r.Result
		s.mu.Unlock()
		return world.Settlement{JobID: id, Applied: true, Result: &res}, nil
	case r != nil && r.Settled != nil:
		st := *r.Settled
		s.mu.Unlock()
		return st, nil
	}
	begun := r != nil && r.Begin != nil
	s.mu.Unlock()
	if begun {
		cctx, cancel := context.WithTimeout(ctx, executorTimeout)
		k, err := s.ex.Kill(cctx, id)
		cancel()
		if err != nil {
			return world.Settlement{}, unavailable(err)
		}
		if k.Landed != nil {
			if err := s.takeLanding(*k.Landed); err != nil {
				return world.Settlement{}, err
			}
			return s.settleOne(ctx, id, reason, asker)
		}
		if !k.Killed && !k.Unknown {
			return world.Settlement{}, fmt.Errorf("%w: the game did not kill job %s's operation", world.ErrUnavailable, id)
		}
		if k.Unknown {
			// Not running and not landed as the executor knows: its
			// landing may be on its way from the port. Say so later.
			s.mu.Lock()
			landed := s.ops[id] != nil && s.ops[id].Result != nil
			s.mu.Unlock()
			if landed {
				return s.settleOne(ctx, id, reason, asker)
			}
		}
	}
	st := world.Settlement{JobID: id, Begun: begun, At: time.Now(), Reason: reason}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := record{}
	if r := s.ops[id]; r != nil {
		next = *r
	}
	if next.Result != nil { // landed meanwhile
		res := *next.Result
		return world.Settlement{JobID: id, Applied: true, Result: &res}, nil
	}
	next.Settled = &st
	if err := s.putOp(ctx, id, &next); err != nil {
		return world.Settlement{}, err
	}
	s.ops[id] = &next
	s.landed.Broadcast()
	return st, nil
}

func (s *Service) resume(ctx context.Context, req micro.Request) (any, error) {
	var rr world.ResumeRequest
	if err := decode(req, &rr); err != nil {
		return nil, err
	}
	a := asker(req.Subject())
	if rr.Owner == "" {
		rr.Owner = a
	}
	s.mu.Lock()
	r := s.ops[rr.JobID]
	if r != nil && r.Begin != nil && r.Result == nil && r.Settled == nil {
		if a != "" && r.Begin.Owner != a {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: worker %s asked to resume job %s of %s", world.ErrNotOwner, a, rr.JobID, r.Begin.Owner)
		}
		b := *r.Begin
		s.mu.Unlock()
		return world.ResumeReply{Begun: &b}, nil
	}
	s.mu.Unlock()
	st, err := s.settleOne(ctx, rr.JobID, "its worker restarted before it began", a)
	if err != nil {
		return nil, err
	}
	return world.ResumeReply{Settlement: &st}, nil
}
