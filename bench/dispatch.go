// Package bench measures HVMind on real parts: an embedded broker, the
// pool, and real worker processes, against raw JetStream in the same run.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// DispatchOptions configure the dispatch benchmark.
type DispatchOptions struct {
	// Jobs is the number of jobs of the flat-out run (and of raw messages).
	Jobs int
	// Paced is the number of jobs of the paced run, due at Rate per second.
	Paced int
	Rate  float64
	// Duration of each paced sleep job, in milliseconds.
	PacedDuration float64
	// Workers and Threads: the worker processes to launch.
	Workers int
	Threads int
	// Repeat is how many raw and flat-out runs alternate (medians are
	// reported).
	Repeat int
	// Batch is the jobs per dispatch request; Concurrency the requests in flight.
	Batch       int
	Concurrency int
	// WorkerBin is the hvmind-worker executable.
	WorkerBin string
	// Spin and Tolerance are given to the workers.
	Spin      time.Duration
	Tolerance time.Duration
	// Sync is the embedded broker's disk flushing (see broker.Sync).
	Sync   broker.Sync
	Logger zerolog.Logger
}

// DispatchResult is what the benchmark prints.
type DispatchResult struct {
	Jobs             int     `json:"jobs"`
	Lost             int     `json:"lost"`
	NotDone          int     `json:"not_done"`
	JobsPerS         float64 `json:"jobs_per_s"`
	RawJetStreamPerS float64 `json:"raw_jetstream_per_s"`
	Ratio            float64 `json:"ratio_to_raw"`
	// RawJobShapePerS is raw JetStream doing the broker work a job needs
	// by contract, with no pool or worker: a message published with a
	// message id (for duplicate detection) to a work queue, taken by one
	// durable consumer, which publishes a record of the job's size with a
	// message id to a second stream and acknowledges the message once the
	// record is stored. RatioToJobShape is JobsPerS over it.
	RawJobShapePerS float64 `json:"raw_job_shape_per_s"`
	RatioToJobShape float64 `json:"ratio_to_job_shape"`
	// JobsPerMessage is how many jobs the pool put in each message of the
	// flat-out runs: the jobs of one dispatch placed on one worker share a
	// message.
	JobsPerMessage float64 `json:"jobs_per_message"`
	// JobsRuns, RawRuns and ShapeRuns are the single runs behind the medians
	// above.
	JobsRuns      []float64 `json:"jobs_per_s_runs"`
	RawRuns       []float64 `json:"raw_jetstream_per_s_runs"`
	ShapeRuns     []float64 `json:"raw_job_shape_per_s_runs"`
	PacedJobs     int       `json:"paced_jobs"`
	PacedLost     int       `json:"paced_lost"`
	PacedMissed   int       `json:"paced_missed"`
	StartErrorP50 float64   `json:"start_error_us_p50"`
	StartErrorP99 float64   `json:"start_error_us_p99"`
	StartErrorMax float64   `json:"start_error_us_max"`
	EndErrorP50   float64   `json:"end_error_us_p50"`
	EndErrorP99   float64   `json:"end_error_us_p99"`
	EndErrorMax   float64   `json:"end_error_us_max"`
	Workers       int       `json:"workers"`
	Threads       int       `json:"threads"`
	Batch         int       `json:"batch"`
	MessageBytes  int       `json:"message_bytes"`
	Spin          string    `json:"spin"`
	Sync          string    `json:"sync"`
}

