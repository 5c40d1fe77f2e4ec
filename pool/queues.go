package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// The pool keeps the queues of workers with identities of their own (see
// Options.Identities): such a worker may not create consumers, whose
// delivery subject the broker does not check against its permissions, so
// it asks the pool, on its own subjects, to make its queue again
// (SubjectWorkerQueue) and which of its queued jobs have records
// (SubjectWorkerRecorded). NewQueueKeeper is that worker's side.

// SubjectFollow is where a client asks the pool for a consumer of the
// records (FollowRequest → FollowReply): clients make none of their own
// (see Client.followConsumer).
const SubjectFollow = "hvmind.pool.follow"

// FollowRequest asks for a consumer of every record stored since Since
// (epoch ms).
type FollowRequest struct {
	Since float64 `json:"since"`
}

// FollowReply names the consumer made, on broker.StreamDone: pulled by
// the client, its records acknowledged (one for all before it), gone a
// minute after its last pull.
type FollowReply struct {
	Consumer string `json:"consumer"`
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
}

// SubjectWorkerPrefix starts the subjects a worker asks the pool on for
// itself: hvmind.pool.worker.<worker>.queue and .recorded.
const SubjectWorkerPrefix = "hvmind.pool.worker."

// WorkerQueueSubject is the subject on which worker asks the pool to make
// its queue again; WorkerRecordedSubject, for the ids of its jobs with
// records.
func WorkerQueueSubject(worker string) string    { return SubjectWorkerPrefix + worker + ".queue" }
func WorkerRecordedSubject(worker string) string { return SubjectWorkerPrefix + worker + ".recorded" }

// QueueRequest is a worker's queue request: Token names the reset (one per
// start of the worker), so that one sent again is done once.
type QueueRequest struct {
	Token string `json:"token,omitempty"`
}

// QueueReply answers a worker's queue request.
type QueueReply struct {
	// PrevDelivered is how far the worker's previous consumer had
	// delivered (0: it had none).
	PrevDelivered uint64 `json:"prevDelivered"`
	Error         string `json:"error,omitempty"`
	// Retry says that asking again may work (broker.ErrTryAgain).
	Retry bool `json:"retry,omitempty"`
}

// RecordedReply answers a worker's records request.
type RecordedReply struct {
	IDs   []string `json:"ids"`
	Error string   `json:"error,omitempty"`
	Retry bool     `json:"retry,omitempty"`
}

// queueKeeperTimeout bounds the pool's broker calls for a worker's queue.
const queueKeeperTimeout = 10 * time.Second

// keeperRequests bounds the workers' queue and records requests the pool
// answers at once; a worker has one at a time.
const keeperRequests = 16

// keeper runs the answers to the workers' requests: at most
// keeperRequests at once, one worker's one after the other (two resets of
// one queue at once would each delete the other's), all ended by stop.
type keeper struct {
	sem chan struct{}
	wg  sync.WaitGroup
	mu  sync.Mutex
	// of is each worker's lock; resets, its last reset (see resetQueue).
	of     map[string]*sync.Mutex
	resets map[string]*reset
}

// reset is a worker's last queue reset, by the token its start sent: a
// request sent again (its answer lost) is answered with what the first
// found, not a second reset, whose previous delivery would be the first's
// new consumer's.
type reset struct {
	token     string
	prev      uint64
	prevKnown bool
	done      bool
}

// run answers m for its worker with answer, after that worker's earlier
// requests.
func (k *keeper) run(m *nats.Msg, answer func(*nats.Msg)) {
	w, _ := askingWorker(m)
	k.mu.Lock()
	l := k.of[w]
	if l == nil {
		l = &sync.Mutex{}
		k.of[w] = l
	}
	k.mu.Unlock()
	k.wg.Go(func() {
		l.Lock()
		defer l.Unlock()
		k.sem <- struct{}{}
		defer func() { <-k.sem }()
		answer(m)
	})
}

// resetOf is worker's last reset for token (a new one for a new token).
func (k *keeper) resetOf(worker, token string) *reset {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.resets[worker]
	if r == nil || r.token != token || token == "" {
		r = &reset{token: token}
		k.resets[worker] = r
	}
	return r
}

