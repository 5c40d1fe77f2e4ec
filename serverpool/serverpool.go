// Package serverpool knows where workers can run: the world's hosts with
// root and RAM, how many threads each can still take, and how to deploy a
// worker onto one (reserve its RAM in the world, then launch it).
package serverpool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hvmind/hvmind/world"
)

// Sentinel errors.
var (
	// ErrNoHost means no host has the free RAM asked for.
	ErrNoHost = errors.New("no host has that much free RAM")
	// ErrBadPolicy is returned for an unknown sizing policy.
	ErrBadPolicy = errors.New("unknown worker sizing policy")
)

// Host is a server that can run workers.
type Host struct {
	Name string `json:"name"`
	// MaxRAM and RAMUsed are in GB; Cores speed up grow and weaken.
	MaxRAM  float64 `json:"maxRam"`
	RAMUsed float64 `json:"ramUsed"`
	Cores   int     `json:"cores"`
	// FreeThreads is floor((MaxRAM - RAMUsed) / 1.75); MaxThreads the same
	// for an empty host.
	FreeThreads int `json:"freeThreads"`
	MaxThreads  int `json:"maxThreads"`
}

// RAMSource reads the hosts' RAM and reserves or releases it: the world
// client.
type RAMSource interface {
	RAM(ctx context.Context) ([]world.HostRAM, error)
	ReserveRAM(ctx context.Context, req world.RAMRequest) (world.RAMReply, error)
	ReleaseRAM(ctx context.Context, req world.RAMRequest) (world.RAMReply, error)
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

// ServerPool is the set of hosts workers can run on.
type ServerPool struct {
	ram      RAMSource
	launcher Launcher
	policy   Policy
	// only, when set, are the hosts the pool may use.
	only map[string]bool
}

// Only restricts the server pool to the named hosts (none: every host).
// It returns sp.
func (sp *ServerPool) Only(hosts ...string) *ServerPool {
	sp.only = nil
	for _, h := range hosts {
		if h = strings.TrimSpace(h); h != "" {
			if sp.only == nil {
				sp.only = map[string]bool{}
			}
			sp.only[h] = true
		}
	}
	return sp
}

// New returns a server pool reading RAM from src and launching with l.
func New(src RAMSource, l Launcher, policy Policy) *ServerPool {
	if policy.Kind == "" {
		policy.Kind = "exact"
	}
	return &ServerPool{ram: src, launcher: l, policy: policy}
}

// Policy is the sizing policy in use.
func (sp *ServerPool) Policy() Policy { return sp.policy }

// Hosts lists the hosts with root and RAM (those named by Only, if any),
// fewest free threads first.
func (sp *ServerPool) Hosts(ctx context.Context) ([]Host, error) {
	rams, err := sp.ram.RAM(ctx)
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	out := make([]Host, 0, len(rams))
	for _, r := range rams {
		if r.MaxRAM <= 0 || (sp.only != nil && !sp.only[r.Hostname]) {
			continue
		}
		out = append(out, Host{
			Name: r.Hostname, MaxRAM: r.MaxRAM, RAMUsed: r.RAMUsed, Cores: max(1, r.CPUCores),
			FreeThreads: r.FreeThreads, MaxThreads: world.ThreadsForRAM(r.MaxRAM),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].FreeThreads != out[j].FreeThreads {
			return out[i].FreeThreads < out[j].FreeThreads
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
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
	return Host{}, fmt.Errorf("%w: %d threads (%.2f GB) wanted; the most free is %d threads", ErrNoHost,
		threads, world.ThreadRAM*float64(threads), mostFree(hosts))
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
	return Host{}, fmt.Errorf("%w: the world has no host with root and RAM", ErrNoHost)
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
	return 0, fmt.Errorf("%w: %s is not a host with root and RAM", world.ErrUnknownHost, host)
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
// the worker's RAM, the worker must hold the job's threads over its window,
// and the size decides what else the worker can take later. The circle is
// cut in this order: a new worker is empty, so any window fits once its
// size covers the job; the host is the smallest that can hold the job's
// threads; then the policy sizes the worker within what that host has free.
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

// Deploy reserves a worker's RAM on its host in the world, then launches it
// (the worker holds the same reservation while it lives). If the launch
// fails the RAM is given back.
func (sp *ServerPool) Deploy(ctx context.Context, spec WorkerSpec) error {
	if _, err := sp.ram.ReserveRAM(ctx, world.RAMRequest{Host: spec.Host, Owner: spec.ID, Threads: spec.Threads}); err != nil {
		return fmt.Errorf("deploy worker %s on %s: %w", spec.ID, spec.Host, err)
	}
	spec.ReserveRAM = true
	if err := sp.launcher.Launch(ctx, spec); err != nil {
		_, _ = sp.ram.ReleaseRAM(context.WithoutCancel(ctx), world.RAMRequest{Host: spec.Host, Owner: spec.ID})
		return err
	}
	return nil
}
