package pool

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/broker"
)

// A worker process the pool launched is seen to exit at once (exitLoop).
// One it did not launch (adopted after the pool restarted, or started by
// hand) was taken for gone only once its workers had missed missedBeats
// beats: in the chaos test, a killed adopted process had its workers'
// jobs settled and new batches dispatched 10 s after the kill. But a
// process that dies takes its connection with it, and its subscription
// to its own subjects: a request there then finds no responders at once;
// and one on this machine leaves its pid. So the pool looks at the pids of
// its machine's processes (adoptedExitLoop), and asks a process whose beat
// is late.

// lateBeats is how late, in its heartbeats, a process's last beat is when
// the pool asks whether the process is still connected.
const lateBeats = 1.5

// askAliveTimeout bounds the question. Only "no responders" says gone: a
// process that answers, or is too busy to, is there.
const askAliveTimeout = 300 * time.Millisecond

// askSilentProcesses asks each worker process whose beat is late whether
// it is still connected, and takes the workers of one that is not as
// gone. (One of this machine whose pid has exited is found sooner, by
// adoptedExitLoop, whatever its beats.) Not asked: one not seen since the
// pool's own connection came back (it may not have reconnected yet, and
// has no subscription either), one whose silence a stall of the registry
// explains, and any on a cluster (a live process whose server went away
// has no subscription either until it reconnects to another, which may
// take longer than a beat: there, only missed beats say gone).
func (p *Pool) askSilentProcesses(ctx context.Context) {
	now := time.Now()
	if !p.nc.IsConnected() {
		return
	}
	if r := p.nc.Stats().Reconnects; r != p.reconnects {
		p.reconnects, p.connectedSince = r, now
	}
	onCluster := p.nc.ConnectedClusterName() != ""
	ask := map[string]bool{} // by process name: a late part stands for its process
	p.mu.Lock()
	for key, ids := range p.processWorkers {
		var last time.Time
		var beat time.Duration
		alive := false
		for id := range ids {
			ws := p.workers[id]
			if ws == nil || !p.aliveLocked(ws, now) {
				continue
			}
			alive = true
			if ws.seen.After(last) {
				last, beat = ws.seen, ws.entry.Heartbeat
			}
		}
		if beat <= 0 {
			beat = p.opts.Heartbeat
		}
		switch {
		case !alive, now.Sub(last) < time.Duration(lateBeats*float64(beat)):
		case onCluster,
			!last.After(p.connectedSince.Add(beat)),
			p.stall.allowance(last, now) > 0:
		default:
			ask[processOfKey(key)] = true
		}
	}
	p.mu.Unlock()
	for name := range ask {
		if ctx.Err() != nil {
			return
		}
		_, err := p.nc.Request(broker.ProcessSubject(name, "status"), nil, askAliveTimeout)
		if errors.Is(err, nats.ErrNoResponders) {
			p.processGone(ctx, name)
		}
	}
}

// pidChecker is what a Launcher may also be: one that can tell that a
// process of its machine has exited (serverpool.LocalLauncher).
type pidChecker interface {
	Exited(pid int) bool
}

// exitedProcessLocked reports whether the process of the workers ids is
// known to have exited: its pid, as their entries give it, runs no more
// on this machine, where their entries say it ran. A process on another
// machine, or in another container, has a pid that means nothing here:
// taken for exited, its live workers were taken for gone, and launched
// again here beside it.
func (p *Pool) exitedProcessLocked(ids []string) bool {
	pc, ok := p.opts.Launcher.(pidChecker)
	here := broker.MachineID()
	if !ok || len(ids) == 0 || here == "" {
		return false
	}
	for _, id := range ids {
		if ws := p.workers[id]; ws == nil || ws.entry.Machine != here || !pc.Exited(ws.entry.PID) {
			return false
		}
	}
	return true
}

// processOfKey is the worker process whose entry, or part of it, is
// under key in processWorkers ("<process>" or "<process>.<part>").
func processOfKey(key string) string {
	name, _, _ := strings.Cut(key, ".")
	return name
}

// processGone takes the workers of a worker process that lost its
// connection, or whose pid has exited, as gone (those of every part of
// its entry), as those of a process seen to exit, and launches them
// again (see relaunch.go). With pids, only the workers whose entries give
// one of them: the process may have been launched again since they were
// read, and its new workers are not gone.
func (p *Pool) processGone(ctx context.Context, name string, pids ...int) {
	p.mu.Lock()
	var ids []string
	for key, workers := range p.processWorkers {
		if processOfKey(key) == name {
			for id := range workers {
				if ws := p.workers[id]; len(pids) == 0 || ws != nil && slices.Contains(pids, ws.entry.PID) {
					ids = append(ids, id)
				}
			}
		}
	}
	gone := p.exitedLocked(ids)
	var again []relaunch
	if p.exitedProcessLocked(gone) {
		// Only a process known to be dead: one that lost its
		// connection and lives on would come back beside its copy.
		again = p.relaunchLocked(ctx, gone, name)
	}
	p.mu.Unlock()
	if len(gone) > 0 {
		p.log.Warn().Str("process", name).Strs("workers", gone).Msg("worker process is gone (it lost its connection, or its pid has exited): its workers are gone")
		p.relaunchAll(ctx, again)
		p.sweepNow()
	}
}
