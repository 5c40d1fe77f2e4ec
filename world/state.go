package world

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world/game"
)

// BeginRequest tells the world that an operation starts now.
type BeginRequest struct {
	// JobID keys the operation: its finish, and the at-most-once guarantee.
	JobID string `json:"jobId"`
	// Task is hack, grow or weaken.
	Task string `json:"task"`
	// Target is the server acted on.
	Target string `json:"target"`
	// Host is the server the worker runs on; grow and weaken use its cores.
	Host    string `json:"host"`
	Threads int    `json:"threads"`
	// Start is when the worker started the operation (epoch ms; 0: when
	// the world reads the request). The operation's duration is fixed
	// from the target's security and the player's level at that instant,
	// so the request's trip to the world does not change it.
	Start float64 `json:"start,omitempty"`
	// Due is when the operation was scheduled to start (epoch ms): it
	// orders operations that started at the same instant.
	Due float64 `json:"due,omitempty"`
	// Owner is the worker that runs the operation: its threads must be
	// within what Owner holds on Host (see ReserveRAM), less what its
	// other operations there use.
	Owner string `json:"owner"`
	// LandAt is when the operation lands if that is after its duration
	// is over (epoch ms; 0: when it is over), like the game's
	// additionalMsec: a job's endTime.
	LandAt float64 `json:"landAt,omitempty"`
}

// BeginReply is what the world fixed when an operation began. The world
// keeps it, keyed by job id, until the operation finishes.
type BeginReply struct {
	BeginRequest
	// Cores are the host's cores.
	Cores int `json:"cores"`
	// DurationGameMs is the operation's duration in game time, fixed now
	// from the target's security and the player's level;
	// DurationRealMs = DurationGameMs / Speed is how long the worker waits.
	DurationGameMs float64 `json:"durationGameMs"`
	DurationRealMs float64 `json:"durationRealMs"`
	Speed          float64 `json:"speed"`
	// LevelAtStart is the player's hacking level now.
	LevelAtStart int `json:"levelAtStart"`
	// SecurityAtStart and MoneyAtStart are the target's, now.
	SecurityAtStart float64 `json:"securityAtStart"`
	MoneyAtStart    float64 `json:"moneyAtStart"`
	// ChanceAtStart is the hack chance now (hack only).
	ChanceAtStart float64 `json:"chanceAtStart,omitempty"`
	// GameTimeMs is the world's clock when the operation began.
	GameTimeMs float64 `json:"gameTimeMs"`
	// StartedAt is when it began (epoch ms: Start, or when the world read
	// a begin without one); it may finish no earlier than StartedAt +
	// DurationRealMs.
	StartedAt float64 `json:"startedAt,omitempty"`
	// LandsAt is when it lands (epoch ms): StartedAt + DurationRealMs, or
	// LandAt if that is later. The world applies it then, whether its
	// worker says so or not, unless it is settled before (see Service).
	LandsAt float64 `json:"landsAt,omitempty"`
}

// Result is the effect of a finished operation: what a completion record
// carries so that a batcher can check itself.
type Result struct {
	JobID   string `json:"jobId"`
	Task    string `json:"task"`
	Target  string `json:"target"`
	Host    string `json:"host"`
	Threads int    `json:"threads"`
	Cores   int    `json:"cores"`
	// Success is false only for a hack whose roll failed.
	Success bool `json:"success"`
	// Stolen is the money a hack took (0 on failure). The player's money
	// rises by exactly this much.
	Stolen float64 `json:"stolen"`
	// Chance is the hack chance at the end, and Roll the number in [0, 1)
	// that decided it: success when Roll < Chance.
	Chance float64 `json:"chance"`
	Roll   float64 `json:"roll"`
	// GrowMultiplier is money after / money before of a grow (money before
	// counts as 1 when it was 0, as in the game).
	GrowMultiplier float64 `json:"growMultiplier"`
	// SecurityRemoved is how much a weaken lowered security: 0.05 per
	// thread (more with cores), less when it reached the minimum.
	SecurityRemoved float64 `json:"securityRemoved"`
	// SecurityBefore/After and MoneyBefore/After are the target's just
	// before and just after the effect, at the end.
	SecurityBefore float64 `json:"securityBefore"`
	SecurityAfter  float64 `json:"securityAfter"`
	MoneyBefore    float64 `json:"moneyBefore"`
	MoneyAfter     float64 `json:"moneyAfter"`
	// SecurityAtStart and MoneyAtStart are the target's when it began.
	SecurityAtStart float64 `json:"securityAtStart"`
	MoneyAtStart    float64 `json:"moneyAtStart"`
	// LevelAtStart fixed the duration; LevelAtEnd computed the effect.
	LevelAtStart int `json:"levelAtStart"`
	LevelAtEnd   int `json:"levelAtEnd"`
	// Exp is the hacking exp the player gained.
	Exp float64 `json:"exp"`
	// DurationGameMs and DurationRealMs are the durations the world gave at begin.
	DurationGameMs float64 `json:"durationGameMs"`
	DurationRealMs float64 `json:"durationRealMs"`
	// StartedAt is when the worker started the operation (epoch ms, as
	// its begin said; 0 when it did not say) and LandedAt when its effect
	// landed (epoch ms).
	StartedAt float64 `json:"startedAt,omitempty"`
	LandedAt  float64 `json:"landedAt,omitempty"`
	// Seq numbers the world's changes: results ordered by Seq are in the
	// order the world applied them.
	Seq uint64 `json:"seq"`
}

