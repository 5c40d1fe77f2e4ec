package serverpool_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/serverpool"
)

type recordingLauncher struct {
	mu    sync.Mutex
	specs []broker.WorkerSpec
	err   error
}

func (l *recordingLauncher) Launch(_ context.Context, s broker.WorkerSpec) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.specs = append(l.specs, s)
	return l.err
}

// smallNetwork is eight hosts: one of 4 threads, one of 2, six of 9.
func smallNetwork() *serverpool.Fixed {
	hosts := []serverpool.Host{
		{Name: "home", MaxThreads: 4, Cores: 1},
		{Name: "n00dles", MaxThreads: 2, Cores: 1},
	}
	for _, n := range []string{"foodnstuff", "sigma-cosmetics", "joesguns", "hong-fang-tea", "harakiri-sushi", "nectar-net"} {
		hosts = append(hosts, serverpool.Host{Name: n, MaxThreads: 9, Cores: 1})
	}
	return serverpool.NewFixed(hosts...)
}

func setup(t *testing.T, policy string) (*serverpool.ServerPool, *recordingLauncher, *serverpool.Fixed) {
	t.Helper()
	p, err := serverpool.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	l := &recordingLauncher{}
	fixed := smallNetwork()
	sp, err := serverpool.New(serverpool.Options{Provider: fixed, Launcher: l, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	return sp, l, fixed
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
			sp, l, fixed := setup(t, tc.policy)
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
			if err := sp.Deploy(ctx, broker.WorkerSpec{ID: "w1", Host: h.Name, Threads: size}); err != nil {
				t.Fatal(err)
			}
			free, _ := sp.FreeThreads(ctx, h.Name)
			if free != h.FreeThreads-size || len(l.specs) != 1 || !l.specs[0].Reserve || fixed.Held(h.Name, "w1") != size {
				t.Errorf("after deploy: %d free (want %d), held %d, launches %+v", free, h.FreeThreads-size, fixed.Held(h.Name, "w1"), l.specs)
			}
		})
	}
}

// A deploy whose launch fails gives the reservation back; one that finds
// the host full launches nothing.
func TestDeployFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sp, l, fixed := setup(t, "exact")
	l.err = errors.New("no such binary")
	if err := sp.Deploy(ctx, broker.WorkerSpec{ID: "w1", Host: "home", Threads: 3}); err == nil {
		t.Fatal("deploy with a failing launcher succeeded")
	}
	if n := fixed.Held("home", "w1"); n != 0 {
		t.Errorf("a failed launch left %d threads reserved", n)
	}
	l.err = nil
	err := sp.Deploy(ctx, broker.WorkerSpec{ID: "w2", Host: "home", Threads: 5})
	if !errors.Is(err, serverpool.ErrNoRoom) {
		t.Errorf("deploy of 5 threads on a 4-thread host = %v, want ErrNoRoom", err)
	}
	if len(l.specs) != 1 {
		t.Errorf("launches %+v, want only the first (failed) one", l.specs)
	}
	noLauncher, err := serverpool.New(serverpool.Options{Provider: fixed})
	if err != nil {
		t.Fatal(err)
	}
	if err := noLauncher.Deploy(ctx, broker.WorkerSpec{ID: "w3", Host: "home", Threads: 1}); !errors.Is(err, serverpool.ErrNoLauncher) {
		t.Errorf("deploy without a launcher = %v, want ErrNoLauncher", err)
	}
}

