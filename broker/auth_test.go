package broker_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hvmind/hvmind/broker"
)

func TestSplitURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw, plain string
		in, want   broker.Auth
	}{
		{"nats://h:4222", "nats://h:4222", broker.Auth{}, broker.Auth{}},
		{"nats://alice:s3cret@h:4222", "nats://h:4222", broker.Auth{}, broker.Auth{User: "alice", Password: "s3cret"}},
		{"nats://tok@h:4222", "nats://h:4222", broker.Auth{}, broker.Auth{Token: "tok"}},
		{"nats://a:b@h1:4222,nats://a:b@h2:4222", "nats://h1:4222,nats://h2:4222", broker.Auth{}, broker.Auth{User: "a", Password: "b"}},
		// Flags win over the URL.
		{"nats://alice:s3cret@h:4222", "nats://h:4222", broker.Auth{Creds: "x.creds"}, broker.Auth{Creds: "x.creds"}},
	} {
		plain, got := broker.SplitURL(tc.raw, tc.in)
		if plain != tc.plain || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitURL(%q, %+v) = %q, %+v; want %q, %+v", tc.raw, tc.in, plain, got, tc.plain, tc.want)
		}
	}
	if r := broker.Redact("nats://alice:s3cret@h:4222"); strings.Contains(r, "s3cret") {
		t.Errorf("Redact shows the password: %s", r)
	}
}

func TestAuthValidate(t *testing.T) {
	t.Parallel()
	for _, a := range []broker.Auth{
		{User: "u", Token: "t"},
		{Creds: "c", NKey: "n"},
		{Password: "p"},
		{TLSCert: "c"},
	} {
		if err := a.Validate(); !errors.Is(err, broker.ErrAuth) {
			t.Errorf("%+v: %v, want ErrAuth", a, err)
		}
	}
	a := broker.Auth{User: "u", Password: "p", TLSCA: "ca.pem"}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if env := strings.Join(a.Env(), " "); env != "HVMIND_CREDS= HVMIND_NKEY= HVMIND_USER=u HVMIND_PASSWORD=p HVMIND_TOKEN= HVMIND_TLS_CA=ca.pem HVMIND_TLS_CERT= HVMIND_TLS_KEY=" {
		t.Errorf("Env %q", env)
	}
}
