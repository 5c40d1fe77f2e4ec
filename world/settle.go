package world

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// SubjectSettle settles operations whose workers are gone:
// SettleRequest → []Settlement.
const SubjectSettle = "hvmind.world.settle"

// SettleRequest asks the world what became of the operations of jobs that
// may have begun in a process that is gone, and to make sure that nothing
// of them happens after.
type SettleRequest struct {
	JobIDs []string `json:"jobIds"`
	// Reason says why (logged, and kept with the settlement).
	Reason string `json:"reason,omitempty"`
}

// Settlement is what became of one job's operation.
type Settlement struct {
	JobID string `json:"jobId"`
	// Applied: the operation had finished and its effect is Result.
	Applied bool    `json:"applied"`
	Result  *Result `json:"result,omitempty"`
	// Begun: the operation had begun and not finished. It never will: the
	// world refuses its finish (ErrSettled), as it refuses a begin of a
	// job that was settled before it began.
	Begun bool `json:"begun,omitempty"`
	// At is when the world settled an operation that had not finished
	// (zero for an applied one).
	At time.Time `json:"at,omitzero"`
	// Reason is the SettleRequest's that settled it.
	Reason string `json:"reason,omitempty"`
}

// MaxSettle bounds the jobs of one SettleRequest.
const MaxSettle = 4096

// prefixSettled keys the settlements of operations that had not finished:
// they fence a begin or finish that comes later, even after a restart.
const prefixSettled = "settled."

func settledKey(id string) string { return prefixSettled + escapeKey(id) }

// Settle settles the operations of jobs whose workers are gone (see
// SettleRequest). Asking twice returns the same settlements.
func (c *Client) Settle(ctx context.Context, req SettleRequest) ([]Settlement, error) {
	var out []Settlement
	err := c.request(ctx, c.subject(SubjectSettle, WorkerSettle), req, &out)
	return out, err
}

// handleSettle settles a request's jobs in the writer, after the finishes
// stamped before now: the sequencer holds the request for its holdback,
// so a finish sent just before the worker died is applied first and its
// job is settled as applied.
func (s *Service) handleSettle(req micro.Request) {
	var sr SettleRequest
	if data := bytes.TrimSpace(req.Data()); len(data) > 0 && data[0] != '{' {
		sr.JobIDs = strings.Fields(string(data))
	} else if err := decode(req, &sr); err != nil {
		s.refuse(req, err)
		return
	}
	if len(sr.JobIDs) == 0 || len(sr.JobIDs) > MaxSettle {
		s.refuse(req, invalidf("settle: %d job ids; want 1 to %d", len(sr.JobIDs), MaxSettle))
		return
	}
	for _, id := range sr.JobIDs {
		if !job.ValidID(id) {
			s.refuse(req, invalidJobID("settle: ", id))
			return
		}
	}
	asker := AskerOf(req.Subject())
	now := float64(time.Now().UnixNano()) / 1e6
	s.seq.add(now, now, &item{
		run: func() (any, []write, error) { return s.settle(sr, asker, nil) },
		respond: func(v any, err error) {
			if !errors.Is(err, errLookup) {
				Reply(broker.ReplyLater(s.nc, req), v, err)
				return
			}
			// Some are not in memory: begun, finished or settled before
			// a restart. Read them, off the writer.
			s.goLookup(req, func(ctx context.Context) {
				lks := make(map[string]*lookup, len(sr.JobIDs))
				for _, id := range sr.JobIDs {
					lks[id] = s.store.lookup(ctx, id)
				}
				s.handle(req, func() (any, []write, error) { return s.settle(sr, asker, lks) })
			})
		},
	})
}

// settle settles each job (run by the writer). Without lookups it asks for
// them (errLookup) when a job is unknown to memory. A worker asking on its
// own subject (asker) settles only operations it began, or none began.
func (s *Service) settle(sr SettleRequest, asker string, lks map[string]*lookup) (any, []write, error) {
	if lks == nil {
		for _, id := range sr.JobIDs {
			_, r := s.results[id]
			_, b := s.begins[id]
			_, st := s.settled[id]
			if !r && !b && !st {
				return nil, nil, errLookup
			}
		}
	}
	if asker != "" {
		// Checked before anything changes: the request is refused whole.
		for _, id := range sr.JobIDs {
			if owner := s.beganBy(id, lks[id]); owner != "" && owner != asker {
				return nil, nil, notOwner(asker, "the settlement of job "+id, owner)
			}
		}
	}
	out := make([]Settlement, 0, len(sr.JobIDs))
	var writes []write
	for _, id := range sr.JobIDs {
		if r, ok := s.results[id]; ok {
			res := r.r
			out = append(out, Settlement{JobID: id, Applied: true, Result: &res})
			continue
		}
		if st, ok := s.settled[id]; ok {
			out = append(out, st.st)
			continue
		}
		begun := false
		if _, ok := s.begins[id]; ok {
			begun = true
		} else if lk := lks[id]; lk != nil {
			switch {
			case lk.err != nil:
				return nil, nil, lk.err
			case lk.result != nil:
				s.keepResult(id, *lk.result)
				out = append(out, Settlement{JobID: id, Applied: true, Result: lk.result})
				continue
			case lk.settled != nil:
				s.settled[id] = &settledOp{st: *lk.settled, at: time.Now()}
				out = append(out, *lk.settled)
				continue
			case lk.begin != nil:
				begun = true
			}
		}
		st, w, err := s.settleNow(id, begun, sr.Reason)
		if err != nil {
			return nil, nil, err
		}
		writes = append(writes, w)
		out = append(out, st)
	}
	return out, writes, nil
}

// beganBy is the worker whose operation of job id is begun and neither
// finished nor settled ("" when none is).
func (s *Service) beganBy(id string, lk *lookup) string {
	if _, ok := s.results[id]; ok {
		return ""
	}
	if _, ok := s.settled[id]; ok {
		return ""
	}
	if b, ok := s.begins[id]; ok {
		return b.b.Owner
	}
	if lk != nil && lk.err == nil && lk.result == nil && lk.settled == nil && lk.begin != nil {
		return lk.begin.Owner
	}
	return ""
}

// settledOp is a settlement of an operation that had not finished.
type settledOp struct {
	st Settlement
	at time.Time
}

// errSettledf is the error of a begin or finish of a settled job.
func errSettledf(st Settlement) error {
	what := "before it began"
	if st.Begun {
		what = "while it ran"
	}
	return fmt.Errorf("%w: job %s was settled %s (%s), at %s; nothing of it applies", ErrSettled, st.JobID, what, st.Reason, st.At.Format(time.RFC3339Nano))
}

// getSettled reads a job's settlement; nil when there is none.
func (s *store) getSettled(ctx context.Context, id string) (*Settlement, error) {
	var st Settlement
	ok, err := s.get(ctx, settledKey(id), &st)
	if !ok || err != nil {
		return nil, err
	}
	return &st, nil
}

// lookup reads what the store holds of a job's operation (see lookup).
func (s *store) lookup(ctx context.Context, id string) *lookup {
	lk := &lookup{}
	lk.result, lk.err = s.getResult(ctx, id)
	if lk.result == nil && lk.err == nil {
		lk.settled, lk.err = s.getSettled(ctx, id)
	}
	if lk.result == nil && lk.settled == nil && lk.err == nil {
		lk.begin, lk.err = s.getBegin(ctx, id)
	}
	return lk
}
