package broker

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Worker identities. On a broker whose configuration sends the users it
// does not know to an authorization service (NATS auth callout; see
// deploy/nats/hvmind-roles.conf), each worker process and each worker
// connects as itself, and is allowed its own subjects only: a worker
// consumes its own queue, publishes its own records, and makes the
// requests its tasks grant it (Identities.Grants: the world's, for its
// own operations); a worker process beats for its workers and serves its
// own hvmind.procs.<name> endpoints. The
// pool answers for them (pool.Options.Identities): it launches each with
// a password derived from a key only it holds, and a worker process
// derives its workers' passwords from its own.
//
// Users are "hvmind-process:<process>" and "hvmind-worker:<process>:<worker>"
// (a worker that runs on its own is its own process, with a password of
// its own: a worker process's workers may not be named as it is).

// User name prefixes of the worker identities.
const (
	processUserPrefix = "hvmind-process:"
	workerUserPrefix  = "hvmind-worker:"
)

// ErrIdentity says that a user is not a worker identity, or that its
// password is not the one its key gives.
var ErrIdentity = errors.New("not a worker identity")

// ProcessUser is the user of a worker process.
func ProcessUser(process string) string { return processUserPrefix + process }

// WorkerUser is the user of a worker of a process.
func WorkerUser(process, worker string) string {
	return workerUserPrefix + process + ":" + worker
}

// ParseIdentity reads a worker identity's user: its process, and its
// worker ("" for a process).
func ParseIdentity(user string) (process, worker string, ok bool) {
	if p, found := strings.CutPrefix(user, processUserPrefix); found {
		return p, "", validToken(p)
	}
	rest, found := strings.CutPrefix(user, workerUserPrefix)
	if !found {
		return "", "", false
	}
	process, worker, found = strings.Cut(rest, ":")
	return process, worker, found && validToken(process) && validToken(worker)
}

// validToken is a worker id's alphabet (see job.ValidWorkerID), which a
// subject token may hold.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// WorkerPassword derives the password of a worker of a process from the
// process's password: the process gives each of its workers its own.
func WorkerPassword(processPassword, worker string) string {
	return derive([]byte(processPassword), "worker:"+worker)
}

func derive(key []byte, what string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(what))
	return hex.EncodeToString(m.Sum(nil))
}

// IdentityInbox is the inbox prefix of a worker identity's connection:
// its replies come only there, and it may subscribe to nothing wider.
func IdentityInbox(process, worker string) string {
	if worker == "" {
		return "_INBOX.hvmind.p." + process
	}
	return "_INBOX.hvmind.w." + worker
}

// Identities issues the worker identities from an account nkey: the
// issuer the broker's auth_callout names (its public key), whose seed
// only the pool holds.
type Identities struct {
	issuer nkeys.KeyPair
	public string
	key    []byte
	// Grants, when set, are the subjects a worker may publish on for the
	// tasks it runs (requests its tasks make for its own jobs), beyond
	// the job system's.
	Grants func(worker string) []string
}

// NewIdentities reads an account nkey seed (as nk -gen account writes it,
// or NewIdentitySeed).
func NewIdentities(seed []byte) (*Identities, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("identity issuer: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("identity issuer: %w", err)
	}
	if !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("identity issuer: want an account nkey seed (SA…), got a key of %s", pub[:1])
	}
	raw, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("identity issuer: %w", err)
	}
	// The passwords' key, from the seed: one secret to keep, not two.
	return &Identities{issuer: kp, public: pub, key: []byte(derive(raw, "hvmind worker identities"))}, nil
}

// NewIdentitySeed makes a new account nkey seed for NewIdentities.
func NewIdentitySeed() ([]byte, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	return kp.Seed()
}

// Issuer is the account public key the broker's auth_callout names.
func (id *Identities) Issuer() string { return id.public }

// ProcessPassword is the password of a worker process (or of a worker
// that runs on its own, as its own process).
func (id *Identities) ProcessPassword(process string) string {
	return derive(id.key, "process:"+process)
}

// Env is the environment of a worker process the pool launches: its user
// and password (HVMIND_USER, HVMIND_PASSWORD), as broker.Auth.Env writes
// them, never on its command line.
func (id *Identities) Env(process string, tls Auth) []string {
	return Auth{User: ProcessUser(process), Password: id.ProcessPassword(process),
		TLSCA: tls.TLSCA, TLSCert: tls.TLSCert, TLSKey: tls.TLSKey}.Env()
}

// WorkerEnv is the environment of a worker the pool launches on its own.
func (id *Identities) WorkerEnv(worker string, tls Auth) []string {
	return Auth{User: WorkerUser(worker, worker), Password: id.Password(worker, worker),
		TLSCA: tls.TLSCA, TLSCert: tls.TLSCert, TLSKey: tls.TLSKey}.Env()
}

