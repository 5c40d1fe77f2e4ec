// Package broker connects HVMind's programs to NATS: an embedded nats-server
// with JetStream (the default) or an external one, and the streams, consumers
// and key-value buckets every part shares, created idempotently.
//
// The job system's streams, buckets and shared subjects are all named here,
// so its storage layout can be read in one place. (A service's own
// request subjects live with it, as pool.SubjectDispatch; a user of the
// job system keeps its own storage.)
package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Subjects, streams and buckets. Every subject is under "hvmind.".
const (
	// StreamJobs names the job streams (JobStreamName: HVMIND_JOBS_00…),
	// which hold placed jobs, one subject per worker, as work queues: a
	// job leaves its stream when its worker acknowledges it, which it does
	// only after its completion record is stored. (HVMIND_JOBS itself was
	// the single jobs stream of earlier versions.)
	StreamJobs = "HVMIND_JOBS"
	// SubjectJobs prefixes the job subjects: hvmind.jobs.<stream>.<worker>
	// (see JobsSubject).
	SubjectJobs = "hvmind.jobs."
	// StreamDone holds completion records: hvmind.done.<worker>.
	StreamDone = "HVMIND_DONE"
	// SubjectDone prefixes a worker id: hvmind.done.<worker>.
	SubjectDone = "hvmind.done."
	// BucketWorkers is the worker registry: one key per worker id, refreshed
	// by its heartbeats; a key expires when its worker stops beating.
	BucketWorkers = "hvmind_workers"
	// SubjectWorkers is where the pool tells of a worker that joins or
	// leaves: hvmind.workers.<worker>. The registry's beats are not
	// republished (one message a worker a second would drown what a
	// person watching hvmind.> came to see); nats kv watch hvmind_workers
	// shows them.
	SubjectWorkers = "hvmind.workers."

	// HeaderCancel marks a message on a worker's job subject as a request to
	// cancel the job whose id it carries.
	HeaderCancel = "Hvmind-Cancel"
	// HeaderStop marks a message on a worker's job subject as a request
	// that the worker stop gracefully; its value is the reason.
	HeaderStop = "Hvmind-Stop"
)

// DefaultListen is where the embedded server listens, so that the other
// programs and the stock nats CLI find it without configuration.
const DefaultListen = "127.0.0.1:4222"

// DoneSubject is the subject of one worker's completion records.
func DoneSubject(worker string) string { return SubjectDone + worker }

// ErrTryAgain says that a service could not do what it was asked for a
// reason that may pass (its own broker calls were unavailable): asking
// again shortly may work (see Unavailable).
var ErrTryAgain = errors.New("try again")

// WorkerConsumer is the name of a worker's durable consumer.
func WorkerConsumer(worker string) string { return "worker-" + worker }

// WorkerConsumerConfig is the configuration of a worker's durable consumer:
// every job queued on its subject, each acknowledged once its record is
// stored.
func WorkerConsumerConfig(worker string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       WorkerConsumer(worker),
		Description:   "jobs of worker " + worker,
		FilterSubject: JobsSubject(worker),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// Jobs are held unacknowledged while they wait for their start time;
		// a redelivery to this same process is recognised and dropped.
		AckWait:       30 * time.Minute,
		MaxAckPending: -1,
		MaxDeliver:    -1,
	}
}

// EmbeddedOptions configures an embedded nats-server.
type EmbeddedOptions struct {
	// Listen is host:port; port 0 or -1 picks a free port.
	Listen string
	// DataDir is where JetStream keeps its files.
	DataDir string
	// Logger receives the server's notices and errors.
	Logger zerolog.Logger
	// Sync is how JetStream writes its files to disk (see ParseSync; the
	// zero value is nats-server's default, every two minutes).
	Sync Sync
	// ConfigFile, when set, is a nats-server configuration file the
	// server starts from (its users and permissions, TLS); Listen,
	// DataDir and Sync still decide where it listens and stores.
	ConfigFile string
	// WebSocket, when set, is a host:port where the server also takes
	// NATS over WebSocket, without TLS (port 0 picks a free one): what a
	// script in a web page can open.
	WebSocket string
}