// MarshalJSON writes only the fields that belong to the result's task:
// stolen, chance and roll for hack, growMultiplier for grow,
// securityRemoved for weaken.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	out := struct {
		plain
		Stolen          *float64 `json:"stolen,omitempty"`
		Chance          *float64 `json:"chance,omitempty"`
		Roll            *float64 `json:"roll,omitempty"`
		GrowMultiplier  *float64 `json:"growMultiplier,omitempty"`
		SecurityRemoved *float64 `json:"securityRemoved,omitempty"`
	}{plain: plain(r)}
	switch r.Task {
	case game.OpHack:
		out.Stolen, out.Chance, out.Roll = &r.Stolen, &r.Chance, &r.Roll
	case game.OpGrow:
		out.GrowMultiplier = &r.GrowMultiplier
	case game.OpWeaken:
		out.SecurityRemoved = &r.SecurityRemoved
	}
	return json.Marshal(out)
}

// Begun returns the begin of the operation a result came from.
func (r *Result) Begun() BeginReply {
	return BeginReply{
		BeginRequest:    BeginRequest{JobID: r.JobID, Task: r.Task, Target: r.Target, Host: r.Host, Threads: r.Threads},
		Cores:           r.Cores,
		DurationGameMs:  r.DurationGameMs,
		DurationRealMs:  r.DurationRealMs,
		LevelAtStart:    r.LevelAtStart,
		SecurityAtStart: r.SecurityAtStart,
		MoneyAtStart:    r.MoneyAtStart,
	}
}

// PlayerInfo is the player as the world service reports it.
type PlayerInfo struct {
	HackingExp   float64    `json:"hackingExp"`
	HackingLevel int        `json:"hackingLevel"`
	Intelligence float64    `json:"intelligence"`
	Money        float64    `json:"money"`
	Mults        game.Mults `json:"mults"`
}

// Player returns the player the info describes.
func (p PlayerInfo) Player() game.Player {
	return game.Player{HackingExp: p.HackingExp, Intelligence: p.Intelligence, Money: p.Money, Mults: p.Mults}
}

// HostRAM is the RAM of one host: a rooted server with RAM.
type HostRAM struct {
	Hostname string  `json:"hostname"`
	MaxRAM   float64 `json:"maxRam"`
	RAMUsed  float64 `json:"ramUsed"`
	CPUCores int     `json:"cpuCores"`
	// FreeThreads is floor((maxRam - ramUsed) / 1.75).
	FreeThreads int `json:"freeThreads"`
	// Reservations are the threads reserved per owner.
	Reservations map[string]int `json:"reservations,omitempty"`
}

// RAMRequest reserves or releases RAM for Threads worker threads of an
// owner (a worker id) on a host.
type RAMRequest struct {
	Host    string `json:"host"`
	Owner   string `json:"owner"`
	Threads int    `json:"threads,omitempty"`
}

// RAMReply is a host's RAM after a reservation or release.
type RAMReply struct {
	HostRAM
	Owner string `json:"owner"`
	// Threads is what the owner holds on the host now.
	Threads int `json:"threads"`
}

