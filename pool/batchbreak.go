package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hvmind/hvmind/job"
)

// brokenBatches is how many broken batches may wait for batchBreakLoop;
// past it, the next are left to whoever dispatched them.
const brokenBatches = 4096

// brokenMemory is how long batchBreakLoop remembers a batch it cancelled:
// the other jobs of a batch broken by a worker process's death end missed
// too, one record after the other.
const brokenMemory = time.Minute

// breaksBatch hands the batch of j, a job in flight that has just ended
// (rec is its record), to batchBreakLoop when j says its batch is no use
// without it and it did not run.
func (p *Pool) breaksBatch(j *job.Job, rec *job.Summary) {
	if !j.BreaksBatch || j.Batch == "" || (rec.Status != job.StatusMissed && rec.Status != job.StatusFailed) {
		return
	}
	b := *j // with how it ended
	b.Status, b.Reason, b.Error = rec.Status, rec.Reason, rec.Error
	select {
	case p.broken <- b:
	default:
		p.log.Debug().Str("batch", j.Batch).Msg("too many broken batches waiting: this one is left to its dispatcher")
	}
}

// batchBreakLoop cancels the other jobs of each batch broken by a job that
// did not run. Its dispatcher cancels them too when it sees the record; but
// a batcher killed, or restarting, does not, and the rest of the batch
// then ran and landed without the job it needed (a hack without its grow,
// in the chaos test: the target was drained and prepared again).
func (p *Pool) batchBreakLoop(ctx context.Context) {
	cancelled := make(map[string]time.Time)
	forget := time.NewTicker(brokenMemory)
	defer forget.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-forget.C:
			for b, at := range cancelled {
				if now.Sub(at) > brokenMemory {
					delete(cancelled, b)
				}
			}
		case j := <-p.broken:
			if _, done := cancelled[j.Batch]; done {
				continue
			}
			cancelled[j.Batch] = time.Now()
			why := j.Reason
			if why == "" {
				why = j.Error
			}
			reason := fmt.Sprintf("its batch is broken: %s %s did not run (%s: %s)", j.Task, j.ID, j.Status, why)
			ids, err := p.Cancel(ctx, CancelRequest{Batch: j.Batch, Reason: reason})
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				// Another of its jobs' records asks again.
				delete(cancelled, j.Batch)
				p.log.Warn().Err(err).Str("batch", j.Batch).Msg("cancelling the rest of a broken batch")
			default:
				p.log.Debug().Str("batch", j.Batch).Strs("jobs", ids).Str("reason", reason).Msg("cancelled the rest of a broken batch")
			}
		}
	}
}
