package world

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/world/game"
)

// journal builds the entries of n weakens of foodnstuff applied to st.
func journal(t *testing.T, st *State, prefix string, n int) []write {
	t.Helper()
	var out []write
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		b, err := st.Begin(BeginRequest{JobID: id, Task: game.OpWeaken, Target: "foodnstuff", Host: "home", Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		r, err := st.Finish(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(st.finishEntry(&r))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, write{key: opKey(id), data: data, expires: true})
	}
	return out
}

func (s *store) put(t *testing.T, ws ...write) {
	t.Helper()
	for _, w := range ws {
		f, err := s.publish(w)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitAcks([]jetstream.PubAckFuture{f}); err != nil {
			t.Fatal(err)
		}
	}
}

// The loaded world is the snapshot plus the journal entries that follow
// on without a gap; an entry after a gap is purged.
func TestReplayStopsAtAGap(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := brokertest.New(t)
	s, err := openStore(ctx, b.NC, time.Hour, broker.Storage{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := game.LoadScenario("newgame")
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.load(ctx, sc, false)
	if err != nil || !l.fresh {
		t.Fatalf("fresh load: %v", err)
	}

	// Entries 1, 2, 3 were applied; 2 was lost, 3 was stored.
	st := NewState(sc)
	ws := journal(t, st, "a", 3)
	s.put(t, ws[0], ws[2])
	want := NewState(sc)
	journal(t, want, "a", 1)

	l, err = s.load(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if l.st.Seq != 1 || l.purged != 1 || !reflect.DeepEqual(l.st.Servers(), want.Servers()) || l.st.Player() != want.Player() {
		t.Fatalf("loaded seq %d, purged %d", l.st.Seq, l.purged)
	}
	if r, err := s.getResult(ctx, "a2"); r != nil || err != nil {
		t.Errorf("the entry after the gap is still there: %+v, %v", r, err)
	}
	if r, err := s.getResult(ctx, "a0"); r == nil || err != nil {
		t.Errorf("the entry before the gap is gone: %v", err)
	}

	// The writer carries on from seq 1; a stray old entry 3 that lands
	// before its new entries 2 and 3 is purged, theirs are kept.
	stray := journal(t, NewState(sc), "x", 3)[2]
	s.put(t, stray)
	ws = journal(t, l.st, "b", 2)
	s.put(t, ws...)
	journal(t, want, "b", 2)
	l, err = s.load(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if l.st.Seq != 3 || l.purged != 1 || !reflect.DeepEqual(l.st.Servers(), want.Servers()) || l.st.Player() != want.Player() {
		t.Fatalf("loaded seq %d, purged %d", l.st.Seq, l.purged)
	}
	if len(l.replayed) != 3 || l.replayed[2].JobID != "b1" {
		t.Errorf("replayed %+v", l.replayed)
	}
}
