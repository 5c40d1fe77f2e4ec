package world

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// SubjectResume takes up the operation of a job whose worker restarted:
// ResumeRequest → ResumeReply.
const SubjectResume = "hvmind.world.resume"

// WorkerResume is resume, asked by a worker for itself (see WorkerSubject).
const WorkerResume = "resume"

// ResumeRequest asks what became of the operation of a job that a
// worker's previous process received and may have begun, so that the
// worker's new process takes it up: in the game, killing the program that
// started a script does not kill the script, which lands as planned.
type ResumeRequest struct {
	JobID string `json:"jobId"`
	// Owner is the worker that takes the operation up: the one that began
	// it (on the worker's own subject, the asker).
	Owner string `json:"owner"`
}

// ResumeReply says what became of the operation. Begun, when it is
// running: the asker finishes it at its landing (FinishAt), as if its
// process had never died. Otherwise Settlement: it was applied (with its
// Result), or settled before, or it had not begun and is settled now, so
// that a begin of it that comes later is refused.
type ResumeReply struct {
	Begun      *BeginReply `json:"begun,omitempty"`
	Settlement *Settlement `json:"settlement,omitempty"`
}

// resumeReason is the reason of a settlement made by a resume.
const resumeReason = "its worker restarted before it began"

// Resume asks what became of a job's operation that a worker's previous
// process may have begun (see ResumeRequest); req.Owner defaults to the
// client's worker (As). Asking twice gives the same answer, but for an
// operation that finished in between.
func (c *Client) Resume(ctx context.Context, req ResumeRequest) (ResumeReply, error) {
	if req.Owner == "" {
		req.Owner = c.worker
	}
	var out ResumeReply
	err := c.request(ctx, c.subject(SubjectResume, WorkerResume), req, &out)
	return out, err
}

// handleResume answers in the writer. An operation the world knows to
// have begun, finished or been settled is answered at once; any other is
// settled after the requests stamped before now: the sequencer holds it for
// its holdback, so that a begin the previous process sent just before it
// died comes first.
func (s *Service) handleResume(req micro.Request) {
	var rr ResumeRequest
	if err := decode(req, &rr); err != nil {
		s.refuse(req, err)
		return
	}
	if !job.ValidID(rr.JobID) {
		s.refuse(req, invalidJobID("resume: ", rr.JobID))
		return
	}
	if a := AskerOf(req.Subject()); a != "" && rr.Owner != a {
		s.refuse(req, notOwner(a, "the resume of job "+rr.JobID, rr.Owner))
		return
	}
	if rr.Owner == "" {
		s.refuse(req, invalidf("resume %s: an owner is required", rr.JobID))
		return
	}
	now := nowMs()
	held := &item{
		run: func() (any, []write, error) { return s.resume(rr, nil) },
		respond: func(v any, err error) {
			if !errors.Is(err, errLookup) {
				Reply(broker.ReplyLater(s.nc, req), v, err)
				return
			}
			// Begun, finished or settled before a restart: read it.
			s.goLookup(req, func(ctx context.Context) {
				lk := s.store.lookup(ctx, rr.JobID)
				s.handle(req, func() (any, []write, error) { return s.resume(rr, lk) })
			})
		},
	}
	if s.opts.Holdback <= 0 {
		s.enqueue(held)
		return
	}
	s.enqueue(&item{
		run: func() (any, []write, error) { return s.resumeKnown(rr) },
		respond: func(v any, err error) {
			if errors.Is(err, errHold) {
				// Not due before its holdback: the sequencer holds it,
				// and never hands it on from here, the writer, which
				// must not wait on its own queue.
				if !s.seq.queue(now, now, held) {
					s.refuse(req, errStopping)
				}
				return
			}
			Reply(broker.ReplyLater(s.nc, req), v, err)
		},
	})
}

// errHold asks for a request to go through the sequencer.
var errHold = errors.New("hold for the sequencer")

// resumeKnown answers a ResumeRequest from memory alone (run by the
// writer): errHold when the world does not know the operation there.
func (s *Service) resumeKnown(rr ResumeRequest) (any, []write, error) {
	_, r := s.results[rr.JobID]
	_, b := s.begins[rr.JobID]
	_, st := s.settled[rr.JobID]
	if !r && !b && !st {
		return nil, nil, errHold
	}
	return s.resume(rr, nil)
}

// resume answers a ResumeRequest (run by the writer); without a lookup it
// asks for one (errLookup) when the job is unknown to memory.
func (s *Service) resume(rr ResumeRequest, lk *lookup) (any, []write, error) {
	id := rr.JobID
	if r, ok := s.results[id]; ok {
		res := r.r
		return ResumeReply{Settlement: &Settlement{JobID: id, Applied: true, Result: &res}}, nil, nil
	}
	if st, ok := s.settled[id]; ok {
		out := st.st
		return ResumeReply{Settlement: &out}, nil, nil
	}
	if b, ok := s.begins[id]; ok {
		if b.b.Owner != rr.Owner {
			return nil, nil, notOwner(rr.Owner, "the resume of job "+id, b.b.Owner)
		}
		out := b.b
		return ResumeReply{Begun: &out}, nil, nil
	}
	if lk == nil {
		return nil, nil, errLookup
	}
	switch {
	case lk.err != nil:
		return nil, nil, lk.err
	case lk.result != nil:
		s.keepResult(id, *lk.result)
		return ResumeReply{Settlement: &Settlement{JobID: id, Applied: true, Result: lk.result}}, nil, nil
	case lk.settled != nil:
		s.settled[id] = &settledOp{st: *lk.settled, at: time.Now()}
		return ResumeReply{Settlement: lk.settled}, nil, nil
	case lk.begin != nil:
		if lk.begin.Owner != rr.Owner {
			return nil, nil, notOwner(rr.Owner, "the resume of job "+id, lk.begin.Owner)
		}
		out := *lk.begin
		out.Speed = s.opts.Speed
		return ResumeReply{Begun: &out}, nil, nil
	}
	// It never began: nothing of it will.
	st, w, err := s.settleNow(id, false, resumeReason)
	if err != nil {
		return nil, nil, err
	}
	return ResumeReply{Settlement: &st}, []write{w}, nil
}

// settleNow settles an operation that has not finished (run by the
// writer): nothing of it applies from now on, even after a restart.
func (s *Service) settleNow(id string, begun bool, reason string) (Settlement, write, error) {
	st := Settlement{JobID: id, Begun: begun, At: time.Now().UTC(), Reason: reason}
	data, err := json.Marshal(st)
	if err != nil {
		return Settlement{}, write{}, err
	}
	s.forgetBegin(id)
	s.settled[id] = &settledOp{st: st, at: time.Now()}
	s.log.Debug().Str("job", id).Bool("begun", begun).Str("reason", reason).Msg("settled: nothing of it will apply")
	return st, write{key: settledKey(id), data: data, expires: true}, nil
}
