package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// RemoteError is an error answer from the pool.
type RemoteError struct {
	ErrorReply
	// Status is the micro service status code (400, 409, 503…).
	Status string
}

func (e *RemoteError) Error() string { return e.ErrorReply.Error }

// Is lets errors.Is match a remote error against the pool's sentinels.
func (e *RemoteError) Is(target error) bool {
	for _, c := range errorCodes {
		if c.err == target {
			return e.Code == c.code
		}
	}
	return false
}

// As lets errors.As find a *PlaceError in a refusal that names the job at
// fault, as the pool's own dispatch returns it.
func (e *RemoteError) As(target any) bool {
	pe, ok := target.(**PlaceError)
	if !ok || e.Index == nil {
		return false
	}
	msg := strings.TrimPrefix(e.ErrorReply.Error, fmt.Sprintf("job %d (%s): ", *e.Index, e.ID))
	*pe = &PlaceError{Index: *e.Index, ID: e.ID, Err: &RemoteError{ErrorReply: ErrorReply{Error: msg, Code: e.Code}, Status: e.Status}}
	return true
}

// Client dispatches jobs to a pool and follows their completion records.
// It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	timeout time.Duration

	// followMu guards cc and closed: the records are followed from the
	// first dispatch on; a failed start is tried again by the next one.
	followMu sync.Mutex
	cc       jetstream.ConsumeContext
	closed   bool
	// ccGen numbers cc among the follows started (followGen); checking
	// is set while a check of the follow's consumer is under way.
	ccGen     int64
	followGen atomic.Int64
	checking  atomic.Bool

	mu      sync.Mutex
	waiting map[string]*Dispatch
	// lastSeen is the storage time of the latest record routed (Unix ns).
	lastSeen atomic.Int64
	// ackMu guards the last record routed and not acknowledged yet, how
	// many are, and the timer that will.
	ackMu    sync.Mutex
	unacked  jetstream.Msg
	nUnacked int
	ackTimer *time.Timer
}

// NewClient returns a client on an open connection.
func NewClient(nc *nats.Conn) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("pool client: %w", err)
	}
	return &Client{nc: nc, js: js, timeout: 30 * time.Second, waiting: map[string]*Dispatch{}}, nil
}

// ErrClientClosed is the error of a dispatch on a closed Client.
var ErrClientClosed = errors.New("the pool client is closed")

// Close stops following records; the client dispatches no more.
func (c *Client) Close() {
	c.followMu.Lock()
	c.closed = true
	if c.cc != nil {
		c.cc.Stop()
		c.cc = nil
	}
	c.followMu.Unlock()
	c.ackMu.Lock()
	if c.ackTimer != nil {
		c.ackTimer.Stop()
		c.ackTimer = nil
	}
	c.ackLocked()
	c.ackMu.Unlock()
}

