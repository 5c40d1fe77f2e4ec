package webui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
	"github.com/hvmind/hvmind/webui"
)

type testBundle struct {
	b   *brokertest.Broker
	nc  *nats.Conn
	ui  *webui.UI
	srv *httptest.Server
}

// setup starts a broker with HVMind's streams, a UI on it with o, and an
// HTTP server serving the UI.
func setup(t *testing.T, o webui.Options) *testBundle {
	t.Helper()
	b := brokertest.New(t)
	nc := b.Connect(t)
	o.Flush = 20 * time.Millisecond
	if o.StatusEvery == 0 {
		o.StatusEvery = 50 * time.Millisecond
	}
	ui, err := webui.New(nc, o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ui.Handler())
	t.Cleanup(func() { ui.Close(); srv.Close() })
	return &testBundle{b: b, nc: nc, ui: ui, srv: srv}
}

// storeRecord stores a completion record as a worker does.
func (tb *testBundle) storeRecord(t *testing.T, r job.Job) {
	t.Helper()
	data, err := job.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := tb.b.Res.JS.Publish(ctx, broker.DoneSubject(r.Worker), data); err != nil {
		t.Fatal(err)
	}
}

// event is one server-sent event.
type event struct {
	name string
	data string
}

// openStream opens /events and delivers its events.
func (tb *testBundle) openStream(t *testing.T) <-chan event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tb.srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	out := make(chan event, 256)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			case line == "" && ev.name != "":
				out <- ev
				ev = event{}
			}
		}
	}()
	t.Cleanup(cancel)
	return out
}

// next waits for the next event named name for which ok holds.
func next[T any](t *testing.T, events <-chan event, name string, ok func(T) bool) T {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, open := <-events:
			if !open {
				t.Fatalf("the stream ended waiting for a %s event", name)
			}
			if ev.name != name {
				continue
			}
			var v T
			if err := json.Unmarshal([]byte(ev.data), &v); err != nil {
				t.Fatalf("%s event %q: %v", name, ev.data, err)
			}
			if ok(v) {
				return v
			}
		case <-timeout:
			t.Fatalf("no such %s event in 5 s", name)
		}
	}
}

type view struct {
	ID          string  `json:"id"`
	Batch       string  `json:"batch"`
	Task        string  `json:"task"`
	Worker      string  `json:"worker"`
	Threads     int     `json:"threads"`
	Start       float64 `json:"start"`
	End         float64 `json:"end"`
	ASAP        bool    `json:"asap"`
	ActualStart float64 `json:"actualStart"`
	ActualEnd   float64 `json:"actualEnd"`
	Status      string  `json:"status"`
	Reason      string  `json:"reason"`
}

type snapshot struct {
	Jobs   []view          `json:"jobs"`
	Points []webui.Point   `json:"points"`
	Marks  []pool.Mark     `json:"marks"`
	Status json.RawMessage `json:"status"`
}

type delta = snapshot

// charter charts each record's threads, and says one fact.
type charter struct{}

func (charter) Points(r *job.Job) []webui.Point {
	return []webui.Point{{Chart: "threads", Time: r.ActualEndTime, Value: float64(r.Threads), Job: r.ID}}
}

func (charter) Facts(context.Context) []webui.Fact {
	return []webui.Fact{{Name: "answer", Value: "42"}}
}

