package pool

import (
	"context"
	"time"

	"github.com/hvmind/hvmind/job"
)

// A job with MinCores runs only on a worker whose host has that many
// cores: a task whose effect grows with its host's cores, sized for a big
// host, falls short on a smaller one. The pool reads the hosts' cores from
// the capacity provider (Options.Servers); a host it does not know (no
// provider, a worker started by hand on another machine) counts as one
// core.

// hostCoresTTL is how long the cores read from the provider are trusted:
// they change only when a host is upgraded.
const hostCoresTTL = 30 * time.Second

// needsCores reports whether any job asks for more than one core.
func needsCores(jobs []job.Job) bool {
	for i := range jobs {
		if jobs[i].MinCores > 1 {
			return true
		}
	}
	return false
}

// refreshHostCores reads the hosts' cores from the provider when they are
// unknown or old.
func (p *Pool) refreshHostCores(ctx context.Context) {
	if p.opts.Servers == nil {
		return
	}
	p.mu.Lock()
	fresh := p.hostCores != nil && time.Since(p.hostCoresAt) < hostCoresTTL
	p.mu.Unlock()
	if fresh {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := p.opts.Servers.Cores(cctx)
	if err != nil {
		p.log.Debug().Err(err).Msg("reading the hosts' cores")
		return
	}
	p.mu.Lock()
	p.hostCores, p.hostCoresAt = m, time.Now()
	p.mu.Unlock()
}

// coresFitLocked reports whether the worker's host has the cores the job
// asks for.
func (p *Pool) coresFitLocked(ws *workerState, j *job.Job) bool {
	if j.MinCores <= 1 {
		return true
	}
	c, ok := p.hostCores[ws.entry.Host]
	if !ok {
		c = 1
	}
	return c >= j.MinCores
}
