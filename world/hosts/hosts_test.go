package hosts_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/hosts"
)

// The world's servers with root and RAM are the hosts, at 1.75 GB a
// thread; the world's errors carry the job system's sentinels.
func TestProvider(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := brokertest.New(t)
	p := hosts.New(world.NewClient(b.Connect(t)))
	if _, err := p.Hosts(ctx); !errors.Is(err, serverpool.ErrUnavailable) {
		t.Errorf("Hosts with no world service = %v, want ErrUnavailable", err)
	}
	svc, err := world.Serve(ctx, b.Connect(t), world.Options{Scenario: "newgame", Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)

	list, err := p.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]serverpool.Host{}
	for _, h := range list {
		byName[h.Name] = h
	}
	// newgame: home 8 GB (4 threads), n00dles 4 GB (2), six of 16 GB (9).
	if len(list) != 8 || byName["home"].MaxThreads != 4 || byName["n00dles"].FreeThreads != 2 || byName["foodnstuff"].Cores != 1 {
		t.Fatalf("hosts %+v", list)
	}
	for _, step := range []struct {
		name string
		do   func() error
		want error
	}{
		{"reserve", func() error { return p.Reserve(ctx, hosts.Home, "w1", 3) }, nil},
		{"more than is free", func() error { return p.Reserve(ctx, hosts.Home, "w2", 2) }, serverpool.ErrNoRoom},
		{"unknown host", func() error { return p.Reserve(ctx, "nowhere", "w1", 1) }, serverpool.ErrUnknownHost},
		{"release", func() error { return p.Release(ctx, hosts.Home, "w1") }, nil},
		{"the room again", func() error { return p.Reserve(ctx, hosts.Home, "w2", 4) }, nil},
	} {
		err := step.do()
		if (step.want == nil) != (err == nil) || (step.want != nil && !errors.Is(err, step.want)) {
			t.Fatalf("%s: %v, want %v", step.name, err, step.want)
		}
	}
	if list, _ := p.Hosts(ctx); list[0].Name != hosts.Home || list[0].FreeThreads != 0 {
		t.Errorf("home after a 4-thread reservation: %+v", list[0])
	}
}
