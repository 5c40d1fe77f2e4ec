package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// gathered is reg's metrics as name{label=value,...} -> value (a
// histogram's: its count).
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			key += "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// A worker's metrics count the jobs it ended by task and status, time the
// done ones' start and end, and show its threads.
func TestWorkerMetrics(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	m := worker.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	w, err := worker.New(b.Connect(t), worker.Options{ID: "mw", Threads: 3, Tolerance: tolerance, Metrics: m, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitRegistered(t, b, "mw")

	start := job.Now() + 200
	for _, j := range []job.Job{
		{ID: "on-time", Task: "sleep", Threads: 1, StartTime: start, Duration: 20},
		{ID: "late", Task: "sleep", Threads: 1, StartTime: job.Now() - 5000, Duration: 20},
	} {
		data, _ := job.Encode(&j)
		if _, err := b.Res.JS.Publish(context.Background(), broker.JobsSubject("mw"), data); err != nil {
			t.Fatal(err)
		}
	}
	recs := waitRecords(t, b, "on-time", "late")
	if recs["on-time"].Status != job.StatusDone || recs["late"].Status != job.StatusMissed {
		t.Fatalf("records: on-time %s, late %s; want done and missed", recs["on-time"].Status, recs["late"].Status)
	}
	want := map[string]float64{
		"hvmind_worker_jobs_total{status=done,task=sleep}":   1,
		"hvmind_worker_jobs_total{status=missed,task=sleep}": 1,
		"hvmind_worker_start_error_seconds{task=sleep}":      1,
		"hvmind_worker_end_error_seconds{task=sleep}":        1,
		"hvmind_worker_threads{state=busy,worker=mw}":        0,
		"hvmind_worker_threads{state=free,worker=mw}":        3,
	}
	var got map[string]float64
	for deadline := time.Now().Add(5 * time.Second); ; {
		got = gathered(t, reg)
		ok := true
		for k, v := range want {
			if got[k] != v {
				ok = false
			}
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for k, v := range want {
		if g, found := got[k]; !found || g != v {
			t.Errorf("%s = %v (found %v), want %v", k, g, found, v)
		}
	}
	cancel()
	<-done
	if got := gathered(t, reg); got["hvmind_worker_threads{state=free,worker=mw}"] != 0 {
		t.Errorf("a stopped worker's threads are still shown: %v", got)
	}
}