// State is the world in memory: the servers, the player, and the RAM
// reserved on hosts. Its methods apply the game's rules (package game); it is not
// safe for concurrent use.
type State struct {
	// Scenario is the name of the scenario the world started from.
	Scenario string
	// Seq counts the changes applied since the world started.
	Seq uint64

	player  game.Player
	servers map[string]*game.Server
	order   []string
	// ramBase is each host's RAM in use apart from reservations (from the scenario).
	ramBase map[string]float64
	// reserved is host → owner → threads.
	reserved map[string]map[string]int
	// recent holds the last changes, newest last, so that Begin can see
	// the world as it was at an operation's start.
	recent []change
}

// change is one applied operation as Begin may need to undo it: when it
// landed, on which server, and the values before it.
type change struct {
	at        float64
	server    string
	secBefore float64
	expBefore float64
}

// recentChanges bounds State.recent: far more than land during a
// request's trip to the world.
const recentChanges = 4096

// NewState starts a world from a scenario (which it copies).
func NewState(sc *game.Scenario) *State {
	st := &State{
		Scenario: sc.Name,
		player:   sc.Player,
		servers:  make(map[string]*game.Server, len(sc.Servers)),
		ramBase:  map[string]float64{},
		reserved: map[string]map[string]int{},
	}
	for i := range sc.Servers {
		s := sc.Servers[i]
		st.servers[s.Hostname] = &s
		st.order = append(st.order, s.Hostname)
		if s.RAMUsed != 0 {
			st.ramBase[s.Hostname] = s.RAMUsed
		}
	}
	return st
}

// Player is the player now.
func (st *State) Player() game.Player { return st.player }

// PlayerInfo is the player now, with its hacking level.
func (st *State) PlayerInfo() PlayerInfo {
	p := st.player
	return PlayerInfo{HackingExp: p.HackingExp, HackingLevel: p.HackingLevel(), Intelligence: p.Intelligence, Money: p.Money, Mults: p.Mults}
}

// Server returns a copy of one server.
func (st *State) Server(name string) (game.Server, bool) {
	s, ok := st.servers[name]
	if !ok {
		return game.Server{}, false
	}
	return *s, true
}

// Servers returns a copy of every server, in scenario order.
func (st *State) Servers() []game.Server {
	out := make([]game.Server, 0, len(st.order))
	for _, n := range st.order {
		out = append(out, *st.servers[n])
	}
	return out
}

// AsScenario returns the world now as a scenario (for the planner).
func (st *State) AsScenario() *game.Scenario {
	return &game.Scenario{Name: st.Scenario, Bitnode: 1, Player: st.player, Servers: st.Servers()}
}

// Hosts lists the hosts (rooted servers with RAM) and their RAM, in scenario order.
func (st *State) Hosts() []HostRAM {
	var out []HostRAM
	for _, n := range st.order {
		s := st.servers[n]
		if s.HasAdminRights && s.MaxRAM > 0 {
			out = append(out, st.hostRAM(s))
		}
	}
	return out
}

func (st *State) hostRAM(s *game.Server) HostRAM {
	h := HostRAM{Hostname: s.Hostname, MaxRAM: s.MaxRAM, RAMUsed: s.RAMUsed, CPUCores: s.CPUCores, FreeThreads: game.HostThreads(s)}
	if r := st.reserved[s.Hostname]; len(r) > 0 {
		h.Reservations = make(map[string]int, len(r))
		for o, t := range r {
			h.Reservations[o] = t
		}
	}
	return h
}

