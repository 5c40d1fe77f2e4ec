package webui

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hvmind/hvmind/job"
)

//go:embed static
var static embed.FS

// Handler serves the page at /, its files under /static/, the live
// stream at /events (server-sent events: a snapshot, then deltas and
// status) and the snapshot alone at /api/snapshot.
func (u *UI) Handler() http.Handler {
	files, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(files)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, files, "index.html")
	})
	mux.HandleFunc("GET /events", u.serveEvents)
	mux.HandleFunc("GET /api/snapshot", func(w http.ResponseWriter, r *http.Request) {
		u.hist.mu.Lock()
		snap := u.hist.snapshotLocked(job.Now())
		u.hist.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(snap)
	})
	return mux
}

// keepAlive is how often an idle stream sends a comment, so that a page
// (and any proxy between) sees the connection is alive.
const keepAlive = 15 * time.Second

// serveEvents streams to one page: a snapshot, then what changes.
func (u *UI) serveEvents(w http.ResponseWriter, r *http.Request) {
	// Join and snapshot at once: every change after the snapshot comes
	// as a delta (a change may come twice; the page takes it twice).
	u.hist.mu.Lock()
	snap := u.hist.snapshotLocked(job.Now())
	c, joined := u.hub.join()
	u.hist.mu.Unlock()
	if !joined {
		http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	defer u.hub.leave(c)
	data, err := json.Marshal(snap)
	if err != nil {
		http.Error(w, "snapshot: "+err.Error(), http.StatusInternalServerError)
		return
	}
	u.wakeStatus()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	// A page that stops reading must not hold its handler: every write
	// has a deadline (the server has no write timeout, for the stream's
	// sake).
	rc := http.NewResponseController(w)
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	// retry: a page whose stream broke asks again after 1 s.
	if write(append([]byte("retry: 1000\n\n"), frame("snapshot", data)...)) != nil {
		return
	}
	t := time.NewTicker(keepAlive)
	defer t.Stop()
	for {
		var out []byte
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case out = <-c.ch:
		case <-t.C:
			out = []byte(": alive\n\n")
		}
		if write(out) != nil {
			return
		}
	}
}

// writeWait is how long one write to a page may take.
const writeWait = 10 * time.Second

// frame is one server-sent event.
func frame(event string, data []byte) []byte {
	b := make([]byte, 0, len(data)+len(event)+16)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// flushLoop sends what changed to the pages every Flush, and trims the
// history every second.
func (u *UI) flushLoop(ctx context.Context) {
	t := time.NewTicker(u.opts.Flush)
	defer t.Stop()
	lastTrim := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if now.Sub(lastTrim) >= time.Second {
			u.hist.trim(job.Millis(now))
			lastTrim = now
		}
		d, changed := u.hist.takeDelta(job.Millis(now))
		if !changed || u.hub.count() == 0 {
			continue
		}
		if data, err := json.Marshal(d); err == nil {
			u.hub.broadcast(frame("delta", data))
		}
	}
}

// statusView is the header's figures.
type statusView struct {
	Time         float64          `json:"time"`
	Workers      []workerView     `json:"workers"`
	Hosts        []hostView       `json:"hosts,omitempty"`
	ThreadsBusy  int              `json:"threadsBusy"`
	ThreadsTotal int              `json:"threadsTotal"`
	InFlight     int              `json:"inFlight"`
	Accepted     int64            `json:"accepted"`
	Ended        map[string]int64 `json:"ended"`
	DriftP50     float64          `json:"driftP50us"`
	DriftP99     float64          `json:"driftP99us"`
	Facts        []Fact           `json:"facts,omitempty"`
}

type workerView struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Alive   bool   `json:"alive"`
	Threads int    `json:"threads"`
	Busy    int    `json:"busy"`
}

type hostView struct {
	Name       string `json:"name"`
	Cores      int    `json:"cores"`
	MaxThreads int    `json:"maxThreads"`
	Free       int    `json:"freeThreads"`
}

// wakeStatus asks the status loop for a status now (a page joined).
func (u *UI) wakeStatus() {
	select {
	case u.hub.wake <- struct{}{}:
	default:
	}
}

// statusLoop reads the pool's status and the facts every StatusEvery
// while a page watches: reading them asks the capacity provider (the
// world, for the game), which nobody needs when nobody looks.
func (u *UI) statusLoop(ctx context.Context) {
	t := time.NewTicker(u.opts.StatusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if u.hub.count() == 0 {
				continue
			}
		case <-u.hub.wake:
		}
		sv := u.readStatus(ctx)
		u.hist.setStatus(sv)
		if data, err := json.Marshal(sv); err == nil {
			u.hub.broadcast(frame("status", data))
		}
	}
}

// readStatus builds the header's figures.
func (u *UI) readStatus(ctx context.Context) *statusView {
	rctx, cancel := context.WithTimeout(ctx, max(u.opts.StatusEvery, time.Second))
	defer cancel()
	sv := &statusView{Time: job.Now(), Ended: map[string]int64{}}
	if u.opts.Status != nil {
		st := u.opts.Status(rctx)
		for _, w := range st.Workers {
			sv.Workers = append(sv.Workers, workerView{ID: w.ID, Host: w.Host, Alive: w.Alive, Threads: w.Threads, Busy: w.Busy})
		}
		for _, h := range st.Hosts {
			sv.Hosts = append(sv.Hosts, hostView{Name: h.Name, Cores: h.Cores, MaxThreads: h.MaxThreads, Free: h.FreeThreads})
		}
		sort.Slice(sv.Hosts, func(i, j int) bool { return sv.Hosts[i].Name < sv.Hosts[j].Name })
		sv.ThreadsBusy, sv.ThreadsTotal, sv.InFlight, sv.Accepted = st.ThreadsBusy, st.ThreadsTotal, st.JobsInFlight, st.Accepted
		for s, n := range st.Ended {
			sv.Ended[string(s)] = n
		}
		sv.DriftP50, sv.DriftP99 = st.Drift.P50, st.Drift.P99
	}
	if a := u.opts.Annotator; a != nil {
		sv.Facts = a.Facts(rctx)
	}
	return sv
}

// hub is the pages watching, each with its queue of frames.
type hub struct {
	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	wake    chan struct{}
}

// client is one page's stream. A page too slow to take its frames is let
// go (gone closes): its browser asks again and starts from a snapshot.
type client struct {
	ch   chan []byte
	gone chan struct{}
}

// clientQueue is how many frames a page may lag behind.
const clientQueue = 256

func newHub() *hub {
	return &hub{clients: map[*client]struct{}{}, wake: make(chan struct{}, 1)}
}

func (h *hub) join() (*client, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	c := &client{ch: make(chan []byte, clientQueue), gone: make(chan struct{})}
	h.clients[c] = struct{}{}
	return c, true
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(c.gone)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *hub) broadcast(f []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.ch <- f:
		default:
			delete(h.clients, c)
			close(c.gone)
		}
	}
}

// close lets every page go and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.clients {
		delete(h.clients, c)
		close(c.gone)
	}
}
