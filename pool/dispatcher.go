package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
)

// The pool's request/reply API, a NATS micro service ("nats micro ls").
const (
	ServiceName     = "hvmind-pool"
	SubjectDispatch = "hvmind.pool.dispatch" // one job
	SubjectBatch    = "hvmind.pool.batch"    // a JSON array, placed whole or refused whole
	SubjectStatus   = "hvmind.pool.status"
	SubjectCancel   = "hvmind.pool.cancel" // {"id": …} or {"batch": …}
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

func (p *Pool) startService() error {
	svc, err := broker.AddService(p.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "HVMind thread pool: places time-scheduled jobs on workers",
	},
		broker.Endpoint{Name: "dispatch", Subject: SubjectDispatch, Handler: p.handleDispatch(false)},
		broker.Endpoint{Name: "batch", Subject: SubjectBatch, Handler: p.handleDispatch(true)},
		broker.Endpoint{Name: "status", Subject: SubjectStatus, Handler: p.handleStatus},
		broker.Endpoint{Name: "cancel", Subject: SubjectCancel, Handler: p.handleCancel},
	)
	if err != nil {
		return err
	}
	p.svc = svc
	return nil
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
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.opts.SpawnWait+15*time.Second)
			defer cancel()
			placed, err := p.dispatch(ctx, jobs, batch)
			if err != nil {
				respondError(rt, err)
				return
			}
			_ = rt.RespondJSON(DispatchReply{Placed: placed})
		}()
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

func respondError(req responder, err error) {
	body := ErrorReply{Error: err.Error(), Code: "internal"}
	status := "500"
	switch {
	case errors.Is(err, ErrInvalidJob):
		body.Code, status = "invalid", "400"
	case errors.Is(err, ErrUnknownTask):
		body.Code, status = "unknown_task", "400"
	case errors.Is(err, ErrDuplicateID):
		body.Code, status = "duplicate", "409"
	case errors.Is(err, ErrNoCapacity):
		body.Code, status = "capacity", "503"
	case errors.Is(err, ErrNotFound):
		body.Code, status = "not_found", "404"
	}
	var pe *PlaceError
	if errors.As(err, &pe) {
		i := pe.Index
		body.Index, body.ID = &i, pe.ID
	}
	data, _ := json.Marshal(body)
	_ = req.Error(status, err.Error(), data)
}

// Status is the pool's state as reported by the status endpoint.
type Status struct {
	Workers      []WorkerStatus       `json:"workers"`
	JobsInFlight int                  `json:"jobs_in_flight"`
	Accepted     int64                `json:"accepted"`
	Ended        map[job.Status]int64 `json:"ended"`
	Drift        Drift                `json:"drift"`
	Time         time.Time            `json:"time"`
	// ThreadsBusy and ThreadsTotal are over the live workers, now;
	// Utilisation is the busy share (%) at each of the last samples, one
	// per heartbeat, oldest first.
	ThreadsBusy  int       `json:"threads_busy"`
	ThreadsTotal int       `json:"threads_total"`
	Utilisation  []float64 `json:"utilisation_pct"`
	// InFlightByTarget counts the jobs in flight per target (their first
	// argument), for the tasks that have one: a batcher that restarts waits
	// for its batches still in flight.
	InFlightByTarget map[string]int `json:"in_flight_by_target,omitempty"`
	// Hosts are the world's hosts with root and RAM, when there is a world.
	Hosts []serverpool.Host `json:"hosts,omitempty"`
}

// WorkerStatus is one worker in Status.
type WorkerStatus struct {
	broker.WorkerEntry
	Alive bool `json:"alive"`
	// Reserved is the threads reserved on the worker now.
	Reserved int `json:"reserved"`
	// InFlight is the pool's count of jobs placed on it without a record.
	InFlight int `json:"in_flight"`
	// LastDriftUS is the start drift of its latest scheduled job.
	LastDriftUS float64 `json:"last_drift_us"`
}

