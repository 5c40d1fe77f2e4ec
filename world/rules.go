package world

import (
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

// finishSkew is how much earlier than its end an operation's finish may
// arrive by the world's clock: the worker's clock may be ahead of it.
const finishSkew = 50 * time.Millisecond

// running counts the threads of operations begun and not finished, by
// host and owner: they hold RAM the owner reserved.
type running map[string]map[string]int

func (r running) add(host, owner string, threads int) {
	m := r[host]
	if m == nil {
		m = map[string]int{}
		r[host] = m
	}
	if m[owner] += threads; m[owner] <= 0 {
		delete(m, owner)
	}
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
	used := s.running[req.Host][req.Owner]
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
	due := b.StartedAt + b.DurationRealMs
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