// follow starts, once, a consumer of every completion record from now on,
// routing records to the dispatches waiting for them. The pool makes the
// consumer (see followConsumer); if it cannot (no pool yet), the next
// dispatch tries again. The consumer is made outside the lock; of two made
// at once, one is kept, and a record the other routed first is routed
// once all the same (route forgets a waiter once served). A consumer the
// broker lost (a restart on a new store) is made again, from the last
// record routed.
func (c *Client) follow(ctx context.Context) error {
	c.followMu.Lock()
	closed, following := c.closed, c.cc != nil
	c.followMu.Unlock()
	switch {
	case closed:
		return ErrClientClosed
	case following:
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	since := time.Now().Add(-time.Second)
	if last := c.lastSeen.Load(); last > 0 {
		// Following again: from before the last record routed, by more
		// than a record may wait to be sent again (one lost on its way
		// when the consumer was lost); a record routed again is dropped,
		// its dispatch no longer waiting.
		since = time.Unix(0, last).Add(-refollowOverlap)
	} else {
		c.lastSeen.CompareAndSwap(0, since.UnixNano()) // a refollow before any record starts here
	}
	cons, err := c.followConsumer(cctx, since)
	if err != nil {
		return fmt.Errorf("follow records: %w", err)
	}
	gen := c.followGen.Add(1)
	// Short pulls with a heartbeat a second: a pull lost with a broker
	// restart is noticed (two missed heartbeats) in seconds. With the
	// defaults (30 s pulls, 5 s heartbeats) a batcher saw no record for
	// 17 s after a broker kill, then dropped its batches all at once.
	cc, err := cons.Consume(c.routeAck, jetstream.PullMaxMessages(4096),
		jetstream.PullExpiry(followExpiry), jetstream.PullHeartbeat(followHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				c.refollow(gen)
				return
			}
			// Missed heartbeats, a reconnect: the broker may have lost
			// the consumer (it is kept in memory), which the pulls alone
			// do not always say.
			c.checkFollow(gen, cons)
		}))
	if err != nil {
		return fmt.Errorf("follow records: %w", err)
	}
	c.followMu.Lock()
	defer c.followMu.Unlock()
	switch {
	case c.closed:
		cc.Stop()
		return ErrClientClosed
	case c.cc != nil:
		cc.Stop()
	default:
		c.cc, c.ccGen = cc, gen
		// Stopped for any reason but the client's (a refollow takes it
		// out first): follow again, or every later dispatch would wait.
		go func() {
			<-cc.Closed()
			c.refollow(gen)
		}()
	}
	return nil
}

// followConsumer asks the pool for a consumer of every record stored since
// since, and binds to it. The client makes none itself: the broker does
// not check a consumer's delivery subject against its maker's
// permissions, so a role allowed to make consumers of the records could
// have them delivered anywhere, a worker's queue included (see
// deploy/nats/hvmind-roles.conf). It asks again, in short tries, while
// an answer is lost or the pool cannot make it yet.
func (c *Client) followConsumer(ctx context.Context, since time.Time) (jetstream.Consumer, error) {
	data, err := json.Marshal(FollowRequest{Since: float64(since.UnixNano()) / 1e6})
	if err != nil {
		return nil, err
	}
	for {
		tctx, tcancel := context.WithTimeout(ctx, resendAfter)
		var reply []byte
		reply, err = c.request(tctx, SubjectFollow, data)
		tcancel()
		if err == nil {
			var fr FollowReply
			if err = json.Unmarshal(reply, &fr); err != nil {
				return nil, fmt.Errorf("%s: %w", SubjectFollow, err)
			}
			if fr.Error == "" {
				return c.js.Consumer(ctx, broker.StreamDone, fr.Consumer)
			}
			err = errors.New(fr.Error)
			if fr.Code == "unavailable" {
				err = fmt.Errorf("%w: %s", broker.ErrTryAgain, fr.Error)
			}
		}
		// Asked again when the answer was lost or the pool could not
		// make it yet; no pool at all is the caller's to hear at once.
		if ctx.Err() != nil || errors.Is(err, nats.ErrNoResponders) || !broker.Unavailable(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// refollow drops the follow gen, whose consumer the broker lost, and
// starts another, trying until it does or the client closes.
func (c *Client) refollow(gen int64) {
	c.followMu.Lock()
	lost := c.cc
	if lost == nil || c.ccGen != gen || c.closed {
		c.followMu.Unlock()
		return
	}
	c.cc = nil
	c.followMu.Unlock()
	go func() {
		lost.Stop()
		for wait := 100 * time.Millisecond; !c.nc.IsClosed(); wait = min(2*wait, 2*time.Second) {
			err := c.follow(context.Background())
			if err == nil || errors.Is(err, ErrClientClosed) {
				return
			}
			time.Sleep(wait)
		}
	}()
}

// checkFollow makes the follow gen again if its consumer is gone; one
// check at a time.
func (c *Client) checkFollow(gen int64, cons jetstream.Consumer) {
	if !c.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.checking.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), resendAfter)
		defer cancel()
		if _, err := cons.Info(ctx); errors.Is(err, jetstream.ErrConsumerNotFound) {
			c.refollow(gen)
		}
	}()
}