// Status reports the pool's current state.
func (p *Pool) Status() Status {
	counts, drift, per := p.stats.snapshot()
	now := time.Now()
	nowMs := job.Millis(now)
	p.mu.Lock()
	inflightPer := map[string]int{}
	byTarget := map[string]int{}
	for _, in := range p.jobs {
		inflightPer[in.worker]++
		if t, ok := in.job.StringArg(0); ok {
			byTarget[t]++
		}
	}
	st := Status{JobsInFlight: len(p.jobs), Accepted: p.stats.accepted.Load(), Ended: counts, Drift: drift, Time: now,
		Utilisation: append([]float64(nil), p.util...), InFlightByTarget: byTarget}
	for id, ws := range p.workers {
		alive := p.aliveLocked(ws, now)
		if alive {
			st.ThreadsBusy += ws.entry.Busy
			st.ThreadsTotal += ws.entry.Threads
		}
		if !alive && inflightPer[id] == 0 {
			continue
		}
		st.Workers = append(st.Workers, WorkerStatus{
			WorkerEntry: ws.entry, Alive: alive, Reserved: ws.tl.UsedAt(nowMs),
			InFlight: inflightPer[id], LastDriftUS: per[id],
		})
	}
	p.mu.Unlock()
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].ID < st.Workers[j].ID })
	if p.opts.Servers != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st.Hosts, _ = p.opts.Servers.Hosts(ctx)
		cancel()
		sort.Slice(st.Hosts, func(i, j int) bool { return st.Hosts[i].Name < st.Hosts[j].Name })
	}
	return st
}

func (p *Pool) handleStatus(req micro.Request) { _ = req.RespondJSON(p.Status()) }

func (p *Pool) handleCancel(req micro.Request) {
	var cr CancelRequest
	if err := json.Unmarshal(req.Data(), &cr); err != nil || (cr.ID == "" && cr.Batch == "") {
		respondError(req, fmt.Errorf("%w: cancel wants {\"id\": …} or {\"batch\": …}", ErrInvalidJob))
		return
	}
	rt := asyncResponder{broker.ReplyLater(p.nc, req)}
	go func() {
		ids, err := p.Cancel(context.Background(), cr)
		if err != nil {
			respondError(rt, err)
			return
		}
		_ = rt.RespondJSON(CancelReply{Cancelled: ids})
	}()
}

// Cancel ends a job, or every job of a batch, that has not ended: the pool
// asks the job's worker to cancel it (through the worker's own queue, so it
// is not lost if the worker is restarting), or records it cancelled itself
// when the worker is gone.
func (p *Pool) Cancel(ctx context.Context, cr CancelRequest) ([]string, error) {
	if cr.Reason == "" {
		cr.Reason = "cancelled on request"
	}
	type target struct {
		in    inflight
		alive bool
	}
	var targets []target
	now := time.Now()
	p.mu.Lock()
	for id, in := range p.jobs {
		if id == cr.ID || (cr.Batch != "" && in.job.Batch == cr.Batch) {
			ws := p.workers[in.worker]
			targets = append(targets, target{in: *in, alive: ws != nil && p.aliveLocked(ws, now)})
		}
	}
	p.mu.Unlock()
	if len(targets) == 0 {
		what := "job " + cr.ID
		if cr.ID == "" {
			what = "batch " + cr.Batch
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	// A live worker is asked to cancel. For a gone one the cancel is queued
	// all the same, for when it comes back, and then the pool stores the
	// record itself: in that order, a job recorded cancelled cannot run.
	// Once no job in its message waits, the message is taken out of the
	// worker's queue.
	var ids []string
	seqs := map[uint64]bool{} // messages of cancelled jobs of gone workers
	for _, t := range targets {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.askCancel(cctx, &t.in, cr.Reason)
		if err == nil && !t.alive {
			j := t.in.job
			j.Status, j.Reason = job.StatusCancelled, cr.Reason
			if err = p.storeRecord(cctx, &j, t.in.worker); err == nil && t.in.seq != 0 {
				p.mu.Lock()
				if in := p.jobs[j.ID]; in != nil {
					in.seq = 0 // the record is on its way to the collector
				}
				p.mu.Unlock()
				seqs[t.in.seq] = true
			}
		}
		cancel()
		if err != nil {
			return ids, fmt.Errorf("cancel job %s: %w", t.in.job.ID, err)
		}
		ids = append(ids, t.in.job.ID)
	}
	// The cancels stay: a worker only presumed gone (its heartbeats late)
	// may hold the message already, and acknowledges a cancel for a job it
	// does not know.
	p.deleteUnneeded(ctx, seqs)
	sort.Strings(ids)
	return ids, nil
}

// askCancel queues a cancel for a job on its worker's subject.
func (p *Pool) askCancel(ctx context.Context, in *inflight, reason string) error {
	m := nats.NewMsg(broker.JobsSubject(in.worker))
	m.Header.Set(broker.HeaderCancel, in.job.ID)
	m.Header.Set(jetstream.MsgIDHeader, "cancel-"+in.job.ID)
	m.Data = []byte(reason)
	_, err := p.res.JS.PublishMsg(ctx, m)
	return err
}