// Begin checks that an operation may start now and fixes what it fixes at
// its start: its duration (game time) from the target's security and the
// player's level now. It changes nothing. The reply's DurationRealMs,
// Speed and GameTimeMs are left for the caller.
func (st *State) Begin(req BeginRequest) (BeginReply, error) {
	switch {
	case !job.ValidID(req.JobID):
		return BeginReply{}, invalidJobID("", req.JobID)
	case !game.IsOperation(req.Task):
		return BeginReply{}, invalidf("task %q: want hack, grow or weaken", req.Task)
	case req.Threads <= 0:
		return BeginReply{}, invalidf("threads %d: must be positive", req.Threads)
	case req.Target == "":
		return BeginReply{}, invalidf("%s needs a target (args[0])", req.Task)
	}
	target, ok := st.servers[req.Target]
	if !ok {
		return BeginReply{}, fmt.Errorf("%s %s: %w %q", req.Task, req.JobID, ErrUnknownTarget, req.Target)
	}
	host, ok := st.servers[req.Host]
	if !ok {
		return BeginReply{}, fmt.Errorf("%s %s: %w %q (the worker's host must be a server of the world)", req.Task, req.JobID, ErrUnknownHost, req.Host)
	}
	if !host.HasAdminRights {
		return BeginReply{}, fmt.Errorf("%s %s: host %s: %w: a worker cannot run there", req.Task, req.JobID, req.Host, game.ErrNoRoot)
	}
	target, h := st.asOf(target, req.Start)
	if !target.HasAdminRights {
		return BeginReply{}, fmt.Errorf("%s %s: target %s: %w", req.Task, req.JobID, req.Target, game.ErrNoRoot)
	}
	if req.Task == game.OpHack {
		if err := game.CheckHack(target, h); err != nil {
			return BeginReply{}, fmt.Errorf("%s %s: target %w", req.Task, req.JobID, err)
		}
	}
	b := BeginReply{
		BeginRequest:    req,
		Cores:           max(host.CPUCores, 1),
		LevelAtStart:    h.Level,
		SecurityAtStart: target.HackDifficulty,
		MoneyAtStart:    target.MoneyAvailable,
	}
	switch req.Task {
	case game.OpHack:
		b.DurationGameMs = game.HackTimeMs(target, h)
		b.ChanceAtStart = game.HackChance(target, h)
	case game.OpGrow:
		b.DurationGameMs = game.GrowTimeMs(target, h)
	case game.OpWeaken:
		b.DurationGameMs = game.WeakenTimeMs(target, h)
	}
	return b, nil
}

// asOf is the target and the player's hacker as they were at epoch ms t:
// the changes that landed after t are undone on copies. t 0 is now.
func (st *State) asOf(target *game.Server, t float64) (*game.Server, game.Hacker) {
	p := st.player
	if t <= 0 || len(st.recent) == 0 || st.recent[len(st.recent)-1].at <= t {
		return target, p.Hacker()
	}
	srv := *target
	for i := len(st.recent) - 1; i >= 0 && st.recent[i].at > t; i-- {
		c := st.recent[i]
		if c.server == srv.Hostname {
			srv.HackDifficulty = c.secBefore
		}
		p.HackingExp = c.expBefore
	}
	return &srv, p.Hacker()
}

// Finish applies the effect of a begun operation now, with the target's
// security and the player's level now, and returns it. roll decides a
// hack: it succeeds when roll < chance (see HackRoll).
func (st *State) Finish(b BeginReply, roll float64) (Result, error) {
	return st.FinishAt(b, roll, 0)
}