// Sync is how often an embedded broker's JetStream flushes its files to
// disk (fsync). Between flushes, a message the server acknowledged lives
// in the operating system's cache: a crash of the process loses nothing,
// a crash of the machine (power, kernel) loses what was not flushed.
type Sync struct {
	// Always flushes every write before it is acknowledged.
	Always bool
	// Interval flushes this often (0: nats-server's default, 2 minutes).
	Interval time.Duration
}

// ParseSync reads a sync setting: "always", or an interval such as "1s"
// ("" or "default": nats-server's default, every two minutes).
func ParseSync(s string) (Sync, error) {
	switch s {
	case "", "default":
		return Sync{}, nil
	case "always":
		return Sync{Always: true}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return Sync{}, fmt.Errorf("sync %q: want \"always\" or a positive interval such as 1s", s)
	}
	return Sync{Interval: d}, nil
}

// String is the setting as ParseSync reads it.
func (s Sync) String() string {
	switch {
	case s.Always:
		return "always"
	case s.Interval > 0:
		return s.Interval.String()
	}
	return "default"
}

// Embedded is a nats-server running in this process.
type Embedded struct {
	srv *server.Server
	log zerolog.Logger
	// websocket is set when the server has a WebSocket listener.
	websocket bool
	// stopped is closed once a shutdown has ended (see ShutdownWithin).
	stopOnce sync.Once
	stopped  chan struct{}
}

