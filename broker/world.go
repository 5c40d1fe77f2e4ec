package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The world's storage (see world/store.go for what each key holds).
const (
	// BucketWorld holds the simulated world: its scenario ("meta"), a
	// snapshot of its state ("state"), and one key per change since
	// ("op.<job>" for a finished operation, "ram.<n>" for a RAM
	// reservation), plus "begin.<job>" for operations under way.
	BucketWorld = "hvmind_world"
	// StreamWorld is the stream behind BucketWorld.
	StreamWorld = "KV_" + BucketWorld
	// SubjectWorldKV prefixes the keys of BucketWorld as subjects.
	SubjectWorldKV = "$KV." + BucketWorld + "."
	// SubjectWorldApplied is where applied operations are republished for
	// watchers: hvmind.world.applied.<job>.
	SubjectWorldApplied = "hvmind.world.applied."
)

// WorldMarkerTTL is how long the world bucket keeps the marker of a key
// that expired; setting it lets keys carry their own TTL.
const WorldMarkerTTL = time.Minute

// SetupWorld opens the world's bucket, creating it if needed, retrying while
// JetStream is not yet available (the broker may still be starting).
func SetupWorld(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(cctx, BucketWorld)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{
				Bucket:         BucketWorld,
				Description:    "HVMind simulated world: scenario, state snapshot, applied operations",
				History:        1,
				Storage:        jetstream.FileStorage,
				LimitMarkerTTL: WorldMarkerTTL,
				RePublish: &jetstream.RePublish{
					Source:      SubjectWorldKV + "op.>",
					Destination: SubjectWorldApplied + ">",
				},
			})
		}
		cancel()
		if err == nil {
			return kv, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bucket %s: %w (last error: %v)", BucketWorld, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
