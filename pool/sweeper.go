package pool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// staleAfter is how long after its scheduled end a job is checked against
// the job streams; reservations that ended this long ago are dropped.
const staleAfter = time.Minute

// sweepLoop ends the jobs of workers that have gone (their start passed and
// nobody can run them) and forgets what has ended without the pool seeing
// it.
func (p *Pool) sweepLoop(ctx context.Context) {
	t := time.NewTicker(p.opts.Heartbeat)
	defer t.Stop()
	for beat := 1; ; beat++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.sweepSig:
		}
		// The reservations of gone workers first: new workers can take
		// their threads while their jobs are settled and recorded (a
		// worker process killed with 3,000 jobs in flight was launched
		// again 2.5 s after it died, when all were recorded).
		p.askSilentProcesses(ctx)
		p.releaseGone(ctx)
		p.sweepOrphans(ctx)
		p.sweepStale(ctx)
		if beat%ledgerEvery == 0 {
			p.reconcileLedger(ctx)
			p.tidyGone(ctx)
		}
		p.stopIdle(ctx)
		p.sampleUtilisation()
		p.mu.Lock()
		p.announceSilentLocked(time.Now())
		p.mu.Unlock()
	}
}

// sweepNow asks the sweeper to run now.
func (p *Pool) sweepNow() {
	select {
	case p.sweepSig <- struct{}{}:
	default:
	}
}

// orphanSilence is how long a worker that is still in the registry must
// have been silent before the pool records its past-due jobs missed when
// no Settler can tell what became of them. A worker whose heartbeats are
// only late (a broker restarting, its worker process launched again) may
// be running them, and a record the pool stored would overtake its own:
// the chaos test found operations the world applied recorded "missed:
// worker X was gone". A worker that left the registry is gone at once.
const orphanSilence = 30 * time.Second

// settleSilence is the least silence after which the jobs of a worker
// still in the registry are settled (five heartbeats when that is more).
const settleSilence = 3 * time.Second

// settleTimeout bounds one call of the Settler.
const settleTimeout = 10 * time.Second