// startQueueKeeper answers the workers' queue and records requests.
func (p *Pool) startQueueKeeper() (stop func(), err error) {
	k := &keeper{sem: make(chan struct{}, keeperRequests), of: map[string]*sync.Mutex{}, resets: map[string]*reset{}}
	q, err := p.nc.QueueSubscribe(WorkerQueueSubject("*"), "hvmind-pool", func(m *nats.Msg) {
		k.run(m, func(m *nats.Msg) { p.answerQueue(k, m) })
	})
	if err != nil {
		return nil, fmt.Errorf("queue keeper: %w", err)
	}
	r, err := p.nc.QueueSubscribe(WorkerRecordedSubject("*"), "hvmind-pool", func(m *nats.Msg) { k.run(m, p.answerRecorded) })
	if err != nil {
		_ = q.Unsubscribe()
		return nil, fmt.Errorf("queue keeper: %w", err)
	}
	f, err := p.nc.QueueSubscribe(SubjectFollow, "hvmind-pool", func(m *nats.Msg) {
		k.wg.Go(func() {
			k.sem <- struct{}{}
			defer func() { <-k.sem }()
			p.answerFollow(m)
		})
	})
	if err != nil {
		_ = q.Unsubscribe()
		_ = r.Unsubscribe()
		return nil, fmt.Errorf("queue keeper: %w", err)
	}
	return func() {
		_ = q.Unsubscribe()
		_ = r.Unsubscribe()
		_ = f.Unsubscribe()
		k.wg.Wait()
	}, nil
}

// answerFollow makes a consumer of the records for a client.
func (p *Pool) answerFollow(m *nats.Msg) {
	var req FollowRequest
	var reply FollowReply
	if err := json.Unmarshal(m.Data, &req); err != nil || !(req.Since > 0) {
		reply.Error, reply.Code = fmt.Sprintf("follow: want {\"since\": epoch ms} (%v)", err), "invalid"
		p.respondKeeper(m, reply)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueKeeperTimeout)
	defer cancel()
	name := "client-" + nuid.Next()
	since := time.UnixMicro(int64(req.Since * 1000))
	_, err := p.res.Done.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Name:              name,
		Description:       "a client's follow of the records",
		FilterSubject:     broker.SubjectDone + ">",
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		AckPolicy:         jetstream.AckAllPolicy,
		AckWait:           followAckWait,
		MaxAckPending:     followMaxPending,
		MaxDeliver:        -1,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		reply.Error = "follow: " + err.Error()
		if broker.Unavailable(err) {
			reply.Code = "unavailable"
		}
	} else {
		reply.Consumer = name
	}
	p.respondKeeper(m, reply)
}

// followAckWait is how long a record sent to a client may go unacknowledged
// before it is sent again; followMaxPending, how many may.
const (
	followAckWait    = 5 * time.Second
	followMaxPending = 100_000
)

// askingWorker is the worker whose subject m came on.
func askingWorker(m *nats.Msg) (string, error) {
	rest := strings.TrimPrefix(m.Subject, SubjectWorkerPrefix)
	w, _, _ := strings.Cut(rest, ".")
	if !job.ValidWorkerID(w) {
		return "", fmt.Errorf("%w: worker %q", ErrInvalidJob, w)
	}
	return w, nil
}

func (p *Pool) answerQueue(k *keeper, m *nats.Msg) {
	var req QueueRequest
	_ = json.Unmarshal(m.Data, &req) // an empty request is a reset of its own
	var reply QueueReply
	if w, err := askingWorker(m); err != nil {
		reply.Error = err.Error()
	} else if reply.PrevDelivered, err = p.resetQueue(w, k.resetOf(w, req.Token)); err != nil {
		reply.Error, reply.Retry = err.Error(), broker.Unavailable(err)
	}
	p.respondKeeper(m, reply)
}

// respondKeeper answers a worker's request (a failure is the pool's to
// tell: the worker only sees its request go unanswered).
func (p *Pool) respondKeeper(m *nats.Msg, reply any) {
	data, err := json.Marshal(reply)
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		p.log.Warn().Err(err).Str("subject", m.Subject).Msg("answering a worker about its queue")
	}
}

