package tasks

import (
	"context"
	"encoding/json"
	"fmt"

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
	var ids []string
	at := map[string][]int{}
	for i, j := range jobs {
		if !game.IsOperation(j.Task) {
			out[i].Status = ""
			continue
		}
		if _, ok := at[j.ID]; !ok {
			ids = append(ids, j.ID)
		}
		at[j.ID] = append(at[j.ID], i)
	}
	for len(ids) > 0 {
		n := min(len(ids), world.MaxSettle)
		var sts []world.Settlement
		err := retry(ctx, worldBeginRetry, func(ctx context.Context) error {
			var err error
			sts, err = s.c.Settle(ctx, world.SettleRequest{JobIDs: ids[:n], Reason: reason})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("settle %d jobs with the world: %w", n, err)
		}
		if len(sts) != n {
			return nil, fmt.Errorf("settle %d jobs with the world: %d answers", n, len(sts))
		}
		for _, st := range sts {
			for _, i := range at[st.JobID] {
				if err := record(&out[i], st, reason); err != nil {
					return nil, err
				}
			}
		}
		ids = ids[n:]
	}
	return out, nil
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
		j.ActualEndTime = st.Result.LandedAt
		j.ActualStartTime = st.Result.StartedAt
		if j.ActualStartTime == 0 {
			j.ActualStartTime = st.Result.LandedAt - st.Result.DurationRealMs
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
