package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
)

// canLaunch reports whether the pool may start workers when jobs need them.
func (p *Pool) canLaunch() bool {
	return p.opts.Spawn && (p.opts.Launcher != nil || (p.opts.Servers != nil && p.opts.Servers.CanDeploy()))
}

// nextWorkerIDLocked returns "<host>-<n>" for the smallest n not in use.
func (p *Pool) nextWorkerIDLocked(host string) string {
	for n := 1; ; n++ {
		id := job.WorkerIDFor(host) + "-" + strconv.Itoa(n)
		if _, used := p.workers[id]; !used {
			return id
		}
	}
}

// rememberLaunchLocked notes the process the pool launches worker id in,
// when its Launcher says (serverpool.ProcessNamer): that process's, and
// no other's, is the id (see callout.claim).
func (p *Pool) rememberLaunchLocked(id string) {
	namer, ok := p.opts.Launcher.(serverpool.ProcessNamer)
	if !ok {
		return
	}
	if p.launchedProcs == nil {
		p.launchedProcs = map[string]string{}
	}
	p.launchedProcs[id] = namer.ProcessOf(id)
}

// launchFor starts a worker that can take a job of threads (on a host of
// at least minCores cores) and waits until it has registered: on the host
// the server pool chooses when there is a capacity provider, else locally
// on the pool's host.
func (p *Pool) launchFor(ctx context.Context, threads, minCores int) (string, error) {
	if p.opts.Servers == nil || !p.opts.Servers.CanDeploy() {
		return p.launchOn(ctx, p.opts.Host, max(p.opts.Threads, threads), false)
	}
	var err error
	for range 3 { // another dispatch may take the chosen host's threads first
		var host serverpool.Host
		var size int
		host, size, err = p.opts.Servers.PlanCores(ctx, threads, minCores)
		if errors.Is(err, serverpool.ErrUnavailable) && p.opts.Launcher != nil {
			// No provider answers: a local worker, as without a server pool.
			return p.launchOn(ctx, p.opts.Host, max(p.opts.Threads, threads), false)
		}
		if err != nil {
			return "", err
		}
		var id string
		id, err = p.launchOn(ctx, host.Name, size, true)
		if !errors.Is(err, serverpool.ErrNoRoom) {
			return id, err
		}
	}
	return "", err
}

// launchLargest starts a worker of all the free threads of the host with
// the most (among those with at least minCores cores), for a job to be
// split over several workers.
func (p *Pool) launchLargest(ctx context.Context, minCores int) (string, error) {
	if p.opts.Servers == nil || !p.opts.Servers.CanDeploy() {
		return "", serverpool.ErrNoHost
	}
	h, err := p.opts.Servers.LargestCores(ctx, minCores)
	if err != nil {
		return "", err
	}
	if h.FreeThreads == 0 {
		return "", fmt.Errorf("%w: every host's threads are held", serverpool.ErrNoHost)
	}
	return p.launchOn(ctx, h.Name, h.FreeThreads, true)
}

func (p *Pool) launchOn(ctx context.Context, host string, threads int, deploy bool) (string, error) {
	return p.launchWorker(ctx, host, threads, deploy, true)
}

// launchWorker starts a worker on host (deploy: reserving its threads with
// the capacity provider) and waits until it has registered. An on-demand worker is stopped
// when it has been idle for IdleStop.
func (p *Pool) launchWorker(ctx context.Context, host string, threads int, deploy, onDemand bool) (string, error) {
	p.mu.Lock()
	id := p.nextWorkerIDLocked(host)
	ws := p.newWorkerState(id, 0)
	ws.launched = time.Now()
	p.workers[id] = ws
	p.rememberLaunchLocked(id)
	p.order = nil
	p.mu.Unlock()
	spec := broker.WorkerSpec{ID: id, Host: host, Threads: threads, OnDemand: onDemand}
	var err error
	if deploy {
		err = p.opts.Servers.Deploy(ctx, spec)
	} else {
		err = p.opts.Launcher.Launch(ctx, spec)
	}
	if err != nil {
		p.forgetLaunch(id)
		if !errors.Is(err, serverpool.ErrNoRoom) {
			p.warnOnce("launch", func(e *zerolog.Event) *zerolog.Event { return e.Err(err) },
				"cannot launch workers; jobs that do not fit the running workers will be refused")
		}
		return "", err
	}
	return id, p.waitRegistered(ctx, id)
}

