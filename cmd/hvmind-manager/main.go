// Command hvmind-manager talks to a running HVMind pool: it dispatches jobs
// and batches and prints their completion records, shows the pool's status,
// cancels jobs, and runs the benchmarks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

const usage = `usage: hvmind-manager [flags] COMMAND [ARGS]

commands:
  TARGET... [--json] [--for 10m]
                         prep each target, then run a continuous pipeline of HWGW
                         batches against it on the pool (threads shared by expected
                         income), with a live dashboard (or JSON events)
  --auto [TARGET...]     the same on the targets that earn most, re-picked as the
                         level rises
  dispatch JOB|BATCH|-   place a job (JSON object) or a batch (JSON array; "-" reads
                         standard input) and print each completion record as it arrives
  status [--json]        the pool's workers and jobs
  cancel ID              cancel a job (--batch to cancel a whole batch)
  formulas               JSON lines of formula inputs on stdin -> hack/grow/weaken
                         times, chance, percent, grow threads (like the game's Formulas API)
  analyze [TARGET...]    rank targets by income per thread-second (--json, --live, --scenario)
  bench dispatch         measure the pool against raw JetStream (prints JSON)

flags:
`

func main() {
	code, err := run(os.Args[1:], os.Stdin, os.Stdout)
	cli.Exit("hvmind-manager", code, err, os.Stderr)
}

// env is what every command gets.
type env struct {
	cfg config.Config
	log zerolog.Logger
	in  io.Reader
	out io.Writer
}

func run(args []string, in io.Reader, out io.Writer) (int, error) {
	p := cli.New("hvmind-manager", usage)
	// --auto starts the batcher's arguments: "hvmind-manager [flags]
	// --auto [TARGET...] [batcher flags]".
	var autoArgs []string
	for i, a := range args {
		if a == "--auto" || a == "-auto" {
			autoArgs, args = append([]string{"--auto"}, args[i+1:]...), args[:i]
			break
		}
	}
	if err := p.Parse(args); err != nil {
		return 2, err
	}
	e := &env{cfg: p.Config, log: p.Log, in: in, out: out}
	rest := p.Flags.Args()
	if autoArgs != nil {
		rest = append(rest, autoArgs...)
	}
	if len(rest) == 0 {
		p.Flags.Usage()
		return 2, cli.Usagef("a command is required")
	}
	ctx, stop := p.SignalContext()
	defer stop()
	if autoArgs != nil {
		return e.hack(ctx, rest)
	}
	switch rest[0] {
	case "dispatch":
		return e.dispatch(ctx, rest[1:])
	case "status":
		return e.status(ctx, rest[1:])
	case "cancel":
		return e.cancel(ctx, rest[1:])
	case "formulas":
		return e.formulas(ctx, rest[1:])
	case "analyze":
		return e.analyze(ctx, rest[1:])
	case "bench":
		return e.bench(ctx, rest[1:])
	default:
		if strings.HasPrefix(rest[0], "-") || strings.Contains(rest[0], "{") {
			p.Flags.Usage()
			return 2, cli.Usagef("unknown command %q", rest[0])
		}
		// Targets: run the batcher on them.
		return e.hack(ctx, rest)
	}
}

func (e *env) connect(ctx context.Context) (*broker.Conn, *pool.Client, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := broker.Open(cctx, broker.OpenOptions{URL: e.cfg.NATS, Name: "hvmind-manager", Logger: e.log})
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is hvmind-pool running?)", err)
	}
	c, err := pool.NewClient(conn.NC)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, c, nil
}

func (e *env) dispatch(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("dispatch", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 0, "give up waiting for records after this long (0: wait)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if fs.NArg() != 1 {
		return 2, errors.New(`dispatch wants one argument: a job, a batch, or "-" for standard input`)
	}
	data := []byte(fs.Arg(0))
	if fs.Arg(0) == "-" {
		var err error
		if data, err = io.ReadAll(e.in); err != nil {
			return 2, err
		}
	}
	jobs, err := job.ParseMany(data)
	if err != nil {
		return 2, err
	}
	conn, c, err := e.connect(ctx)
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	defer c.Close()
	var d *pool.Dispatch
	if strings.HasPrefix(strings.TrimSpace(string(data)), "[") {
		d, err = c.DispatchJobs(ctx, jobs)
	} else {
		d, err = c.DispatchJob(ctx, jobs[0])
	}
	if err != nil {
		return 1, err
	}
	wctx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	code := 0
	for n := 0; n < len(d.Jobs); n++ {
		select {
		case j := <-d.Records():
			line, _ := job.Encode(&j)
			fmt.Fprintf(e.out, "%s\n", line)
			if j.Status != job.StatusDone {
				code = 1
			}
		case <-wctx.Done():
			return 1, fmt.Errorf("%d of %d records not received: %w", len(d.Jobs)-n, len(d.Jobs), wctx.Err())
		}
	}
	return code, nil
}

func (e *env) status(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	conn, c, err := e.connect(ctx)
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return 1, err
	}
	if *asJSON {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return 0, enc.Encode(st)
	}
	pool.RenderStatus(e.out, st)
	return 0, nil
}

func (e *env) cancel(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("cancel", flag.ContinueOnError)
	batch := fs.Bool("batch", false, "the id is a batch id")
	reason := fs.String("reason", "", "reason recorded with the cancellation")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if fs.NArg() != 1 {
		return 2, errors.New("cancel wants one job id (or a batch id with --batch)")
	}
	cr := pool.CancelRequest{ID: fs.Arg(0), Reason: *reason}
	if *batch {
		cr = pool.CancelRequest{Batch: fs.Arg(0), Reason: *reason}
	}
	conn, c, err := e.connect(ctx)
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	ids, err := c.Cancel(ctx, cr)
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(e.out, "cancelled %d job(s): %s\n", len(ids), strings.Join(ids, " "))
	return 0, nil
}
