package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool/timeline"
)

// watchStartTimeout bounds one try to start the watch of the registry.
const watchStartTimeout = 2 * time.Second

// watchRegistry follows the worker registry bucket. ready is closed once the
// current entries have been read.
func (p *Pool) watchRegistry(ctx context.Context, ready chan<- struct{}) {
	once := false
	for ctx.Err() == nil {
		// Each try to start is bounded: on a cluster that lost the
		// registry's leader, one waited 10 s while a new leader answered.
		// Only the start: the watch lives as long as its context, and
		// ends with it.
		wctx, endWatch := context.WithCancel(ctx)
		tooLong := time.AfterFunc(watchStartTimeout, endWatch)
		w, err := p.res.Workers.WatchAll(wctx)
		if !tooLong.Stop() && err == nil {
			_ = w.Stop()
			err = fmt.Errorf("no watch within %s", watchStartTimeout)
		}
		if err != nil {
			endWatch()
			p.log.Warn().Err(err).Msg("watch worker registry; retrying")
			time.Sleep(250 * time.Millisecond)
			continue
		}
		initial := true // the entries there were when the watch began
	updates:
		for {
			select {
			case up, ok := <-w.Updates():
				if !ok {
					break updates
				}
				if up == nil {
					initial = false
					if !once {
						once = true
						close(ready)
					}
					continue
				}
				p.applyRegistry(up, initial)
			case <-p.rewatch:
				p.log.Warn().Msg("the watch of the worker registry lags behind it; watching it again")
				break updates
			}
		}
		_ = w.Stop()
		endWatch()
	}
}

// applyRegistry applies a registry entry: a heartbeat just now, or, for
// one of the entries there were when the watch began (initial), one as
// old as the broker says it is.
func (p *Pool) applyRegistry(up jetstream.KeyValueEntry, initial bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rev := up.Revision(); rev > p.watchRev.Load() {
		p.watchRev.Store(rev)
	}
	// A watch that begins (the pool's start, a restarted watch) delivers
	// every entry, those of workers killed long ago too: such an entry's
	// beat is when the broker stored it, not now. Taking them all as
	// beats just now placed jobs on dead workers for seconds (the chaos
	// test: a prep wave on the workers of a killed process, twice, 21 s
	// without income). Later entries are beats now: the broker's clock
	// and the pool's may differ.
	now := time.Now()
	seen := now
	if initial {
		if c := up.Created(); !c.IsZero() && c.Before(now) {
			seen = c
		}
	}
	gone := up.Operation() == jetstream.KeyValueDelete || up.Operation() == jetstream.KeyValuePurge
	if process, ok := strings.CutPrefix(up.Key(), broker.ProcessKeyPrefix); ok {
		var pe broker.ProcessEntry
		if !gone {
			if err := json.Unmarshal(up.Value(), &pe); err != nil {
				p.log.Warn().Err(err).Str("process", process).Msg("unreadable registry entry")
				return
			}
		}
		p.applyProcessLocked(process, pe.Workers, seen)
		return
	}
	id := up.Key()
	if gone {
		p.leftLocked(id, id)
		return
	}
	var e broker.WorkerEntry
	if err := json.Unmarshal(up.Value(), &e); err != nil {
		p.log.Warn().Err(err).Str("worker", id).Msg("unreadable registry entry")
		return
	}
	p.applyEntryLocked(e, seen)
}

// leftLocked takes a worker that deregistered as gone.
func (p *Pool) leftLocked(id, process string) {
	if ws := p.workers[id]; ws != nil && !ws.seen.IsZero() {
		ws.seen = time.Time{}
		p.log.Info().Str("worker", id).Msg("worker left")
		p.announceLocked(ws, "left")
		if p.callout != nil {
			// Its id may go to another process, if it was this one's.
			p.callout.forget(id, process) // (its lock is never held while taking p.mu)
		}
	}
}

// applyProcessLocked applies a worker process's entry: a beat of each of
// its workers, and the departure of those it no longer holds (none, when
// the entry was deleted).
func (p *Pool) applyProcessLocked(process string, workers []broker.WorkerEntry, seen time.Time) {
	now := make(map[string]bool, len(workers))
	for _, e := range workers {
		if !job.ValidWorkerID(e.ID) {
			continue
		}
		now[e.ID] = true
		p.applyEntryLocked(e, seen)
	}
	for id := range p.processWorkers[process] {
		if !now[id] {
			p.leftLocked(id, process)
		}
	}
	if len(now) == 0 {
		delete(p.processWorkers, process)
		return
	}
	p.processWorkers[process] = now
}