func TestHostsTotalsAndLargest(t *testing.T) {
	t.Parallel()
	sp, _, _ := setup(t, "exact")
	ctx := context.Background()
	total, err := sp.TotalFreeThreads(ctx)
	if err != nil || total != 4+2+9*6 {
		t.Fatalf("TotalFreeThreads = %d, %v; want 60", total, err)
	}
	if h, _ := sp.Largest(ctx); h.FreeThreads != 9 {
		t.Errorf("Largest = %+v", h)
	}
	if _, err := sp.FreeThreads(ctx, "nowhere"); !errors.Is(err, serverpool.ErrUnknownHost) {
		t.Errorf("FreeThreads(nowhere) = %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		o    serverpool.Options
		want error
	}{
		{"no provider", serverpool.Options{}, nil},
		{"bad chunk", serverpool.Options{Provider: smallNetwork(), Policy: serverpool.Policy{Kind: "chunk"}}, serverpool.ErrBadPolicy},
		{"bad kind", serverpool.Options{Provider: smallNetwork(), Policy: serverpool.Policy{Kind: "most"}}, serverpool.ErrBadPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := serverpool.New(tc.o)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("New = %v, want an error (%v)", err, tc.want)
			}
		})
	}
	if _, err := serverpool.ParsePolicy("chunk:x"); !errors.Is(err, serverpool.ErrBadPolicy) {
		t.Errorf("ParsePolicy(chunk:x) = %v", err)
	}
	sp, err := serverpool.New(serverpool.Options{Provider: smallNetwork()})
	if err != nil || sp.Policy() != serverpool.DefaultPolicy {
		t.Errorf("New with no policy = %v, %v; want DefaultPolicy", sp.Policy(), err)
	}
}

// A server pool restricted to some hosts lists, fits and launches only
// on them.
func TestOnlyTheNamedHosts(t *testing.T) {
	t.Parallel()
	l := &recordingLauncher{}
	sp, err := serverpool.New(serverpool.Options{Provider: smallNetwork(), Launcher: l,
		Policy: serverpool.Policy{Kind: "host"}, Only: []string{"n00dles", " foodnstuff", ""}})
	if err != nil {
		t.Fatal(err)
	}
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
	// Cores are read for every host, whatever the restriction.
	if cores, err := sp.Cores(ctx); err != nil || len(cores) != 8 {
		t.Errorf("Cores = %v, %v; want all 8 hosts", cores, err)
	}
}

// A job that needs cores goes only to hosts that have them.
func TestPlanAndLargestWithCores(t *testing.T) {
	t.Parallel()
	sp, err := serverpool.New(serverpool.Options{Provider: serverpool.NewFixed(
		serverpool.Host{Name: "home", MaxThreads: 18724, Cores: 3},
		serverpool.Host{Name: "n00dles", MaxThreads: 2, Cores: 1},
		serverpool.Host{Name: "pserv-0", MaxThreads: 1170, Cores: 1},
	), Policy: serverpool.Policy{Kind: "exact"}})
	if err != nil {
		t.Fatal(err)
	}
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

// The fixed provider keeps one ledger: an owner's reservation is set, not
// added to, and released whole.
func TestFixedLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := serverpool.NewFixed(serverpool.Host{Name: "a", MaxThreads: 10, Cores: 2})
	free := func() int {
		hs, _ := f.Hosts(ctx)
		return hs[0].FreeThreads
	}
	for _, step := range []struct {
		do       func() error
		wantErr  error
		wantFree int
	}{
		{func() error { return f.Reserve(ctx, "a", "w1", 6) }, nil, 4},
		{func() error { return f.Reserve(ctx, "a", "w1", 6) }, nil, 4}, // idempotent
		{func() error { return f.Reserve(ctx, "a", "w2", 5) }, serverpool.ErrNoRoom, 4},
		{func() error { return f.Reserve(ctx, "a", "w1", 8) }, nil, 2}, // grows within the host
		{func() error { return f.Reserve(ctx, "b", "w1", 1) }, serverpool.ErrUnknownHost, 2},
		{func() error { return f.Release(ctx, "a", "w1") }, nil, 10},
		{func() error { return f.Release(ctx, "a", "w1") }, nil, 10},
	} {
		err := step.do()
		if (step.wantErr == nil) != (err == nil) || (step.wantErr != nil && !errors.Is(err, step.wantErr)) {
			t.Fatalf("got %v, want %v", err, step.wantErr)
		}
		if got := free(); got != step.wantFree {
			t.Fatalf("free threads %d, want %d", got, step.wantFree)
		}
	}
}