// RunDispatch runs the benchmark on a fresh embedded broker.
func RunDispatch(ctx context.Context, o DispatchOptions) (DispatchResult, error) {
	res := DispatchResult{Workers: o.Workers, Threads: o.Threads, Batch: o.Batch, Spin: o.Spin.String(), Sync: o.Sync.String()}
	r, err := newRig(ctx, "dispatch", o.WorkerBin, workerArgs(o.Spin, o.Tolerance), o.Sync, o.Logger)
	if err != nil {
		return res, err
	}
	defer r.Close()
	conn := r.conn

	sample, _ := json.Marshal(job.Job{ID: "Y3kq9XbLw2V0rTz8Hc4Jm1", Batch: "Y3kq9XbLw2V0rTz8Hc4Jm2", Task: "sleep", Threads: 1, Worker: "home-1"})
	res.MessageBytes = len(sample)
	now := job.Now()
	record, _ := json.Marshal(job.Job{ID: "Y3kq9XbLw2V0rTz8Hc4Jm1", Batch: "Y3kq9XbLw2V0rTz8Hc4Jm2", Task: "sleep", Threads: 1, Worker: "home-1",
		Status: job.StatusDone, ActualStartTime: now, ActualEndTime: now})

	if err := r.startPool(ctx, pool.Options{Workers: o.Workers, Threads: o.Threads, Spawn: false, Tolerance: o.Tolerance}); err != nil {
		return res, err
	}
	client := r.client

	// Raw JetStream and the pool flat out (jobs due now, as fast as the pool
	// takes them, timed from the first dispatch until every record is
	// stored), alternately, Repeat times each: this machine's speed drifts,
	// and medians of interleaved runs compare like with like.
	var all []job.Job
	firstSeq, err := jobsStored(ctx, conn)
	if err != nil {
		return res, err
	}
	for run := range max(1, o.Repeat) {
		raw, err := rawJetStream(ctx, conn, o.Jobs, len(sample))
		if err != nil {
			return res, fmt.Errorf("raw JetStream baseline: %w", err)
		}
		res.RawRuns = append(res.RawRuns, math.Round(raw))
		shape, err := rawJobShape(ctx, conn, o.Jobs, len(sample), len(record))
		if err != nil {
			return res, fmt.Errorf("raw job-shaped baseline: %w", err)
		}
		res.ShapeRuns = append(res.ShapeRuns, math.Round(shape))
		flat := make([]job.Job, o.Jobs)
		for i := range flat {
			flat[i] = job.Job{ID: fmt.Sprintf("flat-%d-%d", run, i), Task: "sleep", Threads: 1}
		}
		all = append(all, flat...)
		start := time.Now()
		if err := submitAll(ctx, client, flat, o.Batch, o.Concurrency); err != nil {
			return res, fmt.Errorf("flat-out run: %w", err)
		}
		// Asked often: the run lasts about a second.
		stored, err := waitStored(ctx, conn, len(all), 60*time.Second, 2*time.Millisecond)
		if err != nil {
			return res, fmt.Errorf("flat-out run: %w", err)
		}
		elapsed := time.Since(start)
		res.JobsRuns = append(res.JobsRuns, math.Round(float64(stored-(len(all)-o.Jobs))/elapsed.Seconds()))
	}
	lastSeq, err := jobsStored(ctx, conn)
	if err != nil {
		return res, err
	}
	if lastSeq > firstSeq {
		res.JobsPerMessage = round(float64(len(all)) / float64(lastSeq-firstSeq))
	}
	recs, err := readRecords(ctx, conn)
	if err != nil {
		return res, fmt.Errorf("flat-out run: %w", err)
	}
	res.Jobs = len(all)
	for _, j := range all {
		r, ok := recs[j.ID]
		switch {
		case !ok:
			res.Lost++
		case r.Status != job.StatusDone:
			res.NotDone++
		}
	}
	res.JobsPerS, res.RawJetStreamPerS = median(res.JobsRuns), median(res.RawRuns)
	res.RawJobShapePerS = median(res.ShapeRuns)
	res.Ratio = res.JobsPerS / res.RawJetStreamPerS
	res.RatioToJobShape = res.JobsPerS / res.RawJobShapePerS

	// Paced: jobs due at Rate per second, starting shortly after dispatch.
	if o.Paced > 0 {
		step := 1000 / o.Rate
		t0 := job.Now() + 1500
		paced := make([]job.Job, o.Paced)
		for i := range paced {
			s := t0 + float64(i)*step
			paced[i] = job.Job{ID: fmt.Sprintf("paced-%d", i), Task: "sleep", Threads: 1, StartTime: s, Duration: o.PacedDuration, EndTime: s + o.PacedDuration}
		}
		wait := time.Duration(float64(o.Paced)*step)*time.Millisecond + 30*time.Second
		if err := submitAll(ctx, client, paced, o.Batch, o.Concurrency); err != nil {
			return res, fmt.Errorf("paced run: %w", err)
		}
		if _, err := waitStored(ctx, conn, len(all)+o.Paced, wait, 250*time.Millisecond); err != nil {
			return res, fmt.Errorf("paced run: %w", err)
		}
		stored, err := readRecords(ctx, conn)
		if err != nil {
			return res, fmt.Errorf("paced run: %w", err)
		}
		res.PacedJobs = o.Paced
		var startErr, endErr []float64
		res.PacedLost, res.PacedMissed, startErr, endErr = pacedErrors(paced, stored)
		s, e := pool.Summarise(startErr), pool.Summarise(endErr)
		res.StartErrorP50, res.StartErrorP99, res.StartErrorMax = round(s.P50), round(s.P99), round(s.Max)
		res.EndErrorP50, res.EndErrorP99, res.EndErrorMax = round(e.P50), round(e.P99), round(e.Max)
	}
	res.JobsPerS, res.RawJetStreamPerS, res.Ratio = math.Round(res.JobsPerS), math.Round(res.RawJetStreamPerS), round(res.Ratio)
	res.RawJobShapePerS, res.RatioToJobShape = math.Round(res.RawJobShapePerS), round(res.RatioToJobShape)
	return res, nil
}

