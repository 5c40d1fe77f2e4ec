package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/serverpool"
)

// ScaleOptions configure the scale benchmark.
type ScaleOptions struct {
	// Workers are the pool sizes to measure, one run each.
	Workers []int
	// Processes is the most worker processes the workers are hosted in
	// (fewer for fewer workers: at least PerProcess workers each).
	Processes  int
	PerProcess int
	// Threads of each worker.
	Threads int
	// Jobs in each throughput run (one-thread sleep jobs of no length).
	Jobs int
	// Paced jobs due at Rate per second, for the start error.
	Paced int
	Rate  float64
	// InFlight is how many jobs are queued, due later, when the pool is
	// killed and started again.
	InFlight int
	// Batch is the jobs per dispatch request; Concurrency the requests in
	// flight.
	Batch       int
	Concurrency int
	// Heartbeat of the workers.
	Heartbeat time.Duration
	// WorkerBin and PoolBin are the executables.
	WorkerBin string
	PoolBin   string
	// NATS is the URL of an external broker or cluster; empty: an embedded
	// broker in this process, a fresh one for each size.
	NATS string
	// Keep keeps each size's folder, its pool's log at level info (warn
	// otherwise) and the worker processes' logs, and logs where it is.
	Keep   bool
	Logger zerolog.Logger
}

// ScaleResult is one size's line.
type ScaleResult struct {
	Workers   int `json:"workers"`
	Processes int `json:"worker_processes"`
	Threads   int `json:"threads_per_worker"`
	// RegisterS is from the first launch until the pool sees every
	// worker alive.
	RegisterS float64 `json:"register_s"`
	// ASAPJobsPerS: jobs without a start, dispatched in batches, timed from
	// the first dispatch until every record is stored.
	ASAPJobsPerS float64 `json:"asap_jobs_per_s"`
	// ASAPMessagesPerJob are the messages the job streams stored in the
	// ASAP run, per job: the jobs one dispatch places on one worker travel
	// in one message.
	ASAPMessagesPerJob float64 `json:"asap_job_messages_per_job"`
	// ASAPCPU is the CPU time each part used in the ASAP run, per job.
	ASAPCPU *CPUPerJob `json:"asap_cpu_us_per_job,omitempty"`
	// ScheduledJobsPerS: jobs with a start, timed until every dispatch is
	// accepted (they run later).
	ScheduledJobsPerS float64 `json:"scheduled_jobs_per_s"`
	// PlacementP50US, PlacementP99US: one job's placement, as the pool
	// timed its last 2,048.
	PlacementP50US float64 `json:"placement_us_p50"`
	PlacementP99US float64 `json:"placement_us_p99"`
	// StartErrorP50US, StartErrorP99US: how far from its start time a paced
	// job started.
	StartErrorP50US float64 `json:"start_error_us_p50"`
	StartErrorP99US float64 `json:"start_error_us_p99"`
	PacedMissed     int     `json:"paced_missed"`
	// PoolRSSMB is the pool process's resident memory with every worker
	// registered and idle; PoolBytesPerWorker its growth over the pool
	// with none, per worker.
	PoolRSSMB          float64 `json:"pool_rss_mb"`
	PoolBytesPerWorker float64 `json:"pool_bytes_per_worker"`
	// BrokerRSSMB is this process's resident memory, the embedded broker's
	// (0 with an external one); ConsumerBytes the growth of its Go heap in
	// use, after a collection, per JetStream consumer.
	BrokerRSSMB   float64 `json:"broker_rss_mb"`
	Consumers     int     `json:"consumers"`
	ConsumerBytes float64 `json:"broker_bytes_per_consumer"`
	// HeartbeatsPerS are the registry writes per second, idle.
	HeartbeatsPerS float64 `json:"heartbeats_per_s"`
	// RestartS is from a pool's kill -9 and start again until it answers
	// its status, with RestartInFlight jobs queued.
	RestartS        float64 `json:"restart_s"`
	RestartInFlight int     `json:"restart_in_flight"`
	// StopS is from SIGTERM until the pool process exits (it asks the
	// workers to stop, the default).
	StopS float64 `json:"stop_s"`
	// Lost and NotDone count the throughput runs' jobs without a record or
	// with one other than done.
	Lost    int `json:"lost"`
	NotDone int `json:"not_done"`
	// NotDoneWhy counts those by status and reason (digits left out, so
	// that one cause is one line).
	NotDoneWhy map[string]int `json:"not_done_why,omitempty"`
	Error      string         `json:"error,omitempty"`
}

