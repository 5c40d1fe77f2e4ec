package world

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
)

// The world's storage on the broker (see store.go for what each key holds).
// It is the world's own: the job system's streams and buckets are in
// package broker.
const (
	// Bucket holds the simulated world: its scenario ("meta"), a snapshot
	// of its state ("state"), and one key per change since ("op.<job>" for
	// a finished operation, "ram.<n>" for a RAM reservation), plus
	// "begin.<job>" for operations under way.
	Bucket = "hvmind_world"
	// bucketStream is the stream behind Bucket.
	bucketStream = "KV_" + Bucket
	// bucketSubject prefixes the keys of Bucket as subjects.
	bucketSubject = "$KV." + Bucket + "."
	// SubjectApplied is where applied operations are republished for
	// watchers: hvmind.world.applied.<job>.
	SubjectApplied = "hvmind.world.applied."
)

// markerTTL is how long the world bucket keeps the marker of a key that
// expired; setting it lets keys carry their own TTL.
const markerTTL = time.Minute

// openBucket opens the world's bucket, creating it if needed, retrying
// while JetStream is not yet available (the broker may still be starting).
func openBucket(ctx context.Context, js jetstream.JetStream, storage broker.Storage) (jetstream.KeyValue, error) {
	var refusals broker.Refusals
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(cctx, Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{
				Bucket:         Bucket,
				Description:    "HVMind simulated world: scenario, state snapshot, applied operations",
				History:        1,
				Storage:        jetstream.FileStorage,
				Replicas:       max(storage.Replicas, 1),
				LimitMarkerTTL: markerTTL,
				RePublish: &jetstream.RePublish{
					Source:      bucketSubject + prefixOp + ">",
					Destination: SubjectApplied + ">",
				},
			})
		}
		if err == nil {
			if len(storage.Tags) > 0 || storage.Replicas > 0 {
				err = broker.EnsureStorage(cctx, js, bucketStream, storage)
			}
		}
		cancel()
		if err == nil {
			return kv, nil
		}
		if refusals.Final(err) {
			return nil, fmt.Errorf("bucket %s: %w", Bucket, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bucket %s: %w (last error: %v)", Bucket, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
