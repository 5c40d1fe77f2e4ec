package world

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/world/game"
)

// How the world is stored, in the key-value bucket Bucket:
//
//	meta          the scenario the world started from (written once)
//	state         a snapshot of the whole state: servers, player, RAM
//	              reservations, and Seq, the number of changes it includes
//	op.<job>      one finished operation: its Result and the target's and
//	              the player's values after it (a journal entry)
//	ram.<n>       one RAM reservation change (a journal entry)
//	begin.<job>   an operation under way: its BeginReply
//
// Every change is one journal entry, a single message, so it is stored
// whole or not at all; entries are numbered by Seq without gaps. The
// service is the single writer: it applies a change in memory, publishes
// its entry and answers only once JetStream has stored it (write-through;
// the changes of requests that arrive together are published together and
// acknowledged as a group). Every so often, and when it stops, it rewrites
// the snapshot. Loading reads the snapshot, then replays the entries
// stored after it, in stream order, as long as their Seq follows on; an
// entry after a gap (possible only when an earlier publish was lost and a
// later one was not; the requests of both were answered with an error and
// the service reloaded) is purged, so that what is loaded is always a
// prefix of what was applied and acknowledged. Such a stray entry lands
// before the reload reads the journal, since all of the service's traffic
// goes through one connection, in order.
//
// At most once: a finished operation's entry is keyed by its job id, so a
// repeated finish, even after a restart, finds it and returns the same
// result without applying anything. Entries and begins expire after the
// retention time (a per-key TTL), long after any retry; the snapshot never
// expires, and it is rewritten far more often than that.
const (
	keyMeta   = "meta"
	keyState  = "state"
	prefixOp  = "op."
	prefixRAM = "ram."
	prefixBeg = "begin."
)