// sweepOrphans gives a record to each job whose worker is gone (with a
// Settler, every such job; without, those whose start time has passed),
// and takes its message out of the worker's queue
// once no other job in it is waiting. A worker that comes back with the
// message still queued finds the job's start long passed and does not run
// it.
//
// Who may write a job's record: its worker, for every job it takes; the
// pool, only for a job its worker cannot end. For a job whose task has a
// Settler the pool asks it first, as soon as the worker misses its
// heartbeats: the settler says what became of the job (done, with the
// effect that was applied; failed; missed) and makes sure that nothing of
// it happens after, so the record is the truth even if the worker lives
// on. For any other job the pool can only guess "missed", and does so only
// once the worker has left the registry or been silent for orphanSilence.
func (p *Pool) sweepOrphans(ctx context.Context) {
	now := time.Now()
	nowMs := job.Millis(now)
	var settle, guess []inflight
	var settleLongGone []bool
	p.mu.Lock()
	for _, in := range p.jobs {
		ws := p.workers[in.worker]
		if in.seq == 0 || (ws != nil && (p.aliveLocked(ws, now) || !ws.launched.IsZero())) {
			continue
		}
		due := in.start+float64(p.opts.Tolerance)/1e6 <= nowMs
		longGone := ws == nil || ws.seen.IsZero() || now.Sub(ws.seen) >= orphanSilence
		// Known dead: it left the registry or its process exited. A
		// worker only silent is settled after settleSilence at least:
		// with heartbeats of a fraction of a second, a worker starved of
		// CPU for a second would have its running jobs aborted.
		dead := ws == nil || ws.seen.IsZero() || ws.exited == ws.entry.Instance ||
			now.Sub(ws.seen) >= settleSilence+p.stall.allowance(ws.seen, now)
		switch {
		case p.opts.Settler != nil && !in.unsettled && !dead:
			// not yet
		case p.opts.Settler != nil && !in.unsettled:
			// Settled, a job cannot start later: those not due yet are
			// ended now too, so that their caller hears at once.
			settle, settleLongGone = append(settle, *in), append(settleLongGone, longGone && due)
		case longGone && due:
			guess = append(guess, *in)
		}
	}
	p.mu.Unlock()
	reason := func(in inflight) string { return fmt.Sprintf("worker %s was gone at the job's start time", in.worker) }
	var records []job.Job
	var of []inflight
	if len(settle) > 0 {
		recs, err := p.settle(ctx, settle, "its worker was gone")
		if err != nil {
			p.log.Warn().Err(err).Int("jobs", len(settle)).Msg("settling the jobs of gone workers; trying again at the next sweep")
		}
		for i, rec := range recs {
			in := settle[i]
			if rec.Status != "" {
				records, of = append(records, rec), append(of, in)
				continue
			}
			// A task the settler does not know: a guess, when it is time.
			p.mu.Lock()
			if cur := p.jobs[in.job.ID]; cur != nil {
				cur.unsettled = true
			}
			p.mu.Unlock()
			if settleLongGone[i] {
				guess = append(guess, in)
			}
		}
	}
	for _, in := range guess {
		j := in.job
		j.Status, j.Reason = job.StatusMissed, reason(in)
		records, of = append(records, j), append(of, in)
	}
	seqs := map[broker.QueuedMsg]bool{}
	errs := p.storeRecords(ctx, records, of)
	ended, byStatus, workers := 0, map[job.Status]int{}, map[string]bool{}
	defer func() {
		if ended > 0 {
			ws := make([]string, 0, len(workers))
			for w := range workers {
				ws = append(ws, w)
			}
			sort.Strings(ws)
			ev := p.log.Warn().Int("jobs", ended).Strs("workers", ws)
			for st, n := range byStatus {
				ev = ev.Int(string(st), n)
			}
			ev.Msg("ended the jobs of gone workers")
		}
	}()
	for i := range records {
		j, in, err := &records[i], of[i], errs[i]
		if err != nil {
			p.log.Warn().Err(err).Str("job", j.ID).Msg("ending a job of a gone worker")
			continue
		}
		ended++
		byStatus[j.Status]++
		workers[in.worker] = true
		p.log.Debug().Str("job", j.ID).Str("worker", in.worker).Str("status", string(j.Status)).Msg("ended a job of a gone worker")
		p.mu.Lock()
		if cur := p.jobs[j.ID]; cur != nil {
			cur.seq = 0 // the record is on its way to the collector
		}
		p.mu.Unlock()
		seqs[in.queued()] = true
	}
	p.deleteUnneeded(ctx, seqs)
}

// settle asks the Settler what became of jobs in flight; it returns one
// record per job (no Status: the settler does not know its task), or none
// and an error.
func (p *Pool) settle(ctx context.Context, ins []inflight, reason string) ([]job.Job, error) {
	jobs := make([]job.Job, len(ins))
	for i, in := range ins {
		jobs[i] = in.job
		jobs[i].Worker = in.worker
	}
	sctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	recs, err := p.opts.Settler.Settle(sctx, jobs, reason)
	if err != nil {
		return nil, fmt.Errorf("settle %d jobs: %w", len(jobs), err)
	}
	if len(recs) != len(jobs) {
		return nil, fmt.Errorf("settle %d jobs: the settler answered %d", len(jobs), len(recs))
	}
	return recs, nil
}

// storeRecord stores a record the pool writes itself, for a job its worker
// cannot end. Its message id is the job's, as a worker's record's is: of
// the two, only the first is stored.
func (p *Pool) storeRecord(ctx context.Context, j *job.Job, worker string) error {
	m, err := recordMsg(j, worker)
	if err != nil {
		return err
	}
	_, err = p.res.JS.PublishMsg(ctx, m)
	return err
}

// recordMsg is a record the pool writes, as a message.
func recordMsg(j *job.Job, worker string) (*nats.Msg, error) {
	data, err := job.Encode(j)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(broker.DoneSubject(worker))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, broker.RecordMsgID(worker, j.ID))
	return m, nil
}

// recordsWait bounds how long the records of gone workers' jobs may take
// to be stored, all together.
const recordsWait = 5 * time.Second