// applyEntryLocked applies a worker's entry, beaten at seen.
func (p *Pool) applyEntryLocked(e broker.WorkerEntry, seen time.Time) {
	id := e.ID
	ws := p.workers[id]
	if ws == nil {
		ws = p.newWorkerState(id, e.Threads)
		p.workers[id] = ws
		p.order = nil
	}
	wasAlive := p.aliveLocked(ws, time.Now())
	if ws.tl.Capacity() != e.Threads {
		ws.tl.SetCapacity(e.Threads)
		p.order = nil
	}
	if !sameTasks(ws.tasks, e.Tasks) {
		ws.tasks = make(map[string]bool, len(e.Tasks))
		for _, t := range e.Tasks {
			ws.tasks[t] = true
		}
	}
	// A stopping worker beats on until its running jobs are recorded: it
	// is alive, and takes no new job. A new process of the id starts anew.
	if ws.entry.Instance != e.Instance {
		ws.stopping = false
	}
	ws.stopping = ws.stopping || e.Stopping
	ws.entry = e
	now := time.Now()
	if seen.After(ws.seen) {
		ws.seen = seen
	}
	if !p.aliveLocked(ws, now) {
		return // an old entry: nothing more of it is news
	}
	ws.released = false
	ws.tidied = false
	ws.launched = time.Time{}
	if !wasAlive {
		p.log.Info().Str("worker", id).Str("host", e.Host).Int("threads", e.Threads).Msg("worker joined")
		p.announceLocked(ws, "joined")
	}
}

// WorkerEvent is what the pool publishes on hvmind.workers.<worker> when
// a worker joins (its first beat, or its first after it left) or leaves
// (it deregistered, its process exited, or its beats stopped): the
// fleet's changes, for whoever watches hvmind.>. The beats themselves
// stay in the registry bucket (nats kv watch hvmind_workers).
type WorkerEvent struct {
	Event   string `json:"event"` // "joined" or "left"
	Worker  string `json:"worker"`
	Host    string `json:"host,omitempty"`
	Threads int    `json:"threads,omitempty"`
}

// announceLocked publishes a worker's joining or leaving, once each way;
// the pool's connection buffers it, and nobody need be listening.
func (p *Pool) announceLocked(ws *workerState, event string) {
	joined := event == "joined"
	if ws.announced == joined {
		return
	}
	ws.announced = joined
	data, err := json.Marshal(WorkerEvent{Event: event, Worker: ws.entry.ID, Host: ws.entry.Host, Threads: ws.entry.Threads})
	if err == nil {
		_ = p.nc.Publish(broker.SubjectWorkers+ws.entry.ID, data)
	}
}

// sameTasks reports whether set holds exactly the tasks of list (a worker
// restarted with other handlers changes them, perhaps not their number).
func sameTasks(set map[string]bool, list []string) bool {
	if len(set) != len(list) {
		return false
	}
	for _, t := range list {
		if !set[t] {
			return false
		}
	}
	return true
}

func (p *Pool) newWorkerState(id string, capacity int) *workerState {
	ws := &workerState{tl: timeline.New(capacity), all: p.all}
	ws.entry.ID = id
	return ws
}

// aliveLocked reports whether a worker's heartbeats are current, judged by
// its own heartbeat interval.
func (p *Pool) aliveLocked(ws *workerState, now time.Time) bool {
	beat := ws.entry.Heartbeat
	if beat <= 0 {
		beat = p.opts.Heartbeat
	}
	return !ws.seen.IsZero() && ws.exited != ws.entry.Instance &&
		now.Sub(ws.seen) < missedBeats*beat+p.stall.allowance(ws.seen, now)
}

// serves reports whether the worker runs the task.
func (ws *workerState) serves(task string) bool { return ws.tasks[task] }

// orderLocked is the workers sorted by capacity, then id.
func (p *Pool) orderLocked() []*workerState {
	if p.order != nil && len(p.order) == len(p.workers) {
		return p.order
	}
	p.order = make([]*workerState, 0, len(p.workers))
	for _, ws := range p.workers {
		p.order = append(p.order, ws)
	}
	sort.Slice(p.order, func(i, j int) bool {
		a, b := p.order[i], p.order[j]
		if a.tl.Capacity() != b.tl.Capacity() {
			return a.tl.Capacity() < b.tl.Capacity()
		}
		return a.entry.ID < b.entry.ID
	})
	return p.order
}

// announceSilentLocked tells of the workers whose beats stopped (or whose
// process exited) as having left.
func (p *Pool) announceSilentLocked(now time.Time) {
	for _, ws := range p.workers {
		if ws.announced && !p.aliveLocked(ws, now) {
			p.announceLocked(ws, "left")
		}
	}
}
