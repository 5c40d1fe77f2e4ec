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
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/internal/cli"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

const usage = `usage: hvmind-manager COMMAND [ARGS] [flags]

commands:
  TARGET... [--json] [--for 10m]
                         prep each target (a server of the world), then run a
                         continuous pipeline of HWGW batches against it on the pool
                         (threads shared by expected income), with a live dashboard
                         (or JSON events)
  --auto [TARGET...]     the same on the targets that earn most, re-picked as the
                         level rises
  dispatch JOB|BATCH|-   place a job (JSON object) or a batch (JSON array; "-" reads
                         standard input) and print each completion record as it arrives
  status [--json]        the pool's workers and jobs
  cancel ID [--batch]    cancel a job (with --batch, every job of batch ID)
  capacity [--at T] [--for D] [--json]
                         the largest job one worker could take over a window, and
                         where, the threads free in all (--profile SPAN: how that
                         changes), from the timelines the pool places on
  formulas               JSON lines of formula inputs on stdin -> hack/grow/weaken
                         times, chance, percent, grow threads (like the game's Formulas API)
  analyze [TARGET...]    rank targets by income per thread-second (--json, --live, --scenario)
  bench [manager]        replay the community batcher test: a game hour on reference-880
  bench dispatch         measure the pool against raw JetStream (prints JSON)

"hvmind-manager COMMAND --help" lists the command's own flags. Flags may
stand before or after the command and its arguments; every flag can also
come from the environment (HVMIND_ and its name: HVMIND_JSON=true) or the
--config file (keyed by flag name).

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
	// prog parses the command's flags (see parse).
	prog *cli.Program
}

// commands are the manager's commands; any other word is a target.
var commands = map[string]func(e *env, ctx context.Context, args []string) (int, error){
	"dispatch": (*env).dispatch,
	"status":   (*env).status,
	"cancel":   (*env).cancel,
	"capacity": (*env).capacity,
	"formulas": (*env).formulas,
	"analyze":  (*env).analyze,
	"bench":    (*env).bench,
}

func run(args []string, in io.Reader, out io.Writer) (int, error) {
	p := cli.New("hvmind-manager", usage)
	rest, err := p.ParseCommands(args)
	if err != nil {
		return 2, err
	}
	e := &env{cfg: p.Config, log: p.Log, in: in, out: out, prog: p}
	if len(rest) == 0 {
		p.Flags.Usage()
		return 2, cli.Usagef("a command is required")
	}
	ctx, stop := p.SignalContext()
	defer stop()
	if cmd := commands[rest[0]]; cmd != nil {
		return cmd(e, ctx, rest[1:])
	}
	if rest[0] != "--auto" && rest[0] != "-auto" && (strings.HasPrefix(rest[0], "-") || strings.ContainsAny(rest[0], "{[ ")) {
		p.Flags.Usage()
		return 2, cli.Usagef("unknown command %q", rest[0])
	}
	// Targets: run the batcher on them (hack checks they are servers).
	return e.hack(ctx, rest)
}

// parse parses a command's flags and returns its arguments: flags and
// arguments in any order, flags not given filled from the environment and
// the config file.
func (e *env) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if e.prog == nil { // a test's env
		e.prog = cli.New("hvmind-manager", usage)
	}
	return e.prog.ParseCommand(fs, args)
}

func (e *env) connect(ctx context.Context) (*broker.Conn, *pool.Client, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return e.connectBy(cctx)
}

// connectBy is connect waiting for the broker until ctx ends: the batcher
// waits for a broker that is not up yet, where a one-off command fails.
func (e *env) connectBy(ctx context.Context) (*broker.Conn, *pool.Client, error) {
	conn, err := broker.Open(ctx, broker.OpenOptions{URL: e.cfg.NATS, Auth: e.cfg.Auth, Name: "hvmind-manager", Logger: e.log})
	if err != nil {
		if errors.Is(err, broker.ErrAuth) {
			return nil, nil, err // the credentials given, not the pool
		}
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
	pos, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	if len(pos) != 1 {
		return 2, cli.Usagef(`dispatch wants one argument: a job, a batch, or "-" for standard input`)
	}
	data := []byte(pos[0])
	if pos[0] == "-" {
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
	pos, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	if len(pos) > 0 {
		return 2, cli.Usagef("status takes no arguments (got %v)", pos)
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
	pos, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	if len(pos) != 1 {
		return 2, cli.Usagef("cancel wants one job id (or a batch id with --batch)")
	}
	cr := pool.CancelRequest{ID: pos[0], Reason: *reason}
	if *batch {
		cr = pool.CancelRequest{Batch: pos[0], Reason: *reason}
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

func (e *env) capacity(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("capacity", flag.ContinueOnError)
	at := fs.String("at", "", "start of the window: now (empty), a Go duration from now (2s), an RFC 3339 time, or Unix epoch ms")
	dur := fs.Duration("for", 0, "length of the window (0: an instant)")
	task := fs.String("task", "", "only the workers that run this task")
	minCores := fs.Int("min-cores", 0, "only the workers whose host has this many cores")
	profile := fs.Duration("profile", 0, "also the free threads at each instant they change over this span from the start")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := e.parse(fs, args)
	if err != nil {
		return 2, err
	}
	if len(pos) > 0 {
		return 2, cli.Usagef("capacity takes no arguments (got %v)", pos)
	}
	if *dur < 0 || *profile < 0 {
		return 2, cli.Usagef("--for %s and --profile %s must not be negative", *dur, *profile)
	}
	start, err := parseAt(*at, time.Now())
	if err != nil {
		return 2, cli.Usagef("--at %q: %v", *at, err)
	}
	conn, c, err := e.connect(ctx)
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	r, err := c.Capacity(ctx, pool.CapacityRequest{Start: start, Duration: float64(*dur) / 1e6, Task: *task,
		MinCores: *minCores, ProfileSpan: float64(*profile) / 1e6})
	if err != nil {
		return 1, err
	}
	if *asJSON {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return 0, enc.Encode(r)
	}
	clock := func(ms float64) string { return job.Time(ms).Format("15:04:05.000") }
	fmt.Fprintf(e.out, "window %s to %s (%s)\n", clock(r.Start), clock(r.End), job.Time(r.End).Sub(job.Time(r.Start)).Round(time.Microsecond))
	if r.Worker != "" {
		fmt.Fprintf(e.out, "largest job: %d threads, on %s\n", r.Largest, r.Worker)
	} else {
		fmt.Fprintln(e.out, "largest job: none (no worker qualifies)")
	}
	fmt.Fprintf(e.out, "free in all: %d threads on %d workers\n", r.Free, r.Workers)
	for _, f := range r.Profile {
		fmt.Fprintf(e.out, "  from %s: %d free\n", clock(f.At), f.Free)
	}
	return 0, nil
}

// parseAt reads a window's start: empty is now (0), a Go duration is from
// now, else an RFC 3339 time or Unix epoch ms.
func parseAt(s string, now time.Time) (float64, error) {
	switch {
	case s == "":
		return 0, nil
	case strings.TrimLeft(s, "+-0123456789.") != "" && !strings.ContainsAny(s, "T:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
		if err != nil {
			return 0, fmt.Errorf("want a duration from now (2s), an RFC 3339 time or Unix epoch ms")
		}
		return job.Millis(now.Add(d)), nil
	case strings.ContainsAny(s, "T:"):
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, fmt.Errorf("want an RFC 3339 time: %v", err)
		}
		return job.Millis(t), nil
	}
	ms, err := strconv.ParseFloat(s, 64)
	if err != nil || ms <= 0 || math.IsInf(ms, 0) {
		return 0, fmt.Errorf("want a positive Unix epoch time in ms, a duration from now (2s) or an RFC 3339 time")
	}
	return ms, nil
}
