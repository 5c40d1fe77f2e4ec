package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consume starts taking the worker's jobs from its queue; an error that
// says the queue is gone asks for it again (see queueLoop).
func (w *Worker) consume(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
	return cons.Consume(w.intake,
		jetstream.PullMaxMessages(1024),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if w.callbacks.enter() {
				defer w.callbacks.leave()
				w.log.Debug().Err(err).Msg("consume")
				if queueGone(err) {
					w.lostQueue(err)
				}
			}
		}))
}

// lostQueue asks queueLoop to create the worker's queue again.
func (w *Worker) lostQueue(err error) {
	select {
	case w.queueLost <- err:
	default:
	}
}

// queueAgainWait is how long the worker waits before it asks again for a
// queue it could not create (the job streams not there yet: the pool
// creates it again).
const queueAgainWait = 500 * time.Millisecond

// queueLoop runs until ctx ends, and creates the worker's queue again
// whenever the broker has lost it (a broker restarted on a new store, the
// consumer deleted): the worker goes on taking jobs instead of beating for
// a queue that no job can reach. It returns the consumption running at
// the end, for Run to drain.
func (w *Worker) queueLoop(ctx context.Context, cc jetstream.ConsumeContext) jetstream.ConsumeContext {
	for {
		select {
		case <-ctx.Done():
			return cc
		case err := <-w.queueLost:
			if w.stopping.Load() {
				continue
			}
			w.log.Error().Err(fmt.Errorf("%w: %w", ErrQueueGone, err)).Msg("creating this worker's job queue again")
			cc.Stop()
			<-cc.Closed()
			w.createdQueue = false // a consumer found now is not this one's
			for ctx.Err() == nil {
				next, err := w.recreateQueue(ctx)
				if err == nil {
					cc = next
					w.log.Info().Msg("this worker's job queue is back")
					break
				}
				w.log.Warn().Err(err).Msg("creating this worker's job queue again; retrying")
				select {
				case <-ctx.Done():
				case <-time.After(queueAgainWait):
				}
			}
			if ctx.Err() != nil {
				return cc
			}
		}
	}
}

// recreateQueue creates the worker's consumer again and consumes from it.
// The sequences of a new store start again: none of its messages can have
// been taken by an earlier process (prevDelivered), and jobs this process
// holds already are recognised if they come again.
func (w *Worker) recreateQueue(ctx context.Context) (jetstream.ConsumeContext, error) {
	w.prevDelivered = 0 // nothing is consuming: intake does not run now
	cons, err := w.openConsumer(ctx)
	if err != nil {
		return nil, err
	}
	cc, err := w.consume(cons)
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	return cc, nil
}