// Password is the password of a worker process (worker "") or of a
// worker: of a process, derived from the process's; on its own (worker
// and process the same), its own.
func (id *Identities) Password(process, worker string) string {
	switch worker {
	case "":
		return id.ProcessPassword(process)
	case process:
		return id.alonePassword(worker)
	}
	return WorkerPassword(id.ProcessPassword(process), worker)
}

// alonePassword is the password of a worker on its own: not one a worker
// process of the same name could derive.
func (id *Identities) alonePassword(worker string) string {
	return derive(id.key, "alone:"+worker)
}

// Check reports whether password is user's, and which identity it is.
func (id *Identities) Check(user, password string) (process, worker string, err error) {
	process, worker, ok := ParseIdentity(user)
	if !ok {
		return "", "", fmt.Errorf("%w: user %q", ErrIdentity, user)
	}
	if want := id.Password(process, worker); subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
		return "", "", fmt.Errorf("%w: wrong password for %s", ErrIdentity, user)
	}
	return process, worker, nil
}

// UserJWT is the user JWT the broker admits a connection of user (its
// connection nkey userNkey) with: the permissions of its identity, in the
// account it is in (account: "$G" without accounts).
func (id *Identities) UserJWT(userNkey, user, account string, perms jwt.Permissions) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = user
	uc.Audience = account
	uc.Permissions = perms
	return uc.Encode(id.issuer)
}

// Response is the signed answer to an authorization request of server
// serverID about userNkey: its user JWT, or the reason it is refused.
func (id *Identities) Response(userNkey, serverID, userJWT, refusal string) ([]byte, error) {
	rc := jwt.NewAuthorizationResponseClaims(userNkey)
	rc.Audience = serverID
	rc.Jwt = userJWT
	rc.Error = refusal
	tok, err := rc.Encode(id.issuer)
	return []byte(tok), err
}

// responses lets an identity answer requests (the worker process's
// endpoints), one reply each.
var responses = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}

// ProcessPermissions are a worker process's: its registry entry, its
// endpoints and a listing of the job queues (to check its workers'). Its
// workers connect as themselves.
func ProcessPermissions(process string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(streamInfos()...)
	for _, name := range JobStreamNames() {
		p.Pub.Allow.Add("$JS.API.CONSUMER.NAMES."+name, "$JS.API.CONSUMER.LIST."+name)
	}
	p.Pub.Allow.Add(
		"$JS.API.STREAM.MSG.GET.KV_"+BucketWorkers, "$JS.API.DIRECT.GET.KV_"+BucketWorkers+".>",
		"$KV."+BucketWorkers+"."+ProcessKey(process), "$KV."+BucketWorkers+"."+ProcessKey(process)+".>",
		SubjectProcs+process+".>",
		"$SRV.>",
	)
	p.Sub.Allow.Add(IdentityInbox(process, "")+".>", SubjectProcs+process+".>", "$SRV.>")
	p.Resp = responses
	return p
}

// streamInfos are the requests that look up the job system's streams and
// its registry (see Bind), and JetStream's account.
func streamInfos() []string {
	subs := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO." + StreamDone, "$JS.API.STREAM.INFO.KV_" + BucketWorkers}
	for _, name := range JobStreamNames() {
		subs = append(subs, "$JS.API.STREAM.INFO."+name)
	}
	return subs
}

// WorkerPermissions are a worker's: its own queue (pulling from its
// durable consumer, which the pool makes for it, and acknowledging its
// messages), its own records, its registry entry (when it beats on its
// own), and what id's Grants give it. It cannot create consumers, read
// the jobs or the records, consume another's queue nor act for another.
func (id *Identities) WorkerPermissions(process, worker string) jwt.Permissions {
	cons, jobs := WorkerConsumer(worker), JobStreamName(JobStreamOf(worker))
	var p jwt.Permissions
	p.Pub.Allow.Add(streamInfos()...)
	p.Pub.Allow.Add(
		// Its queue, which the pool makes (it asks on its own subjects):
		// no consumer of its own making, whose delivery subject (any
		// subject) the broker would not check against these.
		"hvmind.pool.worker."+worker+".>",
		"$JS.API.CONSUMER.INFO."+jobs+"."+cons,
		"$JS.API.CONSUMER.MSG.NEXT."+jobs+"."+cons, "$JS.ACK."+jobs+"."+cons+".>",
		// Its records.
		DoneSubject(worker),
		// Its registry entry (a worker on its own beats there).
		"$KV."+BucketWorkers+"."+worker,
		"$JS.API.STREAM.MSG.GET.KV_"+BucketWorkers, "$JS.API.DIRECT.GET.KV_"+BucketWorkers+".>",
	)
	if id.Grants != nil {
		p.Pub.Allow.Add(id.Grants(worker)...)
	}
	p.Sub.Allow.Add(IdentityInbox(process, worker) + ".>")
	if process == worker {
		// On its own: the endpoints of its name, as a process's.
		p.Pub.Allow.Add(SubjectProcs+worker+".>", "$SRV.>")
		p.Sub.Allow.Add(SubjectProcs+worker+".>", "$SRV.>")
		p.Resp = responses
	}
	return p
}
