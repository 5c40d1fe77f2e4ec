package pool_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// scrape reads the metrics at url as name{labels} -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// The pool's metrics, served as hvmind-pool --http serves them, count the jobs
// by task and status, time their start and end against their schedule and
// their placement, and show the workers and their threads.
func TestMetrics(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	startWorker(t, b, "m4", 4)
	p, err := pool.New(b.Connect(t), pool.Options{Heartbeat: 100 * time.Millisecond, Tolerance: testTolerance, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-p.Ready()
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Metrics(), collectors.NewGoCollector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	t.Cleanup(srv.Close)
	c := newClient(t, b)
	waitWorkers(t, c, 1)

	s := at(300 * time.Millisecond)
	d, err := c.DispatchJobs(context.Background(), []job.Job{
		{ID: "a", Task: "sleep", Threads: 1, StartTime: s, Duration: 50},
		{ID: "b", Task: "sleep", Threads: 2, StartTime: s + 10, Duration: 50},
		{ID: "later", Task: "sleep", Threads: 1, StartTime: s + 60_000, Duration: 50},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(context.Background(), pool.CancelRequest{ID: "later", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Wait(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	st, err := c.Status(context.Background())
	if err != nil || len(st.Workers) != 1 {
		t.Fatalf("status: %d workers, %v", len(st.Workers), err)
	}
	host := st.Workers[0].Host
	want := map[string]float64{
		`hvmind_jobs_accepted_total`:                                 3,
		`hvmind_jobs_total{status="done",task="sleep"}`:              2,
		`hvmind_jobs_total{status="cancelled",task="sleep"}`:         1,
		`hvmind_job_start_error_seconds_count{task="sleep"}`:         2,
		`hvmind_job_end_error_seconds_count{task="sleep"}`:           2,
		`hvmind_job_start_error_seconds_bucket{task="sleep",le="1"}`: 2,
		`hvmind_placement_seconds_count`:                             3,
		`hvmind_jobs_in_flight`:                                      0,
		`hvmind_workers{state="alive"}`:                              1,
		`hvmind_threads{host="` + host + `",state="free"}`:           4,
		`hvmind_threads{host="` + host + `",state="busy"}`:           0,
		`hvmind_nats_reconnects_total`:                               0,
	}
	var got map[string]float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = scrape(t, srv.URL)
		ok := true
		for k, v := range want {
			if g, found := got[k]; !found || g != v {
				ok = false
			}
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, v := range want {
		if g, found := got[k]; !found {
			t.Errorf("%s: missing", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("go_goroutines: missing; the Go runtime's metrics are served too")
	}
}