// meta is the "meta" key.
type meta struct {
	Scenario    string    `json:"scenario"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
}

// journalEntry is one change: a finished operation or a RAM reservation,
// with the absolute values it left, so that replaying it is setting them.
type journalEntry struct {
	Seq    uint64       `json:"seq"`
	Result *Result      `json:"result,omitempty"`
	Server *game.Server `json:"server,omitempty"`
	Player *game.Player `json:"player,omitempty"`
	RAM    *RAMRequest  `json:"ram,omitempty"` // the owner's threads after; 0 = released
	Time   time.Time    `json:"time"`
}

// write is one message to store.
type write struct {
	key  string
	data []byte
	// expires: the key carries the retention TTL.
	expires bool
}

// store is the world's bucket.
type store struct {
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	log       zerolog.Logger
	retention time.Duration
	// snapRev is the revision of the "state" key this writer last wrote or read.
	snapRev uint64
}

func openStore(ctx context.Context, nc *nats.Conn, retention time.Duration, storage broker.Storage, log zerolog.Logger) (*store, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("world store: %w", err)
	}
	kv, err := openBucket(ctx, js, storage)
	if err != nil {
		return nil, fmt.Errorf("world store: %w", err)
	}
	return &store{js: js, kv: kv, log: log, retention: retention}, nil
}

// escapeKey makes a job id usable as one token of a key: '.' (which would
// split it, or leave an empty token) becomes "=2E" and '=' "=3D".
func escapeKey(id string) string {
	if !strings.ContainsAny(id, ".=") {
		return id
	}
	var b strings.Builder
	for _, r := range id {
		switch r {
		case '.':
			b.WriteString("=2E")
		case '=':
			b.WriteString("=3D")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func opKey(id string) string    { return prefixOp + escapeKey(id) }
func beginKey(id string) string { return prefixBeg + escapeKey(id) }
func ramKey(seq uint64) string  { return prefixRAM + strconv.FormatUint(seq, 10) }

// close lets go of the asynchronous publisher (its reply subscription on
// the connection), once nothing is being stored.
func (s *store) close() { s.js.CleanupPublisher() }

// publish starts storing one write.
func (s *store) publish(w write) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(bucketSubject + w.key)
	m.Data = w.data
	if w.expires && s.retention > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, s.retention.String())
	}
	return s.js.PublishMsgAsync(m)
}

// loaded is what load found.
type loaded struct {
	st     *State
	gameMs float64
	// replayed are the results of the entries replayed after the snapshot.
	replayed []Result
	// pending are the operations begun that have not landed, in the order
	// of their landings (see pendingBegins).
	pending []pendingBegin
	fresh   bool
	purged  int
}

// load reads the stored world. want (may be nil) is the scenario asked
// for: a fresh bucket starts from it (from newgame when nil); a bucket
// holding another scenario is refused unless reset, which discards it.
func (s *store) load(ctx context.Context, want *game.Scenario, reset bool) (*loaded, error) {
	if reset {
		str, err := s.js.Stream(ctx, bucketStream)
		if err != nil {
			return nil, fmt.Errorf("reset world: %w", err)
		}
		if err := str.Purge(ctx); err != nil {
			return nil, fmt.Errorf("reset world: %w", err)
		}
		s.log.Warn().Msg("world reset: the stored world was discarded")
	}
	ent, err := s.kv.Get(ctx, keyMeta)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s.initFresh(ctx, want)
	}
	if err != nil {
		return nil, fmt.Errorf("load world: %w", err)
	}
	var m meta
	if err := json.Unmarshal(ent.Value(), &m); err != nil {
		return nil, fmt.Errorf("load world: meta: %w", err)
	}
	if want != nil && want.Name != m.Scenario {
		return nil, fmt.Errorf("%w: the broker holds a world of scenario %q (since %s); asked for %q: pass --reset to discard it and start from %q",
			ErrScenarioMismatch, m.Scenario, m.Created.Format(time.RFC3339), want.Name, want.Name)
	}
	ent, err = s.kv.Get(ctx, keyState)
	if err != nil {
		return nil, fmt.Errorf("load world: state: %w", err)
	}
	var sn snapshot
	if err := json.Unmarshal(ent.Value(), &sn); err != nil {
		return nil, fmt.Errorf("load world: state: %w", err)
	}
	st, err := stateFromSnapshot(&sn)
	if err != nil {
		return nil, fmt.Errorf("load world: %w", err)
	}
	s.snapRev = ent.Revision()
	l := &loaded{st: st, gameMs: sn.GameMs}
	if err := s.replay(ctx, l, ent.Revision()); err != nil {
		return nil, fmt.Errorf("load world: %w", err)
	}
	if sn.PendingSince != nil {
		if l.pending, err = s.pendingBegins(ctx, *sn.PendingSince); err != nil {
			return nil, fmt.Errorf("load world: %w", err)
		}
	}
	return l, nil
}

func (s *store) initFresh(ctx context.Context, sc *game.Scenario) (*loaded, error) {
	if sc == nil {
		var err error
		if sc, err = game.LoadScenario(DefaultScenario); err != nil {
			return nil, err
		}
	}
	st := NewState(sc)
	data, err := json.Marshal(st.snapshot(0))
	if err != nil {
		return nil, fmt.Errorf("new world: %w", err)
	}
	// The snapshot first: a world is there once its meta is.
	rev, err := s.kv.Put(ctx, keyState, data)
	if err != nil {
		return nil, fmt.Errorf("new world: %w", err)
	}
	m, _ := json.Marshal(meta{Scenario: sc.Name, Description: sc.Description, Created: time.Now().UTC()})
	if _, err := s.kv.Create(ctx, keyMeta, m); err != nil {
		return nil, fmt.Errorf("new world: %w (is another world service starting?)", err)
	}
	s.snapRev = rev
	return &loaded{st: st, fresh: true}, nil
}

// restore creates the bucket again, lost by the broker, with the world
// as it is in memory: its meta and a snapshot of sn. The results and
// settlements of past operations are not in it: those still in the
// service's memory answer repeated requests.
func (s *store) restore(ctx context.Context, sn snapshot, storage broker.Storage) error {
	kv, err := openBucket(ctx, s.js, storage)
	if err != nil {
		return fmt.Errorf("restore the world's bucket: %w", err)
	}
	data, err := json.Marshal(sn)
	if err != nil {
		return fmt.Errorf("restore the world's bucket: %w", err)
	}
	rev, err := kv.Put(ctx, keyState, data)
	if err != nil {
		return fmt.Errorf("restore the world's bucket: %w", err)
	}
	m, _ := json.Marshal(meta{Scenario: sn.Scenario, Created: time.Now().UTC()})
	if _, err := kv.Put(ctx, keyMeta, m); err != nil {
		return fmt.Errorf("restore the world's bucket: %w", err)
	}
	s.kv, s.snapRev = kv, rev
	return nil
}

// replay applies the journal entries stored after the snapshot at
// revision after.
func (s *store) replay(ctx context.Context, l *loaded, after uint64) error {
	var invalid []string
	err := s.read(ctx, jetstream.ConsumerConfig{
		FilterSubjects: []string{bucketSubject + prefixOp + ">", bucketSubject + prefixRAM + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	}, after, func(key string, msg jetstream.Msg) error {
		var e journalEntry
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		switch {
		case e.Seq <= l.st.Seq:
			// already in the snapshot
		case e.Seq == l.st.Seq+1:
			l.st.apply(&e)
			if e.Result != nil {
				l.replayed = append(l.replayed, *e.Result)
			}
		default:
			invalid = append(invalid, key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	for _, key := range invalid {
		if err := s.kv.Purge(ctx, key, jetstream.PurgeTTL(markerTTL)); err != nil {
			return fmt.Errorf("replay: purge %s: %w", key, err)
		}
	}
	if len(invalid) > 0 {
		s.log.Warn().Int("entries", len(invalid)).Uint64("seq", l.st.Seq).
			Msg("world journal had a gap: the entries after it were never acknowledged and are discarded")
	}
	l.purged = len(invalid)
	return nil
}

// read hands each entry of the bucket that cfg selects (a key's value, not
// a deletion, purge or expiry marker) to each, with its key, in the order
// they were stored, from a consumer of its own made for it (with cfg's
// filter and start; nothing acknowledged) and deleted after; nothing is
// read when the bucket's stream ends at or before sequence after.
func (s *store) read(ctx context.Context, cfg jetstream.ConsumerConfig, after uint64, each func(key string, msg jetstream.Msg) error) error {
	str, err := s.js.Stream(ctx, bucketStream)
	if err != nil {
		return err
	}
	if str.CachedInfo().State.LastSeq <= after {
		return nil
	}
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.InactiveThreshold = time.Minute
	cons, err := str.CreateConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = str.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	for read := uint64(0); read < pending; {
		batch, err := cons.Fetch(int(min(pending-read, 1024)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if len(msg.Data()) == 0 || msg.Headers().Get("KV-Operation") != "" {
				continue // a delete, purge or expiry marker
			}
			if err := each(strings.TrimPrefix(msg.Subject(), bucketSubject), msg); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%d of %d entries read, then none", read, pending)
		}
		read += uint64(n)
	}
	return nil
}

// pendingMargin is how long before a snapshot's PendingSince the begins
// are read from: the broker stamps the bucket's entries with its clock,
// the world its begins with its own.
const pendingMargin = 5 * time.Second

// pendingBegins reads the operations begun since since (see
// snapshot.PendingSince) that have neither landed (no op entry) nor been
// settled, in the order of their landings: a world that restarts lands
// them at their landings, as it would have, whether or not their workers
// are still there to finish them.
func (s *store) pendingBegins(ctx context.Context, since time.Time) ([]pendingBegin, error) {
	start := since.Add(-pendingMargin)
	begins := make(map[string]pendingBegin)
	ended := make(map[string]bool)
	err := s.read(ctx, jetstream.ConsumerConfig{
		FilterSubjects: []string{bucketSubject + prefixBeg + ">", bucketSubject + prefixOp + ">", bucketSubject + prefixSettled + ">"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	}, 0, func(key string, msg jetstream.Msg) error {
		if id, ok := strings.CutPrefix(key, prefixBeg); ok {
			var b BeginReply
			if err := json.Unmarshal(msg.Data(), &b); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			at := time.Now()
			if md, err := msg.Metadata(); err == nil {
				at = md.Timestamp
			}
			begins[id] = pendingBegin{b: b, at: at}
			return nil
		}
		id, _ := strings.CutPrefix(key, prefixOp)
		id, _ = strings.CutPrefix(id, prefixSettled)
		ended[id] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("begun operations: %w", err)
	}
	pending := make([]pendingBegin, 0, len(begins))
	for id, b := range begins {
		if !ended[id] {
			pending = append(pending, b)
		}
	}
	slices.SortFunc(pending, func(a, b pendingBegin) int { return cmp.Compare(a.b.LandsAt, b.b.LandsAt) })
	return pending, nil
}

// pendingBegin is an operation begun and not landed, as stored: its begin,
// and when it was stored.
type pendingBegin struct {
	b  BeginReply
	at time.Time
}

// finishEntry is the journal entry of a finished operation, just applied.
func (st *State) finishEntry(r *Result) journalEntry {
	srv, _ := st.Server(r.Target)
	p := st.player
	return journalEntry{Seq: r.Seq, Result: r, Server: &srv, Player: &p, Time: time.Now().UTC()}
}

// apply sets the values a journal entry left.
func (st *State) apply(e *journalEntry) {
	if e.Server != nil {
		st.setServer(*e.Server)
	}
	if e.Player != nil {
		st.player = *e.Player
	}
	if e.RAM != nil {
		st.setReservation(e.RAM.Host, e.RAM.Owner, e.RAM.Threads)
	}
	st.Seq = e.Seq
}

// saveSnapshot rewrites the "state" key, failing if another writer wrote it.
func (s *store) saveSnapshot(ctx context.Context, sn snapshot) error {
	data, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	rev, err := s.kv.Update(ctx, keyState, data, s.snapRev)
	if err != nil {
		return fmt.Errorf("save world snapshot: %w", err)
	}
	s.snapRev = rev
	return nil
}

// getResult reads a finished operation's result; nil when there is none.
func (s *store) getResult(ctx context.Context, id string) (*Result, error) {
	var e journalEntry
	ok, err := s.get(ctx, opKey(id), &e)
	if !ok || err != nil || e.Result == nil {
		return nil, err
	}
	return e.Result, nil
}

// getBegin reads an operation's begin; nil when there is none.
func (s *store) getBegin(ctx context.Context, id string) (*BeginReply, error) {
	var b BeginReply
	ok, err := s.get(ctx, beginKey(id), &b)
	if !ok || err != nil {
		return nil, err
	}
	return &b, nil
}

func (s *store) get(ctx context.Context, key string, v any) (bool, error) {
	ent, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: read %s: %v", ErrUnavailable, key, err)
	}
	if len(ent.Value()) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(ent.Value(), v); err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	return true, nil
}
