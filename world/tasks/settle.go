package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Settler settles hack, grow and weaken jobs with the world (see
// world.SettleRequest): a job whose operation the world applied is done,
// with the world's result and times; one it had begun is failed, and one
// it never began missed, and the world will apply neither. Jobs of other
// tasks are left to the caller.
func Settler(c *world.Client) job.Settler { return settler{c} }

type settler struct{ c *world.Client }

func (s settler) Settle(ctx context.Context, jobs []job.Job, reason string) ([]job.Job, error) {
	out := make([]job.Job, len(jobs))
	copy(out, jobs)
	// Each worker's jobs are settled on its own subjects (see
	// world.WorkerSubject), which a worker with an identity of its own is
	// limited to; a job with no worker, on the plain one.
	var workers []string
	ids := map[string][]string{}
	at := map[string][]int{}
	for i, j := range jobs {
		if !game.IsOperation(j.Task) {
			out[i].Status = ""
			continue
		}
		if _, ok := at[j.ID]; !ok {
			if _, seen := ids[j.Worker]; !seen {
				workers = append(workers, j.Worker)
			}
			ids[j.Worker] = append(ids[j.Worker], j.ID)
		}
		at[j.ID] = append(at[j.ID], i)
	}
	// The workers' requests go together: the world holds each for its
	// holdback (200 ms by default) before it answers, and one after the
	// other the jobs of the 44 workers of a killed worker process took
	// longer than the pool's call, which then failed whole, every sweep.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		slots    = make(chan struct{}, settleTogether)
	)
	for _, w := range workers {
		c := s.c
		if w != "" {
			c = c.As(w)
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			// Each writes only its own jobs' records in out.
			if err := settleEach(ctx, c, ids[w], reason, at, out); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// settleTogether is how many workers' jobs are settled at once.
const settleTogether = 16

// settleEach settles ids with the world through c, MaxSettle at a time,
// and records what became of each in out (at: where each id's jobs are).
func settleEach(ctx context.Context, c *world.Client, ids []string, reason string, at map[string][]int, out []job.Job) error {
	for len(ids) > 0 {
		n := min(len(ids), world.MaxSettle)
		var sts []world.Settlement
		err := retry(ctx, worldBeginRetry, func(ctx context.Context) error {
			var err error
			sts, err = c.Settle(ctx, world.SettleRequest{JobIDs: ids[:n], Reason: reason})
			return err
		})
		if err != nil {
			return fmt.Errorf("settle %d jobs with the world: %w", n, err)
		}
		if len(sts) != n {
			return fmt.Errorf("settle %d jobs with the world: %d answers", n, len(sts))
		}
		for _, st := range sts {
			for _, i := range at[st.JobID] {
				if err := record(&out[i], st, reason); err != nil {
					return err
				}
			}
		}
		ids = ids[n:]
	}
	return nil
}

// record makes j the record its settlement says.
func record(j *job.Job, st world.Settlement, reason string) error {
	switch {
	case st.Applied && st.Result != nil:
		data, err := json.Marshal(st.Result)
		if err != nil {
			return fmt.Errorf("settle %s: encode result: %w", j.ID, err)
		}
		j.Status, j.Result = job.StatusDone, data
		j.Reason = reason + "; the world had applied its operation"
		if start, ok := startedAt(*st.Result); ok {
			j.ActualStartTime, j.ActualEndTime = start, st.Result.LandedAt
		}
	case st.Begun:
		j.Status = job.StatusFailed
		j.Reason = reason + "; its operation had begun, and the world will not apply it"
	default:
		j.Status = job.StatusMissed
		j.Reason = reason + "; its operation never began, and the world will not begin it"
	}
	return nil
}
