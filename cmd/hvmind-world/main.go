// Command hvmind-world runs the world service on its own: the simulated
// network the hack, grow and weaken tasks act on. hvmind-pool runs the same
// service by default; run this one with hvmind-pool --world=false, or
// against any broker. The world is kept on the broker, so a restart
// resumes it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/world"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hvmind-world:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := config.Default()
	fs := flag.NewFlagSet("hvmind-world", flag.ContinueOnError)
	cfg.RegisterCommon(fs)
	cfg.RegisterWorld(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hvmind-world [--scenario NAME|FILE] [--speed X] [--seed N] [--reset] [--nats URL]")
		fs.PrintDefaults()
	}
	if err := cfg.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	log, err := cfg.Logger("hvmind-world")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conn, err := broker.Open(ctx, broker.OpenOptions{URL: cfg.NATS, Name: "hvmind-world", Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	svc, err := world.Serve(ctx, conn.NC, world.Options{
		Scenario: cfg.World.Scenario, Speed: cfg.World.Speed, Seed: cfg.World.Seed,
		Reset: cfg.World.Reset, Logger: log,
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	svc.Stop()
	return nil
}
