package pool

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
)

// lost reports whether err says a stream or bucket of the job system is
// gone from the broker.
func lost(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}

// restoreStorage creates again the streams and buckets the broker lost
// (its store wiped under the running pool): without them every dispatch
// is refused until the pool restarts. Workers whose queues went with them
// leave, and the pool launches others as it needs them.
func (p *Pool) restoreStorage(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	created, err := p.res.Restore(cctx, broker.Options{Storage: p.opts.Storage})
	if err != nil {
		p.log.Warn().Err(err).Msg("the broker lost the job system's streams; creating them again failed, trying again")
		return
	}
	if len(created) > 0 {
		p.log.Warn().Strs("created", created).Msg("the broker had lost the job system's streams and buckets; created them again")
	}
}