// routeAck routes a record and acknowledges it with the records after it,
// within followAckDelay (the pool's consumer wants them acknowledged: one
// lost on its way comes again).
func (c *Client) routeAck(msg jetstream.Msg) {
	if meta, err := msg.Metadata(); err == nil {
		for {
			last := c.lastSeen.Load()
			if t := meta.Timestamp.UnixNano(); t <= last || c.lastSeen.CompareAndSwap(last, t) {
				break
			}
		}
	}
	c.route(msg)
	// One acknowledgement for many records: the consumer takes one as
	// all before it (AckAll). Acknowledging each record cost the
	// dispatch bench 7% of its jobs a second.
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	c.unacked = msg
	if c.nUnacked++; c.nUnacked >= followAckEvery {
		c.ackLocked()
		return
	}
	if c.ackTimer == nil {
		c.ackTimer = time.AfterFunc(followAckDelay, func() {
			c.ackMu.Lock()
			defer c.ackMu.Unlock()
			c.ackTimer = nil
			c.ackLocked()
		})
	}
}

// ackLocked acknowledges the last record routed, and with it every one
// before it; ackMu is held.
func (c *Client) ackLocked() {
	if c.unacked != nil {
		_ = c.unacked.Ack()
	}
	c.unacked, c.nUnacked = nil, 0
}

// followAckEvery and followAckDelay bound how many records, and for how
// long, go unacknowledged (well within the consumer's followAckWait).
const (
	followAckEvery = 256
	followAckDelay = 50 * time.Millisecond
)

// refollowOverlap is how far before the last record routed a follow made
// again starts.
const refollowOverlap = 10 * time.Second

// followExpiry and followHeartbeat are the pulls of the client's follow of
// the records.
const (
	followExpiry    = 5 * time.Second
	followHeartbeat = time.Second
)

func (c *Client) route(msg jetstream.Msg) {
	j, err := job.Parse(msg.Data())
	if err != nil {
		return
	}
	c.mu.Lock()
	d := c.waiting[j.ID]
	if d != nil && !d.placedOn(j.ID, msg.Subject()) {
		c.mu.Unlock()
		return // stored on another worker's subject: not its record
	}
	if d != nil {
		delete(c.waiting, j.ID)
		c.mu.Unlock()
		d.deliver(j)
		return
	}
	var po PartOf
	raw, isPart := j.Get("part")
	if !isPart || json.Unmarshal(raw, &po) != nil || c.waiting[po.Of] == nil {
		c.mu.Unlock()
		return
	}
	d = c.waiting[po.Of]
	if !d.placedOn(j.ID, msg.Subject()) {
		c.mu.Unlock()
		return
	}
	if d.parts == nil {
		d.parts = map[string][]job.Job{}
	}
	for _, got := range d.parts[po.Of] {
		if got.ID == j.ID {
			c.mu.Unlock()
			return // a part's record again (sent again, or read again)
		}
	}
	d.parts[po.Of] = append(d.parts[po.Of], j)
	if len(d.parts[po.Of]) < po.Count {
		c.mu.Unlock()
		return
	}
	partRecs := d.parts[po.Of]
	delete(d.parts, po.Of)
	delete(c.waiting, po.Of)
	c.mu.Unlock()
	d.deliver(MergeParts(po.Of, partRecs))
}

