package serverpool

import (
	"context"
	"fmt"
	"sync"
)

// Fixed is a Provider for a fixed set of hosts, with the reservation ledger
// kept in memory: for one process that runs the pool and launches every
// worker itself, or for tests. A ledger shared by several processes (the
// pool's, and workers started by hand elsewhere) belongs in a service they
// all reach.
type Fixed struct {
	mu    sync.Mutex
	hosts []Host                    // in the order given; FreeThreads unused
	held  map[string]map[string]int // host -> owner -> threads
}

// NewFixed returns a provider of the given hosts, each with MaxThreads
// threads and Cores cores (FreeThreads is ignored: every host starts
// empty).
func NewFixed(hosts ...Host) *Fixed {
	f := &Fixed{held: map[string]map[string]int{}}
	for _, h := range hosts {
		h.FreeThreads = 0
		f.hosts = append(f.hosts, h)
	}
	return f
}

// Hosts lists the hosts with their free threads.
func (f *Fixed) Hosts(context.Context) ([]Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Host, len(f.hosts))
	for i, h := range f.hosts {
		h.FreeThreads = h.MaxThreads - f.heldLocked(h.Name, "")
		h.Held = nil
		for owner, t := range f.held[h.Name] {
			if h.Held == nil {
				h.Held = map[string]int{}
			}
			h.Held[owner] = t
		}
		out[i] = h
	}
	return out, nil
}

// Reserve sets the threads owner holds on host.
func (f *Fixed) Reserve(_ context.Context, host, owner string, threads int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.hostLocked(host)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownHost, host)
	}
	if threads < 0 {
		return fmt.Errorf("reserve %d threads on %s: a count must not be negative", threads, host)
	}
	if others := f.heldLocked(host, owner); others+threads > h.MaxThreads {
		return fmt.Errorf("%w: %d threads wanted on %s, %d free", ErrNoRoom, threads, host, h.MaxThreads-others)
	}
	if f.held[host] == nil {
		f.held[host] = map[string]int{}
	}
	if threads == 0 {
		delete(f.held[host], owner)
	} else {
		f.held[host][owner] = threads
	}
	return nil
}

// Release frees what owner holds on host.
func (f *Fixed) Release(_ context.Context, host, owner string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.hostLocked(host); !ok {
		return fmt.Errorf("%w: %s", ErrUnknownHost, host)
	}
	delete(f.held[host], owner)
	return nil
}

// Held is the threads owner holds on host.
func (f *Fixed) Held(host, owner string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[host][owner]
}

func (f *Fixed) hostLocked(name string) (Host, bool) {
	for _, h := range f.hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// heldLocked is the threads held on host by every owner but except.
func (f *Fixed) heldLocked(host, except string) int {
	n := 0
	for owner, t := range f.held[host] {
		if owner != except {
			n += t
		}
	}
	return n
}
