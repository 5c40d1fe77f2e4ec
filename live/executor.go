package live

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Executor asks one game's executor over NATS.
type Executor struct {
	nc   *nats.Conn
	game string
}

// NewExecutor returns a client of the executor of game (its id, from its
// Hello) reached through nc.
func NewExecutor(nc *nats.Conn, game string) *Executor { return &Executor{nc: nc, game: game} }

// Game is the id of the game it asks.
func (e *Executor) Game() string { return e.game }

func (e *Executor) request(ctx context.Context, request string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("executor %s: %w", request, err)
	}
	msg, err := e.nc.RequestWithContext(ctx, RequestSubject(e.game, request), data)
	if err != nil {
		return fmt.Errorf("executor %s: %w", request, err)
	}
	if err := decodeReply(msg.Data, out); err != nil {
		return fmt.Errorf("executor %s: %w", request, err)
	}
	return nil
}

// State asks the game's state.
func (e *Executor) State(ctx context.Context) (State, error) {
	var s State
	err := e.request(ctx, "state", struct{}{}, &s)
	return s, err
}

// Offset is the game's clock less this machine's (ms), measured by a state
// request: the game's Now (when the request came) against the request's
// way there, half its round trip less the time the executor took to answer
// (reading every server takes the game some milliseconds). rtt is that
// round trip, the executor's time taken off: the smaller, the surer the
// offset.
func (e *Executor) Offset(ctx context.Context) (offset float64, rtt time.Duration, s State, err error) {
	t0 := time.Now()
	s, err = e.State(ctx)
	t1 := time.Now()
	if err != nil {
		return 0, 0, s, err
	}
	rtt = t1.Sub(t0) - time.Duration(s.Took*float64(time.Millisecond))
	rtt = max(rtt, 0)
	arrived := float64(t0.UnixNano()+rtt.Nanoseconds()/2) / 1e6
	return s.Now - arrived, rtt, s, nil
}

// Run asks the executor to run one operation. A run of an id the executor
// runs or has landed is answered with that (RunReply.Already, Landed).
func (e *Executor) Run(ctx context.Context, req RunRequest) (RunReply, error) {
	var r RunReply
	err := e.request(ctx, "run", req, &r)
	return r, err
}

// Kill asks the executor to stop an operation before it lands.
func (e *Executor) Kill(ctx context.Context, id string) (KillReply, error) {
	var r KillReply
	err := e.request(ctx, "kill", KillRequest{ID: id}, &r)
	return r, err
}

// HandleLandings calls take with each landing the executor reports, and
// answers the executor (which then stops sending it) when take returns
// nil. The executor sends a landing again every second until answered, so
// take sees some twice. Unsubscribe the subscription to stop.
func HandleLandings(nc *nats.Conn, take func(Landing) error) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(LandedSubject, func(m *nats.Msg) {
		var l Landing
		if err := json.Unmarshal(m.Data, &l); err != nil || l.ID == "" {
			_ = m.Respond([]byte(`{"error":"not a landing"}`))
			return
		}
		if err := take(l); err != nil {
			return // not answered: sent again
		}
		_ = m.Respond([]byte(`{}`))
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", LandedSubject, err)
	}
	return sub, nil
}
