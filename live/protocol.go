// Package live is the live Bitburner game as HVMind sees it: the executor
// script that runs inside the game (executor/hvmind.js, served to the
// player by Handler), and the protocol HVMind speaks with it over NATS.
//
// The executor opens a WebSocket to the broker's WebSocket listener (see
// broker.EmbeddedOptions.WebSocket) and answers requests on
// RequestSubject(...): the game's state (its clock, the player, every
// server and the operations running), running one hack, grow or weaken on
// a host with a job's threads so that it lands at a given time, and
// killing one before it lands. Each operation's result comes back as a
// request on LandedSubject, sent again until answered.
//
// Game time is wall time, on the browser's clock: State carries it, and
// Executor.Offset measures it against this machine's.
package live

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hvmind/hvmind/world/game"
)

// Version is the protocol's version; the executor reports its own in
// every state.
const Version = 1

// LandedSubject is where executors report landings.
const (
	LandedSubject = "hvmind.game.landed"
	// HelloSubject is where each executor says every 2 s that it runs
	// (Hello): two games connected to one broker would both run every
	// operation.
	HelloSubject = "hvmind.game.hello"
	// WhoSubject asks every executor to say hello now.
	WhoSubject = "hvmind.game.who"
)

// Hello is an executor's word that it runs (or, Bye, that it stops).
type Hello struct {
	// Game is its game's id, kept in the game (see RequestSubject).
	Game string `json:"game"`
	// Instance names this start of the executor; Since is when it started
	// and Now when it spoke (game epoch ms).
	Instance string  `json:"instance"`
	Since    float64 `json:"since"`
	Now      float64 `json:"now"`
	Bye      bool    `json:"bye,omitempty"`
}

// RequestSubject is the subject of one of a game's executor's requests:
// hvmind.game.<game>.executor.<request>, request being state, run or kill.
// Each game has an id of its own (Hello.Game), so that two games connected
// to one broker do not both run an operation.
func RequestSubject(game, request string) string {
	return "hvmind.game." + game + ".executor." + request
}

// ResultPort is the game port the operation scripts report on.
const ResultPort = 7464

// The operation scripts' RAM per thread, as the game charges it: the
// script's 1.6 GB and the operation's own cost.
const (
	HackScriptRAM   = 1.70
	GrowScriptRAM   = 1.75
	WeakenScriptRAM = 1.75
)

// ErrExecutor wraps an error the executor answered with.
var ErrExecutor = errors.New("the game's executor refused")

// State is the executor's answer to state.
type State struct {
	// Version is the executor's protocol version, and Instance names this
	// start of it (see Hello).
	Version  int    `json:"version"`
	Game     string `json:"game"`
	Instance string `json:"instance"`
	// Now is the game's clock when the request came (browser epoch ms),
	// and Took how long the executor took to answer it (ms).
	Now  float64 `json:"now"`
	Took float64 `json:"took"`
	// Player is ns.getPlayer().
	Player PlayerState `json:"player"`
	// Servers are ns.getServer() of every server reachable from home,
	// home first.
	Servers []ServerState `json:"servers"`
	// Ops are the operations it runs, landed or killed ones not among
	// them.
	Ops []Op `json:"ops"`
	// Port is where its operation scripts report.
	Port int `json:"port"`
}

// ServerState is a server as ns.getServer() gives it: game.Server's
// fields, and how many of its ports are open.
type ServerState struct {
	game.Server
	OpenPortCount int `json:"openPortCount"`
}

// PlayerState is the player as ns.getPlayer() gives it.
type PlayerState struct {
	Money  float64 `json:"money"`
	Skills struct {
		Hacking int `json:"hacking"`
	} `json:"skills"`
	Exp struct {
		Hacking float64 `json:"hacking"`
	} `json:"exp"`
	Mults game.Mults `json:"mults"`
}

// Player is the player in the formulas' terms.
func (p PlayerState) Player() game.Player {
	return game.Player{HackingExp: p.Exp.Hacking, Money: p.Money, Mults: p.Mults}
}

// RunRequest asks the executor to run one operation.
type RunRequest struct {
	// ID is the job's id: a second run of it is answered with the first
	// one's Op (or its landing), and starts nothing.
	ID string `json:"id"`
	// Op is hack, grow or weaken.
	Op     string `json:"op"`
	Host   string `json:"host"`
	Target string `json:"target"`
	// Threads run on Host.
	Threads int `json:"threads"`
	// LandAt is when it should land (game epoch ms): the executor delays
	// it by what is left after the operation's own time
	// (additionalMsec). 0 lands it when its time is over.
	LandAt float64 `json:"landAt,omitempty"`
}

// Op is an operation the executor started.
type Op struct {
	ID      string `json:"id"`
	Op      string `json:"op"`
	Host    string `json:"host"`
	Target  string `json:"target"`
	Threads int    `json:"threads"`
	// PID is the game's process id of its script.
	PID int `json:"pid"`
	// StartedAt is when the executor started it (game epoch ms),
	// DurationMs the operation's own time then, and DelayMs what was
	// added to land it at LandAt. LandsAt is StartedAt + DurationMs +
	// DelayMs (0 for an operation taken up from a previous executor).
	StartedAt  float64 `json:"startedAt"`
	DurationMs float64 `json:"durationMs"`
	DelayMs    float64 `json:"delayMs"`
	LandsAt    float64 `json:"landsAt"`
	// SecurityAtStart, MoneyAtStart and LevelAtStart are the target's and
	// the player's as it started, which fixed its time (0 for one taken up
	// from a previous executor).
	SecurityAtStart float64 `json:"securityAtStart,omitempty"`
	MoneyAtStart    float64 `json:"moneyAtStart,omitempty"`
	LevelAtStart    int     `json:"levelAtStart,omitempty"`
}

// RunReply is the executor's answer to run: the operation it started (or
// had started: Already), its landing when it has landed, or an error.
type RunReply struct {
	Op
	Already bool     `json:"already,omitempty"`
	Landed  *Landing `json:"landed,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// KillRequest asks the executor to stop an operation before it lands.
type KillRequest struct {
	ID string `json:"id"`
}

// KillReply says what became of the operation: stopped before it landed
// (Killed), landed (Landed), too close to its landing to know yet (Pending:
// ask again), ended without a report (Gone: killed in the game, never
// applied), or not known to the executor (Unknown: never run, or landed
// and forgotten long ago).
type KillReply struct {
	ID      string   `json:"id"`
	Killed  bool     `json:"killed,omitempty"`
	Pending bool     `json:"pending,omitempty"`
	Gone    bool     `json:"gone,omitempty"`
	Unknown bool     `json:"unknown,omitempty"`
	Landed  *Landing `json:"landed,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Landing is an operation's result, as the game gave it.
type Landing struct {
	Op
	// Game is the id of the game it landed in.
	Game string `json:"game"`
	// Result is what the operation returned: the money a hack stole (0
	// when it failed), a grow's multiplier, the security a weaken
	// removed.
	Result float64 `json:"result"`
	// Begun is when the operation script called the operation, and
	// LandedAt when it returned (game epoch ms).
	Begun    float64 `json:"begun"`
	LandedAt float64 `json:"landedAt"`
	// After is the target just after, as the executor read it.
	After *ServerState `json:"after,omitempty"`
}

// errorReply is any reply's error field.
type errorReply struct {
	Error string `json:"error"`
}

// decodeReply decodes a reply into out, or the executor's error.
func decodeReply(data []byte, out any) error {
	var e errorReply
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	if e.Error != "" {
		return fmt.Errorf("%w: %s", ErrExecutor, e.Error)
	}
	return json.Unmarshal(data, out)
}
