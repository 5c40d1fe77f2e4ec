package pool

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
)

// SubjectAuthCallout is where a broker configured with auth_callout asks
// who a connecting user is (NATS auth callout).
const SubjectAuthCallout = "$SYS.REQ.USER.AUTH"

// callout answers the broker about the worker identities (see
// broker.Identities): a worker process or worker whose password is the one
// the pool's key gives is admitted with the permissions of its identity;
// anyone else is refused. A worker is its process's only if no other
// process has it (see claim).
type callout struct {
	p   *Pool
	id  *broker.Identities
	sub *nats.Subscription

	mu sync.Mutex
	// claims are the process of each worker admitted.
	claims map[string]string
}

// startCallout subscribes to the broker's authorization requests.
func (p *Pool) startCallout() (stop func(), err error) {
	c := &callout{p: p, id: p.opts.Identities, claims: map[string]string{}}
	p.callout = c
	c.sub, err = p.nc.QueueSubscribe(SubjectAuthCallout, "hvmind-pool", c.handle)
	if err != nil {
		return nil, fmt.Errorf("authorization service: %w", err)
	}
	p.log.Info().Str("issuer", c.id.Issuer()).Msg("answering the broker about worker identities")
	return func() { _ = c.sub.Unsubscribe() }, nil
}

func (c *callout) handle(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		// Encrypted (an xkey in the broker's auth_callout), or not a
		// request: the broker times out and refuses the connection.
		c.p.log.Error().Err(err).Msg("an authorization request the pool cannot read (is the broker's auth_callout given an xkey? the pool does not use one)")
		return
	}
	user := req.ConnectOptions.Username
	jwtStr, refusal := c.authorize(req.UserNkey, user, req.ConnectOptions.Password)
	if refusal != "" {
		c.p.log.Warn().Str("user", user).Str("client", req.ClientInformation.Host).Str("why", refusal).Msg("refused a connection")
	}
	resp, err := c.id.Response(req.UserNkey, req.Server.ID, jwtStr, refusal)
	if err != nil {
		c.p.log.Error().Err(err).Msg("signing an authorization answer")
		return
	}
	_ = m.Respond(resp)
}

// authorize is the user JWT of an admitted identity, or why it is refused.
func (c *callout) authorize(userNkey, user, password string) (userJWT, refusal string) {
	process, worker, err := c.id.Check(user, password)
	if err != nil {
		return "", err.Error()
	}
	perms := broker.ProcessPermissions(process)
	if worker != "" {
		if err := c.claim(process, worker); err != nil {
			return "", err.Error()
		}
		perms = c.id.WorkerPermissions(process, worker)
	}
	userJWT, err = c.id.UserJWT(userNkey, user, c.p.opts.IdentityAccount, perms)
	if err != nil {
		return "", "signing the user: " + err.Error()
	}
	return userJWT, ""
}

// errClaimed says that a worker id is another process's.
var errClaimed = errors.New("worker id is another process's")

// claim admits worker as process's, unless it is another's: the process
// the pool launched it in (whatever connected with it before), or else
// the first to connect with it since the pool started (until it leaves
// that process). A registry entry is not asked: a
// process writes its own, and could list any id.
func (c *callout) claim(process, worker string) error {
	want, launched := c.p.launchedIn(worker)
	if launched && want != process {
		return fmt.Errorf("%w: the pool launched %s in %s", errClaimed, worker, want)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if owner, ok := c.claims[worker]; ok && owner != process && !launched {
		return fmt.Errorf("%w: %s connected from %s", errClaimed, worker, owner)
	}
	c.claims[worker] = process
	return nil
}

// forget lets another process have worker's id: it left process. A
// process that listed an id it did not have, and dropped it, frees
// nothing.
func (c *callout) forget(worker, process string) {
	c.mu.Lock()
	if c.claims[worker] == process {
		delete(c.claims, worker)
	}
	c.mu.Unlock()
}

// launchedIn is the process the pool last launched worker in, since it
// started, when its Launcher says where (serverpool.ProcessNamer).
func (p *Pool) launchedIn(worker string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	proc, ok := p.launchedProcs[worker]
	return proc, ok
}