// MergeParts makes one record of the records of a split job's parts: the
// job's threads are their sum, it started when the first part started and
// ended when the last ended, its status is done only if every part's was,
// and the part records are kept whole under "parts".
func MergeParts(id string, partRecs []job.Job) job.Job {
	sort.Slice(partRecs, func(a, b int) bool { return partRecs[a].ID < partRecs[b].ID })
	m := partRecs[0]
	m.ID, m.Threads, m.Result, m.Error = id, 0, nil, ""
	m.Extra = nil
	for _, f := range partRecs[0].Extra {
		if f.Key != "part" {
			m.Extra = append(m.Extra, f)
		}
	}
	m.Status, m.Reason = job.StatusDone, ""
	for _, r := range partRecs {
		m.Threads += r.Threads
		if r.ActualStartTime != 0 && (m.ActualStartTime == 0 || r.ActualStartTime < m.ActualStartTime) {
			m.ActualStartTime = r.ActualStartTime
		}
		m.ActualEndTime = max(m.ActualEndTime, r.ActualEndTime)
		if r.Status != job.StatusDone && m.Status == job.StatusDone {
			m.Status, m.Reason = r.Status, "part "+r.ID+": "+r.Reason
		}
	}
	parts, err := job.EncodeMany(partRecs)
	if err == nil {
		m.Set("parts", parts)
	}
	return m
}

// Dispatch follows the jobs of one dispatch until each has its record.
type Dispatch struct {
	// Jobs are the jobs as the pool placed them (ids, batch, worker).
	Jobs []job.Job
	// Placed says where each job went and the window reserved for it.
	Placed []Placed

	c       *Client
	records chan job.Job
	mu      sync.Mutex
	left    int
	// parts collects the records of split jobs' parts, by job id; guarded
	// by the client's mutex.
	parts map[string][]job.Job
	// workerOf is the worker each job (or part) was placed on, once the
	// pool answered; guarded by the client's mutex.
	workerOf map[string]string
}

// placedOn reports whether a record of job id stored on subject may be its
// record: one of the jobs (or parts) placed, stored on the subject of the
// worker it was placed on (any, until the pool's answer has said where).
// The client's mutex is held.
func (d *Dispatch) placedOn(id, subject string) bool {
	if d.workerOf == nil {
		return true
	}
	w, ok := d.workerOf[id]
	return ok && broker.DoneSubject(w) == subject
}

// Records delivers each job's completion record as it arrives, and is closed
// after the last one.
func (d *Dispatch) Records() <-chan job.Job { return d.records }

func (d *Dispatch) deliver(j job.Job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.left == 0 {
		return
	}
	d.records <- j
	d.left--
	if d.left == 0 {
		close(d.records)
	}
}

// Wait collects every record, in arrival order.
func (d *Dispatch) Wait(ctx context.Context) ([]job.Job, error) {
	out := make([]job.Job, 0, len(d.Jobs))
	for {
		select {
		case j, ok := <-d.records:
			if !ok {
				return out, nil
			}
			out = append(out, j)
		case <-ctx.Done():
			return out, fmt.Errorf("wait for %d records: %w", len(d.Jobs)-len(out), ctx.Err())
		}
	}
}

// Submit places a batch whole, or refuses it whole, without following the
// records: for callers that read hvmind.done.> themselves, or only need the
// placement.
func (c *Client) Submit(ctx context.Context, jobs []job.Job) ([]Placed, error) {
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%w: no jobs", ErrInvalidJob)
	}
	data, err := job.EncodeMany(jobs)
	if err != nil {
		return nil, fmt.Errorf("encode jobs: %w", err)
	}
	reply, err := c.request(ctx, SubjectBatch, data)
	if err != nil {
		return nil, err
	}
	var dr DispatchReply
	if err := json.Unmarshal(reply, &dr); err != nil {
		return nil, fmt.Errorf("dispatch reply: %w", err)
	}
	return dr.Placed, nil
}

// DispatchJob places one job and returns a Dispatch following its record.
func (c *Client) DispatchJob(ctx context.Context, j job.Job) (*Dispatch, error) {
	return c.dispatch(ctx, SubjectDispatch, []job.Job{j})
}

