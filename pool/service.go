package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// The pool's request/reply API, a NATS micro service ("nats micro ls").
const (
	ServiceName     = "hvmind-pool"
	SubjectDispatch = "hvmind.pool.dispatch" // one job
	SubjectBatch    = "hvmind.pool.batch"    // a JSON array, placed whole or refused whole
	SubjectStatus   = "hvmind.pool.status"
	SubjectCancel   = "hvmind.pool.cancel" // {"id": …} or {"batch": …}
	// SubjectCapacity answers what a job could get: CapacityRequest →
	// CapacityReply.
	SubjectCapacity = "hvmind.pool.capacity"
)

// Version is reported by the pool's micro service.
const Version = "0.1.0"

// DispatchReply is the pool's answer to a dispatch: where each job went, in
// the order they were sent. (The caller has the jobs; echoing them back
// would double the bytes of every dispatch.)
type DispatchReply struct {
	Placed []Placed `json:"placed"`
}

// Placed is one accepted job: its id, batch and worker, and the window
// reserved for it (Unix epoch ms).
type Placed struct {
	ID     string  `json:"id"`
	Batch  string  `json:"batch,omitempty"`
	Worker string  `json:"worker"`
	Start  float64 `json:"start"`
	End    float64 `json:"end"`
	// Threads are the job's (or part's) threads.
	Threads int `json:"threads"`
	// Part is set when a job was split over several workers: this entry is
	// one part of the job Part.Of.
	Part *PartOf `json:"part,omitempty"`
}

// ErrorReply is the body of an error answer.
type ErrorReply struct {
	Error string `json:"error"`
	// Index and ID name the job at fault, when one is.
	Index *int   `json:"index,omitempty"`
	ID    string `json:"id,omitempty"`
	// Code is a short machine-readable kind: invalid, capacity, unknown_task,
	// duplicate, not_found, internal.
	Code string `json:"code"`
}