// StartEmbedded starts a nats-server with JetStream on file storage and waits
// until it accepts connections.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	host, port, err := splitListen(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen address %q: %w", o.Listen, err)
	}
	if o.DataDir == "" {
		return nil, errors.New("embedded broker: a data directory is required")
	}
	storeDir := filepath.Join(o.DataDir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	opts := &server.Options{}
	if o.ConfigFile != "" {
		if opts, err = server.ProcessConfigFile(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
	}
	if opts.ServerName == "" {
		opts.ServerName = "hvmind"
	}
	opts.Host, opts.Port = host, port
	opts.JetStream, opts.StoreDir = true, storeDir
	opts.NoSigs = true
	// Jobs and records are small; the defaults suit us otherwise.
	opts.MaxPayload = 8 << 20
	opts.SyncAlways, opts.SyncInterval = o.Sync.Always, o.Sync.Interval
	if o.WebSocket != "" {
		wsHost, wsPort, err := splitListen(o.WebSocket)
		if err != nil {
			return nil, fmt.Errorf("embedded broker: websocket address %q: %w", o.WebSocket, err)
		}
		opts.Websocket.Host, opts.Websocket.Port, opts.Websocket.NoTLS = wsHost, wsPort, true
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	srv.SetLoggerV2(&serverLogger{log: o.Logger.With().Str("part", "nats-server").Logger()}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded broker: not ready on %s (is the port in use? pass --nats to use a running server)", o.Listen)
	}
	return &Embedded{srv: srv, log: o.Logger, websocket: o.WebSocket != ""}, nil
}

// URL is the client URL of the embedded server.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// WebSocketURL is the ws:// URL of the server's WebSocket listener, or ""
// when it has none (see EmbeddedOptions.WebSocket).
func (e *Embedded) WebSocketURL() string {
	if !e.websocket {
		return ""
	}
	return e.srv.WebsocketURL()
}

// splitListen is the host and port of a host:port listen address, a port
// of 0 or -1 being nats-server's pick of a free one.
func splitListen(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Sync is how the running server's JetStream flushes its files (an
// Interval of nats-server's default when none was set).
func (e *Embedded) Sync() Sync {
	c := e.srv.JetStreamConfig()
	if c == nil {
		return Sync{}
	}
	return Sync{Always: c.SyncAlways, Interval: c.SyncInterval}
}

// Shutdown stops the server and waits until it has stopped.
func (e *Embedded) Shutdown() {
	<-e.shutdown()
}

// shutdown begins the server's shutdown, once, and returns a channel
// closed when it has ended.
func (e *Embedded) shutdown() <-chan struct{} {
	e.stopOnce.Do(func() {
		e.stopped = make(chan struct{})
		go func() {
			e.srv.Shutdown()
			e.srv.WaitForShutdown()
			close(e.stopped)
		}()
	})
	return e.stopped
}

// ShutdownWithin stops the server as Shutdown does, but waits for it at
// most d, and reports whether it stopped. It is for a program about to
// exit. nats-server stops a stream's consumers one after the other, each
// in about 10 ms (it polls for the consumer's flusher to end): the queues
// of 2,000 workers took 21 s, for a pool whose own stop took a second.
// Past d, the program's exit ends the server as a crash would, which
// loses nothing it acknowledged: a stream of one replica writes each
// message to its file before it answers (and, with sync "always", to the
// disk), and a work-queue stream deletes what was acknowledged. The next
// start reads the store again; with 2,000 consumers it was ready in 0.7 s.
func (e *Embedded) ShutdownWithin(d time.Duration) bool {
	select {
	case <-e.shutdown():
		return true
	case <-time.After(d):
		e.log.Info().Dur("waited", d).Msg("the embedded broker is still stopping its consumers; leaving it to the exit: its store is read again on the next start")
		return false
	}
}

// Connect dials NATS and keeps retrying, both for the first connection and
// after losing it, so that programs can start before the broker.
func Connect(ctx context.Context, url, name string, log zerolog.Logger, auth ...Auth) (*nats.Conn, error) {
	if url == "" {
		url = nats.DefaultURL
	}
	var a Auth
	if len(auth) > 0 {
		a = auth[0]
	}
	url, a = SplitURL(url, a)
	extra, err := a.options()
	if err != nil {
		return nil, err
	}
	connected := make(chan struct{}, 1)
	nc, err := nats.Connect(url, append(extra,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		// See WriteTimeout.
		nats.SetCustomDialer(&stallGuardDialer{Dialer: net.Dialer{Timeout: nats.DefaultTimeout}}),
		nats.ReconnectOnFlusherError(),
		nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(MaxPingsOut),
		nats.ConnectHandler(func(*nats.Conn) { connected <- struct{}{} }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("reconnected to NATS")
			select {
			case connected <- struct{}{}:
			default:
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS; retrying")
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error")
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	log.Info().Str("url", url).Msg("waiting for NATS")
	select {
	case <-connected:
		return nc, nil
	case <-ctx.Done():
		nc.Close()
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, ctx.Err())
	}
}

// Resources are the shared JetStream objects, ready to use.
type Resources struct {
	JS jetstream.JetStream
	// Jobs are the job streams, by index (see JobStreamOf and JobsOf).
	Jobs    []jetstream.Stream
	Done    jetstream.Stream
	Workers jetstream.KeyValue
}

// Options tunes the shared resources.
type Options struct {
	// WorkerTTL is how long a worker's registry key lives without a
	// heartbeat. Liveness is judged from each worker's own heartbeat
	// interval; the TTL only clears the keys of workers long gone.
	WorkerTTL time.Duration
	// DoneMaxAge is how long completion records are kept.
	DoneMaxAge time.Duration
	// Storage is the replicas and placement of the streams and buckets
	// (the zero value leaves existing ones as they are and creates new
	// ones with one replica).
	Storage Storage
}

// Storage is how many copies of a stream or bucket a NATS cluster keeps,
// and on which servers. With one replica, losing the server that holds it
// stops all work until it returns; with three, a cluster of three keeps
// working through the loss of any one server.
type Storage struct {
	// Replicas is the copies kept (1 to 5; 0: leave as is, 1 when new).
	Replicas int
	// Tags place the copies on servers with every one of these tags
	// (server_tags in nats-server's configuration; empty: anywhere).
	Tags []string
}

// Validate checks the settings.
func (s Storage) Validate() error {
	if s.Replicas < 0 || s.Replicas > 5 {
		return fmt.Errorf("replicas %d: want 1 to 5 (0: leave as is)", s.Replicas)
	}
	return nil
}

// apply sets cfg's replicas and placement, and reports whether they
// changed. Zero Replicas keeps cfg's.
func (s Storage) apply(cfg *jetstream.StreamConfig) bool {
	changed := false
	if s.Replicas > 0 && cfg.Replicas != s.Replicas && !(cfg.Replicas == 0 && s.Replicas == 1) {
		cfg.Replicas, changed = s.Replicas, true
	}
	if len(s.Tags) > 0 && (cfg.Placement == nil || !slices.Equal(cfg.Placement.Tags, s.Tags)) {
		p := jetstream.Placement{Tags: slices.Clone(s.Tags)}
		if cfg.Placement != nil {
			p.Cluster = cfg.Placement.Cluster
		}
		cfg.Placement, changed = &p, true
	}
	return changed
}

// EnsureStorage gives the stream name s's replicas and placement if it has
// others: a setting changed since the stream was created applies to it.
func EnsureStorage(ctx context.Context, js jetstream.JetStream, name string, s Storage) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	cfg := st.CachedInfo().Config // as it was just now
	if !s.apply(&cfg) {
		return nil
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("stream %s: set %d replicas, tags %v: %w", name, s.Replicas, s.Tags, err)
	}
	return nil
}

// tightenRegistry drops the republishing of the registry's stream that an
// earlier version made (the beats on hvmind.workers.>), and its rollups: a
// bucket allows them (for a purge, which the registry never does), and a
// message with a Nats-Rollup header on a worker's own key would purge
// every entry. A user not allowed to change the stream (a worker's)
// leaves it to the pool.
func tightenRegistry(ctx context.Context, js jetstream.JetStream, name string) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.RePublish == nil && !cfg.AllowRollup {
		return nil
	}
	cfg.RePublish, cfg.AllowRollup = nil, false
	// A denied request is only ever answered by its timeout: a short one,
	// of its own, so that the rest of the setup keeps its time.
	uctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, _ = js.UpdateStream(uctx, cfg)
	return nil
}

// DefaultOptions are used for zero fields of Options.
var DefaultOptions = Options{WorkerTTL: time.Minute, DoneMaxAge: 24 * time.Hour}

// Setup creates or updates the streams and buckets, retrying while JetStream
// is not yet available (the broker may still be starting).
func Setup(ctx context.Context, nc *nats.Conn, o Options) (*Resources, error) {
	if err := o.Storage.Validate(); err != nil {
		return nil, err
	}
	if o.WorkerTTL <= 0 {
		o.WorkerTTL = DefaultOptions.WorkerTTL
	}
	if o.DoneMaxAge <= 0 {
		o.DoneMaxAge = DefaultOptions.DoneMaxAge
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	r := &Resources{JS: js}
	var refusals Refusals
	for {
		err = r.setup(ctx, o)
		if err == nil {
			return r, nil
		}
		if refusals.Final(err) || errors.Is(err, ErrOldJobStream) || errors.Is(err, errOverlap) {
			return nil, fmt.Errorf("set up JetStream: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("set up JetStream: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Bind looks the streams and buckets up, as they are, without creating or
// changing any: for a connection allowed to read them only (a worker's own
// identity, see Identities). ctx bounds it.
func Bind(ctx context.Context, nc *nats.Conn) (*Resources, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	r := &Resources{JS: js, Jobs: make([]jetstream.Stream, JobStreams)}
	for i, name := range JobStreamNames() {
		if r.Jobs[i], err = js.Stream(ctx, name); err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
	}
	if r.Done, err = js.Stream(ctx, StreamDone); err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamDone, err)
	}
	if r.Workers, err = js.KeyValue(ctx, BucketWorkers); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketWorkers, err)
	}
	return r, nil
}

func (r *Resources) setup(ctx context.Context, o Options) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	jobs := make([]jetstream.Stream, JobStreams)
	for i := range jobs {
		var err error
		jobs[i], err = ensureStream(cctx, r.JS, jobStreamConfig(i), o.Storage)
		if overlaps(err) {
			// Only then: a program allowed to look up only the job
			// streams (a worker process's identity) never asks for the
			// old one, which its broker would refuse without an answer.
			if err := retireOldJobStream(cctx, r.JS); err != nil {
				return err
			}
			jobs[i], err = ensureStream(cctx, r.JS, jobStreamConfig(i), o.Storage)
			if overlaps(err) {
				return fmt.Errorf("%w: another stream of this broker holds subjects under %s>", errOverlap, SubjectJobs)
			}
		}
		if err != nil {
			return err
		}
	}
	r.Jobs = jobs
	var err error
	r.Done, err = ensureStream(cctx, r.JS, jetstream.StreamConfig{
		Name:        StreamDone,
		Description: "HVMind completion records, one subject per worker",
		Subjects:    []string{SubjectDone + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.DoneMaxAge,
		Duplicates:  10 * time.Minute,
		AllowDirect: true,
	}, o.Storage)
	if err != nil {
		return err
	}
	r.Workers, err = r.JS.KeyValue(cctx, BucketWorkers)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		r.Workers, err = r.JS.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket:      BucketWorkers,
			Description: "HVMind worker registry; keys expire when heartbeats stop",
			History:     1,
			TTL:         o.WorkerTTL,
			Storage:     jetstream.FileStorage,
			Replicas:    max(o.Storage.Replicas, 1),
			Placement:   o.Storage.Placement(),
		})
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", BucketWorkers, err)
	}
	if err := tightenRegistry(cctx, r.JS, "KV_"+BucketWorkers); err != nil {
		return fmt.Errorf("bucket %s: %w", BucketWorkers, err)
	}
	return EnsureStorage(cctx, r.JS, "KV_"+BucketWorkers, o.Storage)
}

// Restore creates again the streams and buckets of the job system that
// the broker has lost (its store wiped under running programs, a new
// embedded data directory), and names those it created. The handles in r
// stay valid: they name their stream or bucket.
func (r *Resources) Restore(ctx context.Context, o Options) ([]string, error) {
	var missing []string
	for _, name := range append(JobStreamNames(), StreamDone, "KV_"+BucketWorkers) {
		_, err := r.JS.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, name)
		case err != nil:
			return nil, fmt.Errorf("look for stream %s: %w", name, err)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if o.WorkerTTL <= 0 {
		o.WorkerTTL = DefaultOptions.WorkerTTL
	}
	if o.DoneMaxAge <= 0 {
		o.DoneMaxAge = DefaultOptions.DoneMaxAge
	}
	if err := (&Resources{JS: r.JS}).setup(ctx, o); err != nil {
		return nil, fmt.Errorf("restore %v: %w", missing, err)
	}
	return missing, nil
}

// StorageRefused reports whether JetStream refused a stream's replicas or
// placement (more replicas than servers, a single server asked for more
// than one, no server with the tags), where JetStream not answering yet (a
// broker starting) is not a refusal. A cluster still forming can refuse
// for a moment what it will take once its servers know each other: see
// Refusals.
func StorageRefused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	if apiErr.Code >= 500 {
		// The server's own failure, which may pass: creating a worker's
		// consumer while another process of its id deleted it failed with
		// 500 (its file gone under it), and the new process gave up.
		return true
	}
	switch apiErr.ErrorCode {
	case 10074, // replicas > 1 not supported in non-clustered mode
		10023, // insufficient resources
		10005: // no suitable peers for placement
		return true
	}
	return false
}

// RefusalSettle is how long a refusal of placement is asked again before
// it is taken as final: a fresh cluster's leader answers "no suitable
// peers" until it has heard from the other servers.
const RefusalSettle = 10 * time.Second

// Refusals tells a refusal that asking again will not change from one a
// forming cluster gives for a moment. The zero value is ready to use, one
// per loop that asks again.
type Refusals struct {
	first time.Time
}

// Final reports whether the loop should give up on err: a refusal that no
// cluster takes back (more than one replica of a single server) at once,
// any other refusal once it has lasted RefusalSettle.
func (r *Refusals) Final(err error) bool {
	if !StorageRefused(err) {
		r.first = time.Time{}
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == 10074 {
		return true
	}
	if r.first.IsZero() {
		r.first = time.Now()
	}
	return time.Since(r.first) >= RefusalSettle
}

// Placement is s's placement for a new stream or bucket (nil: anywhere).
func (s Storage) Placement() *jetstream.Placement {
	if len(s.Tags) == 0 {
		return nil
	}
	return &jetstream.Placement{Tags: slices.Clone(s.Tags)}
}

// ensureStream opens a stream, creating it if it does not exist. An
// existing stream is left as it is but for its replicas and placement
// (only when they differ from a set Storage): every process runs this at
// start, and updating a stream while others create consumers on it races
// inside nats-server.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, storage Storage) (jetstream.Stream, error) {
	cfg.Replicas, cfg.Placement = max(storage.Replicas, 1), storage.Placement()
	s, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		// The info that came with the stream, just now: with sixteen job
		// streams, every look more at each was sixteen requests more
		// for every program's start.
		have := s.CachedInfo().Config
		changed := storage.apply(&have)
		if cfg.MaxConsumers > 0 && have.MaxConsumers != cfg.MaxConsumers {
			// A stream made by an earlier version has the server's
			// default, 1,000.
			have.MaxConsumers, changed = cfg.MaxConsumers, true
		}
		if !changed {
			return s, nil
		}
		if s, err = js.UpdateStream(ctx, have); err != nil {
			return nil, fmt.Errorf("stream %s: set %d replicas, tags %v, %d consumers: %w",
				cfg.Name, have.Replicas, storage.Tags, have.MaxConsumers, err)
		}
		return s, nil
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, cfg.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// MaxWorkers is how many workers a job stream takes: one durable consumer
// each.
const MaxWorkers = 1 << 20

// serverLogger adapts zerolog to nats-server's logger interface.
type serverLogger struct{ log zerolog.Logger }

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }

// Conn is an open connection, with the embedded server behind it if any.
type Conn struct {
	NC *nats.Conn
	// URL is the broker's client URL, to hand to launched processes: it
	// holds no credentials; Auth has them (see Auth.Env).
	URL  string
	Auth Auth
	// Embedded is the server this process runs, or nil.
	Embedded *Embedded
}

// OpenOptions say where the broker is.
type OpenOptions struct {
	// URL of an external server; empty starts an embedded one when Embed is
	// set, else connects to DefaultListen.
	URL   string
	Embed bool
	// Listen, WebSocket, DataDir, Sync and ConfigFile configure the
	// embedded server (see EmbeddedOptions).
	Listen     string
	WebSocket  string
	DataDir    string
	Sync       Sync
	ConfigFile string
	// Auth is the client's credentials (also for the URL of an external
	// server; user and password in the URL fill what it lacks).
	Auth Auth
	// Name identifies the client connection.
	Name   string
	Logger zerolog.Logger
}

// Open starts the embedded broker if asked to, and connects.
func Open(ctx context.Context, o OpenOptions) (*Conn, error) {
	plain, auth := SplitURL(o.URL, o.Auth)
	c := &Conn{URL: plain, Auth: auth}
	if c.URL == "" && o.Embed {
		emb, err := StartEmbedded(EmbeddedOptions{Listen: o.Listen, WebSocket: o.WebSocket, DataDir: o.DataDir, Sync: o.Sync, ConfigFile: o.ConfigFile, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		c.Embedded, c.URL = emb, emb.URL()
		ev := o.Logger.Info().Str("url", c.URL).Str("data", o.DataDir).Stringer("sync", o.Sync)
		if ws := emb.WebSocketURL(); ws != "" {
			ev = ev.Str("websocket", ws)
		}
		ev.Msg("embedded NATS server with JetStream running")
	}
	if c.URL == "" {
		c.URL = "nats://" + DefaultListen
	}
	nc, err := Connect(ctx, c.URL, o.Name, o.Logger, c.Auth)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.NC = nc
	return c, nil
}

// Close drains the connection and stops the embedded server.
func (c *Conn) Close() {
	c.closeNC()
	if c.Embedded != nil {
		c.Embedded.Shutdown()
	}
}

// CloseToExit is Close for a program about to exit: it waits for the
// embedded server at most d (see Embedded.ShutdownWithin).
func (c *Conn) CloseToExit(d time.Duration) {
	c.closeNC()
	if c.Embedded != nil {
		c.Embedded.ShutdownWithin(d)
	}
}

// closeNC drains the connection, for up to 2 s.
func (c *Conn) closeNC() {
	if c.NC != nil {
		_ = c.NC.Drain()
		for i := 0; i < 100 && !c.NC.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		c.NC.Close()
	}
}

// Unavailable reports whether err says JetStream could not serve a call yet:
// nothing answered (a broker starting, a stream whose replicas have not
// elected a leader), the call timed out, or the cluster has no leader for
// it, or it failed on its own side (a 5xx answer). Asking again shortly may
// work, where any other error will come back.
func Unavailable(err error) bool {
	if errors.Is(err, ErrTryAgain) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	if apiErr.Code >= 500 {
		// The server's own failure, which may pass: creating a worker's
		// consumer while another process of its id deleted it failed with
		// 500 (its file gone under it), and the new process gave up.
		return true
	}
	switch apiErr.ErrorCode {
	case 10008, // JetStream cluster not available
		10009: // not the leader
		return true
	}
	return false
}
