package worker

import (
	"context"
	"fmt"
	"time"
)

// A worker with a Reserver holds its threads on its host while it lives:
// it reserves them before it registers (a host without room stops it from
// starting), re-asserts the reservation every reassertEvery heartbeats (the
// pool gives back the reservation of a worker whose heartbeats it has not
// seen, which may be a live worker cut off for a while), and releases it
// when it stops.

// reassertEvery is how many heartbeats pass between re-assertions.
const reassertEvery = 10

// reserveTimeout bounds each call to the Reserver.
const reserveTimeout = 5 * time.Second

// reserve holds the worker's threads on its host.
func (w *Worker) reserve(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, reserveTimeout)
	defer cancel()
	if err := w.opts.Reserver.Reserve(rctx, w.opts.Host, w.opts.ID, w.opts.Threads); err != nil {
		return fmt.Errorf("reserve %d threads on %s: %w", w.opts.Threads, w.opts.Host, err)
	}
	return nil
}

// release gives the worker's threads on its host back.
func (w *Worker) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, reserveTimeout)
	defer cancel()
	if err := w.opts.Reserver.Release(rctx, w.opts.Host, w.opts.ID); err != nil {
		w.log.Warn().Err(err).Msg("giving back this worker's threads on its host; the pool gives them back once its heartbeats stop")
	}
}