// CPUPerJob is CPU time per job, in microseconds, by process.
type CPUPerJob struct {
	// BenchAndBroker is the bench's own process: the client that
	// dispatches and waits for the records and, unless the bench runs on
	// an external broker, the embedded broker.
	BenchAndBroker float64 `json:"bench_and_broker"`
	Pool           float64 `json:"pool"`
	// Workers is the worker processes' together.
	Workers float64 `json:"worker_processes"`
}

// RunScale measures each size in turn, calling emit with each line.
func RunScale(ctx context.Context, o ScaleOptions, emit func(ScaleResult) error) error {
	for _, n := range o.Workers {
		res, err := runScale(ctx, o, n)
		if err != nil {
			res.Error = err.Error()
		}
		if err := emit(res); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// scaleRig is one size's run: a broker, a pool process, worker processes.
type scaleRig struct {
	o       ScaleOptions
	dir     string
	url     string
	conn    *broker.Conn // the embedded broker, or nil
	nc      *nats.Conn
	js      jetstream.JetStream
	pool    *exec.Cmd
	poolOut *os.File
	procs   []*serverpool.LocalLauncher
}

func runScale(ctx context.Context, o ScaleOptions, n int) (ScaleResult, error) {
	procs := max(1, min(o.Processes, n/max(1, o.PerProcess)))
	res := ScaleResult{Workers: n, Processes: procs, Threads: o.Threads}
	r, err := newScaleRig(ctx, o)
	if err != nil {
		return res, err
	}
	defer r.close()
	client, err := pool.NewClient(r.nc)
	if err != nil {
		return res, err
	}
	defer client.Close()
	if err := r.startPool(ctx, client); err != nil {
		return res, err
	}
	time.Sleep(time.Second) // the pool's memory after its start, settled
	poolBase := rssOf(r.pool.Process.Pid)
	brokerBase := heapInUse()
	consBase, _ := r.consumers(ctx)

	// Register: N workers in the processes, launched 32 at a time.
	t0 := time.Now()
	if err := r.launchWorkers(ctx, n, procs); err != nil {
		return res, err
	}
	if err := waitAlive(ctx, client, n, 5*time.Minute); err != nil {
		return res, err
	}
	res.RegisterS = round(time.Since(t0).Seconds())
	// Idle: memory and heartbeats.
	time.Sleep(3 * time.Second)
	beats, err := r.countBeats(5 * time.Second)
	if err != nil {
		return res, err
	}
	res.HeartbeatsPerS = round(beats)
	poolRSS := rssOf(r.pool.Process.Pid)
	res.PoolRSSMB = round(float64(poolRSS) / (1 << 20))
	res.PoolBytesPerWorker = math.Round(float64(poolRSS-poolBase) / float64(n))
	if r.conn != nil {
		res.BrokerRSSMB = round(float64(rssOf(os.Getpid())) / (1 << 20))
		b := heapInUse()
		if c, err := r.consumers(ctx); err == nil {
			res.Consumers = c
			if c > consBase {
				res.ConsumerBytes = math.Round(float64(b-brokerBase) / float64(c-consBase))
			}
		}
	} else if c, err := r.consumers(ctx); err == nil {
		res.Consumers = c
	}

	// ASAP throughput.
	asap := make([]job.Job, o.Jobs)
	for i := range asap {
		asap[i] = job.Job{ID: fmt.Sprintf("asap-%d", i), Task: "sleep", Threads: 1}
	}
	before, err := waitStored(ctx, r.benchConn(), 0, 0, 0) // the records there are now
	if err != nil {
		return res, err
	}
	msgs0, msgsErr := jobsStored(ctx, r.benchConn())
	cpu0 := r.cpu()
	t0 = time.Now()
	if err := submitAll(ctx, client, asap, o.Batch, o.Concurrency); err != nil {
		return res, fmt.Errorf("ASAP run: %w", err)
	}
	stored, err := r.waitStored(ctx, before+len(asap), 2*time.Minute)
	if err != nil {
		return res, fmt.Errorf("ASAP run: %w", err)
	}
	res.ASAPJobsPerS = math.Round(float64(stored-before) / time.Since(t0).Seconds())
	cpu1 := r.cpu()
	if msgs1, err := jobsStored(ctx, r.benchConn()); err == nil && msgsErr == nil {
		res.ASAPMessagesPerJob = math.Round(float64(msgs1-msgs0)/float64(len(asap))*1000) / 1000
	}
	perJob := func(a, b int64) float64 { return round(float64(b-a) / 1e3 / float64(len(asap))) }
	res.ASAPCPU = &CPUPerJob{
		BenchAndBroker: perJob(cpu0.bench, cpu1.bench),
		Pool:           perJob(cpu0.pool, cpu1.pool),
		Workers:        perJob(cpu0.workers, cpu1.workers),
	}

	// Scheduled: due from 2 s on, spread over the workers' threads.
	sched := make([]job.Job, o.Jobs)
	t1 := job.Now() + 2000
	for i := range sched {
		s := t1 + float64(i)*0.5
		sched[i] = job.Job{ID: fmt.Sprintf("sched-%d", i), Task: "sleep", Threads: 1, StartTime: s, Duration: 1}
	}
	t0 = time.Now()
	if err := submitAll(ctx, client, sched, o.Batch, o.Concurrency); err != nil {
		return res, fmt.Errorf("scheduled run: %w", err)
	}
	res.ScheduledJobsPerS = math.Round(float64(len(sched)) / time.Since(t0).Seconds())
	if st, err := client.Status(ctx); err == nil {
		res.PlacementP50US, res.PlacementP99US = round(st.Placement.P50), round(st.Placement.P99)
	}

	// Paced: due at Rate per second, for the start error.
	step := 1000 / o.Rate
	t1 = job.Now() + 1500
	paced := make([]job.Job, o.Paced)
	for i := range paced {
		s := t1 + float64(i)*step
		paced[i] = job.Job{ID: fmt.Sprintf("paced-%d", i), Task: "sleep", Threads: 1, StartTime: s, Duration: 1}
	}
	if err := submitAll(ctx, client, paced, o.Batch, o.Concurrency); err != nil {
		return res, fmt.Errorf("paced run: %w", err)
	}
	all := before + len(asap) + len(sched) + len(paced)
	if _, err := r.waitStored(ctx, all, time.Duration(float64(o.Paced)*step)*time.Millisecond+time.Minute); err != nil {
		return res, fmt.Errorf("paced run: %w", err)
	}
	recs, err := readRecords(ctx, r.benchConn())
	if err != nil {
		return res, err
	}
	for _, jobs := range [][]job.Job{asap, sched} {
		for _, j := range jobs {
			switch rec, ok := recs[j.ID]; {
			case !ok:
				res.Lost++
			case rec.Status != job.StatusDone:
				res.NotDone++
				if res.NotDoneWhy == nil {
					res.NotDoneWhy = map[string]int{}
				}
				res.NotDoneWhy[string(rec.Status)+": "+withoutDigits(rec.Reason)]++
			}
		}
	}
	lost, missed, startErr, _ := pacedErrors(paced, recs)
	res.Lost += lost
	res.PacedMissed = missed
	se := pool.Summarise(startErr)
	res.StartErrorP50US, res.StartErrorP99US = round(se.P50), round(se.P99)

	// Restart: InFlight jobs due in ten minutes, then kill -9 and start.
	if o.InFlight > 0 {
		later := make([]job.Job, o.InFlight)
		t1 = job.Now() + 10*60*1000
		capacity := n * o.Threads
		for i := range later {
			s := t1 + float64(i/capacity)*10
			later[i] = job.Job{ID: fmt.Sprintf("later-%d", i), Task: "sleep", Threads: 1, StartTime: s, Duration: 5}
		}
		if err := submitAll(ctx, client, later, max(o.Batch, 1000), o.Concurrency); err != nil {
			return res, fmt.Errorf("jobs in flight: %w", err)
		}
		res.RestartInFlight = o.InFlight
		_ = r.pool.Process.Kill()
		_ = r.pool.Wait()
		t0 = time.Now()
		if err := r.startPool(ctx, client); err != nil {
			return res, fmt.Errorf("restart: %w", err)
		}
		res.RestartS = round(time.Since(t0).Seconds())
		if st, err := client.Status(ctx); err == nil && st.JobsInFlight < o.InFlight {
			return res, fmt.Errorf("restart: %d jobs in flight, want %d", st.JobsInFlight, o.InFlight)
		}
	}

	// Stop.
	t0 = time.Now()
	_ = r.pool.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.pool.Wait() }()
	select {
	case <-done:
		res.StopS = round(time.Since(t0).Seconds())
	case <-time.After(2 * time.Minute):
		return res, errors.New("the pool did not stop within 2 minutes of SIGTERM")
	}
	r.pool = nil
	return res, nil
}

func newScaleRig(ctx context.Context, o ScaleOptions) (*scaleRig, error) {
	dir, err := os.MkdirTemp("", "hvmind-bench-scale-")
	if err != nil {
		return nil, err
	}
	r := &scaleRig{o: o, dir: dir, url: o.NATS}
	if r.url == "" {
		conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "broker"), Name: "scale", Logger: o.Logger})
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		r.conn, r.url = conn, conn.URL
	}
	r.nc, err = nats.Connect(r.url, nats.MaxReconnects(-1))
	if err != nil {
		r.close()
		return nil, err
	}
	r.js, err = jetstream.New(r.nc)
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// startPool starts the pool process and waits until it answers.
func (r *scaleRig) startPool(ctx context.Context, client *pool.Client) error {
	if r.poolOut == nil {
		f, err := os.Create(filepath.Join(r.dir, "pool.log"))
		if err != nil {
			return err
		}
		r.poolOut = f
	}
	cmd := exec.Command(r.o.PoolBin, "--nats", r.url, "--data", filepath.Join(r.dir, "pool"), "--spawn=false", "--world=false",
		"--heartbeat", r.o.Heartbeat.String(), "--tolerance", "50ms", "--log-level", poolLogLevel(r.o.Keep), "--log-format", "json")
	cmd.Stdout, cmd.Stderr = r.poolOut, r.poolOut
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the pool: %w", err)
	}
	r.pool = cmd
	deadline := time.Now().Add(2 * time.Minute)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := client.Status(sctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the pool does not answer (see %s): %w", r.poolOut.Name(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// launchWorkers starts n workers spread over procs worker processes, 32
// launch requests in flight.
func (r *scaleRig) launchWorkers(ctx context.Context, n, procs int) error {
	for p := range procs {
		r.procs = append(r.procs, &serverpool.LocalLauncher{
			Bin: r.o.WorkerBin, NATS: r.url, Conn: r.nc, Process: "scale" + strconv.Itoa(p+1),
			LogDir: filepath.Join(r.dir, "logs"), Logger: r.o.Logger.Level(max(zerolog.WarnLevel, r.o.Logger.GetLevel())),
			Args: []string{"--tolerance", "50ms", "--log-level", "warn", "--heartbeat", r.o.Heartbeat.String()},
		})
	}
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			spec := broker.WorkerSpec{ID: fmt.Sprintf("s%05d", i+1), Host: "bench", Threads: r.o.Threads}
			if err := r.procs[i%procs].Launch(ctx, spec); err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		}()
		if failed.Load() != nil {
			break
		}
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return nil
}