// CancelRequest names a job or a batch to cancel.
type CancelRequest struct {
	ID     string `json:"id,omitempty"`
	Batch  string `json:"batch,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// CancelReply lists the jobs a cancel reached.
type CancelReply struct {
	Cancelled []string `json:"cancelled"`
}

// requestTimeout bounds the work of one request beyond waiting for
// launched workers.
const requestTimeout = 15 * time.Second

// startService starts the pool's micro service. Its handlers parse a
// request and answer at once, or hand the rest (placing, publishing,
// waiting for JetStream) to a goroutine of the run (see goRequest), so
// that the next request is read meanwhile.
func (p *Pool) startService() error {
	svc, err := broker.AddService(p.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "HVMind thread pool: places time-scheduled jobs on workers",
	},
		broker.Endpoint{Name: "dispatch", Subject: SubjectDispatch, Handler: p.handleDispatch(false), Description: "place one job on a worker; its record comes on hvmind.done.<worker>"},
		broker.Endpoint{Name: "batch", Subject: SubjectBatch, Handler: p.handleDispatch(true), Description: "place a batch of jobs whole, or refuse it whole"},
		broker.Endpoint{Name: "status", Subject: SubjectStatus, Handler: p.handleStatus, Description: "workers, threads busy, jobs in flight, start drift, placement latency"},
		broker.Endpoint{Name: "cancel", Subject: SubjectCancel, Handler: p.handleCancel, Description: "cancel a job, or every job of a batch, not yet ended"},
		broker.Endpoint{Name: "capacity", Subject: SubjectCapacity, Handler: p.handleCapacity, Description: "the largest job one worker could take over a window, and the threads free"},
	)
	if err != nil {
		return err
	}
	p.svc = svc
	return nil
}

// stopService stops taking requests, lets the ones in progress finish for
// up to requestGrace, then cancels them (cancel ends their context) and
// waits until they have ended.
func (p *Pool) stopService(cancel context.CancelFunc) {
	if p.svc != nil {
		_ = p.svc.Stop()
	}
	p.reqMu.Lock()
	p.reqClosed = true
	p.reqMu.Unlock()
	done := make(chan struct{})
	go func() {
		p.requests.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(requestGrace):
		cancel()
		<-done
	}
}

// goRequest runs fn on a goroutine the run owns, with a context derived
// from the run's that ends after timeout. It answers ErrStopping instead
// once the pool is stopping.
func (p *Pool) goRequest(rt asyncResponder, timeout time.Duration, fn func(ctx context.Context)) {
	p.reqMu.Lock()
	if p.reqClosed {
		p.reqMu.Unlock()
		respondError(rt, ErrStopping)
		return
	}
	p.requests.Add(1)
	p.reqMu.Unlock()
	go func() {
		defer p.requests.Done()
		ctx, cancel := context.WithTimeout(p.runCtx, timeout)
		defer cancel()
		fn(ctx)
	}()
}

func (p *Pool) handleDispatch(batch bool) micro.HandlerFunc {
	return func(req micro.Request) {
		var jobs []job.Job
		var err error
		if batch {
			jobs, err = job.ParseMany(req.Data())
			if err == nil && len(req.Data()) > 0 && firstNonSpace(req.Data()) != '[' {
				err = fmt.Errorf("%w: a batch is a JSON array of jobs", job.ErrMalformed)
			}
		} else {
			var j job.Job
			j, err = job.Parse(req.Data())
			jobs = []job.Job{j}
		}
		if err != nil {
			respondError(req, fmt.Errorf("%w: %w", ErrInvalidJob, err))
			return
		}
		// Placement is serialised inside dispatch; publishing and waiting for
		// JetStream run concurrently with the next request.
		rt := asyncResponder{broker.ReplyLater(p.nc, req)}
		p.goRequest(rt, p.opts.SpawnWait+requestTimeout, func(ctx context.Context) {
			// A copy of a request (its answer was lost) gets the first
			// one's outcome: its jobs are placed once.
			o, first := p.replays.start(req.Headers().Get(HeaderRequestID), time.Now())
			if first {
				o.finish(p.dispatch(ctx, jobs, batch))
			}
			select {
			case <-o.done:
			case <-ctx.Done():
				respondError(rt, fmt.Errorf("the first copy of this request is still being placed: %w", ctx.Err()))
				return
			}
			if o.err != nil {
				respondError(rt, o.err)
				return
			}
			_ = rt.RespondJSON(DispatchReply{Placed: o.placed})
		})
	}
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		if c != ' ' && c != '\n' && c != '\t' && c != '\r' {
			return c
		}
	}
	return 0
}

func (p *Pool) handleStatus(req micro.Request) {
	rt := asyncResponder{broker.ReplyLater(p.nc, req)}
	p.goRequest(rt, requestTimeout, func(ctx context.Context) { _ = rt.RespondJSON(p.Status(ctx)) })
}

// handleCapacity answers at once: a capacity question reads the
// timelines under the placement's lock, in microseconds.
func (p *Pool) handleCapacity(req micro.Request) {
	var cr CapacityRequest
	if data := req.Data(); len(data) > 0 {
		if err := json.Unmarshal(data, &cr); err != nil {
			respondError(req, fmt.Errorf("%w: a capacity request is {\"start\": ms, \"duration\": ms, …}: %v", ErrInvalidJob, err))
			return
		}
	}
	reply, err := p.Capacity(cr)
	if err != nil {
		respondError(req, err)
		return
	}
	_ = req.RespondJSON(reply)
}

func (p *Pool) handleCancel(req micro.Request) {
	var cr CancelRequest
	if err := json.Unmarshal(req.Data(), &cr); err != nil || (cr.ID == "" && cr.Batch == "") {
		respondError(req, fmt.Errorf("%w: cancel wants {\"id\": …} or {\"batch\": …}", ErrInvalidJob))
		return
	}
	rt := asyncResponder{broker.ReplyLater(p.nc, req)}
	p.goRequest(rt, requestTimeout, func(ctx context.Context) {
		ids, err := p.Cancel(ctx, cr)
		if err != nil {
			respondError(rt, err)
			return
		}
		_ = rt.RespondJSON(CancelReply{Cancelled: ids})
	})
}

// responder is how an answer is sent: micro.Request in a handler,
// broker.AsyncReply from another goroutine.
type responder interface {
	Error(code, description string, data []byte, opts ...micro.RespondOpt) error
}

// asyncResponder adapts broker.AsyncReply to responder.
type asyncResponder struct{ broker.AsyncReply }

func (r asyncResponder) Error(code, description string, data []byte, _ ...micro.RespondOpt) error {
	return r.AsyncReply.Error(code, description, data)
}

func (r asyncResponder) RespondJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.Respond(data)
}

// errorCodes maps the sentinels to ErrorReply codes and micro statuses;
// the client maps the codes back (RemoteError.Is).
var errorCodes = []struct {
	err          error
	code, status string
}{
	{ErrInvalidJob, "invalid", "400"},
	{ErrUnknownTask, "unknown_task", "400"},
	{ErrDuplicateID, "duplicate", "409"},
	{ErrNoCapacity, "capacity", "503"},
	{ErrNotFound, "not_found", "404"},
	{ErrStopping, "stopping", "503"},
}

func respondError(req responder, err error) {
	body := ErrorReply{Error: err.Error(), Code: "internal"}
	status := "500"
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			body.Code, status = c.code, c.status
			break
		}
	}
	var pe *PlaceError
	if errors.As(err, &pe) {
		i := pe.Index
		body.Index, body.ID = &i, pe.ID
	}
	data, _ := json.Marshal(body)
	_ = req.Error(status, err.Error(), data)
}