func (p *Pool) waitRegistered(ctx context.Context, id string) error {
	deadline := time.NewTimer(p.opts.SpawnWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		ws := p.workers[id]
		ok := ws != nil && p.aliveLocked(ws, time.Now())
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			p.forgetLaunch(id)
			return fmt.Errorf("worker %s did not register within %s", id, p.opts.SpawnWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Pool) forgetLaunch(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ws := p.workers[id]; ws != nil && ws.seen.IsZero() && ws.tl.Len() == 0 {
		delete(p.workers, id)
		p.order = nil
	}
}

// localLoop launches again, every ledgerEvery heartbeats, the local
// workers that are gone (killed, or left because the broker lost their
// queue).
func (p *Pool) localLoop(ctx context.Context) {
	t := time.NewTicker(ledgerEvery * p.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.keepLocalWorkers(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn().Err(err).Msg("launching local workers again")
		}
	}
}

// checkLocalFit warns when the local workers offer more threads than the
// capacity provider says their host holds: they hold no reservation, and
// a task that holds the host's capacity while it runs fails beyond it (on
// a new game, home holds 4 threads of 1.75 GB).
func (p *Pool) checkLocalFit(ctx context.Context) {
	if p.opts.Workers <= 0 || p.opts.Servers == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	hosts, err := p.opts.Servers.Hosts(cctx)
	if err != nil {
		return
	}
	offered := p.opts.Workers * p.opts.Threads
	for _, h := range hosts {
		if h.Name == p.opts.Host && offered > h.MaxThreads {
			p.log.Warn().Str("host", h.Name).Int("offered", offered).Int("host_threads", h.MaxThreads).
				Msgf("the local workers offer %d threads on %s, where the capacity provider counts %d: tasks that hold the host's capacity while they run (the world's hack, grow and weaken) fail beyond that; lower --workers or --threads",
					offered, h.Name, h.MaxThreads)
		}
	}
}

// keepLocalWorkers launches the configured local workers that are not
// already running: <host>-1 … <host>-N. They hold no reservation and are
// never stopped for idleness.
func (p *Pool) keepLocalWorkers(ctx context.Context) error {
	if p.opts.Workers <= 0 {
		return nil
	}
	if p.opts.Launcher == nil {
		return serverpool.ErrNoLauncher
	}
	var missing []string
	p.mu.Lock()
	now := time.Now()
	for n := 1; n <= p.opts.Workers; n++ {
		id := job.WorkerIDFor(p.opts.Host) + "-" + strconv.Itoa(n)
		if ws := p.workers[id]; ws != nil && (p.aliveLocked(ws, now) || (!ws.launched.IsZero() && now.Sub(ws.launched) < p.opts.SpawnWait)) {
			continue // alive, or being launched (again, see relaunch.go)
		}
		missing = append(missing, id)
		ws := p.workers[id]
		if ws == nil {
			ws = p.newWorkerState(id, 0)
			p.workers[id] = ws
			p.order = nil
		}
		ws.launched = now
		p.rememberLaunchLocked(id)
	}
	p.mu.Unlock()
	sort.Strings(missing)
	errs := make(chan error, len(missing))
	for _, id := range missing {
		go func() {
			spec := broker.WorkerSpec{ID: id, Host: p.opts.Host, Threads: p.opts.Threads}
			if err := p.opts.Launcher.Launch(ctx, spec); err != nil {
				p.forgetLaunch(id)
				errs <- err
				return
			}
			errs <- p.waitRegistered(ctx, id)
		}()
	}
	var msgs []string
	for range missing {
		if err := <-errs; err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "; "))
	}
	return nil
}

// requestStop asks a worker, through its own queue, to stop gracefully.
func (p *Pool) requestStop(ctx context.Context, id, reason string) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := p.res.JS.PublishMsg(cctx, stopMsg(id, reason))
	return err
}

