package pool

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
)

// A worker process that dies takes its workers with it, but not what
// their jobs started outside it: an operation in another service runs on
// until it ends, and the worker's next process takes it up
// (worker.Resumer) from the jobs still queued for it, along with the jobs
// that have yet to start. So the pool launches the workers of a process it
// launched, once that process has exited or lost its connection, again:
// under the same ids, on the same hosts, with the same threads and the
// reservations they held (kept meanwhile). It does not settle their jobs
// while it waits for them, nor fill their hosts with new workers. Before,
// the new workers had new ids: every job in flight was settled, and every
// job queued on the old ids waited for a sweep.
//
// Not launched again: a worker the pool asked to stop, one whose process
// the pool's Launcher would not start (started by hand, or by another
// launcher), and one that died relaunchLimit times within relaunchWindow (a crash loop).
// Their jobs are settled as those of any gone worker.

// relaunchLimit bounds the relaunches of one worker within relaunchWindow:
// a worker whose process dies as it starts, again and again, is taken as
// gone. The window is short: a process killed now and then (the chaos
// test kills one every few seconds) is launched again each time.
const (
	relaunchLimit  = 3
	relaunchWindow = 10 * time.Second
)

// relaunchParallel is how many workers the pool launches again at once:
// each launch is a request to the worker process, then a wait for the
// worker's first beat.
const relaunchParallel = 32

// relaunch is a worker to launch again.
type relaunch struct {
	spec broker.WorkerSpec
	// deploy: through the server pool, which holds its reservation (kept
	// while it was gone, so that reserving it again changes nothing).
	deploy bool
}

// relaunchLocked marks those of the workers ids (just taken as gone, their
// process named process, "" when unknown) that the pool launches again as
// launched, and returns them.
func (p *Pool) relaunchLocked(ctx context.Context, ids []string, process string) []relaunch {
	namer, ok := p.opts.Launcher.(serverpool.ProcessNamer)
	if !ok || ctx.Err() != nil {
		return nil
	}
	now := time.Now()
	var out []relaunch
	for _, id := range ids {
		ws := p.workers[id]
		if ws == nil || ws.stopAsked || ws.entry.Host == "" || ws.entry.Threads <= 0 {
			continue
		}
		// Only into the process the pool launched it in, or would: an
		// exit seen (process "") is of a process this pool launched.
		proc, launched := p.launchedProcs[id]
		if !launched {
			proc = namer.ProcessOf(id)
		}
		if (process == "" && !launched) || (process != "" && proc != process) {
			continue
		}
		recent := ws.relaunches[:0]
		for _, at := range ws.relaunches {
			if now.Sub(at) < relaunchWindow {
				recent = append(recent, at)
			}
		}
		ws.relaunches = recent
		if len(recent) >= relaunchLimit {
			p.log.Warn().Str("worker", id).Int("relaunches", len(recent)).Dur("within", relaunchWindow).
				Msg("the worker's process keeps dying: it is not launched again, and its jobs are settled")
			continue
		}
		r := relaunch{spec: broker.WorkerSpec{ID: id, Host: ws.entry.Host, Threads: ws.entry.Threads, OnDemand: ws.entry.OnDemand}}
		switch {
		case p.localWorkerLocked(id):
			r.spec.Threads = p.opts.Threads
		case p.opts.Servers != nil && p.opts.Servers.CanDeploy():
			r.deploy = true
		}
		ws.relaunches = append(ws.relaunches, now)
		ws.launched = now
		p.rememberLaunchLocked(id)
		out = append(out, r)
	}
	return out
}

// localWorkerLocked reports whether id is one of the local workers
// (Options.Workers): <host>-1 … <host>-N, which hold no reservation.
func (p *Pool) localWorkerLocked(id string) bool {
	n, ok := strings.CutPrefix(id, job.WorkerIDFor(p.opts.Host)+"-")
	if !ok || p.opts.Workers <= 0 {
		return false
	}
	i, err := strconv.Atoi(n)
	return err == nil && i >= 1 && i <= p.opts.Workers
}

// relaunchAll launches rs again, a few at a time, in a goroutine that Run
// waits for. A worker that cannot be launched, or does not register
// within SpawnWait, is gone: its jobs are settled.
func (p *Pool) relaunchAll(ctx context.Context, rs []relaunch) {
	if len(rs) == 0 {
		return
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.spec.ID
	}
	p.log.Warn().Strs("workers", ids).Msg("launching the workers of a process that died again, under the same ids: they take up their jobs")
	p.relaunching.Go(func() {
		slots := make(chan struct{}, relaunchParallel)
		var wg sync.WaitGroup
		for _, r := range rs {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				p.relaunchOne(ctx, r)
			})
		}
		wg.Wait()
	})
}

// relaunchOne launches one worker again and waits until it has registered.
func (p *Pool) relaunchOne(ctx context.Context, r relaunch) {
	id := r.spec.ID
	var err error
	if r.deploy {
		err = p.opts.Servers.Deploy(ctx, r.spec)
	} else {
		err = p.opts.Launcher.Launch(ctx, r.spec)
	}
	if err == nil {
		err = p.waitRegistered(ctx, id)
	}
	if err == nil {
		return
	}
	p.mu.Lock()
	if ws := p.workers[id]; ws != nil && !p.aliveLocked(ws, time.Now()) {
		ws.launched = time.Time{}
	}
	p.mu.Unlock()
	if ctx.Err() == nil {
		p.log.Warn().Err(err).Str("worker", id).Msg("launching a worker again failed: it is gone, and its jobs are settled")
		p.sweepNow()
	}
}
