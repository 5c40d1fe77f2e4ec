package pool

import (
	"context"

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

// processExited marks the workers whose registry entry names pid as gone,
// and launches them again (see relaunch.go).
func (p *Pool) processExited(ctx context.Context, pid int) {
	p.mu.Lock()
	var ids []string
	for id, ws := range p.workers {
		if ws.entry.PID == pid {
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
