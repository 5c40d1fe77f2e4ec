package serverpool_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
)

// fakeWorld is the RAM part of the world, from a scenario, in memory.
type fakeWorld struct{ st *world.State }

func (f fakeWorld) RAM(context.Context) ([]world.HostRAM, error) { return f.st.Hosts(), nil }
func (f fakeWorld) ReserveRAM(_ context.Context, r world.RAMRequest) (world.RAMReply, error) {
	rep, _, err := f.st.Reserve(r)
	return rep, err
}
func (f fakeWorld) ReleaseRAM(_ context.Context, r world.RAMRequest) (world.RAMReply, error) {
	rep, _, err := f.st.Release(r)
	return rep, err
}

type nopLauncher struct{ specs []serverpool.WorkerSpec }

func (l *nopLauncher) Launch(_ context.Context, s serverpool.WorkerSpec) error {
	l.specs = append(l.specs, s)
	return nil
}

func setup(t *testing.T, policy string) (*serverpool.ServerPool, *nopLauncher) {
	t.Helper()
	sc, err := world.LoadScenario("newgame")
	if err != nil {
		t.Fatal(err)
	}
	p, err := serverpool.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	l := &nopLauncher{}
	return serverpool.New(fakeWorld{world.NewState(sc)}, l, p), l
}

func TestPlanAndDeploy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		policy        string
		threads       int
		host          string
		size          int
		wantNoHostErr bool
	}{
		{"exact", 2, "n00dles", 2, false}, // the smallest host that fits
		{"exact", 3, "home", 3, false},    // n00dles is too small
		{"host", 3, "home", 4, false},     // the whole host
		{"chunk:8", 5, "foodnstuff", 8, false},
		{"chunk:64", 5, "foodnstuff", 9, false}, // capped by the host
		{"exact", 10, "", 0, true},              // no host has 10 threads
	} {
		t.Run(tc.policy, func(t *testing.T) {
			t.Parallel()
			sp, l := setup(t, tc.policy)
			h, size, err := sp.Plan(ctx, tc.threads)
			if tc.wantNoHostErr {
				if !errors.Is(err, serverpool.ErrNoHost) {
					t.Fatalf("Plan(%d) = %v, want ErrNoHost", tc.threads, err)
				}
				return
			}
			if err != nil || h.Name != tc.host || size != tc.size {
				t.Fatalf("Plan(%d) = %s, %d, %v; want %s, %d", tc.threads, h.Name, size, err, tc.host, tc.size)
			}
			if err := sp.Deploy(ctx, serverpool.WorkerSpec{ID: "w1", Host: h.Name, Threads: size}); err != nil {
				t.Fatal(err)
			}
			free, _ := sp.FreeThreads(ctx, h.Name)
			if free != h.FreeThreads-size || len(l.specs) != 1 || !l.specs[0].ReserveRAM {
				t.Errorf("after deploy: %d free (want %d), launches %+v", free, h.FreeThreads-size, l.specs)
			}
		})
	}
}

func TestHostsTotalsAndLargest(t *testing.T) {
	t.Parallel()
	sp, _ := setup(t, "exact")
	ctx := context.Background()
	total, err := sp.TotalFreeThreads(ctx)
	if err != nil || total != 4+2+9*6 {
		t.Fatalf("TotalFreeThreads = %d, %v; want 60", total, err)
	}
	if h, _ := sp.Largest(ctx); h.FreeThreads != 9 {
		t.Errorf("Largest = %+v", h)
	}
	if _, err := sp.FreeThreads(ctx, "nowhere"); !errors.Is(err, world.ErrUnknownHost) {
		t.Errorf("FreeThreads(nowhere) = %v", err)
	}
	if _, err := serverpool.ParsePolicy("chunk:x"); !errors.Is(err, serverpool.ErrBadPolicy) {
		t.Errorf("ParsePolicy(chunk:x) = %v", err)
	}
}

// A server pool restricted to some hosts lists, fits and launches only
// on them.
func TestOnlyTheNamedHosts(t *testing.T) {
	t.Parallel()
	sp, l := setup(t, "host")
	sp.Only("n00dles", " foodnstuff", "")
	ctx := context.Background()
	hosts, err := sp.Hosts(ctx)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("Hosts = %+v, %v; want n00dles and foodnstuff", hosts, err)
	}
	if total, _ := sp.TotalFreeThreads(ctx); total != 2+9 {
		t.Errorf("TotalFreeThreads = %d, want 11", total)
	}
	if h, err := sp.SmallestFit(ctx, 3); err != nil || h.Name != "foodnstuff" {
		t.Errorf("SmallestFit(3) = %+v, %v; want foodnstuff", h, err)
	}
	if _, err := sp.SmallestFit(ctx, 10); !errors.Is(err, serverpool.ErrNoHost) {
		t.Errorf("SmallestFit(10) = %v, want ErrNoHost", err)
	}
	if len(l.specs) != 0 {
		t.Errorf("launched %+v", l.specs)
	}
	if hosts, _ := sp.Only().Hosts(ctx); len(hosts) != 8 {
		t.Errorf("Only() lists %d hosts, want all 8", len(hosts))
	}
}

// A job that needs cores goes only to hosts that have them: on
// reference-880 only home has 3.
func TestPlanAndLargestWithCores(t *testing.T) {
	t.Parallel()
	sc, err := world.LoadScenario("reference-880")
	if err != nil {
		t.Fatal(err)
	}
	sp := serverpool.New(fakeWorld{world.NewState(sc)}, &nopLauncher{}, serverpool.Policy{Kind: "exact"})
	ctx := context.Background()
	for _, tc := range []struct {
		name             string
		threads, cores   int
		want             string
		wantErr, largest bool
	}{
		{"any host", 2, 0, "n00dles", false, false},
		{"three cores", 2, 3, "home", false, false},
		{"four cores", 2, 4, "", true, false},
		{"largest of three cores", 0, 3, "home", false, true},
		{"largest of four cores", 0, 4, "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var h serverpool.Host
			var err error
			if tc.largest {
				h, err = sp.LargestCores(ctx, tc.cores)
			} else {
				h, _, err = sp.PlanCores(ctx, tc.threads, tc.cores)
			}
			if tc.wantErr {
				if !errors.Is(err, serverpool.ErrNoHost) {
					t.Fatalf("got %+v, %v; want ErrNoHost", h, err)
				}
				return
			}
			if err != nil || h.Name != tc.want {
				t.Fatalf("got %+v, %v; want %s", h, err, tc.want)
			}
		})
	}
}
