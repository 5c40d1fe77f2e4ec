package job

import "context"

// Settler settles jobs that may have started in a process that is gone:
// it says what became of each, and makes sure that nothing of it happens
// after it has said so. A task whose effects live outside the worker (an
// operation on a remote service) provides one, and the job system asks it
// before it writes the record of such a job itself: the pool, for a job
// whose worker is gone; a worker, for a job its previous process may have
// started. Without one, such a job is recorded missed or failed, which is
// true only if it never ran.
type Settler interface {
	// Settle returns one record per job, in the same order: the job with
	// Status (StatusDone with its Result and actual times, StatusMissed
	// or StatusFailed) and Reason set. A record with no Status is a job
	// whose task the settler does not know; the caller decides as it
	// would without a settler. An error means that nothing was decided:
	// ask again later.
	Settle(ctx context.Context, jobs []Job, reason string) ([]Job, error)
}

// Validator checks a job's task arguments before the job is accepted: the
// pool asks it at the door, so that a job that cannot run is refused with
// a reason instead of failing at its worker later.
type Validator interface {
	// Validate says what is wrong with j, or returns nil; it returns nil
	// for a task it does not know.
	Validate(ctx context.Context, j Job) error
}
