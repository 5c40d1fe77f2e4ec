package pool

import (
	"context"
	"sort"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
)

// Status is the pool's state as reported by the status endpoint.
type Status struct {
	Workers      []WorkerStatus       `json:"workers"`
	JobsInFlight int                  `json:"jobs_in_flight"`
	Accepted     int64                `json:"accepted"`
	Ended        map[job.Status]int64 `json:"ended"`
	Drift        Drift                `json:"drift"`
	// Placement is how long placing one job took, over the last 2,048
	// placements, in µs (Jobs counts them).
	Placement Drift     `json:"placement"`
	Time      time.Time `json:"time"`
	// ThreadsBusy and ThreadsTotal are over the live workers, now;
	// Utilisation is the busy share (%) at each of the last samples, one
	// per heartbeat, oldest first.
	ThreadsBusy  int       `json:"threads_busy"`
	ThreadsTotal int       `json:"threads_total"`
	Utilisation  []float64 `json:"utilisation_pct"`
	// InFlightByArg counts the jobs in flight by their first argument,
	// when it is a string: a caller that restarts can wait for the jobs it
	// left in flight on a subject of its own.
	InFlightByArg map[string]int `json:"in_flight_by_arg,omitempty"`
	// InFlightEndsByArg is, by the same first argument, the earliest and
	// the latest scheduled end of those jobs (epoch ms): when what a
	// restarted caller left in flight lands.
	InFlightEndsByArg map[string][2]float64 `json:"in_flight_ends_by_arg,omitempty"`
	// Hosts are the capacity provider's hosts, when the pool has one.
	Hosts []serverpool.Host `json:"hosts,omitempty"`
}

// WorkerStatus is one worker in Status.
type WorkerStatus struct {
	broker.WorkerEntry
	Alive bool `json:"alive"`
	// Reserved is the threads reserved on the worker now.
	Reserved int `json:"reserved"`
	// InFlight is the pool's count of jobs placed on it without a record.
	InFlight int `json:"in_flight"`
	// LastDriftUS is the start drift of its latest scheduled job.
	LastDriftUS float64 `json:"last_drift_us"`
}

// Status reports the pool's current state. It asks the capacity provider
// for its hosts, within ctx.
func (p *Pool) Status(ctx context.Context) Status {
	counts, drift, per := p.stats.snapshot()
	now := time.Now()
	nowMs := job.Millis(now)
	p.mu.Lock()
	inflightPer := map[string]int{}
	byArg := map[string]int{}
	ends := map[string][2]float64{}
	for _, in := range p.jobs {
		inflightPer[in.worker]++
		if a, ok := in.job.StringArg(0); ok {
			byArg[a]++
			e, seen := ends[a]
			if !seen || in.end < e[0] {
				e[0] = in.end
			}
			e[1] = max(e[1], in.end)
			ends[a] = e
		}
	}
	st := Status{JobsInFlight: len(p.jobs), Accepted: p.stats.accepted.Load(), Ended: counts, Drift: drift, Placement: p.stats.placement(), Time: now,
		Utilisation: append([]float64(nil), p.util...), InFlightByArg: byArg, InFlightEndsByArg: ends}
	for id, ws := range p.workers {
		alive := p.aliveLocked(ws, now)
		if alive {
			st.ThreadsBusy += ws.entry.Busy
			st.ThreadsTotal += ws.entry.Threads
		}
		if !alive && inflightPer[id] == 0 {
			continue
		}
		st.Workers = append(st.Workers, WorkerStatus{
			WorkerEntry: ws.entry, Alive: alive, Reserved: ws.tl.UsedAt(nowMs),
			InFlight: inflightPer[id], LastDriftUS: per[id],
		})
	}
	p.mu.Unlock()
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].ID < st.Workers[j].ID })
	if p.opts.Servers != nil {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		st.Hosts, _ = p.opts.Servers.Hosts(ctx)
		cancel()
		sort.Slice(st.Hosts, func(i, j int) bool { return st.Hosts[i].Name < st.Hosts[j].Name })
	}
	return st
}
