package live

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
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
	nc    *nats.Conn
	kv    jetstream.KeyValue
	log   zerolog.Logger
	svc   micro.Service
	subs  *nats.Subscription
	hello *nats.Subscription

	mu sync.Mutex
	// offset is the game's clock less this machine's (ms), as clocks
	// finds it.
	offset float64
	clocks clockFilter
	// last is the executor's last state, read at lastAt (see recent).
	last   State
	lastAt time.Time
	// game is the game the service plays (see pin), and ex its executor.
	game    string
	ex      *Executor
	started time.Time
	// heard is when each game's executor last said it runs (Hello).
	heard map[string]time.Time
	ops   map[string]*record
	ram   map[string]map[string]int // host -> owner -> threads
	// known is each target's security and money as last seen after a
	// landing: the "before" of the next one.
	known map[string]targetSeen
	seq   uint64
	// landed wakes the finishes waiting for a landing.
	landed *sync.Cond

	// jobLocks serialize what happens to one job (begin, settle, resume,
	// landing), by a hash of its id: a settle while its begin asks the game
	// to run it would otherwise say it never began.
	jobLocks [64]sync.Mutex

	// closing is set (under mu) once Stop began: no request starts after.
	closing bool
	wg      sync.WaitGroup
	stopped chan struct{}
	once    sync.Once
}

// jobLock is the lock of a job's id.
func (s *Service) jobLock(id string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return &s.jobLocks[h.Sum32()%uint32(len(s.jobLocks))]
}

// enter counts a request in, unless the service is stopping.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
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