// A page gets a snapshot holding what was stored before it came (a record
// of an earlier job), then every change: a placed job, its record with its
// actual times and the points the annotator makes of it, a mark, and the
// status with the annotator's facts.
func TestStreamSnapshotThenChanges(t *testing.T) {
	t.Parallel()
	status := func(context.Context) pool.Status {
		return pool.Status{ThreadsBusy: 3, ThreadsTotal: 8, Workers: []pool.WorkerStatus{{WorkerEntry: broker.WorkerEntry{ID: "w1", Host: "h", Threads: 8, Busy: 3}, Alive: true}}}
	}
	tb := setup(t, webui.Options{Status: status, Annotator: charter{}})
	now := job.Now()
	tb.storeRecord(t, job.Job{ID: "old", Task: "sleep", Threads: 2, Duration: 10, StartTime: now - 100, Worker: "w1",
		ActualStartTime: now - 100, ActualEndTime: now - 90, Status: job.StatusDone})
	time.Sleep(100 * time.Millisecond) // the UI reads it

	events := tb.openStream(t)
	snap := next(t, events, "snapshot", func(s snapshot) bool { return true })
	if len(snap.Jobs) != 1 || snap.Jobs[0].ID != "old" || snap.Jobs[0].Status != "done" || snap.Jobs[0].Start != now-100 || snap.Jobs[0].End != now-90 {
		t.Fatalf("snapshot jobs %+v", snap.Jobs)
	}
	if len(snap.Points) != 1 || snap.Points[0].Value != 2 {
		t.Errorf("snapshot points %+v", snap.Points)
	}

	// Placed: two jobs for one worker in one message, as the pool packs them.
	start := now + 50
	placed := `[{"id":"a","batch":"b1","task":"hack","threads":4,"duration":100,"startTime":` + ftoa(start) + `,"worker":"w1"},` +
		`{"id":"asap","task":"sleep","threads":1,"duration":30,"worker":"w1"}]`
	if err := tb.nc.Publish(broker.JobsSubject("w1"), []byte(placed)); err != nil {
		t.Fatal(err)
	}
	d := next(t, events, "delta", func(d delta) bool { return len(d.Jobs) == 2 })
	byID := map[string]view{}
	for _, v := range d.Jobs {
		byID[v.ID] = v
	}
	if a := byID["a"]; a.Start != start || a.End != start+100 || a.Batch != "b1" || a.Worker != "w1" || a.Status != "" || a.ASAP {
		t.Errorf("placed job a: %+v", a)
	}
	if s := byID["asap"]; !s.ASAP || s.Start < now || s.End != s.Start+30 {
		t.Errorf("placed ASAP job: %+v", s)
	}

	// A control message on a worker's queue is not a job.
	stop := nats.NewMsg(broker.JobsSubject("w1"))
	stop.Header.Set(broker.HeaderStop, "bye")
	stop.Data = []byte(`{"id":"not-a-job","task":"x","threads":1}`)
	if err := tb.nc.PublishMsg(stop); err != nil {
		t.Fatal(err)
	}

	tb.storeRecord(t, job.Job{ID: "a", Batch: "b1", Task: "hack", Threads: 4, Duration: 100, StartTime: start, Worker: "w1",
		ActualStartTime: start + 0.002, ActualEndTime: start + 100.001, Status: job.StatusMissed, Reason: "late"})
	d = next(t, events, "delta", func(d delta) bool { return len(d.Jobs) == 1 && d.Jobs[0].Status != "" })
	if a := d.Jobs[0]; a.ID != "a" || a.Status != "missed" || a.Reason != "late" || a.ActualStart != start+0.002 || a.ActualEnd != start+100.001 || a.Start != start {
		t.Errorf("recorded job: %+v", a)
	}
	if len(d.Points) != 1 || d.Points[0].Job != "a" || d.Points[0].Value != 4 {
		t.Errorf("points of the record: %+v", d.Points)
	}

	c, err := pool.NewClient(tb.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Mark(pool.Mark{Source: "n00dles", Kind: "desync", Level: "error", Batch: "b1", Note: "hack landed at 90% money"}); err != nil {
		t.Fatal(err)
	}
	d = next(t, events, "delta", func(d delta) bool { return len(d.Marks) > 0 })
	if m := d.Marks[0]; m.Batch != "b1" || m.Kind != "desync" || m.Time == 0 {
		t.Errorf("mark: %+v", m)
	}
	if err := c.Mark(pool.Mark{Source: "bad source", Kind: "x"}); err == nil {
		t.Error("a mark from a source that is no subject token was published")
	}

	st := next(t, events, "status", func(s map[string]any) bool { return true })
	if st["threadsBusy"] != 3.0 || st["threadsTotal"] != 8.0 || !strings.Contains(mustJSON(st["facts"]), `"answer"`) {
		t.Errorf("status %v", st)
	}

	// The snapshot alone, for scripts.
	resp, err := http.Get(tb.srv.URL + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	if len(s.Jobs) != 3 || len(s.Marks) != 1 {
		t.Errorf("/api/snapshot: %d jobs, %d marks", len(s.Jobs), len(s.Marks))
	}
}

func ftoa(v float64) string { b, _ := json.Marshal(v); return string(b) }

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// The page and its files are served from the program.
func TestServesPage(t *testing.T) {
	t.Parallel()
	tb := setup(t, webui.Options{})
	for _, tc := range []struct{ path, contains, ctype string }{
		{"/", `<canvas id="timeline">`, "text/html"},
		{"/static/app.js", "new EventSource('/events')", "javascript"},
		{"/static/style.css", "#timelinebox", "text/css"},
	} {
		resp, err := http.Get(tb.srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(b.String(), tc.contains) || !strings.Contains(resp.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("GET %s: %s %q, %d bytes", tc.path, resp.Status, resp.Header.Get("Content-Type"), b.Len())
		}
	}
	if resp, err := http.Get(tb.srv.URL + "/nothing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /nothing: %v %v", resp, err)
	}
}

// Close ends the pages' streams and every goroutine the UI started; a
// page that comes after is told the UI is closed.
func TestCloseEndsStreams(t *testing.T) {
	before := brokertest.SettledGoroutines()
	b := brokertest.New(t)
	nc := b.Connect(t)
	ui, err := webui.New(nc, webui.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ui.Handler())
	defer srv.Close()
	tb := &testBundle{b: b, nc: nc, ui: ui, srv: srv}
	events := tb.openStream(t)
	next(t, events, "snapshot", func(snapshot) bool { return true })
	ui.Close()
	select {
	case _, open := <-events:
		for open {
			_, open = <-events
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a page's stream outlived Close")
	}
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream after Close: %s", resp.Status)
	}
	ui.Close() // twice is fine
	srv.Close()
	nc.Close()
	b.Stop()
	if after := brokertest.SettledGoroutines(); after > before {
		t.Errorf("%d goroutines before, %d after Close", before, after)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	nc := b.Connect(t)
	for _, tc := range []struct {
		name string
		o    webui.Options
	}{
		{"negative keep", webui.Options{Keep: -time.Second}},
		{"negative max jobs", webui.Options{MaxJobs: -1}},
		{"negative flush", webui.Options{Flush: -time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ui, err := webui.New(nc, tc.o); err == nil {
				ui.Close()
				t.Error("accepted")
			}
		})
	}
	if _, err := webui.New(nil, webui.Options{}); err == nil {
		t.Error("no connection accepted")
	}
	if d := (webui.Options{}).WithDefaults(); d.Keep != webui.DefaultKeep || d.MaxJobs != webui.DefaultMaxJobs {
		t.Errorf("defaults %+v", d)
	}

}

// The records' stream made anew under the UI (the broker lost its store):
// the records stored in the new stream all show, though their sequences
// start again at 1.
func TestRecordsStreamMadeAnew(t *testing.T) {
	t.Parallel()
	tb := setup(t, webui.Options{})
	now := job.Now()
	rec := func(id string) job.Job {
		return job.Job{ID: id, Task: "sleep", Threads: 1, Duration: 1, StartTime: now, Worker: "w1",
			ActualStartTime: now, ActualEndTime: now + 1, Status: job.StatusDone}
	}
	for i := range 5 {
		tb.storeRecord(t, rec(fmt.Sprintf("old%d", i)))
	}
	tb.waitSnapshot(t, "the old records", func(s snapshot) bool { return len(s.Jobs) == 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tb.b.Res.JS.DeleteStream(ctx, broker.StreamDone); err != nil {
		t.Fatal(err)
	}
	res, err := broker.Setup(ctx, tb.b.NC, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb.b.Res = res
	for i := range 8 {
		tb.storeRecord(t, rec(fmt.Sprintf("new%d", i)))
	}
	tb.waitSnapshot(t, "the new records", func(s snapshot) bool {
		n := 0
		for _, j := range s.Jobs {
			if strings.HasPrefix(j.ID, "new") && j.Status == "done" {
				n++
			}
		}
		return n == 8
	})
}

// waitSnapshot polls /api/snapshot until ok holds.
func (tb *testBundle) waitSnapshot(t *testing.T, what string, ok func(snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(tb.srv.URL + "/api/snapshot")
		if err != nil {
			t.Fatal(err)
		}
		var s snapshot
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot with %s in 10 s: %d jobs", what, len(s.Jobs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
