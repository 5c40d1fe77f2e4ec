package worker

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hvmind/hvmind/job"
)

// Metrics are Prometheus metrics of the jobs some workers ran, as the
// workers saw them: one Metrics serves a worker (Options.Metrics) or every
// worker of a process (ProcessOptions.Metrics). Register it on a
// registry; the zero value is not usable, use NewMetrics.
//
//   - hvmind_worker_jobs_total{task,status}: records the workers stored;
//   - hvmind_worker_start_error_seconds{task}: how late a done job with a
//     startTime started, on the worker's own clock (what the pool's
//     hvmind_job_start_error_seconds shows, before any clock offset);
//   - hvmind_worker_end_error_seconds{task}: how far from its end it ended;
//   - hvmind_worker_threads{worker,state}: each running worker's threads,
//     busy or free, read when scraped.
type Metrics struct {
	ended    *prometheus.CounterVec
	startErr *prometheus.HistogramVec
	endErr   *prometheus.HistogramVec
	threads  *prometheus.Desc

	mu      sync.Mutex
	workers map[*Worker]struct{}
}

// errorBuckets are the start and end errors' buckets, in seconds, as the
// pool's: a microsecond to a second.
var errorBuckets = []float64{1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1}

// NewMetrics makes the metrics, counting from zero.
func NewMetrics() *Metrics {
	return &Metrics{
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hvmind_worker_jobs_total",
			Help: "Jobs whose record these workers stored, by task and status.",
		}, []string{"task", "status"}),
		startErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hvmind_worker_start_error_seconds",
			Help:    "How late a done job with a startTime started, on the worker's clock.",
			Buckets: errorBuckets,
		}, []string{"task"}),
		endErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hvmind_worker_end_error_seconds",
			Help:    "How far from its end (endTime, else startTime+duration) a done job ended, either way.",
			Buckets: errorBuckets,
		}, []string{"task"}),
		threads: prometheus.NewDesc("hvmind_worker_threads",
			"Threads of each running worker, by whether a job holds them now.", []string{"worker", "state"}, nil),
		workers: map[*Worker]struct{}{},
	}
}

// Describe sends the metrics' descriptions.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.ended.Describe(ch)
	m.startErr.Describe(ch)
	m.endErr.Describe(ch)
	ch <- m.threads
}

// Collect sends the metrics' values.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.ended.Collect(ch)
	m.startErr.Collect(ch)
	m.endErr.Collect(ch)
	m.mu.Lock()
	ws := make([]*Worker, 0, len(m.workers))
	for w := range m.workers {
		ws = append(ws, w)
	}
	m.mu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		busy := w.busy
		w.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(m.threads, prometheus.GaugeValue, float64(busy), w.opts.ID, "busy")
		ch <- prometheus.MustNewConstMetric(m.threads, prometheus.GaugeValue, float64(w.opts.Threads-busy), w.opts.ID, "free")
	}
}

// join and leave keep the running workers, for hvmind_worker_threads.
func (m *Metrics) join(w *Worker) {
	m.mu.Lock()
	m.workers[w] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) leave(w *Worker) {
	m.mu.Lock()
	delete(m.workers, w)
	m.mu.Unlock()
}

// record counts a job whose record is about to be stored.
func (m *Metrics) record(j *job.Job) {
	task := j.Task
	if task == "" {
		task = "unknown"
	}
	m.ended.WithLabelValues(task, string(j.Status)).Inc()
	if j.Status != job.StatusDone || j.StartTime <= 0 || j.ActualStartTime <= 0 {
		return
	}
	m.startErr.WithLabelValues(task).Observe(max(j.ActualStartTime-j.StartTime, 0) / 1000)
	m.endErr.WithLabelValues(task).Observe(math.Abs(j.ActualEndTime-j.ScheduledEnd(j.StartTime)) / 1000)
}