// storeRecords stores the records of jobs whose worker is gone, all at
// once (a killed worker process leaves thousands: one at a time, 3,000
// took 1.5 s before the batcher heard its batches had broken), and
// returns each one's error.
func (p *Pool) storeRecords(ctx context.Context, records []job.Job, of []inflight) []error {
	errs := make([]error, len(records))
	acks := make([]jetstream.PubAckFuture, len(records))
	for i := range records {
		m, err := recordMsg(&records[i], of[i].worker)
		if err == nil {
			acks[i], err = p.res.JS.PublishMsgAsync(m)
		}
		errs[i] = err
	}
	deadline := time.NewTimer(recordsWait)
	defer deadline.Stop()
	late := errors.New("store the record: no answer within " + recordsWait.String())
	over := false
	for i, a := range acks {
		if a == nil {
			continue
		}
		if over { // what has not answered yet will not count
			select {
			case <-a.Ok():
			case err := <-a.Err():
				errs[i] = err
			default:
				errs[i] = late
			}
			continue
		}
		select {
		case <-a.Ok():
		case err := <-a.Err():
			errs[i] = err
		case <-deadline.C:
			errs[i], over = late, true
		case <-ctx.Done():
			errs[i], over = ctx.Err(), true
		}
	}
	return errs
}

// deleteUnneeded takes out of the job streams the messages among seqs (of
// gone workers' jobs the pool has ended) that no job in flight still needs:
// every job they carry has ended.
func (p *Pool) deleteUnneeded(ctx context.Context, seqs map[broker.QueuedMsg]bool) {
	if len(seqs) == 0 {
		return
	}
	p.mu.Lock()
	for _, in := range p.jobs {
		delete(seqs, in.queued())
	}
	p.mu.Unlock()
	for q := range seqs {
		if q.Seq == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := p.res.Jobs[q.Stream].DeleteMsg(cctx, q.Seq); err != nil && !gone(err) {
			p.log.Warn().Err(err).Str("stream", broker.JobStreamName(q.Stream)).Uint64("seq", q.Seq).Msg("taking ended jobs out of a gone worker's queue")
		}
		cancel()
	}
}

// utilSamples is how many utilisation samples the pool keeps.
const utilSamples = 60

// sampleUtilisation records the busy share of the live workers' threads.
func (p *Pool) sampleUtilisation() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	busy, total := 0, 0
	for _, ws := range p.workers {
		if p.aliveLocked(ws, now) {
			busy += ws.entry.Busy
			total += ws.entry.Threads
		}
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(busy) / float64(total)
	}
	p.util = append(p.util, pct)
	if len(p.util) > utilSamples {
		p.util = p.util[len(p.util)-utilSamples:]
	}
}

// releaseGone gives back the reservations of workers whose heartbeats have
// stopped: a worker that exits gives its threads back itself, one that is
// killed cannot.
func (p *Pool) releaseGone(ctx context.Context) {
	if p.opts.Servers == nil {
		return
	}
	type gone struct{ id, host string }
	var list []gone
	now := time.Now()
	p.mu.Lock()
	for id, ws := range p.workers {
		// Not one launched again: it holds the same reservation.
		if !ws.seen.IsZero() && !ws.released && ws.entry.Host != "" && !p.aliveLocked(ws, now) && ws.launched.IsZero() {
			list = append(list, gone{id, ws.entry.Host})
		}
	}
	p.mu.Unlock()
	for _, g := range list {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.opts.Servers.Release(cctx, g.host, g.id)
		cancel()
		if err != nil {
			p.log.Debug().Err(err).Str("worker", g.id).Msg("giving back the reservation of a gone worker")
			continue
		}
		p.mu.Lock()
		if ws := p.workers[g.id]; ws != nil && !p.aliveLocked(ws, time.Now()) {
			ws.released = true
		}
		p.mu.Unlock()
		p.log.Info().Str("worker", g.id).Str("host", g.host).Msg("gave back the reservation of a gone worker")
	}
	if len(list) > 0 {
		select { // the threads given back may take new workers
		case p.fillSig <- struct{}{}:
		default:
		}
	}
}

