package pool

import (
	"sync"
	"time"
)

// HeaderRequestID names a dispatch request. A client that did not get an
// answer sends the request again with the same id; the pool answers every
// copy with the first one's outcome (waiting for it if it is still being
// placed) instead of placing the jobs again. Requests without it are
// placed each time.
const HeaderRequestID = "Hvmind-Request-Id"

// replayWindow is how long the pool remembers a request's outcome.
const replayWindow = 2 * time.Minute

// replays is the outcomes of the recent dispatch requests, by request id.
type replays struct {
	mu    sync.Mutex
	m     map[string]*outcome
	order []replayed // by time, for expiry
}

type replayed struct {
	id string
	at time.Time
}

// outcome is one request's answer, once done is closed.
type outcome struct {
	done   chan struct{}
	placed []Placed
	err    error
}

// start returns the outcome of request id, and whether this request is
// the first with that id (the caller then places the jobs and calls
// finish). An empty id is never a copy.
func (r *replays) start(id string, now time.Time) (*outcome, bool) {
	o := &outcome{done: make(chan struct{})}
	if id == "" {
		return o, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*outcome{}
	}
	for len(r.order) > 0 && now.Sub(r.order[0].at) > replayWindow {
		if prev := r.m[r.order[0].id]; prev != nil && isDone(prev) {
			delete(r.m, r.order[0].id)
		}
		r.order = r.order[1:]
	}
	if prev, ok := r.m[id]; ok {
		return prev, false
	}
	r.m[id] = o
	r.order = append(r.order, replayed{id, now})
	return o, true
}

// finish records the first request's outcome for its copies.
func (o *outcome) finish(placed []Placed, err error) {
	o.placed, o.err = placed, err
	close(o.done)
}

func isDone(o *outcome) bool {
	select {
	case <-o.done:
		return true
	default:
		return false
	}
}
