// Package serverpool knows where workers can run: the hosts a capacity
// Provider offers, how many threads each can still take, and how to deploy
// a worker onto one (reserve its threads with the provider, then launch
// it).
//
// The job system does not own the hosts. Whatever does (a fixed fleet of
// machines, a cloud account, a simulated network) implements Provider; the
// pool then asks the server pool where a new worker should go and how big
// it may be. Fixed is a Provider for a fixed set of hosts, kept in memory.
package serverpool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hvmind/hvmind/broker"
)

// Sentinel errors. A Provider wraps ErrNoRoom, ErrUnknownHost and
// ErrUnavailable so that the pool can act on them.
var (
	// ErrNoHost means no host has the free threads asked for.
	ErrNoHost = errors.New("no host has that many threads free")
	// ErrNoRoom means a host has not the room for a reservation (another
	// worker took it since the host was listed).
	ErrNoRoom = errors.New("not enough room on the host")
	// ErrUnknownHost means a host the provider does not offer.
	ErrUnknownHost = errors.New("unknown host")
	// ErrUnavailable means no provider is running to answer; the pool then
	// launches workers without it. (A provider that is slow to answer is
	// still there: its timeout is an error of its own.)
	ErrUnavailable = errors.New("capacity provider unavailable")
	// ErrBadPolicy is returned for an unknown sizing policy.
	ErrBadPolicy = errors.New("unknown worker sizing policy")
)

// Host is a machine (or a slot of one) that can run workers.
type Host struct {
	Name string `json:"name"`
	// Cores is the host's cores; a job's MinCores places it only on hosts
	// with that many.
	Cores int `json:"cores"`
	// FreeThreads is how many more worker threads the host can take;
	// MaxThreads how many it takes when empty.
	FreeThreads int `json:"freeThreads"`
	MaxThreads  int `json:"maxThreads"`
	// Held is the threads each owner (a worker id) holds on the host, as
	// the provider's ledger has them.
	Held map[string]int `json:"held,omitempty"`
}

// Provider owns the hosts: it lists them with their free threads, and keeps
// the ledger of the threads each worker holds on each, so that workers
// started by different processes share a host's capacity. Reserve and
// Release are idempotent: a worker re-asserts its reservation now and then,
// and the pool releases the reservation of a worker that died without
// doing so.
type Provider interface {
	// Hosts lists the hosts workers may run on, in any order.
	Hosts(ctx context.Context) ([]Host, error)
	// Reserve sets the threads owner holds on host. A host without the
	// room is an error wrapping ErrNoRoom; one the provider does not
	// offer, ErrUnknownHost.
	Reserve(ctx context.Context, host, owner string, threads int) error
	// Release frees what owner holds on host.
	Release(ctx context.Context, host, owner string) error
}

// Policy decides how many threads a new worker gets, given the threads the
// job needs and the threads its host has free.
type Policy struct {
	// Kind is "exact" (just the job's threads), "host" (every free thread
	// of the host) or "chunk" (the job's threads rounded up to a multiple of
	// Chunk, at most the host's free threads).
	Kind  string
	Chunk int
}

// DefaultPolicy sizes workers in chunks of 64 threads: few workers per
// host, few threads idle.
var DefaultPolicy = Policy{Kind: "chunk", Chunk: 64}

// ParsePolicy reads "exact", "host" or "chunk:N".
func ParsePolicy(s string) (Policy, error) {
	switch {
	case s == "exact" || s == "host":
		return Policy{Kind: s}, nil
	case strings.HasPrefix(s, "chunk:"):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "chunk:"))
		if err != nil || n <= 0 {
			return Policy{}, fmt.Errorf("%w %q: chunk:N wants a positive N", ErrBadPolicy, s)
		}
		return Policy{Kind: "chunk", Chunk: n}, nil
	}
	return Policy{}, fmt.Errorf("%w %q (want exact, host or chunk:N)", ErrBadPolicy, s)
}

