// Command hvmind-world runs the world service on its own: the simulated
// network the hack, grow and weaken tasks act on. hvmind-pool runs the same
// service by default; run this one with hvmind-pool --world=false, or
// against any broker. The world is kept on the broker, so a restart
// resumes it.
package main

import (
	"os"

	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/world"
)

const usage = `usage: hvmind-world [--scenario NAME|FILE] [--speed X] [--seed N] [--reset] [--nats URL]

`

func main() {
	cli.Exit("hvmind-world", 0, run(os.Args[1:]), os.Stderr)
}

func run(args []string) error {
	p := cli.New("hvmind-world", usage)
	wcfg := world.DefaultConfig()
	wcfg.RegisterFlags(p.Flags, false)
	p.Config.RegisterStorage(p.Flags)
	httpAddr := p.Flags.String("http", "", "serve the world's Prometheus metrics at http://ADDR/metrics (empty: off)")
	if err := p.Parse(args); err != nil {
		return err
	}
	if err := wcfg.Validate(); err != nil {
		return cli.Usage(err)
	}
	if p.Flags.NArg() > 0 {
		p.Flags.Usage()
		return cli.Usagef("unexpected arguments: %v", p.Flags.Args())
	}
	ctx, stop := p.SignalContext()
	defer stop()

	conn, err := p.Open(ctx, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	wo := wcfg.Options(p.Log)
	wo.Storage = p.Config.Storage()
	svc, err := world.Serve(ctx, conn.NC, wo)
	if err != nil {
		return err
	}
	defer svc.Stop()
	if *httpAddr != "" {
		ms, err := cli.ServeMetrics(*httpAddr, p.Log, svc.Metrics())
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	<-ctx.Done()
	return nil
}
