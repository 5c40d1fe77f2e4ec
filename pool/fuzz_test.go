package pool_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// FuzzServiceRequests sends any bytes to the pool's endpoints, on a real
// broker with a real worker: every request is answered (an error is an
// answer), nothing panics, a dispatch accepted is of valid jobs, and the
// pool keeps answering.
func FuzzServiceRequests(f *testing.F) {
	for _, seed := range []struct {
		endpoint uint8
		data     string
	}{
		{0, `{"task":"sleep","threads":1,"duration":5}`},
		{0, `{"task":"sleep","threads":100000,"duration":5}`},
		{0, `{"task":"nope","threads":1}`},
		{1, `[{"task":"sleep","threads":1,"duration":5},{"task":"sleep","threads":2,"duration":5}]`},
		{1, `{"task":"sleep","threads":1}`},
		{2, `{"id":"x"}`},
		{2, `{"batch":""}`},
		{3, `{"start":0,"duration":1000}`},
		{3, `{"duration":-1}`},
		{4, ``},
		{0, `{"task":"sleep","threads":1,"startTime":-1e308}`},
		{1, `[[[[[]]]]]`},
	} {
		f.Add(seed.endpoint, []byte(seed.data))
	}
	b := brokertest.New(f)
	startWorker(f, b, "fuzz", 4)
	startPool(f, b)
	nc := b.Connect(f)
	subjects := []string{pool.SubjectDispatch, pool.SubjectBatch, pool.SubjectCancel, pool.SubjectCapacity, pool.SubjectStatus}
	f.Fuzz(func(t *testing.T, endpoint uint8, data []byte) {
		subject := subjects[int(endpoint)%len(subjects)]
		msg, err := nc.Request(subject, data, 10*time.Second)
		if err != nil {
			t.Fatalf("%s %q: no answer: %v", subject, data, err)
		}
		if msg.Header.Get("Nats-Service-Error") == "" && (subject == pool.SubjectDispatch || subject == pool.SubjectBatch) {
			var jobs []job.Job
			if subject == pool.SubjectBatch {
				jobs, err = job.ParseMany(data)
			} else {
				var j job.Job
				j, err = job.Parse(data)
				jobs = []job.Job{j}
			}
			if err != nil {
				t.Fatalf("%s accepted what does not parse: %q", subject, data)
			}
			for _, j := range jobs {
				if j.Threads <= 0 || j.Task == "" {
					t.Fatalf("%s accepted an invalid job %q: %s", subject, data, msg.Data)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := nc.RequestWithContext(ctx, pool.SubjectStatus, nil)
		if err != nil || !json.Valid(st.Data) {
			t.Fatalf("the pool stopped answering after %s %q: %v", subject, data, err)
		}
	})
}