// FinishAt is Finish for an operation that landed at epoch ms at (0:
// now); operations that begin with a start before at do not see it.
func (st *State) FinishAt(b BeginReply, roll, at float64) (Result, error) {
	s, ok := st.servers[b.Target]
	if !ok {
		return Result{}, fmt.Errorf("%s %s: %w %q", b.Task, b.JobID, ErrUnknownTarget, b.Target)
	}
	if !game.IsOperation(b.Task) || b.Threads <= 0 {
		return Result{}, invalidf("begin of %s: task %q, threads %d", b.JobID, b.Task, b.Threads)
	}
	h := st.player.Hacker()
	if !(at > 0) {
		at = float64(time.Now().UnixNano()) / 1e6
	}
	if len(st.recent) == recentChanges {
		st.recent = append(st.recent[:0], st.recent[recentChanges/2:]...)
	}
	st.recent = append(st.recent, change{at: at, server: s.Hostname, secBefore: s.HackDifficulty, expBefore: st.player.HackingExp})
	r := Result{
		JobID: b.JobID, Task: b.Task, Target: b.Target, Host: b.Host, Threads: b.Threads, Cores: b.Cores,
		Success:         true,
		SecurityBefore:  s.HackDifficulty,
		MoneyBefore:     s.MoneyAvailable,
		SecurityAtStart: b.SecurityAtStart,
		MoneyAtStart:    b.MoneyAtStart,
		LevelAtStart:    b.LevelAtStart,
		LevelAtEnd:      h.Level,
		DurationGameMs:  b.DurationGameMs,
		DurationRealMs:  b.DurationRealMs,
		StartedAt:       b.Start,
		LandedAt:        at,
	}
	switch b.Task {
	case game.OpHack:
		r.Chance = game.HackChance(s, h)
		r.Roll = roll
		r.Success = roll < r.Chance
		if r.Success {
			pct := game.HackPercent(s, h)
			r.Stolen = game.HackStolen(s.MoneyAvailable, pct, b.Threads)
			s.MoneyAvailable -= r.Stolen
			if s.MoneyAvailable < 0 {
				s.MoneyAvailable = 0
			}
			s.HackDifficulty = game.ClampSecurity(s, s.HackDifficulty+game.HackSecurityIncrease(b.Threads, pct))
			st.player.Money += r.Stolen
		}
	case game.OpGrow:
		money, inc := game.GrowEffect(s, h, b.Threads, b.Cores)
		s.MoneyAvailable = money
		s.HackDifficulty = game.ClampSecurity(s, s.HackDifficulty+inc)
		before := r.MoneyBefore
		if !(before > 0) {
			before = 1
		}
		r.GrowMultiplier = money / before
	case game.OpWeaken:
		r.SecurityRemoved = game.WeakenAmount(b.Threads, b.Cores)
		if sec := s.HackDifficulty - r.SecurityRemoved; sec >= game.SecurityFloor(s) {
			s.HackDifficulty = math.Min(sec, game.MaxSecurity)
		} else {
			s.HackDifficulty = game.SecurityFloor(s)
			r.SecurityRemoved = math.Max(r.SecurityBefore-s.HackDifficulty, 0)
		}
	}
	r.Exp = game.ExpPerThread(s, st.player.Mults, r.Success) * float64(b.Threads)
	st.player.HackingExp += r.Exp
	r.SecurityAfter = s.HackDifficulty
	r.MoneyAfter = s.MoneyAvailable
	st.Seq++
	r.Seq = st.Seq
	return r, nil
}

// Reserve sets the threads an owner holds on a host to req.Threads
// (idempotent: the same request twice reserves once). It fails with
// ErrNoRAM when they do not fit beside the other reservations.
// changed is false when the owner already held exactly that.
func (st *State) Reserve(req RAMRequest) (reply RAMReply, changed bool, err error) {
	s, err := st.ramHost(req)
	if err != nil {
		return RAMReply{}, false, err
	}
	if req.Threads <= 0 {
		return RAMReply{}, false, invalidf("reserve on %s: threads %d: must be positive (release to free RAM)", req.Host, req.Threads)
	}
	old := st.reserved[req.Host][req.Owner]
	if old != req.Threads {
		total := st.reservedThreads(req.Host) - old + req.Threads
		if used := st.ramBase[req.Host] + game.ThreadRAM*float64(total); used > s.MaxRAM {
			free := max(s.MaxRAM-(s.RAMUsed-game.ThreadRAM*float64(old)), 0)
			return RAMReply{}, false, fmt.Errorf("reserve %d threads (%.2f GB) for %s on %s: %w: %.2f of %.2f GB free (%d threads)",
				req.Threads, game.ThreadRAM*float64(req.Threads), req.Owner, req.Host, ErrNoRAM, free, s.MaxRAM, game.ThreadsForRAM(free))
		}
		st.setReservation(req.Host, req.Owner, req.Threads)
		st.Seq++
	}
	return RAMReply{HostRAM: st.hostRAM(s), Owner: req.Owner, Threads: req.Threads}, old != req.Threads, nil
}

// Release frees what an owner holds on a host (idempotent; releasing
// nothing is not an error). changed is false when the owner held nothing.
func (st *State) Release(req RAMRequest) (reply RAMReply, changed bool, err error) {
	s, err := st.ramHost(req)
	if err != nil {
		return RAMReply{}, false, err
	}
	_, held := st.reserved[req.Host][req.Owner]
	if held {
		st.setReservation(req.Host, req.Owner, 0)
		st.Seq++
	}
	return RAMReply{HostRAM: st.hostRAM(s), Owner: req.Owner}, held, nil
}

