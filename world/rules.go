package world

import (
	"container/heap"
	"fmt"
	"time"
)

// The world keeps the game's rules whoever asks, with or without
// authentication: a client that is not a worker of the pool (anyone who
// can publish on the world's subjects) cannot run more threads than RAM
// it holds, cannot land an operation before its time, and cannot start
// one in the past to shorten it.

// Bounds of a begin's Start, from the world's clock: later than
// MaxBeginLate ago (a begin can be held through a restart of the world,
// ResumeHold, and retried by its worker), no later than MaxBeginAhead
// from now (clocks of other machines).
const (
	MaxBeginLate  = 10 * time.Second
	MaxBeginAhead = time.Second
)

// endSlack is how close to a running operation's end a begin on its
// threads may start.
const endSlack = time.Millisecond

// finishSkew is how much earlier than its end an operation's finish may
// arrive by the world's clock: the worker's clock may be ahead of it.
const finishSkew = 50 * time.Millisecond

// running counts the threads of operations begun and not over, by host
// and owner: they hold RAM the owner reserved. An operation is over at its
// start plus its duration (the game frees a script's RAM then), whether
// or not its finish has been read: the finish of one operation and the
// begin of the next on the same threads may arrive in either order.
type running map[string]map[string]*ownerOps

// ownerOps are one owner's operations on one host.
type ownerOps struct {
	live map[string]int // job → threads
	ends opEnds
	sum  int
}

type opEnd struct {
	at float64 // epoch ms
	id string
}

// opEnds is a min-heap by end.
type opEnds []opEnd

func (h opEnds) Len() int           { return len(h) }
func (h opEnds) Less(i, j int) bool { return h[i].at < h[j].at }
func (h opEnds) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *opEnds) Push(x any)        { *h = append(*h, x.(opEnd)) }
func (h *opEnds) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (r running) of(host, owner string) *ownerOps {
	m := r[host]
	if m == nil {
		m = map[string]*ownerOps{}
		r[host] = m
	}
	o := m[owner]
	if o == nil {
		o = &ownerOps{live: map[string]int{}}
		m[owner] = o
	}
	return o
}

// add counts an operation until its end (epoch ms).
func (r running) add(host, owner, id string, threads int, end float64) {
	o := r.of(host, owner)
	if _, ok := o.live[id]; ok {
		return
	}
	o.live[id] = threads
	o.sum += threads
	heap.Push(&o.ends, opEnd{at: end, id: id})
}

// drop stops counting an operation (it finished, or was settled).
func (r running) drop(host, owner, id string) {
	o := r[host][owner]
	if o == nil {
		return
	}
	if t, ok := o.live[id]; ok {
		o.sum -= t
		delete(o.live, id)
	}
	if len(o.live) == 0 {
		delete(r[host], owner)
	}
}

// used is the threads of the owner's operations on host not over at now
// (epoch ms).
func (r running) used(host, owner string, now float64) int {
	o := r[host][owner]
	if o == nil {
		return 0
	}
	for len(o.ends) > 0 && o.ends[0].at <= now {
		e := heap.Pop(&o.ends).(opEnd)
		if t, ok := o.live[e.id]; ok {
			o.sum -= t
			delete(o.live, e.id)
		}
	}
	return o.sum
}

// checkBegin applies the rules to a new begin, at epoch ms now; it
// returns when the operation began.
func (s *Service) checkBegin(req BeginRequest, now float64) (float64, error) {
	start := req.Start
	if start == 0 {
		start = now
	}
	if s.opts.FormulasOnly {
		return start, nil
	}
	switch {
	case start < now-ms(MaxBeginLate):
		return 0, invalidf("%s %s: its start %.0f is %.0f ms before the world heard of it (at most %s)", req.Task, req.JobID, start, now-start, MaxBeginLate)
	case start > now+ms(MaxBeginAhead):
		return 0, invalidf("%s %s: its start %.0f is %.0f ms ahead of the world's clock (at most %s)", req.Task, req.JobID, start, start-now, MaxBeginAhead)
	case req.Owner == "":
		return 0, invalidf("%s %s: no owner: an operation's threads must be backed by RAM its worker holds on %s", req.Task, req.JobID, req.Host)
	}
	held := s.st.Reserved(req.Host, req.Owner)
	// Operations ending within endSlack of this start are over: a
	// worker frees an operation's threads at its end as its clock
	// rounds it (to the nanosecond), and starts the next on them.
	used := s.running.used(req.Host, req.Owner, start+ms(endSlack))
	if used+req.Threads > held {
		return 0, fmt.Errorf("%s %s: %w: %s holds %d threads on %s and runs %d; %d more do not fit",
			req.Task, req.JobID, ErrNoRAM, req.Owner, held, req.Host, used, req.Threads)
	}
	return start, nil
}

// checkFinish applies the rules to a finish of b that landed at epoch ms
// end (0: now), read at now.
func (s *Service) checkFinish(b BeginReply, end, now float64) error {
	if s.opts.FormulasOnly || b.StartedAt == 0 {
		return nil // begun before the world kept StartedAt
	}
	due := max(b.StartedAt+b.DurationRealMs, b.LandsAt)
	if end == 0 {
		end = now
	}
	switch {
	case end < due-1:
		return invalidf("%s %s: it cannot land at %.0f: it began at %.0f and runs %.0f ms, until %.0f", b.Task, b.JobID, end, b.StartedAt, b.DurationRealMs, due)
	case now < due-ms(finishSkew):
		return invalidf("%s %s: finished %.0f ms before its end at %.0f", b.Task, b.JobID, due-now, due)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func nowMs() float64 { return float64(time.Now().UnixNano()) / 1e6 }
