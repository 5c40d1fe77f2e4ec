package broker

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
)

// Auth is how a program proves who it is to the broker, and how it checks
// the broker's TLS certificate. At most one of Creds, NKey, User (with
// Password) and Token; the TLS files with any of them. The zero value
// connects without credentials.
type Auth struct {
	// Creds is a credentials file (a user JWT and its nkey seed).
	Creds string
	// NKey is a file holding a user nkey seed.
	NKey string
	// User and Password; Token.
	User, Password string
	Token          string
	// TLSCA verifies the server; TLSCert and TLSKey are a client
	// certificate (both or neither).
	TLSCA, TLSCert, TLSKey string
}

// ErrAuth says that credentials do not fit together.
var ErrAuth = errors.New("invalid NATS credentials")

// Validate says what does not fit.
func (a Auth) Validate() error {
	n := 0
	for _, set := range []bool{a.Creds != "", a.NKey != "", a.User != "", a.Token != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return fmt.Errorf("%w: give one of creds, nkey, user and password, token", ErrAuth)
	case a.Password != "" && a.User == "":
		return fmt.Errorf("%w: a password needs a user", ErrAuth)
	case (a.TLSCert == "") != (a.TLSKey == ""):
		return fmt.Errorf("%w: a client certificate needs both its cert and key files", ErrAuth)
	}
	return nil
}

// options are the connection options the credentials need.
func (a Auth) options() ([]nats.Option, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case a.Creds != "":
		opts = append(opts, nats.UserCredentials(a.Creds))
	case a.NKey != "":
		o, err := nats.NkeyOptionFromSeed(a.NKey)
		if err != nil {
			return nil, fmt.Errorf("%w: nkey %s: %v", ErrAuth, a.NKey, err)
		}
		opts = append(opts, o)
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
		if process, worker, ok := ParseIdentity(a.User); ok {
			// A worker identity may subscribe to its own inbox only;
			// and the pool, which answers for it, may be away a while
			// when the broker comes back: ask again, not give up.
			opts = append(opts, nats.CustomInboxPrefix(IdentityInbox(process, worker)), nats.IgnoreAuthErrorAbort())
		}
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

// Env is the credentials as environment variables (HVMIND_CREDS and so
// on), for a program this one launches: unlike its command line, a
// process's environment is readable only by its user. Every variable is
// there, empty when unset, so that none of this program's own is
// inherited (a worker given a user must not get the pool's password).
func (a Auth) Env() []string {
	var env []string
	for _, kv := range []struct{ name, value string }{
		{"HVMIND_CREDS", a.Creds}, {"HVMIND_NKEY", a.NKey},
		{"HVMIND_USER", a.User}, {"HVMIND_PASSWORD", a.Password}, {"HVMIND_TOKEN", a.Token},
		{"HVMIND_TLS_CA", a.TLSCA}, {"HVMIND_TLS_CERT", a.TLSCert}, {"HVMIND_TLS_KEY", a.TLSKey},
	} {
		env = append(env, kv.name+"="+kv.value)
	}
	return env
}

// SplitURL takes user and password (or a token) out of a NATS URL: the
// URL without them can be logged and put on a command line. Those in the
// URL fill only what auth lacks.
func SplitURL(raw string, auth Auth) (string, Auth) {
	var kept []string
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || u.User == nil {
			kept = append(kept, one)
			continue
		}
		if auth.User == "" && auth.Token == "" && auth.Creds == "" && auth.NKey == "" {
			if pw, ok := u.User.Password(); ok {
				auth.User, auth.Password = u.User.Username(), pw
			} else {
				auth.Token = u.User.Username()
			}
		}
		u.User = nil
		kept = append(kept, u.String())
	}
	return strings.Join(kept, ","), auth
}

// Redact is a NATS URL with its password or token hidden, for logs.
func Redact(raw string) string {
	plain, auth := SplitURL(raw, Auth{})
	if auth.User == "" && auth.Token == "" {
		return raw
	}
	return plain + " (with credentials)"
}