func (st *State) ramHost(req RAMRequest) (*game.Server, error) {
	if req.Owner == "" {
		return nil, invalidf("RAM request on %q: an owner is required", req.Host)
	}
	s, ok := st.servers[req.Host]
	if !ok {
		return nil, fmt.Errorf("RAM for %s: %w %q", req.Owner, ErrUnknownHost, req.Host)
	}
	if !s.HasAdminRights {
		return nil, fmt.Errorf("RAM for %s on %s: %w", req.Owner, req.Host, game.ErrNoRoot)
	}
	if !(s.MaxRAM > 0) {
		return nil, fmt.Errorf("RAM for %s on %s: %w: the host has no RAM", req.Owner, req.Host, ErrNoRAM)
	}
	return s, nil
}

func (st *State) reservedThreads(host string) int {
	total := 0
	for _, t := range st.reserved[host] {
		total += t
	}
	return total
}

// Reserved is the threads owner holds on host.
func (st *State) Reserved(host, owner string) int { return st.reserved[host][owner] }

// setReservation sets (threads > 0) or removes an owner's reservation and
// recomputes the host's ramUsed from its base, so that no rounding builds up.
func (st *State) setReservation(host, owner string, threads int) {
	if threads > 0 {
		if st.reserved[host] == nil {
			st.reserved[host] = map[string]int{}
		}
		st.reserved[host][owner] = threads
	} else {
		delete(st.reserved[host], owner)
		if len(st.reserved[host]) == 0 {
			delete(st.reserved, host)
		}
	}
	if s, ok := st.servers[host]; ok {
		s.RAMUsed = st.ramBase[host] + game.ThreadRAM*float64(st.reservedThreads(host))
	}
}

// HackRoll is the random number in [0, 1) that decides the hack of job
// jobID: the top 53 bits of FNV-1a-64 over the seed (8 bytes, little
// endian) and the job id. Deriving the roll from (seed, job id) instead of
// drawing from a stream of random numbers makes it restart-safe (a world
// that restarts, or a finish that is repeated, rolls the same number) and
// independent of the order in which concurrent jobs finish; the same seed
// and the same operations give the same results, a different seed
// different ones.
func HackRoll(seed int64, jobID string) float64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seed))
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(jobID))
	// FNV's low bits mix poorly into the high ones for short inputs; a
	// final avalanche (from SplitMix64) spreads every input bit.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// snapshot is the whole state as stored.
type snapshot struct {
	Version  int         `json:"version"`
	Scenario string      `json:"scenario"`
	Seq      uint64      `json:"seq"`
	GameMs   float64     `json:"gameTimeMs"`
	Player   game.Player `json:"player"`
	// Servers are in scenario order.
	Servers  []game.Server             `json:"servers"`
	RAMBase  map[string]float64        `json:"ramBase,omitempty"`
	Reserved map[string]map[string]int `json:"reservations,omitempty"`
	// PendingSince is when the earliest operation begun and not landed
	// when the snapshot was taken was stored (the snapshot's time when
	// none was): a world that loads it finds every operation still to
	// land among the begins stored since (see store.pendingBegins).
	// Unset by an earlier version: those are not looked for.
	PendingSince *time.Time `json:"pendingSince,omitempty"`
}

const snapshotVersion = 1

func (st *State) snapshot(gameMs float64) snapshot {
	sn := snapshot{
		Version: snapshotVersion, Scenario: st.Scenario, Seq: st.Seq, GameMs: gameMs,
		Player: st.player, Servers: st.Servers(), RAMBase: st.ramBase, Reserved: st.reserved,
	}
	return sn
}

func stateFromSnapshot(sn *snapshot) (*State, error) {
	if sn.Version != snapshotVersion {
		return nil, fmt.Errorf("stored world has format version %d; this program reads %d", sn.Version, snapshotVersion)
	}
	st := NewState(&game.Scenario{Name: sn.Scenario, Player: sn.Player, Servers: sn.Servers})
	st.Seq = sn.Seq
	st.ramBase = map[string]float64{}
	for h, v := range sn.RAMBase {
		st.ramBase[h] = v
	}
	for h, owners := range sn.Reserved {
		for o, t := range owners {
			if st.reserved[h] == nil {
				st.reserved[h] = map[string]int{}
			}
			st.reserved[h][o] = t
		}
	}
	return st, nil
}

// setServer replaces a server's values (journal replay).
func (st *State) setServer(s game.Server) {
	if cur, ok := st.servers[s.Hostname]; ok {
		*cur = s
	}
}