// sweepStale drops old reservations and forgets jobs that left the jobs
// stream long ago without the pool seeing their record.
func (p *Pool) sweepStale(ctx context.Context) {
	cutoff := job.Millis(time.Now().Add(-staleAfter))
	type check struct {
		id string
		q  broker.QueuedMsg
	}
	var checks []check
	p.mu.Lock()
	for _, ws := range p.workers {
		ws.prune(cutoff)
	}
	p.recent.prune(time.Now().Add(-recentWindow - recentSlack))
	for id, in := range p.jobs {
		if in.end < cutoff && in.seq != 0 {
			checks = append(checks, check{id, in.queued()})
		}
	}
	p.mu.Unlock()
	for _, c := range checks {
		gctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		_, err := p.res.Jobs[c.q.Stream].GetMsg(gctx, c.q.Seq)
		cancel()
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		p.mu.Lock()
		if p.endedLocked(c.id) {
			// Its record was stored a while ago, or is about to be.
			p.recent.touch(c.id, time.Now())
		}
		p.mu.Unlock()
	}
}

// ledgerEvery is how many heartbeats pass between two reconciliations of
// the capacity provider's ledger.
const ledgerEvery = 5

// reconcileLedger gives back the threads the provider's ledger says are
// held by owners that are no live worker: workers of an earlier run that
// stopped or died while the provider could not hear them give them back
// (the provider stopped first, a machine was lost). An owner is released
// once it has looked so for missedBeats heartbeats: a worker reserves its
// threads just before its first heartbeat, and a worker launched by this
// pool is waited for.
func (p *Pool) reconcileLedger(ctx context.Context) {
	if p.opts.Servers == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	hosts, err := p.opts.Servers.Ledger(cctx)
	cancel()
	if err != nil {
		p.log.Debug().Err(err).Msg("reading the capacity provider's ledger")
		return
	}
	type holder struct{ host, owner string }
	var release []holder
	now := time.Now()
	settle := missedBeats * p.opts.Heartbeat
	p.mu.Lock()
	seen := make(map[string]bool, len(p.unheld))
	for _, h := range hosts {
		for owner := range h.Held {
			key := h.Name + "/" + owner
			if ws := p.workers[owner]; ws != nil && (p.aliveLocked(ws, now) || !ws.launched.IsZero()) {
				continue
			}
			seen[key] = true
			since, ok := p.unheld[key]
			switch {
			case !ok:
				p.unheld[key] = now
			case now.Sub(since) >= settle:
				release = append(release, holder{h.Name, owner})
			}
		}
	}
	for key := range p.unheld {
		if !seen[key] {
			delete(p.unheld, key)
		}
	}
	p.mu.Unlock()
	for _, r := range release {
		cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		err := p.opts.Servers.Release(cctx, r.host, r.owner)
		cancel()
		if err != nil {
			p.log.Debug().Err(err).Str("worker", r.owner).Msg("giving back a reservation of no live worker")
			continue
		}
		p.mu.Lock()
		delete(p.unheld, r.host+"/"+r.owner)
		p.mu.Unlock()
		p.log.Info().Str("worker", r.owner).Str("host", r.host).Msg("gave back threads held by no live worker")
	}
}

// gone reports whether err says that a message is not there (any more):
// the worker acknowledged it, or a purge took it, meanwhile. nats.go
// gives a failed deletion's broker error as text only, after
// ErrMsgDeleteUnsuccessful: its code is read from there.
func gone(err error) bool {
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return err != nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound ||
			apiErr.ErrorCode == errCodeSequenceNotFound || apiErr.ErrorCode == errCodeDeleteFailed
	}
	if !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return false
	}
	_, after, _ := strings.Cut(err.Error(), "err_code=")
	digits, desc, _ := strings.Cut(after, " ")
	switch code, _ := strconv.Atoi(digits); code {
	case errCodeSequenceNotFound:
		return true
	case errCodeDeleteFailed:
		// Any failure of the store's: only this one says not there.
		return strings.Contains(desc, "no message found")
	}
	return false
}

// nats-server error codes a deletion of a message that is not there gets
// (besides JSErrCodeMessageNotFound), which nats.go has no names for.
const (
	errCodeSequenceNotFound = 10043 // "sequence N not found"
	errCodeDeleteFailed     = 10057 // "message deletion unsuccessful: no message found"
)