// waitAlive waits until the pool sees n workers alive.
func waitAlive(ctx context.Context, c *pool.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	alive := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if st, err := c.Status(ctx); err == nil {
			alive = 0
			for _, w := range st.Workers {
				if w.Alive {
					alive++
				}
			}
			if alive >= n {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%d of %d workers alive after %s", alive, n, timeout)
}

// countBeats counts the registry's writes over d, per second.
func (r *scaleRig) countBeats(d time.Duration) (float64, error) {
	var n atomic.Int64
	sub, err := r.nc.Subscribe("$KV."+broker.BucketWorkers+".>", func(*nats.Msg) { n.Add(1) })
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	_ = sub.Unsubscribe()
	return float64(n.Load()) / d.Seconds(), nil
}

// consumers is how many JetStream consumers the account has.
func (r *scaleRig) consumers(ctx context.Context) (int, error) {
	info, err := r.js.AccountInfo(ctx)
	if err != nil {
		return 0, err
	}
	return info.Consumers, nil
}

// benchConn is the rig's client connection as the bench's helpers take it.
func (r *scaleRig) benchConn() *broker.Conn { return &broker.Conn{NC: r.nc} }

// waitStored waits until the records stream holds n records (see
// waitStored), and fails when it does not within timeout.
func (r *scaleRig) waitStored(ctx context.Context, n int, timeout time.Duration) (int, error) {
	got, err := waitStored(ctx, r.benchConn(), n, timeout, 5*time.Millisecond)
	if err == nil && got < n {
		err = fmt.Errorf("%d of %d records stored after %s", got, n, timeout)
	}
	return got, err
}

func (r *scaleRig) close() {
	if r.pool != nil {
		_ = r.pool.Process.Kill()
		_ = r.pool.Wait()
	}
	for _, l := range r.procs {
		l.StopAll(10 * time.Second)
	}
	if r.poolOut != nil {
		r.poolOut.Close()
	}
	if r.nc != nil {
		r.nc.Close()
	}
	if r.conn != nil {
		r.conn.Close()
	}
	if r.o.Keep {
		r.o.Logger.Warn().Str("folder", r.dir).Msg("kept the run's logs")
		return
	}
	os.RemoveAll(r.dir)
}

// poolLogLevel is the pool's log level: info when its log is kept.
func poolLogLevel(keep bool) string {
	if keep {
		return "info"
	}
	return "warn"
}

// heapInUse is this process's Go heap in use after a collection: the
// embedded broker's memory, steadier than its RSS.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// cpuTimes are the CPU times (ns) of the bench's process, the pool's and
// the worker processes' together.
type cpuTimes struct{ bench, pool, workers int64 }

// cpu reads the CPU times of the rig's processes.
func (r *scaleRig) cpu() cpuTimes {
	c := cpuTimes{bench: selfCPU()}
	if r.pool != nil {
		c.pool = cpuOf(r.pool.Process.Pid)
	}
	for _, l := range r.procs {
		for _, pid := range l.Pids() {
			c.workers += cpuOf(pid)
		}
	}
	return c
}

// selfCPU is this process's CPU time, in ns, its ended threads' too.
func selfCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuOf(os.Getpid())
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// cpuOf is the CPU time a process's threads have run, in ns, from each
// thread's schedstat (finer than /proc/PID/stat's clock ticks); 0 if
// unknown. A thread that exits takes its time with it, which Go's
// threads rarely do.
func cpuOf(pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += ns
		}
	}
	return total
}

// rssOf is a process's resident memory in bytes (0 if unknown).
func rssOf(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// withoutDigits is s with each run of digits (and the decimal point in it)
// written as "N".
func withoutDigits(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		digit := r >= '0' && r <= '9' || in && r == '.'
		switch {
		case digit && !in:
			b.WriteByte('N')
		case !digit:
			b.WriteRune(r)
		}
		in = digit
	}
	return b.String()
}
