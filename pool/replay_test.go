package pool_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/pool"
)

// A dispatch request sent again with the same request id (its answer was
// lost) is answered with the first one's placement: the jobs are placed
// once. Without the id, the second copy is a duplicate.
func TestDispatchCopiesArePlacedOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, 4)
	nc := e.b.Connect(t)
	send := func(requestID string) (*nats.Msg, error) {
		msg := nats.NewMsg(pool.SubjectBatch)
		msg.Data = []byte(`[{"id":"copied","task":"sleep","threads":1,"duration":300}]`)
		if requestID != "" {
			msg.Header.Set(pool.HeaderRequestID, requestID)
		}
		return nc.RequestMsg(msg, 5*time.Second)
	}
	var first, second pool.DispatchReply
	for i, into := range []*pool.DispatchReply{&first, &second} {
		m, err := send("req-1")
		if err != nil {
			t.Fatal(err)
		}
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
			t.Fatalf("copy %d refused: %s %s", i+1, code, m.Data)
		}
		if err := json.Unmarshal(m.Data, into); err != nil {
			t.Fatal(err)
		}
	}
	if len(first.Placed) != 1 || len(second.Placed) != 1 || first.Placed[0] != second.Placed[0] {
		t.Fatalf("first copy placed %+v, second %+v: want the same placement", first.Placed, second.Placed)
	}
	st, err := e.client.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.JobsInFlight != 1 {
		t.Errorf("%d jobs in flight, want the one job once", st.JobsInFlight)
	}
	m, err := send("")
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code == "" {
		t.Errorf("the same job without a request id was placed again: %s", m.Data)
	}
}
