// Command customtask runs the HVMind job system in one process with a task
// of its own, and no game: an embedded NATS broker (in a temporary
// directory, on a free loopback port), a pool, and two workers that serve
// a "thumbnail" task. It dispatches a batch of 20 jobs, one every 100ms,
// prints each completion record as a JSON line as it arrives, with how
// late the job started (startErrorUs, in microseconds), then a summary,
// and stops everything.
//
// Run it from the module's root:
//
//	go run ./examples/customtask
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
)

const (
	// jobs are dispatched as one batch, one starting every interval, each
	// holding threads threads for duration.
	jobs     = 20
	interval = 100 * time.Millisecond
	duration = 250 * time.Millisecond
	threads  = 2
	// workerThreads is each worker's capacity: two jobs at a time, and up
	// to three overlap, so the pool needs both workers.
	workerThreads = 4
)

// tolerance is how late a job may start before the worker records it
// missed instead of running it. The default, 5ms, suits an idle machine;
// this program is often run beside a compiler.
var tolerance = 50 * time.Millisecond

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "customtask:", err)
		os.Exit(1)
	}
}

// thumbnail pretends to make a thumbnail of an image: args are
// [image, width]. Its work takes the job's whole window, as the pool
// reserved it, and it returns the thumbnail's size.
func thumbnail(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
	var image string
	var width int
	if err := t.Job.DecodeArgs(&image, &width); err != nil {
		return nil, fmt.Errorf(`thumbnail wants args ["image", width]: %w`, err)
	}
	if width <= 0 {
		return nil, fmt.Errorf("thumbnail: bad width %d", width)
	}
	// The work itself; a real task would resize here and honour ctx.
	if err := t.SleepUntil(ctx, t.ScheduledEnd); err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Image  string `json:"image"`
		Width  int    `json:"width"`
		Height int    `json:"height"`
	}{image, width, width * 3 / 4})
}

// run starts the job system, dispatches the batch, prints the records and
// a summary, and stops everything it started before it returns.
func run(ctx context.Context, out io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "hvmind-customtask-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: dir, Name: "customtask"})
	if err != nil {
		return err
	}
	defer conn.Close()

	handlers := worker.NewHandlers()
	handlers.Register("thumbnail", worker.HandlerFunc(thumbnail))

	// Workers of one process share one timer queue, which fires every job in
	// time order and spins on one core at most. It must outlive the workers:
	// a stopping worker lets its running jobs finish, on their timers.
	timers := worker.NewTimerQueue(worker.DefaultSpin)
	timersCtx, stopTimers := context.WithCancel(context.Background())
	timersDone := make(chan struct{})
	go func() { timers.Run(timersCtx); close(timersDone) }()
	defer func() { stopTimers(); <-timersDone }()

	var runners []interface{ Run(context.Context) error }
	for _, id := range []string{"thumbs-1", "thumbs-2"} {
		w, err := worker.New(conn.NC, worker.Options{
			ID: id, Threads: workerThreads, Handlers: handlers, Timers: timers, Tolerance: tolerance,
		})
		if err != nil {
			return err
		}
		runners = append(runners, w)
	}
	p, err := pool.New(conn.NC, pool.Options{})
	if err != nil {
		return err
	}
	runners = append(runners, p)

	// Run the workers and the pool until the batch is done (or one of them
	// fails), then stop them and wait until they have.
	runCtx, stopAll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	failed := make(chan error, len(runners))
	for _, r := range runners {
		wg.Go(func() {
			if err := r.Run(runCtx); err != nil {
				failed <- err
				stopAll()
			}
		})
	}
	defer func() {
		stopAll()
		wg.Wait()
		close(failed)
		for e := range failed {
			err = errors.Join(err, e)
		}
	}()

	select {
	case <-p.Ready():
	case <-runCtx.Done():
		return context.Cause(runCtx)
	}
	client, err := pool.NewClient(conn.NC)
	if err != nil {
		return err
	}
	defer client.Close()
	wctx, cancelWait := context.WithTimeout(runCtx, 10*time.Second)
	defer cancelWait()
	// A worker registers on its own once it runs, and the pool places jobs
	// only on workers it has seen.
	if err := client.WaitWorkers(wctx, 2); err != nil {
		return err
	}

	first := time.Now().Add(300 * time.Millisecond)
	batch := make([]job.Job, jobs)
	for i := range batch {
		batch[i] = job.Job{
			ID:        fmt.Sprintf("thumb-%02d", i+1),
			Task:      "thumbnail",
			Args:      []any{fmt.Sprintf("photo-%02d.jpg", i+1), 320},
			Threads:   threads,
			Duration:  float64(duration.Milliseconds()),
			StartTime: job.Millis(first.Add(time.Duration(i) * interval)),
		}
	}
	d, err := client.DispatchJobs(runCtx, batch)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}

	done := 0
	var startErrors []float64 // µs, absolute
	for n := 0; n < len(batch); n++ {
		var rec job.Job
		select {
		case rec = <-d.Records():
		case <-runCtx.Done():
			return fmt.Errorf("%d of %d records: %w", n, len(batch), context.Cause(runCtx))
		}
		if rec.Status == job.StatusDone {
			done++
		}
		if rec.ActualStartTime != 0 {
			us := (rec.ActualStartTime - rec.StartTime) * 1000
			startErrors = append(startErrors, math.Abs(us))
			rec.Set("startErrorUs", json.RawMessage(strconv.FormatFloat(us, 'f', 1, 64)))
		}
		line, err := job.Encode(&rec)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", line)
	}
	s := pool.Summarise(startErrors)
	fmt.Fprintf(out, "summary: %d/%d done; start error p50 %.1fµs, p99 %.1fµs, max %.1fµs\n",
		done, len(batch), s.P50, s.P99, s.Max)
	if done != len(batch) {
		return fmt.Errorf("%d of %d jobs did not end done", len(batch)-done, len(batch))
	}
	return nil
}