// DispatchJobs places a batch whole, or refuses it whole with the reason.
func (c *Client) DispatchJobs(ctx context.Context, jobs []job.Job) (*Dispatch, error) {
	return c.dispatch(ctx, SubjectBatch, jobs)
}

func (c *Client) dispatch(ctx context.Context, subject string, jobs []job.Job) (*Dispatch, error) {
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%w: no jobs", ErrInvalidJob)
	}
	if err := c.follow(ctx); err != nil {
		return nil, err
	}
	jobs = append([]job.Job(nil), jobs...)
	d := &Dispatch{c: c, records: make(chan job.Job, len(jobs)), left: len(jobs)}
	c.mu.Lock()
	for i := range jobs {
		if jobs[i].ID == "" {
			jobs[i].ID = nuid.Next()
		}
		if _, dup := c.waiting[jobs[i].ID]; !dup {
			c.waiting[jobs[i].ID] = d
		}
	}
	c.mu.Unlock()
	var data []byte
	var err error
	if subject == SubjectDispatch {
		data, err = job.Encode(&jobs[0])
	} else {
		data, err = job.EncodeMany(jobs)
	}
	if err != nil {
		c.forget(jobs, d)
		return nil, fmt.Errorf("encode jobs: %w", err)
	}
	reply, err := c.requestOnce(ctx, subject, data)
	if errors.Is(err, errPlacedEarlier) {
		// Placed, where is not known: the records come all the same.
		d.Jobs = jobs
		return d, nil
	}
	if err != nil {
		c.forget(jobs, d)
		return nil, err
	}
	var dr DispatchReply
	if err := json.Unmarshal(reply, &dr); err != nil || len(dr.Placed) < len(jobs) {
		c.forget(jobs, d)
		return nil, fmt.Errorf("dispatch reply: %d placements for %d jobs: %v", len(dr.Placed), len(jobs), err)
	}
	byID := make(map[string]*job.Job, len(jobs))
	for i := range jobs {
		byID[jobs[i].ID] = &jobs[i]
	}
	for _, pl := range dr.Placed {
		id := pl.ID
		if pl.Part != nil {
			id = pl.Part.Of
		}
		if j := byID[id]; j != nil {
			j.Batch, j.Worker = pl.Batch, pl.Worker
		}
	}
	c.mu.Lock()
	d.workerOf = make(map[string]string, len(dr.Placed))
	for _, pl := range dr.Placed {
		d.workerOf[pl.ID] = pl.Worker
	}
	c.mu.Unlock()
	d.Jobs, d.Placed = jobs, dr.Placed
	return d, nil
}

func (c *Client) forget(jobs []job.Job, d *Dispatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range jobs {
		if c.waiting[j.ID] == d {
			delete(c.waiting, j.ID)
		}
	}
}

