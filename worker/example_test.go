package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// resize pretends to make a thumbnail: args are [image, width]. It takes
// the job's whole window, as real work would, and returns the new size.
func resize(ctx context.Context, t *worker.Task) (json.RawMessage, error) {
	image, ok := t.Job.StringArg(0)
	if !ok || len(t.Job.Args) < 2 {
		return nil, errors.New(`resize wants args ["image", width]`)
	}
	// Arguments come from JSON: numbers arrive as float64.
	width, ok := t.Job.Args[1].(float64)
	if !ok || width <= 0 {
		return nil, fmt.Errorf("resize: bad width %v", t.Job.Args[1])
	}
	if err := t.SleepUntil(ctx, t.ScheduledEnd); err != nil {
		return nil, err // the job was cancelled, or the worker stopped
	}
	return json.Marshal(map[string]any{"image": image, "width": int(width), "height": int(width * 3 / 4)})
}

// A task is a name and a handler. A handler is a plain function of the
// job, so it can be tried without a broker or a worker.
func ExampleHandlers_Register() {
	handlers := worker.NewHandlers() // holds the built-in "sleep"
	handlers.Register("resize", worker.HandlerFunc(resize))
	fmt.Println(handlers.Names())

	h, err := handlers.Lookup("resize")
	if err != nil {
		log.Fatal(err)
	}
	j, err := job.Parse([]byte(`{"task":"resize","args":["cat.png",640],"threads":1}`))
	if err != nil {
		log.Fatal(err)
	}
	result, err := h.Run(context.Background(), &worker.Task{Job: &j})
	fmt.Println(string(result), err)

	_, err = handlers.Lookup("rotate")
	fmt.Println(errors.Is(err, worker.ErrUnknownTask))
	// Output:
	// [resize sleep]
	// {"height":480,"image":"cat.png","width":640} <nil>
	// true
}

// A worker runs the jobs placed on its subject, broker.JobsSubject(id),
// at their start times, and stores each completion record on
// hvmind.done.<id>.
// The pool places jobs there; this example places one itself.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "hvmind-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	conn, err := broker.Open(ctx, broker.OpenOptions{Embed: true, Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	// The streams must exist before a job is published (the worker and the
	// pool create them too when they start).
	res, err := broker.Setup(ctx, conn.NC, broker.Options{})
	if err != nil {
		log.Fatal(err)
	}

	handlers := worker.NewHandlers()
	handlers.Register("resize", worker.HandlerFunc(resize))
	w, err := worker.New(conn.NC, worker.Options{
		ID: "thumbs", Threads: 2, Handlers: handlers,
		// Generous, for a loaded machine; the default is 5ms.
		Tolerance: 250 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()
	defer func() { stop(); <-stopped }()

	records, err := conn.NC.SubscribeSync(broker.DoneSubject("thumbs"))
	if err != nil {
		log.Fatal(err)
	}
	j := job.Job{
		ID: "thumb-1", Task: "resize", Args: []any{"cat.png", 160},
		Threads: 1, Duration: 50, StartTime: job.Millis(time.Now().Add(100 * time.Millisecond)),
	}
	data, err := job.Encode(&j)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := res.JS.Publish(ctx, broker.JobsSubject("thumbs"), data); err != nil {
		log.Fatal(err)
	}

	msg, err := records.NextMsg(10 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	rec, err := job.Parse(msg.Data)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.ID, rec.Worker, rec.Status, string(rec.Result))
	// Output:
	// thumb-1 thumbs done {"height":120,"image":"cat.png","width":160}
}
