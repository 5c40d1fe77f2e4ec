package world

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/world/game"
)

// Client calls the world service. It is safe for concurrent use.
type Client struct {
	nc *nats.Conn
	// Timeout bounds a request whose context has no deadline.
	Timeout time.Duration
	// worker, when set, asks for its operations, settlements and RAM on
	// its own subjects (see As).
	worker string
}

// As returns a client that asks on worker's own subjects (WorkerSubject)
// for the begins, finishes, settlements and reservations it makes, which
// the world then grants only for what is worker's. A worker's client.
func (c *Client) As(worker string) *Client {
	cp := *c
	cp.worker = worker
	return &cp
}

// subject is plain, or the worker's own subject for request.
func (c *Client) subject(plain, request string) string {
	if c.worker == "" {
		return plain
	}
	return WorkerSubject(c.worker, request)
}

// NewClient returns a client on an open connection.
func NewClient(nc *nats.Conn) *Client {
	return &Client{nc: nc, Timeout: 10 * time.Second}
}

// Retryable reports whether err may go away by itself: no world service
// answers (yet), a request timed out, or the world could not store a
// change. Begin and Finish are safe to repeat.
func Retryable(err error) bool {
	return errors.Is(err, ErrNotRunning) || errors.Is(err, ErrUnavailable) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrNoResponders)
}

// request sends body (raw bytes, or a value to encode as JSON) and decodes
// the reply into out, turning an error answer into a RemoteError.
func (c *Client) request(ctx context.Context, subject string, body, out any) error {
	var data []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			return fmt.Errorf("%s: encode request: %w", subject, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w (nothing answers on %s): %w", ErrNotRunning, subject, err)
	}
	if err != nil {
		return fmt.Errorf("world request %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		re := &RemoteError{Status: code}
		if json.Unmarshal(msg.Data, &re.ErrorReply) != nil || re.ErrorReply.Error == "" {
			re.ErrorReply.Error = msg.Header.Get(micro.ErrorHeader)
		}
		return re
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("world reply on %s: %w", subject, err)
	}
	return nil
}

// Servers returns every server of the world.
func (c *Client) Servers(ctx context.Context) ([]game.Server, error) {
	var out []game.Server
	err := c.request(ctx, SubjectServers, nil, &out)
	return out, err
}

// Server returns one server; an unknown one is ErrUnknownTarget.
func (c *Client) Server(ctx context.Context, host string) (game.Server, error) {
	var out game.Server
	err := c.request(ctx, SubjectServer, []byte(host), &out)
	return out, err
}

// Player returns the player.
func (c *Client) Player(ctx context.Context) (PlayerInfo, error) {
	var out PlayerInfo
	err := c.request(ctx, SubjectPlayer, nil, &out)
	return out, err
}

// Clock returns the world's clock and identity.
func (c *Client) Clock(ctx context.Context) (Clock, error) {
	var out Clock
	err := c.request(ctx, SubjectClock, nil, &out)
	return out, err
}

// Scenario returns the world now as a scenario: its servers and player.
func (c *Client) Scenario(ctx context.Context) (*game.Scenario, error) {
	clock, err := c.Clock(ctx)
	if err != nil {
		return nil, err
	}
	servers, err := c.Servers(ctx)
	if err != nil {
		return nil, err
	}
	p, err := c.Player(ctx)
	if err != nil {
		return nil, err
	}
	return &game.Scenario{Name: clock.Scenario, Description: "live world", Bitnode: 1, Player: p.Player(), Servers: servers}, nil
}

// Begin tells the world that an operation starts now and returns its
// duration. Repeating it for the same job returns the same reply.
func (c *Client) Begin(ctx context.Context, req BeginRequest) (BeginReply, error) {
	var out BeginReply
	err := c.request(ctx, c.subject(SubjectBegin, WorkerBegin), req, &out)
	return out, err
}

// Finish applies a begun operation now and returns its effect. Repeating
// it returns the same result and applies nothing.
func (c *Client) Finish(ctx context.Context, jobID string) (Result, error) {
	return c.FinishAt(ctx, jobID, 0, 0)
}

// FinishAt is Finish for an operation that landed at epoch ms end (0: when
// the world reads the request), scheduled to land at due.
func (c *Client) FinishAt(ctx context.Context, jobID string, end, due float64) (Result, error) {
	var out Result
	err := c.request(ctx, c.subject(SubjectFinish, WorkerFinish), FinishRequest{JobID: jobID, End: end, Due: due}, &out)
	return out, err
}

// ReserveRAM sets the threads an owner holds on a host (idempotent).
func (c *Client) ReserveRAM(ctx context.Context, req RAMRequest) (RAMReply, error) {
	var out RAMReply
	err := c.request(ctx, c.subject(SubjectRAMReserve, WorkerRAMReserve), req, &out)
	return out, err
}

// ReleaseRAM frees what an owner holds on a host (idempotent).
func (c *Client) ReleaseRAM(ctx context.Context, req RAMRequest) (RAMReply, error) {
	var out RAMReply
	err := c.request(ctx, c.subject(SubjectRAMRelease, WorkerRAMRelease), req, &out)
	return out, err
}

// RAM lists the hosts with their RAM and free threads.
func (c *Client) RAM(ctx context.Context) ([]HostRAM, error) {
	var out []HostRAM
	err := c.request(ctx, SubjectRAM, nil, &out)
	return out, err
}
