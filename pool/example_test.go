package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/worker"
)

// This example runs the whole job system in one process: an embedded
// broker, one worker with a custom "checksum" task, and a pool. It
// dispatches a batch of jobs scheduled a little in the future and prints
// each completion record.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// An embedded NATS server with JetStream, on a free port, storing in a
	// temporary directory.
	dir, err := os.MkdirTemp("", "hvmind-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	// A task handler gets the job and returns its result as JSON.
	handlers := worker.NewHandlers()
	handlers.Register("checksum", worker.HandlerFunc(func(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
		data, ok := t.Job.StringArg(0)
		if !ok {
			return nil, errors.New("checksum wants a string argument")
		}
		return json.Marshal(map[string]string{"crc32": fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(data)))})
	}))
	w, err := worker.New(conn.NC, worker.Options{
		ID: "w1", Threads: 4, Handlers: handlers,
		// Generous, for a loaded machine; the default is 5ms.
		Tolerance: 250 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	p, err := pool.New(conn.NC, pool.Options{})
	if err != nil {
		log.Fatal(err)
	}

	// Run both until the end of the example, then wait for them to stop.
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { _ = w.Run(runCtx) })
	running.Go(func() { _ = p.Run(runCtx) })
	defer running.Wait()
	defer stop()
	<-p.Ready()

	client, err := pool.NewClient(conn.NC)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// The worker registers on its own; wait until the pool sees it.
	if err := client.WaitWorkers(ctx, 1); err != nil {
		log.Fatal(err)
	}

	// Three jobs, 100ms apart from 200ms from now, each on one thread.
	start := time.Now().Add(200 * time.Millisecond)
	var batch []job.Job
	for i, data := range []string{"alpha", "beta", "gamma"} {
		batch = append(batch, job.Job{
			ID:        "sum-" + data,
			Task:      "checksum",
			Args:      []any{data},
			Threads:   1,
			Duration:  10,
			StartTime: job.Millis(start.Add(time.Duration(i) * 100 * time.Millisecond)),
		})
	}
	d, err := client.DispatchJobs(ctx, batch)
	if err != nil {
		log.Fatal(err)
	}
	records, err := d.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// Records arrive in the order the jobs end; print them by id.
	slices.SortFunc(records, func(a, b job.Job) int { return strings.Compare(a.ID, b.ID) })
	for _, r := range records {
		fmt.Println(r.ID, r.Worker, r.Status, string(r.Result))
	}
	// Output:
	// sum-alpha w1 done {"crc32":"d0e0396a"}
	// sum-beta w1 done {"crc32":"8f910463"}
	// sum-gamma w1 done {"crc32":"c443d071"}
}

// A batch is placed whole or refused whole. Here a worker of 4 threads
// cannot run a job of 3 threads and one of 2 at the same time, so the
// batch is refused with pool.ErrNoCapacity and neither job is placed; the
// same batch with the second job moved after the first fits.
func ExampleClient_DispatchJobs() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "hvmind-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	// "encode" pretends to encode a video: it holds its threads until the
	// job's scheduled end.
	handlers := worker.NewHandlers()
	handlers.Register("encode", worker.HandlerFunc(func(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
		return nil, t.SleepUntil(ctx, t.ScheduledEnd)
	}))
	w, err := worker.New(conn.NC, worker.Options{ID: "w1", Threads: 4, Handlers: handlers, Tolerance: 250 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	p, err := pool.New(conn.NC, pool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { _ = w.Run(runCtx) })
	running.Go(func() { _ = p.Run(runCtx) })
	defer running.Wait()
	defer stop()
	<-p.Ready()
	client, err := pool.NewClient(conn.NC)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if err := client.WaitWorkers(ctx, 1); err != nil {
		log.Fatal(err)
	}

	start := job.Millis(time.Now().Add(200 * time.Millisecond))
	batch := []job.Job{
		{ID: "intro", Task: "encode", Threads: 3, Duration: 100, StartTime: start},
		{ID: "outro", Task: "encode", Threads: 2, Duration: 100, StartTime: start},
	}
	_, err = client.DispatchJobs(ctx, batch)
	fmt.Println("no capacity:", errors.Is(err, pool.ErrNoCapacity))
	var pe *pool.PlaceError
	if errors.As(err, &pe) {
		fmt.Printf("job at fault: %d (%s), for want of capacity: %v\n", pe.Index, pe.ID, errors.Is(pe.Err, pool.ErrNoCapacity))
	}
	st, err := client.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("jobs in flight:", st.JobsInFlight)

	// Nothing of a refused batch stays behind, its ids included. With the
	// second job after the first, the batch fits.
	start = job.Millis(time.Now().Add(200 * time.Millisecond))
	batch[0].StartTime, batch[1].StartTime = start, start+100
	d, err := client.DispatchJobs(ctx, batch)
	if err != nil {
		log.Fatal(err)
	}
	for r := range d.Records() {
		fmt.Println(r.ID, r.Status)
	}
	// Output:
	// no capacity: true
	// job at fault: 1 (outro), for want of capacity: true
	// jobs in flight: 0
	// intro done
	// outro done
}

// A caller marks a moment of its jobs' timeline: the pool's web UI draws
// it (a batch marked at level "error" is outlined red) and anyone can read
// it with nats sub 'hvmind.marks.>'.
func ExampleClient_Mark() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "hvmind-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	got := make(chan pool.Mark, 1)
	sub, err := conn.NC.Subscribe(pool.SubjectMarks+"*", func(m *nats.Msg) {
		var mk pool.Mark
		if json.Unmarshal(m.Data, &mk) == nil {
			got <- mk
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := conn.NC.Flush(); err != nil {
		log.Fatal(err)
	}

	client, err := pool.NewClient(conn.NC)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	err = client.Mark(pool.Mark{Source: "encoder", Kind: "late", Level: "error", Batch: "b7", Note: "the outro started 40 ms late"})
	if err != nil {
		log.Fatal(err)
	}
	mk := <-got
	fmt.Printf("%s marked %s on batch %s: %s\n", mk.Source, mk.Kind, mk.Batch, mk.Note)
	// Output: encoder marked late on batch b7: the outro started 40 ms late
}
