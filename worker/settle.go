package worker

import (
	"context"
	"time"

	"github.com/hvmind/hvmind/job"
)

// settleTimeout bounds how long a worker waits for its Settler.
const settleTimeout = 10 * time.Second

// settleOrEnd ends a job that this worker's previous process may have
// started: with what its Settler says became of it, or, without one (or
// when it cannot tell), with status and reason.
func (w *Worker) settleOrEnd(r *run, status job.Status, reason string) {
	if w.opts.Settler == nil {
		w.endNow(r, status, reason)
		return
	}
	w.inflight.Add(1)
	go func() {
		defer w.inflight.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.tasks), settleTimeout)
		defer cancel()
		recs, err := w.opts.Settler.Settle(ctx, []job.Job{r.job}, "the worker restarted after this job's start time")
		if err != nil || len(recs) != 1 || recs[0].Status == "" {
			if err != nil {
				w.log.Warn().Err(err).Str("job", r.job.ID).Msg("could not settle a job the previous process may have started; recording it as it was left")
			}
			w.endNow(r, status, reason)
			return
		}
		rec := recs[0]
		o := outcome{status: rec.Status, reason: rec.Reason, result: rec.Result, err: rec.Error}
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.active[r.job.ID]; !ok && r.job.ID != "" {
			w.active[r.job.ID] = r
		}
		if rec.ActualStartTime > 0 && rec.ActualEndTime > 0 {
			r.out.start = time.UnixMicro(int64(rec.ActualStartTime * 1000))
			o.end = time.UnixMicro(int64(rec.ActualEndTime * 1000))
		}
		w.endLocked(r, o)
	}()
}
