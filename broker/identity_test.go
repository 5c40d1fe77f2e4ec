package broker_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hvmind/hvmind/broker"
)

func TestIdentities(t *testing.T) {
	t.Parallel()
	seed, err := broker.NewIdentitySeed()
	if err != nil {
		t.Fatal(err)
	}
	ids, err := broker.NewIdentities(seed)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := broker.NewIdentitySeed()
	otherIDs, _ := broker.NewIdentities(other)
	procPW := ids.ProcessPassword("big1")
	tests := []struct {
		name, user, password string
		wantProcess          string
		wantWorker           string
		wantErr              bool
	}{
		{name: "a process", user: broker.ProcessUser("big1"), password: procPW, wantProcess: "big1"},
		{name: "a worker of it", user: broker.WorkerUser("big1", "home-1"), password: broker.WorkerPassword(procPW, "home-1"),
			wantProcess: "big1", wantWorker: "home-1"},
		{name: "a worker on its own", user: broker.WorkerUser("w1", "w1"), password: passwordIn(ids.WorkerEnv("w1", broker.Auth{})),
			wantProcess: "w1", wantWorker: "w1"},
		{name: "a process's worker of its name", user: broker.WorkerUser("w1", "w1"), password: broker.WorkerPassword(ids.ProcessPassword("w1"), "w1"),
			wantErr: true},
		{name: "its process's password for a worker", user: broker.WorkerUser("big1", "home-1"), password: procPW, wantErr: true},
		{name: "a worker's password for another", user: broker.WorkerUser("big1", "home-2"), password: broker.WorkerPassword(procPW, "home-1"), wantErr: true},
		{name: "another key's", user: broker.ProcessUser("big1"), password: otherIDs.ProcessPassword("big1"), wantErr: true},
		{name: "not an identity", user: "manager", password: procPW, wantErr: true},
		{name: "a bad worker id", user: "hvmind-worker:big1:home.1", password: "x", wantErr: true},
		{name: "no worker", user: "hvmind-worker:big1", password: "x", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, w, err := ids.Check(tc.user, tc.password)
			if tc.wantErr {
				if !errors.Is(err, broker.ErrIdentity) {
					t.Errorf("Check: %v, want ErrIdentity", err)
				}
				return
			}
			if err != nil || p != tc.wantProcess || w != tc.wantWorker {
				t.Errorf("Check: %q %q %v; want %q %q", p, w, err, tc.wantProcess, tc.wantWorker)
			}
		})
	}
	if _, err := broker.NewIdentities([]byte("SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4")); err == nil {
		t.Error("a user seed was taken for an account's")
	}
}

// passwordIn is HVMIND_PASSWORD of an environment.
func passwordIn(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HVMIND_PASSWORD="); ok {
			return v
		}
	}
	return ""
}

// A worker's permissions name its own subjects and no other worker's, and
// no consumer create.
func TestWorkerPermissions(t *testing.T) {
	t.Parallel()
	seed, _ := broker.NewIdentitySeed()
	ids, _ := broker.NewIdentities(seed)
	ids.Grants = func(w string) []string { return []string{"game." + w + ".>"} }
	p := ids.WorkerPermissions("big1", "home-1")
	pub := []string(p.Pub.Allow)
	for _, want := range []string{"hvmind.done.home-1", "$JS.API.CONSUMER.MSG.NEXT." + broker.JobStreamName(broker.JobStreamOf("home-1")) + ".worker-home-1", "hvmind.pool.worker.home-1.>", "game.home-1.>"} {
		if !slices.Contains(pub, want) {
			t.Errorf("publish %s not allowed: %v", want, pub)
		}
	}
	for _, s := range pub {
		// No consumer of its own making: its delivery subject could be
		// any subject, unchecked.
		if strings.Contains(s, "CONSUMER.CREATE") || strings.Contains(s, ".GET.HVMIND_") || s == ">" || slices.Contains([]string{"hvmind.done.>", "hvmind.jobs.>"}, s) {
			t.Errorf("publish %s allowed", s)
		}
	}
	if sub := []string(p.Sub.Allow); !slices.Equal(sub, []string{broker.IdentityInbox("big1", "home-1") + ".>"}) {
		t.Errorf("subscribe %v, want only its inbox", sub)
	}
}