// request sends a request to the pool and turns an error answer into a
// RemoteError.
func (c *Client) request(ctx context.Context, subject string, data []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("no pool is running (nothing answers on %s): %w", subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	return remoteReply(msg)
}

// requestAgain sends a request that is safe to repeat, again every
// resendAfter while it is not answered (no pool, or its answer lost to a
// restart), until ctx ends (or the client's timeout).
func (c *Client) requestAgain(ctx context.Context, subject string, data []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	for {
		actx, cancel := context.WithTimeout(ctx, resendAfter)
		reply, err := c.request(actx, subject, data)
		cancel()
		if err == nil || ctx.Err() != nil || !(errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			return reply, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// resendAfter is how long a dispatch waits for its answer before it sends
// the request again (with the same HeaderRequestID): an answer lost to a
// restart of the pool, or of the broker node it was connected to, costs
// that, not the whole timeout.
const resendAfter = 2 * time.Second

// requestOnce sends a dispatch request until it is answered, again every
// resendAfter with the same id, until ctx ends (or the client's timeout,
// when ctx has none). The pool places a request's jobs once whatever the
// copies. Every copy names one reply inbox, so the answer to any of them
// is taken, a late answer to the first included. No pool at the first try
// is an error at once; after that the pool may be restarting, and the
// copies go on.
func (c *Client) requestOnce(ctx context.Context, subject string, data []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	id := nuid.Next()
	for try := 0; ; try++ {
		msg := nats.NewMsg(subject)
		msg.Reply, msg.Data = inbox, data
		msg.Header.Set(HeaderRequestID, id)
		if err := c.nc.PublishMsg(msg); err != nil && !errors.Is(err, nats.ErrReconnectBufExceeded) {
			return nil, fmt.Errorf("request %s: %w", subject, err)
		}
		actx, cancel := context.WithTimeout(ctx, resendAfter)
		reply, err := sub.NextMsgWithContext(actx)
		cancel()
		// The subscription turns the server's no-responders status into
		// ErrNoResponders.
		noPool := errors.Is(err, nats.ErrNoResponders)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, fmt.Errorf("request %s: %w", subject, ctx.Err())
		case err != nil && !noPool:
			continue // unanswered: again
		case noPool:
			if try == 0 {
				return nil, fmt.Errorf("no pool is running (nothing answers on %s): %w", subject, nats.ErrNoResponders)
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("request %s: %w", subject, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		out, err := remoteReply(reply)
		var re *RemoteError
		if try > 0 && errors.As(err, &re) && errors.Is(re, ErrDuplicateID) {
			// A pool restarted since the first copy has no outcome for
			// it, but has its jobs: it was placed.
			return nil, errPlacedEarlier
		}
		return out, err
	}
}

// errPlacedEarlier says that a copy of a dispatch found its jobs placed by
// an earlier copy whose answer was lost.
var errPlacedEarlier = errors.New("placed by an earlier copy of the request")

// remoteReply is a reply's data, or the RemoteError it carries.
func remoteReply(msg *nats.Msg) ([]byte, error) {
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		re := &RemoteError{Status: code}
		if json.Unmarshal(msg.Data, &re.ErrorReply) != nil || re.ErrorReply.Error == "" {
			re.ErrorReply.Error = msg.Header.Get(micro.ErrorHeader)
		}
		return nil, re
	}
	return msg.Data, nil
}

// Status asks the pool for its state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	data, err := c.request(ctx, SubjectStatus, nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("status reply: %w", err)
	}
	return st, nil
}

// Capacity asks the pool what a job over a window could get: the largest
// job one worker could take, and where, and the threads free on all of
// them (see CapacityRequest).
func (c *Client) Capacity(ctx context.Context, r CapacityRequest) (CapacityReply, error) {
	var out CapacityReply
	data, err := json.Marshal(r)
	if err != nil {
		return out, fmt.Errorf("capacity request: %w", err)
	}
	reply, err := c.request(ctx, SubjectCapacity, data)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(reply, &out); err != nil {
		return out, fmt.Errorf("capacity reply: %w", err)
	}
	return out, nil
}

// WaitWorkers waits until the pool sees at least n live workers: a
// program that starts its workers and dispatches at once would find none
// yet (a worker is seen once its first heartbeat is).
func (c *Client) WaitWorkers(ctx context.Context, n int) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := c.Status(ctx)
		if err == nil {
			alive := 0
			for _, w := range st.Workers {
				if w.Alive {
					alive++
				}
			}
			if alive >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("the pool sees fewer than %d live workers", n)
			}
			return fmt.Errorf("wait for %d workers: %w (%w)", n, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Cancel cancels a job or a batch and returns the ids it reached.
func (c *Client) Cancel(ctx context.Context, cr CancelRequest) ([]string, error) {
	data, _ := json.Marshal(cr)
	reply, err := c.requestAgain(ctx, SubjectCancel, data)
	if err != nil {
		return nil, err
	}
	var r CancelReply
	if err := json.Unmarshal(reply, &r); err != nil {
		return nil, fmt.Errorf("cancel reply: %w", err)
	}
	return r.Cancelled, nil
}