// String is the policy as ParsePolicy reads it.
func (p Policy) String() string {
	if p.Kind == "chunk" {
		return "chunk:" + strconv.Itoa(p.Chunk)
	}
	return p.Kind
}

func (p Policy) validate() error {
	_, err := ParsePolicy(p.String())
	return err
}

// Size is the threads of a new worker for a job of threads on a host with
// free threads (free >= threads).
func (p Policy) Size(threads, free int) int {
	switch p.Kind {
	case "host":
		return max(threads, free)
	case "chunk":
		n := (threads + p.Chunk - 1) / p.Chunk * p.Chunk
		return max(threads, min(n, free))
	default:
		return threads
	}
}

// Options configure a ServerPool.
type Options struct {
	// Provider owns the hosts; required.
	Provider Provider
	// Launcher starts the workers Deploy places; nil: Deploy fails with
	// ErrNoLauncher (the server pool still answers where workers could go,
	// and releases the reservations of gone workers).
	Launcher Launcher
	// Policy sizes new workers (DefaultPolicy when zero).
	Policy Policy
	// Only, when set, are the only hosts the server pool uses.
	Only []string
}

// WithDefaults returns the options with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Policy == (Policy{}) {
		o.Policy = DefaultPolicy
	}
	return o
}

func (o *Options) validate() error {
	if o.Provider == nil {
		return errors.New("serverpool: a Provider is required")
	}
	return o.Policy.validate()
}

// ServerPool is the set of hosts workers can run on.
type ServerPool struct {
	provider Provider
	launcher Launcher
	policy   Policy
	// only, when set, are the hosts the pool may use.
	only map[string]bool
}

// New validates the options and returns a server pool.
func New(o Options) (*ServerPool, error) {
	o = o.WithDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	sp := &ServerPool{provider: o.Provider, launcher: o.Launcher, policy: o.Policy}
	for _, h := range o.Only {
		if h = strings.TrimSpace(h); h != "" {
			if sp.only == nil {
				sp.only = map[string]bool{}
			}
			sp.only[h] = true
		}
	}
	return sp, nil
}

// CanDeploy reports whether the server pool has a launcher to deploy
// workers with.
func (sp *ServerPool) CanDeploy() bool { return sp.launcher != nil }

// Policy is the sizing policy in use.
func (sp *ServerPool) Policy() Policy { return sp.policy }

