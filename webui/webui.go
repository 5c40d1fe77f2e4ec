// Package webui is the pool's web UI: a live timeline of every job, per
// worker, from its scheduled start to its scheduled end with its actual
// start and end marked, the charts a task's records feed (through an
// Annotator), the marks callers publish (a batch that went wrong), and the
// pool's workers, hosts and threads.
//
// It watches the broker the way anyone can: placed jobs on hvmind.jobs.*.*,
// stored records in the HVMIND_DONE stream, marks on hvmind.marks.*. The
// page is served from files embedded in the program and kept up to date
// with server-sent events; a page that loses its connection says so and
// starts again from a fresh snapshot when it is back.
package webui

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// Defaults of Options.
const (
	DefaultKeep    = 10 * time.Minute
	DefaultMaxJobs = 50_000
	// DefaultFlush is how often the UI sends what changed to its pages.
	DefaultFlush = 100 * time.Millisecond
	// DefaultStatusEvery is how often it reads the pool's status.
	DefaultStatusEvery = time.Second
)

// ErrClosed is returned by Serve on a closed UI.
var ErrClosed = errors.New("webui: closed")

// Annotator reads what a task's records mean: points of the charts drawn
// under the timeline, and figures for the page's header. The job system
// knows nothing of what a task does; the package of the tasks does, and
// plugs an Annotator in.
type Annotator interface {
	// Points reads a completion record into points (none for a record it
	// does not chart). It runs for every record the UI sees: keep it cheap.
	Points(rec *job.Job) []Point
	// Facts are figures for the header ("income per minute"), read once
	// per status refresh.
	Facts(ctx context.Context) []Fact
}

// Point is one value of a chart, at a time, a landing of a job.
type Point struct {
	// Chart names the chart, e.g. "queue depth".
	Chart string `json:"chart"`
	// Time is when the value was reached (epoch ms).
	Time float64 `json:"t"`
	// Value is the value after the job's effect.
	Value float64 `json:"v"`
	// Job is the job whose landing set the value.
	Job string `json:"job,omitempty"`
}

// Fact is one figure in the header.
type Fact struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Options configure a UI.
type Options struct {
	// Status reads the pool's state for the header: workers, hosts,
	// threads busy (nil: none shown).
	Status func(ctx context.Context) pool.Status
	// Annotator reads records into charts and facts (nil: none).
	Annotator Annotator
	// Keep is how long a job stays on the timeline after it ended
	// (DefaultKeep), and how far back records are read at the start.
	Keep time.Duration
	// MaxJobs bounds the jobs kept (DefaultMaxJobs): the oldest go first.
	MaxJobs int
	// Flush is how often changes are sent to the pages (DefaultFlush).
	Flush time.Duration
	// StatusEvery is how often Status and the facts are read
	// (DefaultStatusEvery).
	StatusEvery time.Duration
	// Logger logs the UI's trouble (a disabled logger when zero).
	Logger zerolog.Logger
}

// WithDefaults returns the options with every unset field at its default.
func (o Options) WithDefaults() Options {
	if o.Keep == 0 {
		o.Keep = DefaultKeep
	}
	if o.MaxJobs == 0 {
		o.MaxJobs = DefaultMaxJobs
	}
	if o.Flush == 0 {
		o.Flush = DefaultFlush
	}
	if o.StatusEvery == 0 {
		o.StatusEvery = DefaultStatusEvery
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Keep < 0:
		return fmt.Errorf("webui: Keep %s is negative", o.Keep)
	case o.MaxJobs < 0:
		return fmt.Errorf("webui: MaxJobs %d is negative", o.MaxJobs)
	case o.Flush < 0 || o.StatusEvery < 0:
		return fmt.Errorf("webui: Flush %s and StatusEvery %s may not be negative", o.Flush, o.StatusEvery)
	}
	return nil
}

// UI follows the jobs on a broker and serves them to browsers. Make one
// with New, serve its Handler, and Close it.
type UI struct {
	opts Options
	nc   *nats.Conn
	log  zerolog.Logger
	hist *history
	hub  *hub

	cancel context.CancelFunc
	wg     sync.WaitGroup
	subs   []*nats.Subscription

	closeOnce sync.Once
}

// New starts following the jobs on nc: placed jobs and marks at once,
// stored records (from Keep ago) as soon as the records' stream exists.
func New(nc *nats.Conn, o Options) (*UI, error) {
	o = o.WithDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("webui: no NATS connection")
	}
	ctx, cancel := context.WithCancel(context.Background())
	u := &UI{opts: o, nc: nc, log: o.Logger, cancel: cancel,
		hist: newHistory(o.Keep, o.MaxJobs), hub: newHub()}
	if err := u.subscribe(); err != nil {
		cancel()
		u.unsubscribe()
		return nil, err
	}
	u.wg.Add(3)
	go func() { defer u.wg.Done(); u.followRecords(ctx) }()
	go func() { defer u.wg.Done(); u.flushLoop(ctx) }()
	go func() { defer u.wg.Done(); u.statusLoop(ctx) }()
	return u, nil
}

// Close stops following the broker, ends every page's stream, and returns
// once every goroutine the UI started has ended.
func (u *UI) Close() {
	u.closeOnce.Do(func() {
		u.unsubscribe()
		u.cancel()
		u.hub.close()
		u.wg.Wait()
	})
}

func (u *UI) unsubscribe() {
	for _, s := range u.subs {
		_ = s.Unsubscribe()
	}
}