// resetQueue deletes worker's consumer, if any, and creates it again, once
// per reset r: it answers a reset done already with what it found, and one
// cut short by an error with the previous delivery it had read.
func (p *Pool) resetQueue(worker string, r *reset) (uint64, error) {
	if r.done {
		return r.prev, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueKeeperTimeout)
	defer cancel()
	name := broker.WorkerConsumer(worker)
	c, err := p.res.JobsOf(worker).Consumer(ctx, name)
	switch {
	case err == nil:
		if !r.prevKnown {
			r.prev, r.prevKnown = c.CachedInfo().Delivered.Stream, true
		}
		if err := p.res.JobsOf(worker).DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return 0, fmt.Errorf("reset the queue of %s: %w", worker, err)
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		r.prevKnown = true // none: 0, or what was read before its delete
	default:
		return 0, fmt.Errorf("the queue of %s: %w", worker, err)
	}
	if _, err := p.res.JobsOf(worker).CreateOrUpdateConsumer(ctx, broker.WorkerConsumerConfig(worker)); err != nil {
		return 0, fmt.Errorf("make the queue of %s: %w", worker, err)
	}
	r.done = true
	return r.prev, nil
}

func (p *Pool) answerRecorded(m *nats.Msg) {
	reply := RecordedReply{IDs: []string{}}
	if w, err := askingWorker(m); err != nil {
		reply.Error = err.Error()
	} else if reply.IDs, err = p.recordedIDs(w); err != nil {
		reply.Error, reply.Retry = err.Error(), broker.Unavailable(err)
	}
	p.respondKeeper(m, reply)
}

// recordedIDs are the ids of worker's queued jobs that have a record: the
// jobs of its queued messages (a message stays queued until every job in
// it has a record), against the records stored on its subject since the
// oldest. Only those: a busy worker's records alone would not fit one
// reply.
func (p *Pool) recordedIDs(worker string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queueKeeperTimeout)
	defer cancel()
	queued := map[string]bool{}
	var first time.Time
	for seq := uint64(1); ; {
		m, err := p.res.JobsOf(worker).GetMsg(ctx, seq, jetstream.WithGetMsgSubject(broker.JobsSubject(worker)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the queued jobs of %s: %w", worker, err)
		}
		if first.IsZero() {
			first = m.Time
		}
		if jobs, err := job.ParseMany(m.Data); err == nil {
			for _, j := range jobs {
				queued[j.ID] = true
			}
		}
		seq = m.Sequence + 1
	}
	ids := []string{}
	if len(queued) == 0 {
		return ids, nil
	}
	if _, err := p.res.RecordIDs(ctx, first, broker.DoneSubject(worker), func(id, _ string, _ time.Time) {
		if queued[id] {
			ids = append(ids, id)
			delete(queued, id)
		}
	}); err != nil {
		return nil, fmt.Errorf("the records of %s: %w", worker, err)
	}
	return ids, nil
}

// NewQueueKeeper is a worker's side of the pool's queue keeping: on nc
// (the worker's own connection), it asks the pool on the worker's own
// subjects. A worker.QueueKeeper.
func NewQueueKeeper(nc *nats.Conn) QueueKeeper { return QueueKeeper{nc: nc} }

// QueueKeeper asks the pool for a worker's queue (see NewQueueKeeper).
type QueueKeeper struct{ nc *nats.Conn }

// ResetQueue asks the pool to make worker's queue again, once for token.
func (k QueueKeeper) ResetQueue(ctx context.Context, worker, token string) (uint64, error) {
	data, err := json.Marshal(QueueRequest{Token: token})
	if err != nil {
		return 0, err
	}
	var r QueueReply
	if err := k.ask(ctx, WorkerQueueSubject(worker), data, &r, &r.Error, &r.Retry); err != nil {
		return 0, err
	}
	return r.PrevDelivered, nil
}

// RecordedIDs asks the pool which of worker's queued jobs have records.
func (k QueueKeeper) RecordedIDs(ctx context.Context, worker string) ([]string, error) {
	var r RecordedReply
	if err := k.ask(ctx, WorkerRecordedSubject(worker), nil, &r, &r.Error, &r.Retry); err != nil {
		return nil, err
	}
	return r.IDs, nil
}

func (k QueueKeeper) ask(ctx context.Context, subject string, data []byte, out any, errText *string, retry *bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, queueKeeperTimeout+time.Second)
		defer cancel()
	}
	msg, err := k.nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w: no pool answers on %s", nats.ErrNoResponders, subject)
	}
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	switch {
	case *errText != "" && *retry:
		return fmt.Errorf("%w: %s", broker.ErrTryAgain, *errText)
	case *errText != "":
		return errors.New(*errText)
	}
	return nil
}
