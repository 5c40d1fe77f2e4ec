package serverpool_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/serverpool"
)

// A fixed fleet of three machines. The server pool puts a new worker on
// the host with the fewest free threads that still holds the job, and
// sizes it by its policy; Reserve takes the threads in the provider's
// ledger, as a starting worker does.
func ExampleFixed() {
	ctx := context.Background()
	fleet := serverpool.NewFixed(
		serverpool.Host{Name: "small", Cores: 1, MaxThreads: 16},
		serverpool.Host{Name: "medium", Cores: 4, MaxThreads: 64},
		serverpool.Host{Name: "big", Cores: 8, MaxThreads: 256},
	)
	sp, err := serverpool.New(serverpool.Options{
		Provider: fleet,
		Policy:   serverpool.Policy{Kind: "chunk", Chunk: 32},
	})
	if err != nil {
		log.Fatal(err)
	}

	place := func(owner string, threads int) {
		host, size, err := sp.Plan(ctx, threads)
		if err != nil {
			fmt.Printf("%s (%d threads): no host: %v\n", owner, threads, errors.Is(err, serverpool.ErrNoHost))
			return
		}
		if err := fleet.Reserve(ctx, host.Name, owner, size); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s (%d threads): a worker of %d on %s\n", owner, threads, size, host.Name)
	}
	place("w1", 10)  // small: the best fit; a chunk of 32 capped at its 16
	place("w2", 10)  // small is full: medium, a chunk of 32
	place("w3", 40)  // medium has 32 left: big, two chunks
	place("w4", 300) // nowhere

	// A reservation beyond a host's room is refused.
	err = fleet.Reserve(ctx, "medium", "w5", 33)
	fmt.Println("w5 on medium:", errors.Is(err, serverpool.ErrNoRoom))

	if err := fleet.Release(ctx, "small", "w1"); err != nil {
		log.Fatal(err)
	}
	hosts, err := sp.Hosts(ctx) // fewest free threads first
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hosts {
		fmt.Printf("%s: %d of %d threads free\n", h.Name, h.FreeThreads, h.MaxThreads)
	}
	// Output:
	// w1 (10 threads): a worker of 16 on small
	// w2 (10 threads): a worker of 32 on medium
	// w3 (40 threads): a worker of 64 on big
	// w4 (300 threads): no host: true
	// w5 on medium: true
	// small: 16 of 16 threads free
	// medium: 32 of 64 threads free
	// big: 192 of 256 threads free
}

// printLauncher stands in for a way to start worker processes (ssh, a
// container API, serverpool.LocalLauncher).
type printLauncher struct{}

func (printLauncher) Launch(_ context.Context, spec broker.WorkerSpec) error {
	fmt.Printf("launch %s on %s with %d threads (reserve: %v)\n", spec.ID, spec.Host, spec.Threads, spec.Reserve)
	return nil
}

// Deploy reserves a worker's threads with the provider, then launches it.
func ExampleServerPool_Deploy() {
	ctx := context.Background()
	fleet := serverpool.NewFixed(serverpool.Host{Name: "gpu-1", Cores: 16, MaxThreads: 8})
	sp, err := serverpool.New(serverpool.Options{Provider: fleet, Launcher: printLauncher{}, Policy: serverpool.Policy{Kind: "host"}})
	if err != nil {
		log.Fatal(err)
	}
	host, size, err := sp.Plan(ctx, 2)
	if err != nil {
		log.Fatal(err)
	}
	spec := broker.WorkerSpec{ID: "gpu-1-a", Host: host.Name, Threads: size}
	if err := sp.Deploy(ctx, spec); err != nil {
		log.Fatal(err)
	}
	fmt.Println("held:", fleet.Held("gpu-1", "gpu-1-a"))
	_, _, err = sp.Plan(ctx, 1)
	fmt.Println("room for another:", !errors.Is(err, serverpool.ErrNoHost))
	// Output:
	// launch gpu-1-a on gpu-1 with 8 threads (reserve: true)
	// held: 8
	// room for another: false
}
