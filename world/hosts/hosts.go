// Package hosts plugs the simulated world's servers into the job system as
// its capacity: the hosts a worker may run on are the servers with root and
// RAM, a worker thread costs game.ThreadRAM of a host's RAM, and the world
// service keeps the ledger of what each worker holds. Provider implements
// serverpool.Provider for the pool and worker.Reserver for the workers.
package hosts

import (
	"context"
	"errors"
	"fmt"

	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Home is the world's name for the machine the programs run on: the host of
// the workers they start without one.
const Home = "home"

// Provider offers the world's hosts through the world service.
type Provider struct {
	client *world.Client
}

// New returns a provider that asks the world service through c.
func New(c *world.Client) *Provider { return &Provider{client: c} }

// Hosts lists the servers with root and RAM, with their free threads.
func (p *Provider) Hosts(ctx context.Context) ([]serverpool.Host, error) {
	rams, err := p.client.RAM(ctx)
	if err != nil {
		return nil, mapError(err)
	}
	out := make([]serverpool.Host, 0, len(rams))
	for _, r := range rams {
		out = append(out, serverpool.Host{
			Name: r.Hostname, Cores: max(1, r.CPUCores),
			FreeThreads: r.FreeThreads, MaxThreads: game.ThreadsForRAM(r.MaxRAM), Held: r.Reservations,
		})
	}
	return out, nil
}

// Reserve holds game.ThreadRAM GB per thread on host for owner.
func (p *Provider) Reserve(ctx context.Context, host, owner string, threads int) error {
	_, err := p.client.As(owner).ReserveRAM(ctx, world.RAMRequest{Host: host, Owner: owner, Threads: threads})
	if err != nil {
		return fmt.Errorf("%d threads are %.2f GB: %w", threads, game.ThreadRAM*float64(threads), mapError(err))
	}
	return nil
}

// Release frees what owner holds on host.
func (p *Provider) Release(ctx context.Context, host, owner string) error {
	_, err := p.client.As(owner).ReleaseRAM(ctx, world.RAMRequest{Host: host, Owner: owner})
	return mapError(err)
}

// mapError adds the job system's sentinel to a world error the pool acts
// on, keeping the world's too.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, world.ErrNoRAM):
		return fmt.Errorf("%w: %w", serverpool.ErrNoRoom, err)
	case errors.Is(err, world.ErrUnknownHost):
		return fmt.Errorf("%w: %w", serverpool.ErrUnknownHost, err)
	case errors.Is(err, world.ErrNotRunning):
		// Only when nothing answers: a world that is slow to answer is
		// still the world, and a worker launched without it would hold
		// no RAM.
		return fmt.Errorf("%w: %w", serverpool.ErrUnavailable, err)
	}
	return err
}
