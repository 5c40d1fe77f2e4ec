package pool

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hvmind/hvmind/job"
)

// metrics are the pool's Prometheus metrics. The counters and histograms
// move as jobs are placed and their records come in; the gauges (jobs in
// flight, workers, threads) are read from the pool when scraped.
type metrics struct {
	accepted  prometheus.Counter
	ended     *prometheus.CounterVec
	startErr  *prometheus.HistogramVec
	endErr    *prometheus.HistogramVec
	placement prometheus.Histogram

	inFlight *prometheus.Desc
	workers  *prometheus.Desc
	threads  *prometheus.Desc
	reconn   *prometheus.Desc
}

// errorBuckets are the start and end errors' buckets, in seconds: from a
// microsecond, which a worker reaches on an idle machine, to a second,
// past which a job is missed anyway.
var errorBuckets = []float64{1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1}

func newMetrics() *metrics {
	return &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hvmind_jobs_accepted_total",
			Help: "Jobs the pool accepted and placed on a worker.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hvmind_jobs_total",
			Help: "Jobs ended, by task and by the status of their record (done, failed, missed, cancelled).",
		}, []string{"task", "status"}),
		startErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hvmind_job_start_error_seconds",
			Help:    "How far from its startTime a job with one started (actualStartTime - startTime; never negative).",
			Buckets: errorBuckets,
		}, []string{"task"}),
		endErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hvmind_job_end_error_seconds",
			Help:    "How far from its end a job with a start ended, either way (|actualEndTime - endTime|, endTime startTime+duration when not given).",
			Buckets: errorBuckets,
		}, []string{"task"}),
		placement: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hvmind_placement_seconds",
			Help:    "How long placing one job on a worker took in the pool.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10), // 1 µs to 0.26 s
		}),
		inFlight: prometheus.NewDesc("hvmind_jobs_in_flight",
			"Jobs placed whose record has not come yet.", nil, nil),
		workers: prometheus.NewDesc("hvmind_workers",
			"Workers the pool knows, by whether their heartbeats say they are alive.", []string{"state"}, nil),
		threads: prometheus.NewDesc("hvmind_threads",
			"Threads of the live workers, by host and by whether a job holds them now.", []string{"host", "state"}, nil),
		reconn: prometheus.NewDesc("hvmind_nats_reconnects_total",
			"Times the pool's connection to NATS was lost and made again.", nil, nil),
	}
}

// record counts a job's record.
func (m *metrics) record(j *job.Summary) {
	task := j.Task
	if task == "" {
		task = "unknown" // a record that lost its task; still counted
	}
	m.ended.WithLabelValues(task, string(j.Status)).Inc()
	if j.Status != job.StatusDone {
		return
	}
	if j.StartTime > 0 && j.ActualStartTime > 0 {
		m.startErr.WithLabelValues(task).Observe(max(j.ActualStartTime-j.StartTime, 0) / 1000)
	}
	if (j.StartTime > 0 || j.EndTime > 0) && j.ActualEndTime > 0 {
		m.endErr.WithLabelValues(task).Observe(math.Abs(j.ActualEndTime-j.ScheduledEnd(j.StartTime)) / 1000)
	}
}

// Metrics returns the pool's Prometheus metrics, for a registry of the
// caller's (hvmind-pool serves them at /metrics with --http):
//
//   - hvmind_jobs_accepted_total, hvmind_jobs_total{task,status}: jobs in
//     and out;
//   - hvmind_job_start_error_seconds{task}, hvmind_job_end_error_seconds{task}:
//     how far from their schedule done jobs started and ended;
//   - hvmind_placement_seconds: the pool's placement of one job;
//   - hvmind_jobs_in_flight, hvmind_workers{state}, hvmind_threads{host,state}:
//     read from the pool when scraped;
//   - hvmind_nats_reconnects_total.
//
// Counting starts when the pool is made: a restarted pool counts again
// from zero, as Prometheus counters do.
func (p *Pool) Metrics() prometheus.Collector { return poolCollector{p} }

// poolCollector is the pool as a prometheus.Collector.
type poolCollector struct{ p *Pool }

// Describe sends the descriptions of every metric.
func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	m := c.p.metrics
	m.accepted.Describe(ch)
	m.ended.Describe(ch)
	m.startErr.Describe(ch)
	m.endErr.Describe(ch)
	m.placement.Describe(ch)
	ch <- m.inFlight
	ch <- m.workers
	ch <- m.threads
	ch <- m.reconn
}

// Collect sends the metrics' values, reading the gauges from the pool.
func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	p, m := c.p, c.p.metrics
	m.accepted.Collect(ch)
	m.ended.Collect(ch)
	m.startErr.Collect(ch)
	m.endErr.Collect(ch)
	m.placement.Collect(ch)

	type hostThreads struct{ busy, total int }
	hosts := map[string]*hostThreads{}
	var alive, silent int
	now := time.Now()
	p.mu.Lock()
	inFlight := len(p.jobs)
	for _, ws := range p.workers {
		if !p.aliveLocked(ws, now) {
			silent++
			continue
		}
		alive++
		h := hosts[ws.entry.Host]
		if h == nil {
			h = &hostThreads{}
			hosts[ws.entry.Host] = h
		}
		h.busy += ws.entry.Busy
		h.total += ws.entry.Threads
	}
	p.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.inFlight, prometheus.GaugeValue, float64(inFlight))
	ch <- prometheus.MustNewConstMetric(m.workers, prometheus.GaugeValue, float64(alive), "alive")
	ch <- prometheus.MustNewConstMetric(m.workers, prometheus.GaugeValue, float64(silent), "gone")
	for name, h := range hosts {
		ch <- prometheus.MustNewConstMetric(m.threads, prometheus.GaugeValue, float64(h.busy), name, "busy")
		ch <- prometheus.MustNewConstMetric(m.threads, prometheus.GaugeValue, float64(h.total-h.busy), name, "free")
	}
	ch <- prometheus.MustNewConstMetric(m.reconn, prometheus.CounterValue, float64(p.nc.Stats().Reconnects))
}
