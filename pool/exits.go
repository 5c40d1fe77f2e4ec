package pool

import (
	"context"
	"slices"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/serverpool"
)

// exitLoop takes the workers of a process that exited as gone at once,
// when the Launcher sees its processes exit (serverpool.ExitWatcher):
// their jobs are settled, their threads given back and the hosts filled
// again without waiting for their missed heartbeats.
func (p *Pool) exitLoop(ctx context.Context, w serverpool.ExitWatcher) {
	exits := w.Exits()
	for {
		select {
		case <-ctx.Done():
			return
		case pid := <-exits:
			p.processExited(ctx, pid)
		}
	}
}

// processExited marks the workers whose registry entry names pid, on this
// machine, as gone, and launches them again (see relaunch.go). A process
// of another machine may have the same pid.
func (p *Pool) processExited(ctx context.Context, pid int) {
	here := broker.MachineID()
	p.mu.Lock()
	var ids []string
	for id, ws := range p.workers {
		if ws.entry.PID == pid && ws.entry.Machine == here {
			ids = append(ids, id)
		}
	}
	gone := p.exitedLocked(ids)
	again := p.relaunchLocked(ctx, gone, "")
	p.mu.Unlock()
	if len(gone) > 0 {
		p.log.Warn().Int("pid", pid).Strs("workers", gone).Msg("worker process exited: its workers are gone")
		p.relaunchAll(ctx, again)
		p.sweepNow()
	}
}

// exitedLocked takes the current instances of the workers ids as gone at
// once, as if their process had exited, and names those that were not
// already.
func (p *Pool) exitedLocked(ids []string) []string {
	var gone []string
	for _, id := range ids {
		if ws := p.workers[id]; ws != nil && ws.entry.Instance != "" && ws.exited != ws.entry.Instance {
			ws.exited = ws.entry.Instance
			gone = append(gone, id)
		}
	}
	return gone
}

// adoptedExitCheck is how often the pool looks at the pids of the worker
// processes of its machine: a process it did not launch (adopted after a
// restart of the pool, or started by hand) is not its child, and the
// launcher does not see it exit. Found only once its beat was late, such
// a process was taken for gone 1.6 to 2.6 s after a kill -9 in the chaos
// test, and the batches dispatched to it meanwhile were lost.
const adoptedExitCheck = 100 * time.Millisecond

// adoptedExitLoop takes the workers of a worker process of this machine
// whose pid has exited as gone within adoptedExitCheck, whoever launched
// it (one the launcher started is usually seen by exitLoop first). It
// reads the processes from the registry every localRefresh, and looks at
// up to pidsPerCheck of them per check, in turn: a machine with thousands
// of worker processes has each looked at every few seconds, not every
// one ten times a second, and the pool's lock is not held for the walk
// of every worker so often.
func (p *Pool) adoptedExitLoop(ctx context.Context, pc pidChecker) {
	t := time.NewTicker(adoptedExitCheck)
	defer t.Stop()
	var (
		procs []localProcess
		next  int
		read  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(read) >= localRefresh {
				procs, read = p.localProcesses(), now
			}
		}
		for range min(len(procs), pidsPerCheck) {
			next %= len(procs)
			pr := procs[next]
			next++
			if !slices.ContainsFunc(pr.pids, func(pid int) bool { return !pc.Exited(pid) }) {
				p.processGone(ctx, pr.name, pr.pids...)
			}
		}
	}
}

// localRefresh is how often adoptedExitLoop reads the worker processes of
// this machine from the registry; pidsPerCheck, how many it looks at per
// check.
const (
	localRefresh = time.Second
	pidsPerCheck = 64
)

// localProcess is a worker process of this machine: its name, and the
// pids its workers' entries give (one, but for a name reused).
type localProcess struct {
	name string
	pids []int
}

// localProcesses are the worker processes whose live workers all run on
// this machine (see broker.MachineID), with the pids of their live
// workers: a process of another machine may have the same name, or parts
// of its entry may come from there, and the pid of each means nothing
// here. One part of an entry is written by one process: the first live
// worker of each says where and which.
func (p *Pool) localProcesses() []localProcess {
	here := broker.MachineID()
	if here == "" {
		return nil
	}
	now := time.Now()
	pids := make(map[string][]int)
	remote := make(map[string]bool)
	p.mu.Lock()
	for key, ids := range p.processWorkers {
		name := processOfKey(key)
		for id := range ids {
			ws := p.workers[id]
			if ws == nil || !p.aliveLocked(ws, now) {
				continue
			}
			if ws.entry.Machine != here || ws.entry.PID <= 0 {
				remote[name] = true
			} else if !slices.Contains(pids[name], ws.entry.PID) {
				pids[name] = append(pids[name], ws.entry.PID)
			}
			break
		}
	}
	p.mu.Unlock()
	procs := make([]localProcess, 0, len(pids))
	for name, ps := range pids {
		if !remote[name] {
			procs = append(procs, localProcess{name: name, pids: ps})
		}
	}
	return procs
}
