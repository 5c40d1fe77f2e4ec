package worker

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
)

// A process of many workers writes its entry in parts of at most
// partWorkers, under a NATS message's size; a worker keeps its part while
// it lives, and a new one takes the first part with room.
func TestProcessBeatsInParts(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	beats := newProcessBeats("big", "i1", 1, time.Second, zerolog.Nop())
	for i := range 1100 {
		beats.Beat(broker.WorkerEntry{ID: "w" + strconv.Itoa(i), Host: "home", Threads: 4, Tasks: []string{"sleep"}}, false)
	}
	ctx := context.Background()
	sizes := func() []int {
		t.Helper()
		if err := beats.write(ctx, b.Res.Workers); err != nil {
			t.Fatal(err)
		}
		var out []int
		for k := 0; ; k++ {
			ent, err := b.Res.Workers.Get(ctx, beats.key(k))
			if err != nil {
				return out
			}
			var pe broker.ProcessEntry
			if err := json.Unmarshal(ent.Value(), &pe); err != nil {
				t.Fatal(err)
			}
			out = append(out, len(pe.Workers))
		}
	}
	if got := sizes(); len(got) != 3 || got[0] != 500 || got[1] != 500 || got[2] != 100 {
		t.Fatalf("parts of %v workers, want [500 500 100]", got)
	}
	part := beats.part["w7"]
	beats.Leave("w7")
	beats.Beat(broker.WorkerEntry{ID: "new", Host: "home", Threads: 4}, false)
	if beats.part["new"] != part {
		t.Errorf("the new worker went to part %d, want %d, where one left", beats.part["new"], part)
	}
	for i := 500; i < 1100; i++ {
		beats.Leave("w" + strconv.Itoa(i))
	}
	if got := sizes(); len(got) != 3 || got[0] != 500 || got[1] != 0 || got[2] != 0 {
		t.Fatalf("parts of %v workers after 600 left, want [500 0 0]: emptied parts say their workers left", got)
	}
	if _, err := broker.FindWorker(ctx, b.Res.Workers, "w499"); err != nil {
		t.Errorf("w499 in a part: %v", err)
	}
}