// Hosts lists the hosts the pool may use, fewest free threads first.
func (sp *ServerPool) Hosts(ctx context.Context) ([]Host, error) {
	all, err := sp.provider.Hosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	out := make([]Host, 0, len(all))
	for _, h := range all {
		if h.MaxThreads <= 0 || (sp.only != nil && !sp.only[h.Name]) {
			continue
		}
		h.Cores = max(1, h.Cores)
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].FreeThreads != out[j].FreeThreads {
			return out[i].FreeThreads < out[j].FreeThreads
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Ledger is every host the provider offers (not only those the pool may
// launch on), with the threads each owner holds there.
func (sp *ServerPool) Ledger(ctx context.Context) ([]Host, error) {
	all, err := sp.provider.Hosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	return all, nil
}

// Cores is the cores of every host the provider offers (not only those
// the pool may launch on: a worker started by hand may run on any).
func (sp *ServerPool) Cores(ctx context.Context) (map[string]int, error) {
	all, err := sp.provider.Hosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	m := make(map[string]int, len(all))
	for _, h := range all {
		m[h.Name] = max(1, h.Cores)
	}
	return m, nil
}

// SmallestFit is the host with the fewest free threads that still has
// threads free: the best fit, which keeps big hosts whole for big jobs.
func (sp *ServerPool) SmallestFit(ctx context.Context, threads int) (Host, error) {
	return sp.smallestFit(ctx, threads, 0)
}

func (sp *ServerPool) smallestFit(ctx context.Context, threads, minCores int) (Host, error) {
	hosts, err := sp.Hosts(ctx)
	if err != nil {
		return Host{}, err
	}
	for _, h := range hosts {
		if h.FreeThreads >= threads && h.Cores >= minCores {
			return h, nil
		}
	}
	if minCores > 1 {
		return Host{}, fmt.Errorf("%w: %d threads on a host of %d cores wanted", ErrNoHost, threads, minCores)
	}
	return Host{}, fmt.Errorf("%w: %d threads wanted; the most free is %d", ErrNoHost, threads, mostFree(hosts))
}

// Largest is the host with the most free threads.
func (sp *ServerPool) Largest(ctx context.Context) (Host, error) {
	return sp.LargestCores(ctx, 0)
}

// LargestCores is the host with the most free threads among those with at
// least minCores cores.
func (sp *ServerPool) LargestCores(ctx context.Context, minCores int) (Host, error) {
	hosts, err := sp.Hosts(ctx)
	if err != nil {
		return Host{}, err
	}
	for i := len(hosts) - 1; i >= 0; i-- { // most free threads last
		if hosts[i].Cores >= minCores {
			return hosts[i], nil
		}
	}
	if minCores > 1 {
		return Host{}, fmt.Errorf("%w: no host has %d cores", ErrNoHost, minCores)
	}
	return Host{}, fmt.Errorf("%w: the provider offers no host", ErrNoHost)
}

// FreeThreads is the threads one host can still take.
func (sp *ServerPool) FreeThreads(ctx context.Context, host string) (int, error) {
	hosts, err := sp.Hosts(ctx)
	if err != nil {
		return 0, err
	}
	for _, h := range hosts {
		if h.Name == host {
			return h.FreeThreads, nil
		}
	}
	return 0, fmt.Errorf("%w: %s", ErrUnknownHost, host)
}

// TotalFreeThreads is the threads all hosts can still take.
func (sp *ServerPool) TotalFreeThreads(ctx context.Context) (int, error) {
	hosts, err := sp.Hosts(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hosts {
		n += h.FreeThreads
	}
	return n, nil
}

func mostFree(hosts []Host) int {
	if len(hosts) == 0 {
		return 0
	}
	return hosts[len(hosts)-1].FreeThreads
}

// Plan chooses where a worker for a job of threads goes and how big it is.
//
// Host, size and the job's window depend on each other: the host must have
// the worker's threads free, the worker must hold the job's threads over
// its window, and the size decides what else the worker can take later.
// The circle is cut in this order: a new worker is empty, so any window
// fits once its size covers the job; the host is the smallest that can
// hold the job's threads; then the policy sizes the worker within what
// that host has free.
func (sp *ServerPool) Plan(ctx context.Context, threads int) (Host, int, error) {
	return sp.PlanCores(ctx, threads, 0)
}

// PlanCores is Plan for a job that needs a host of at least minCores cores.
func (sp *ServerPool) PlanCores(ctx context.Context, threads, minCores int) (Host, int, error) {
	h, err := sp.smallestFit(ctx, threads, minCores)
	if err != nil {
		return Host{}, 0, err
	}
	return h, sp.policy.Size(threads, h.FreeThreads), nil
}

// Deploy reserves a worker's threads on its host with the provider, then
// launches it (the worker holds the same reservation while it lives). If
// the launch fails the reservation is released.
func (sp *ServerPool) Deploy(ctx context.Context, spec broker.WorkerSpec) error {
	if sp.launcher == nil {
		return fmt.Errorf("deploy worker %s: %w", spec.ID, ErrNoLauncher)
	}
	if err := sp.provider.Reserve(ctx, spec.Host, spec.ID, spec.Threads); err != nil {
		return fmt.Errorf("deploy worker %s on %s: %w", spec.ID, spec.Host, err)
	}
	spec.Reserve = true
	if err := sp.launcher.Launch(ctx, spec); err != nil {
		_ = sp.provider.Release(context.WithoutCancel(ctx), spec.Host, spec.ID)
		return err
	}
	return nil
}

// Release gives back what a worker held on its host: the pool calls it
// for workers that died without giving it back themselves.
func (sp *ServerPool) Release(ctx context.Context, host, owner string) error {
	return sp.provider.Release(ctx, host, owner)
}