// record is what the service keeps of one job's operation. Pending is set
// (in memory) while the game is asked to run it, and stays when no answer
// came: the operation may run in the game.
type record struct {
	Pending *world.BeginRequest `json:"pending,omitempty"`
	Begin   *world.BeginReply   `json:"begin,omitempty"`
	Op      *Op                 `json:"op,omitempty"`
	Result  *world.Result       `json:"result,omitempty"`
	Settled *world.Settlement   `json:"settled,omitempty"`
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
	// Any answer, an error too (a live game whose executor is away answers
	// with one), is a service that would share the requests.
	if _, err := nc.Request(world.SubjectClock, nil, 500*time.Millisecond); err == nil {
		return nil, fmt.Errorf("%w on this broker", world.ErrAlreadyRunning)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("live game: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "HVMind live game: operations, landings, settlements and reservations",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(o.Storage.Replicas, 1), Placement: o.Storage.Placement(),
	})
	if err != nil {
		return nil, fmt.Errorf("live game: bucket %s: %w", Bucket, err)
	}
	s := &Service{nc: nc, kv: kv, started: time.Now(), log: o.Logger.With().Str("part", "live").Logger(),
		ops: map[string]*record{}, heard: map[string]time.Time{}, ram: map[string]map[string]int{}, known: map[string]targetSeen{}, stopped: make(chan struct{})}
	s.landed = sync.NewCond(&s.mu)
	if err := s.load(cctx); err != nil {
		return nil, err
	}
	if s.subs, err = HandleLandings(nc, s.takeLanding); err != nil {
		return nil, err
	}
	if s.hello, err = nc.Subscribe(HelloSubject, s.heardHello); err != nil {
		_ = s.subs.Unsubscribe()
		return nil, fmt.Errorf("live game: subscribe %s: %w", HelloSubject, err)
	}
	if err := s.startMicro(); err != nil {
		_ = s.subs.Unsubscribe()
		_ = s.hello.Unsubscribe()
		return nil, err
	}
	if s.game == "" {
		// A game connected already says hello at once when asked, not at
		// its next word (every 2 s).
		_ = nc.Publish(WhoSubject, nil)
		deadline := time.Now().Add(whoWait)
		for time.Now().Before(deadline) {
			if _, err := s.executor(); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
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

// Stop stops answering and returns once every request in progress has
// been answered.
func (s *Service) Stop() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		close(s.stopped)
		if s.svc != nil {
			_ = s.svc.Stop()
		}
		_ = s.subs.Unsubscribe()
		_ = s.hello.Unsubscribe()
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
	n := 0
	for k := range keys.Keys() {
		n++
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			// Starting without a record would run a job again, or say one
			// never began.
			return fmt.Errorf("live game: read %s %s: %w", Bucket, k, err)
		}
		switch kind, rest, _ := strings.Cut(k, "."); kind {
		case gameKey:
			s.game = string(e.Value())
			s.ex = NewExecutor(s.nc, s.game)
		case "op":
			var r record
			id, derr := base64.RawURLEncoding.DecodeString(rest)
			if derr == nil && json.Unmarshal(e.Value(), &r) == nil {
				s.ops[string(id)] = &r
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
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("live game: read %s: %w after %d keys", Bucket, err, n)
	}
	return nil
}

// key is a bucket key of kind for name, which may hold any character.
func key(kind, name string) string {
	return kind + "." + base64.RawURLEncoding.EncodeToString([]byte(name))
}

func (s *Service) putOp(ctx context.Context, id string, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, key("op", id), b); err != nil {
		return fmt.Errorf("%w: %v", world.ErrUnavailable, err)
	}
	return nil
}

func (s *Service) putRAM(ctx context.Context, host, owner string, threads int) error {
	k := key("ram", host+"\x00"+owner)
	var err error
	if threads <= 0 {
		err = s.kv.Delete(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			err = nil
		}
	} else {
		b, _ := json.Marshal(map[string]any{"Host": host, "Owner": owner, "Threads": threads})
		_, err = s.kv.Put(ctx, k, b)
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
			if !s.enter() {
				world.Reply(r, nil, fmt.Errorf("%w: the live game's service is stopping", world.ErrUnavailable))
				return
			}
			subject, data := req.Subject(), bytes.Clone(req.Data())
			go func() {
				defer s.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				v, err := run(ctx, copied{subject: subject, data: data, Request: req})
				world.Reply(r, v, err)
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
	ex, err := s.executor()
	if err != nil {
		return State{}, err
	}
	off, rtt, st, err := ex.Offset(cctx)
	if err != nil {
		return st, unavailable(err)
	}
	s.mu.Lock()
	now := time.Now()
	s.offset, s.last, s.lastAt = s.clocks.add(off, rtt, now), st, now
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
	if a := world.AskerOf(req.Subject()); a != "" && a != r.Owner {
		return nil, fmt.Errorf("%w: worker %s asked for the RAM of %s", world.ErrNotOwner, a, r.Owner)
	}
	if r.Owner == "" || r.Host == "" || (take && r.Threads <= 0) {
		return nil, fmt.Errorf("%w: a reservation needs a host, an owner and threads", world.ErrInvalid)
	}
	if !take {
		// Given back whether or not the game answers, or still has the host.
		if err := s.putRAM(ctx, r.Host, r.Owner, 0); err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.ram[r.Host], r.Owner)
		out := world.RAMReply{HostRAM: world.HostRAM{Hostname: r.Host}, Owner: r.Owner}
		for _, h := range s.hostsLocked(s.last) {
			if h.Hostname == r.Host {
				out.HostRAM = h
			}
		}
		return out, nil
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
	if a := world.AskerOf(req.Subject()); a != "" && br.Owner != a {
		return nil, fmt.Errorf("%w: worker %s asked to begin job %s of %s", world.ErrNotOwner, a, br.JobID, br.Owner)
	}
	if !game.IsOperation(br.Task) {
		return nil, fmt.Errorf("%w: %q is not hack, grow or weaken", world.ErrInvalid, br.Task)
	}
	ex, err := s.executor()
	if err != nil {
		return nil, err
	}
	lk := s.jobLock(br.JobID)
	lk.Lock()
	defer lk.Unlock()
	r := s.recordOf(br.JobID)
	switch {
	case r.Settled != nil:
		return nil, fmt.Errorf("%w: job %s", world.ErrSettled, br.JobID)
	case r.Begin != nil:
		return *r.Begin, nil
	case r.Result != nil:
		// Landed, its begin's answer lost (a service that stopped between
		// the game's start of it and its store): the game must not run it
		// again.
		b := begunFrom(br, *r.Result)
		r.Begin, r.Pending = &b, nil
		if err := s.keep(ctx, br.JobID, r); err != nil {
			return nil, err
		}
		return b, nil
	}
	st, err := s.recent(ctx)
	if err != nil {
		return nil, err
	}
	var target, host *ServerState
	for i := range st.Servers {
		if st.Servers[i].Hostname == br.Target {
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
	// From here it may run in the game. Not stored first (a store waits
	// for the disk, and the operation's start with it): a settle asks the
	// game about every job it has no landing or settlement of, so a
	// service that stopped before storing this begin still finds it.
	r.Pending = &br
	s.mu.Lock()
	cp := *r
	s.ops[br.JobID] = &cp
	s.mu.Unlock()
	s.mu.Lock()
	offset := s.offset
	s.mu.Unlock()
	run := RunRequest{ID: br.JobID, Op: br.Task, Host: br.Host, Target: br.Target, Threads: br.Threads}
	if br.LandAt > 0 {
		run.LandAt = br.LandAt + offset
	}
	cctx, cancel := context.WithTimeout(ctx, executorTimeout)
	rep, err := ex.Run(cctx, run)
	cancel()
	if errors.Is(err, ErrExecutor) {
		// The game refused it: it does not run.
		s.mu.Lock()
		if r.Begin == nil && r.Result == nil {
			delete(s.ops, br.JobID)
		}
		s.mu.Unlock()
		if strings.Contains(err.Error(), "RAM") {
			return nil, fmt.Errorf("%w: %v", world.ErrNoRAM, err)
		}
		return nil, fmt.Errorf("%w: %v", world.ErrInvalid, err)
	}
	if err != nil {
		return nil, unavailable(err) // it may run: Pending stays
	}
	b := world.BeginReply{BeginRequest: br, Cores: max(host.CPUCores, 1), Speed: 1, LevelAtStart: st.Player.Skills.Hacking,
		SecurityAtStart: target.HackDifficulty, MoneyAtStart: target.MoneyAvailable, GameTimeMs: st.Now}
	if br.Task == game.OpHack {
		h := st.Player.Player().Hacker()
		h.Level = st.Player.Skills.Hacking
		srv := target.Server
		b.ChanceAtStart = game.HackChance(&srv, h)
	}
	op := rep.Op
	if rep.Landed != nil {
		op = rep.Landed.Op
	}
	b.DurationGameMs, b.DurationRealMs = op.DurationMs, op.DurationMs
	b.StartedAt, b.LandsAt = op.StartedAt-offset, op.LandsAt-offset
	if op.LevelAtStart > 0 {
		// As the game had them when it started it, not as the state read
		// up to a second before had them.
		b.SecurityAtStart, b.MoneyAtStart, b.LevelAtStart = op.SecurityAtStart, op.MoneyAtStart, op.LevelAtStart
		if br.Task == game.OpHack {
			h := st.Player.Player().Hacker()
			h.Level = op.LevelAtStart
			srv := target.Server
			srv.HackDifficulty, srv.MoneyAvailable = op.SecurityAtStart, op.MoneyAtStart
			b.ChanceAtStart = game.HackChance(&srv, h)
		}
	}
	r.Op, r.Begin, r.Pending = &op, &b, nil
	if rep.Landed != nil && r.Result == nil {
		s.mu.Lock()
		r.Result = s.resultLocked(rep.Landed, r, offset)
		s.mu.Unlock()
	}
	if err := s.keep(ctx, br.JobID, r); err != nil {
		return nil, err
	}
	return b, nil
}

// recordOf is a copy of a job's record (empty when it has none).
func (s *Service) recordOf(id string) *record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.ops[id]; r != nil {
		cp := *r
		return &cp
	}
	return &record{}
}

// keep stores a job's record, then holds it in memory.
func (s *Service) keep(ctx context.Context, id string, r *record) error {
	if err := s.putOp(ctx, id, r); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *r
	s.ops[id] = &cp
	s.landed.Broadcast()
	return nil
}

// begunFrom is the begin of an operation known by its result.
func begunFrom(br world.BeginRequest, r world.Result) world.BeginReply {
	b := r.Begun()
	b.BeginRequest = br
	b.Speed, b.StartedAt = 1, r.StartedAt
	b.LandsAt = r.LandedAt
	return b
}

// resultLocked is the world's Result of a landing of the job whose record
// is r (what the landing lacks, a record kept before knows). s.mu is held.
func (s *Service) resultLocked(l *Landing, r *record, offset float64) *world.Result {
	op := l.Op
	if r.Op != nil {
		known := *r.Op
		if op.Op == "" {
			op.Op = known.Op
		}
		if op.Host == "" {
			op.Host = known.Host
		}
		if op.Target == "" {
			op.Target = known.Target
		}
		if op.Threads == 0 {
			op.Threads = known.Threads
		}
		if op.StartedAt == 0 {
			op.StartedAt = known.StartedAt
		}
		if op.DurationMs == 0 {
			op.DurationMs = known.DurationMs
		}
	}
	res := &world.Result{JobID: l.ID, Task: op.Op, Target: op.Target, Host: op.Host, Threads: op.Threads, Success: true,
		DurationGameMs: op.DurationMs, DurationRealMs: op.DurationMs, LandedAt: l.LandedAt - offset}
	if op.StartedAt > 0 {
		res.StartedAt = op.StartedAt - offset
	}
	if b := r.Begin; b != nil {
		res.Cores, res.LevelAtStart = b.Cores, b.LevelAtStart
		res.SecurityAtStart, res.MoneyAtStart = b.SecurityAtStart, b.MoneyAtStart
		if res.StartedAt == 0 {
			res.StartedAt = b.StartedAt
		}
	}
	seen, ok := s.known[op.Target]
	if l.After != nil {
		res.SecurityAfter, res.MoneyAfter = l.After.HackDifficulty, l.After.MoneyAvailable
		if !ok {
			seen = targetSeen{Security: res.SecurityAfter, Money: res.MoneyAfter}
		}
		s.known[op.Target] = targetSeen{Security: res.SecurityAfter, Money: res.MoneyAfter}
	}
	res.SecurityBefore, res.MoneyBefore = seen.Security, seen.Money
	switch op.Op {
	case game.OpHack:
		res.Stolen, res.Success = l.Result, l.Result > 0
		res.MoneyBefore = res.MoneyAfter + l.Result
	case game.OpGrow:
		res.GrowMultiplier = l.Result
		if l.Result > 0 && res.MoneyAfter > 0 {
			res.MoneyBefore = res.MoneyAfter / l.Result
		}
	case game.OpWeaken:
		res.SecurityRemoved = l.Result
		res.SecurityBefore = res.SecurityAfter + l.Result
	}
	s.seq++
	res.Seq = s.seq
	return res
}

// helloWithin is how long an executor's Hello counts.
const helloWithin = 5 * time.Second

// whoWait is how long Serve waits for a connected game to say hello.
const whoWait = time.Second

// gameKey keys the game the service plays in its bucket.
const gameKey = "game"

// ErrNoGame says that no game's executor has said it runs yet.
var ErrNoGame = errors.New("no game's executor has said it runs (is hvmind.js running in the game?)")

// heardHello keeps when each game's executor last said it runs, and pins
// the game the service plays: the first one heard, kept in the bucket; a
// game whose executor has been silent for helloWithin while exactly one
// other speaks gives way to it (the player started a new game). Requests
// go to the pinned game only: two games connected to one broker never
// both run an operation.
func (s *Service) heardHello(m *nats.Msg) {
	var h Hello
	if json.Unmarshal(m.Data, &h) != nil || h.Game == "" || strings.ContainsAny(h.Game, ".*> ") {
		return
	}
	s.mu.Lock()
	now := time.Now()
	if h.Bye {
		delete(s.heard, h.Game)
		s.mu.Unlock()
		return
	}
	if _, ok := s.heard[h.Game]; !ok {
		s.log.Info().Str("game", h.Game).Msg("a game's executor says it runs")
	}
	s.heard[h.Game] = now
	others := 0
	var other string
	for g, at := range s.heard {
		if now.Sub(at) > helloWithin {
			delete(s.heard, g)
			continue
		}
		if g != s.game {
			others++
			other = g
		}
	}
	_, pinnedHeard := s.heard[s.game]
	pin := ""
	switch {
	case s.game == "":
		pin = h.Game
	case !pinnedHeard && others == 1 && now.Sub(s.started) > helloWithin:
		pin = other
		s.log.Warn().Str("was", s.game).Str("game", other).Msg("the game played has been silent; playing the one connected")
	case pinnedHeard && others > 0:
		s.log.Error().Str("game", s.game).Int("others", others).Msg("more than one game's executor is connected: operations go to the game played only; stop hvmind.js in the others")
	}
	s.mu.Unlock()
	if pin == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.kv.Put(ctx, gameKey, []byte(pin)); err != nil {
		s.log.Warn().Err(err).Msg("could not keep the game played; asking again at its next word")
		return
	}
	s.mu.Lock()
	s.game, s.ex = pin, NewExecutor(s.nc, pin)
	s.mu.Unlock()
	s.log.Info().Str("game", pin).Msg("playing this game")
}

// executor is the played game's executor.
func (s *Service) executor() (*Executor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ex == nil {
		return nil, fmt.Errorf("%w: %w", world.ErrUnavailable, ErrNoGame)
	}
	return s.ex, nil
}

// errBusy says that a landing came while its job was busy: not answered,
// the executor sends it again a second later.
var errBusy = errors.New("the job is busy; send it again")

// takeLanding keeps a landing the executor reported.
func (s *Service) takeLanding(l Landing) error {
	if !s.enter() {
		return errBusy
	}
	defer s.wg.Done()
	lk := s.jobLock(l.ID)
	if !lk.TryLock() {
		return errBusy
	}
	defer lk.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.takeLandingLocked(ctx, l)
}

// takeLandingLocked keeps a landing; the job's lock is held.
func (s *Service) takeLandingLocked(ctx context.Context, l Landing) error {
	r := s.recordOf(l.ID)
	if r.Result != nil {
		return nil // a report sent again
	}
	if r.Settled != nil {
		s.log.Error().Str("job", l.ID).Msg("the game reports a landing of an operation settled as never landing")
	}
	s.mu.Lock()
	r.Result = s.resultLocked(&l, r, s.offset)
	s.mu.Unlock()
	if r.Op == nil {
		op := l.Op
		r.Op = &op
	}
	if err := s.keep(ctx, l.ID, r); err != nil {
		s.log.Warn().Err(err).Str("job", l.ID).Msg("could not keep a landing; the executor sends it again")
		return err
	}
	return nil
}

func (s *Service) finish(ctx context.Context, req micro.Request) (any, error) {
	var fr world.FinishRequest
	if data := bytes.TrimSpace(req.Data()); len(data) > 0 && data[0] != '{' {
		fr.JobID = strings.Trim(string(data), `"`)
	} else if err := decode(req, &fr); err != nil {
		return nil, err
	}
	a := world.AskerOf(req.Subject())
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
		case r == nil || (r.Begin == nil && r.Pending == nil && r.Result == nil && r.Settled == nil):
			return nil, fmt.Errorf("%w: job %s", world.ErrNotBegun, fr.JobID)
		case a != "" && r.Begin != nil && r.Begin.Owner != a:
			return nil, fmt.Errorf("%w: worker %s asked to finish job %s of %s", world.ErrNotOwner, a, fr.JobID, r.Begin.Owner)
		case r.Result != nil:
			return *r.Result, nil
		case r.Settled != nil:
			return nil, fmt.Errorf("%w: job %s", world.ErrSettled, fr.JobID)
		}
		if s.closing {
			return nil, fmt.Errorf("%w: stopping", world.ErrUnavailable)
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
	a := world.AskerOf(req.Subject())
	out := make([]world.Settlement, 0, len(sr.JobIDs))
	for _, id := range sr.JobIDs {
		if !job.ValidID(id) {
			return nil, fmt.Errorf("%w: job id %q", world.ErrInvalid, id)
		}
		st, err := s.settleOne(ctx, id, sr.Reason, a)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// settleOne says what became of a job's operation, and makes sure that
// nothing of it happens after: one that may run in the game is killed
// there first, and one too close to its landing to know is asked about
// again later (world.ErrUnavailable).
func (s *Service) settleOne(ctx context.Context, id, reason, asker string) (world.Settlement, error) {
	lk := s.jobLock(id)
	lk.Lock()
	defer lk.Unlock()
	r := s.recordOf(id)
	if asker != "" && r.Begin != nil && r.Begin.Owner != asker {
		return world.Settlement{}, fmt.Errorf("%w: worker %s asked to settle job %s of %s", world.ErrNotOwner, asker, id, r.Begin.Owner)
	}
	switch {
	case r.Result != nil:
		res := *r.Result
		return world.Settlement{JobID: id, Applied: true, Result: &res}, nil
	case r.Settled != nil:
		return *r.Settled, nil
	}
	// Whatever this service knows of it, the game is asked: a begin that
	// asked the game to run it may not have been stored (see begin).
	mayRun := r.Begin != nil || r.Pending != nil
	{
		cctx, cancel := context.WithTimeout(ctx, executorTimeout)
		ex, err := s.executor()
		if err != nil {
			cancel()
			return world.Settlement{}, err
		}
		k, err := ex.Kill(cctx, id)
		cancel()
		switch {
		case err != nil:
			return world.Settlement{}, unavailable(err)
		case k.Landed != nil:
			if err := s.takeLandingLocked(ctx, *k.Landed); err != nil {
				return world.Settlement{}, err
			}
			res := *s.recordOf(id).Result
			return world.Settlement{JobID: id, Applied: true, Result: &res}, nil
		case k.Pending:
			return world.Settlement{}, fmt.Errorf("%w: job %s's operation is about to land in the game; ask again", world.ErrUnavailable, id)
		case !k.Killed && !k.Gone && !k.Unknown:
			return world.Settlement{}, fmt.Errorf("%w: the game did not say what became of job %s's operation", world.ErrUnavailable, id)
		}
		// Killed, ended without a report, or never run: it never lands.
		mayRun = mayRun || k.Killed || k.Gone
	}
	st := world.Settlement{JobID: id, Begun: mayRun, At: time.Now(), Reason: reason}
	r.Settled, r.Pending = &st, nil
	if err := s.keep(ctx, id, r); err != nil {
		return world.Settlement{}, err
	}
	return st, nil
}

func (s *Service) resume(ctx context.Context, req micro.Request) (any, error) {
	var rr world.ResumeRequest
	if err := decode(req, &rr); err != nil {
		return nil, err
	}
	if !job.ValidID(rr.JobID) {
		return nil, fmt.Errorf("%w: job id %q", world.ErrInvalid, rr.JobID)
	}
	a := world.AskerOf(req.Subject())
	if rr.Owner == "" {
		rr.Owner = a
	}
	lk := s.jobLock(rr.JobID)
	lk.Lock()
	r := s.recordOf(rr.JobID)
	lk.Unlock()
	if r.Begin != nil && r.Result == nil && r.Settled == nil {
		if owner := r.Begin.Owner; (a != "" && owner != a) || (rr.Owner != "" && owner != rr.Owner) {
			return nil, fmt.Errorf("%w: worker %s asked to resume job %s of %s", world.ErrNotOwner, rr.Owner, rr.JobID, owner)
		}
		b := *r.Begin
		return world.ResumeReply{Begun: &b}, nil
	}
	st, err := s.settleOne(ctx, rr.JobID, "its worker restarted before it began", a)
	if err != nil {
		return nil, err
	}
	return world.ResumeReply{Settlement: &st}, nil
}