// pacedErrors checks the records of paced jobs: how many have none, how
// many were missed, and each started job's start and end error, µs.
func pacedErrors(paced []job.Job, stored map[string]job.Job) (lost, missed int, startErr, endErr []float64) {
	for _, j := range paced {
		r, ok := stored[j.ID]
		if !ok {
			lost++
			continue
		}
		if r.Status == job.StatusMissed {
			missed++
		}
		if r.ActualStartTime == 0 {
			continue
		}
		startErr = append(startErr, math.Abs(r.ActualStartTime-r.StartTime)*1000)
		endErr = append(endErr, math.Abs(r.ActualEndTime-r.EndTime)*1000)
	}
	return lost, missed, startErr, endErr
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// submitAll places jobs in batches with several requests in flight.
func submitAll(ctx context.Context, c *pool.Client, jobs []job.Job, batch, concurrency int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	sem := make(chan struct{}, max(1, concurrency))
	for i := 0; i < len(jobs); i += max(1, batch) {
		part := jobs[i:min(i+max(1, batch), len(jobs))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := c.Submit(ctx, part); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// waitStored waits until the records stream holds n records, asking every
// interval (each ask is a request the broker serves).
func waitStored(ctx context.Context, conn *broker.Conn, n int, timeout, every time.Duration) (int, error) {
	st, err := stream(ctx, conn, broker.StreamDone)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	for {
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		if got := int(info.State.Msgs); got >= n || time.Now().After(deadline) {
			return got, nil
		}
		time.Sleep(every)
	}
}

// stream opens one of HVMind's streams.
func stream(ctx context.Context, conn *broker.Conn, name string) (jetstream.Stream, error) {
	js, err := jetstream.New(conn.NC)
	if err != nil {
		return nil, err
	}
	return js.Stream(ctx, name)
}

// jobsStored is how many messages the job streams have ever stored.
func jobsStored(ctx context.Context, conn *broker.Conn) (uint64, error) {
	res, err := broker.Bind(ctx, conn.NC)
	if err != nil {
		return 0, err
	}
	n, err := res.JobsTotals(ctx)
	return n.Stored, err
}

// readRecords reads every stored record, by job id.
func readRecords(ctx context.Context, conn *broker.Conn) (map[string]job.Job, error) {
	js, err := jetstream.New(conn.NC)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, broker.StreamDone, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := map[string]job.Job{}
	for {
		batch, err := cons.FetchNoWait(4096)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if j, err := job.Parse(m.Data()); err == nil {
				out[j.ID] = j
			}
		}
		if n == 0 {
			return out, nil
		}
	}
}

// rawJetStream publishes n messages of size bytes asynchronously with acks
// while one durable consumer takes them with explicit acks, and returns
// messages per second from first publish to last consumer ack.
func rawJetStream(ctx context.Context, conn *broker.Conn, n, size int) (float64, error) {
	js, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return 0, err
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_RAW", Subjects: []string{"bench.raw.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_RAW") }()
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1,
	})
	if err != nil {
		return 0, err
	}
	var got atomic.Int64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'x'
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync("bench.raw.w", payload, jetstream.WithStallWait(time.Minute)); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("publish acks timed out")
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("consumer got %d of %d", got.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// rawJobShape is raw JetStream doing a job's share of broker work (see
// DispatchResult.RawJobShapePerS): n messages of size bytes, each answered
// by a record of recSize bytes; messages per second from the first publish
// to the last record stored.
func rawJobShape(ctx context.Context, conn *broker.Conn, n, size, recSize int) (float64, error) {
	js, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return 0, err
	}
	jobs, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_SHAPE_JOBS", Subjects: []string{"bench.shape.jobs.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_SHAPE_JOBS") }()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_SHAPE_DONE", Subjects: []string{"bench.shape.done.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Duplicates: 10 * time.Minute,
	}); err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_SHAPE_DONE") }()
	cons, err := jobs.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "shape", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1,
	})
	if err != nil {
		return 0, err
	}
	// The consumer's records go out on a JetStream context of their own, as
	// a worker's do.
	rjs, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return 0, err
	}
	var stored atomic.Int64
	done := make(chan struct{})
	record := bytes.Repeat([]byte{'r'}, recSize)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		ack, err := rjs.PublishAsync("bench.shape.done.w", record, jetstream.WithMsgID(id), jetstream.WithStallWait(time.Minute))
		if err != nil {
			return
		}
		go func() {
			select {
			case <-ack.Ok():
				_ = m.Ack()
				if stored.Add(1) == int64(n) {
					close(done)
				}
			case <-ack.Err():
			}
		}()
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	payload := bytes.Repeat([]byte{'x'}, size)
	start := time.Now()
	for i := range n {
		if _, err := js.PublishAsync("bench.shape.jobs.w", payload, jetstream.WithMsgID("shape-"+strconv.Itoa(i)), jetstream.WithStallWait(time.Minute)); err != nil {
			return 0, err
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("%d of %d records stored", stored.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