// stopMsg is the message on a worker's queue that asks it to stop.
func stopMsg(id, reason string) *nats.Msg {
	m := nats.NewMsg(broker.JobsSubject(id))
	m.Header.Set(broker.HeaderStop, reason)
	m.Header.Set(jetstream.MsgIDHeader, "stop-"+id+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	return m
}

// closedTimer is a channel that is always ready: a deadline already past.
var closedTimer = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// stopLaunched stops workers a refused dispatch launched: a refused batch
// leaves no idle worker behind. The pool stops placing on them first.
func (p *Pool) stopLaunched(ctx context.Context, ids []string) {
	for _, id := range ids {
		p.mu.Lock()
		ws := p.workers[id]
		// Another dispatch may have placed on it meanwhile: then it stays.
		unused := ws != nil && ws.tl.Len() == 0
		if unused {
			ws.stopping, ws.stopAsked = true, true
		}
		p.mu.Unlock()
		if !unused {
			continue
		}
		if err := p.requestStop(ctx, id, "launched for a dispatch that was refused"); err != nil {
			p.log.Warn().Err(err).Str("worker", id).Msg("stopping a worker launched for a refused dispatch")
		}
	}
}

// stopAllWorkers asks every live worker to stop: they finish what runs and
// keep what is queued for their next start.
func (p *Pool) stopAllWorkers() {
	now := time.Now()
	var ids []string
	p.mu.Lock()
	for id, ws := range p.workers {
		if p.aliveLocked(ws, now) {
			ids = append(ids, id)
			ws.stopAsked = true
		}
	}
	p.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	const reason = "the pool stopped"
	// The workers in worker processes: one request to each process.
	stopped := p.stopThroughProcesses(ids, reason)
	rest := make([]string, 0, len(ids)-len(stopped))
	for _, id := range ids {
		if !stopped[id] {
			rest = append(rest, id)
		}
	}
	// The others, a stop message on each one's queue: all at once, then
	// the acks (one by one, 1,000 workers took seconds).
	acks := make([]jetstream.PubAckFuture, len(rest))
	for i, id := range rest {
		f, err := p.res.JS.PublishMsgAsync(stopMsg(id, reason))
		if err != nil {
			p.log.Warn().Err(err).Str("worker", id).Msg("stopping a worker")
			continue
		}
		acks[i] = f
	}
	timeout := time.After(5 * time.Second)
	for i, f := range acks {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.log.Warn().Err(err).Str("worker", rest[i]).Msg("stopping a worker")
		case <-timeout:
			p.log.Warn().Str("worker", rest[i]).Msg("stopping a worker: the broker did not confirm within 5 s")
			timeout = closedTimer
		}
	}
	p.log.Info().Int("workers", len(ids)).Msg("asked the workers to stop")
	// They leave the registry once their running jobs have ended and their
	// threads are given back: the caller may then stop what they give
	// them back to (the capacity provider).
	deadline := time.Now().Add(p.opts.StopWait)
	for {
		p.mu.Lock()
		left := 0
		for _, id := range ids {
			if ws := p.workers[id]; ws != nil && p.aliveLocked(ws, time.Now()) {
				left++
			}
		}
		p.mu.Unlock()
		if left == 0 {
			p.log.Info().Int("workers", len(ids)).Msg("the workers have stopped")
			return
		}
		if time.Now().After(deadline) {
			p.log.Warn().Int("workers", left).Dur("waited", p.opts.StopWait).Msg("workers still running after the pool's stop wait")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopThroughProcesses asks each worker process that runs some of ids to
// stop them, all processes at once, and returns the workers they stopped.
// A process that does not answer within a second leaves its workers to
// the stop messages.
func (p *Pool) stopThroughProcesses(ids []string, reason string) map[string]bool {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	byProcess := map[string][]string{}
	p.mu.Lock()
	for key, workers := range p.processWorkers {
		process := processOfKey(key)
		for id := range workers {
			if want[id] {
				byProcess[process] = append(byProcess[process], id)
			}
		}
	}
	p.mu.Unlock()
	stopped := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for process, workers := range byProcess {
		wg.Go(func() {
			data, _ := json.Marshal(broker.StopRequest{Workers: workers, Reason: reason})
			msg, err := p.nc.Request(broker.ProcessSubject(process, "stop"), data, time.Second)
			var reply broker.StopReply
			if err == nil && msg.Header.Get(micro.ErrorHeader) == "" {
				err = json.Unmarshal(msg.Data, &reply)
			} else if err == nil {
				err = errors.New(msg.Header.Get(micro.ErrorHeader))
			}
			if err != nil {
				p.log.Debug().Err(err).Str("process", process).Msg("stopping a worker process's workers; stop messages instead")
				return
			}
			mu.Lock()
			for _, id := range reply.Stopped {
				stopped[id] = true
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return stopped
}

// stopIdle stops workers launched on demand that have had nothing reserved
// for IdleStop, so that their threads go back to the hosts. The pool stops
// placing on a worker before asking it to stop (through its own queue, so
// the request is durable), so no job can slip in between.
func (p *Pool) stopIdle(ctx context.Context) {
	if p.opts.IdleStop <= 0 {
		return
	}
	now := time.Now()
	var idle []string
	p.mu.Lock()
	for id, ws := range p.workers {
		if !ws.entry.OnDemand || ws.stopping || !p.aliveLocked(ws, now) {
			continue
		}
		if ws.tl.Len() > 0 || ws.entry.Busy > 0 || ws.entry.Queued > 0 {
			ws.idleSince = time.Time{}
			continue
		}
		if ws.idleSince.IsZero() {
			ws.idleSince = now
			continue
		}
		if now.Sub(ws.idleSince) >= p.opts.IdleStop {
			ws.stopping, ws.stopAsked = true, true
			idle = append(idle, id)
		}
	}
	p.mu.Unlock()
	for _, id := range idle {
		if err := p.requestStop(ctx, id, "idle for "+p.opts.IdleStop.String()); err != nil {
			p.log.Warn().Err(err).Str("worker", id).Msg("stopping an idle worker")
			p.mu.Lock()
			if ws := p.workers[id]; ws != nil {
				ws.stopping = false
			}
			p.mu.Unlock()
			continue
		}
		p.log.Info().Str("worker", id).Dur("idle", p.opts.IdleStop).Msg("stopping an idle worker launched on demand")
	}
}
