package world

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHoldback is how long the world holds a timed request before it
// applies it (see Options.Holdback), for a world at speed: 12 game seconds,
// within [MinHoldback, MaxHoldback]. Longer is safer, since a request
// slower than the holdback may apply out of order, but a begin's answer
// (the operation's duration) also waits for it, and must come before the
// operation would land: at 60x a hack takes over a second, at 1000x tens
// of milliseconds.
func DefaultHoldback(speed float64) time.Duration {
	if !(speed > 0) {
		return MinHoldback
	}
	return min(MaxHoldback, max(MinHoldback, time.Duration(12*float64(time.Second)/speed)))
}

// Bounds of DefaultHoldback.
const (
	MinHoldback = 50 * time.Millisecond
	MaxHoldback = 200 * time.Millisecond
)

// sequencer hands timed requests (a begin stamped with its operation's
// start, a finish with its landing) to the writer in the order of their
// stamps, each once its stamp is Holdback old. Requests travel to the
// world at different speeds, from different workers: without it, a
// finish that landed before a begin's start, but arrived after it, would
// be applied after it, and the begin would see the target as it was before
// that landing. The holdback is a watermark: a request slower than it is
// applied when it arrives.
type sequencer struct {
	holdback time.Duration
	out      func(*item)

	// outMu keeps the hand-offs in order; mu guards the queue.
	outMu   sync.Mutex
	mu      sync.Mutex
	pending timedItems
	seq     uint64
	timer   *time.Timer
	// flushed is set once flush has handed everything on: later requests
	// go straight through.
	flushed bool

	// late counts the requests that arrived after their stamp was Holdback
	// old, whose order was therefore not guaranteed; lateMax is the latest
	// (arrival minus stamp, in µs).
	late    atomic.Int64
	lateMax atomic.Int64
	// holdUntil holds every request until then (Unix ns; see holdFor).
	holdUntil atomic.Int64
	// reading counts the requests that came while the sequencer held and
	// are read from the store before they are added (Service.goLookup):
	// the hold goes on until they are in, for up to maxReadWait.
	reading atomic.Int64
	// ended is the hold (its holdUntil) whose requests were last handed
	// on: the batch that ends a hold holds what comes after it until the
	// writer has applied it (see release).
	ended int64
	// asked is the end of the latest hold asked for (holdFor), which the
	// end of the hold that applies a held batch (endHold) keeps.
	asked atomic.Int64
}

// maxApplyWait bounds how long the end of a hold waits for the writer to
// apply what was held.
const maxApplyWait = 5 * time.Second

// maxReadWait bounds how long a hold waits, past its end, for the requests
// being read from the store (see sequencer.reading). After a broker kill
// in the chaos test, the world had hundreds to read (every begin stamped
// before its reload, every finish of an operation begun before it), and
// the last came 50 ms after the hold: a hack begun late then landed after
// the weakens stamped after it, and the batch desynced.
const maxReadWait = 2 * time.Second

// readsPending reports whether a hold that ended at most maxReadWait ago
// still waits for requests being read.
func (q *sequencer) readsPending(now time.Time) bool {
	until := time.Unix(0, q.holdUntil.Load())
	return !now.Before(until) && now.Before(until.Add(maxReadWait)) && q.reading.Load() > 0
}

func newSequencer(holdback time.Duration, out func(*item)) *sequencer {
	q := &sequencer{holdback: holdback, out: out}
	q.timer = time.AfterFunc(time.Hour, q.release)
	q.timer.Stop()
	return q
}

// holdFor holds every request for d from now, then hands them on in stamp
// order: a world that resumes after a restart, or whose connection to the
// broker comes back, receives at once the requests its workers could not
// send meanwhile, whose stamps are older than the holdback, and would
// apply them in the order they arrive. It never shortens a hold.
func (q *sequencer) holdFor(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	raise(&q.asked, until)
	raise(&q.holdUntil, until)
}

// raise sets v to until if that is later.
func raise(v *atomic.Int64, until int64) {
	for old := v.Load(); until > old && !v.CompareAndSwap(old, until); old = v.Load() {
	}
}

// holding reports whether the sequencer holds every request now (see
// holdFor).
func (q *sequencer) holding() bool { return time.Now().UnixNano() < q.holdUntil.Load() }

// add queues it until its stamp (epoch ms) is Holdback old. Requests with
// the same stamp (a worker that woke late fires every timer due meanwhile
// at once) go in the order of due, their scheduled instants.
func (q *sequencer) add(stamp, due float64, it *item) {
	it.timed, it.stamp = true, stamp
	stamped := time.UnixMicro(int64(stamp * 1000))
	release := stamped.Add(q.holdback)
	now := time.Now()
	if until := time.Unix(0, q.holdUntil.Load()); now.Before(until) {
		release = until // and its stamp orders it among the others
	}
	past := !now.Before(release)
	if q.holdback > 0 && past {
		q.late.Add(1)
		us := now.Sub(stamped).Microseconds()
		for old := q.lateMax.Load(); us > old && !q.lateMax.CompareAndSwap(old, us); old = q.lateMax.Load() {
		}
	}
	if q.holdback <= 0 || past {
		// Due now: straight on, unless earlier requests wait to go first.
		q.outMu.Lock()
		q.mu.Lock()
		empty := len(q.pending) == 0
		q.mu.Unlock()
		if empty {
			q.out(it)
			q.outMu.Unlock()
			return
		}
		q.outMu.Unlock()
	}
	if !q.push(release, stamp, due, it) {
		q.outMu.Lock()
		q.out(it)
		q.outMu.Unlock()
	}
}

// push holds it until release, and reports false, holding nothing, once
// the sequencer has been flushed: checked in the same hold of mu as the
// push, since flush drains and sets flushed in one, so nothing pushed is
// left behind.
func (q *sequencer) push(release time.Time, stamp, due float64, it *item) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.flushed {
		return false
	}
	q.seq++
	heap.Push(&q.pending, timedItem{release: release, stamp: stamp, due: due, seq: q.seq, it: it})
	// Reset under mu, as release and endHold do: none overwrites another's.
	q.timer.Reset(max(time.Until(q.pending[0].release), 0))
	return true
}

// queue queues it like add, but never hands it to the writer from the
// caller's goroutine, even when it is due: for the writer itself, which
// must not wait on its own queue. It reports false once the sequencer has
// been flushed (the service is stopping): then it is dropped.
func (q *sequencer) queue(stamp, due float64, it *item) bool {
	it.timed, it.stamp = true, stamp
	release := time.UnixMicro(int64(stamp * 1000)).Add(q.holdback)
	if until := time.Unix(0, q.holdUntil.Load()); release.Before(until) {
		release = until
	}
	return q.push(release, stamp, due, it)
}

// flush hands every request it holds to the writer now, in stamp order,
// and stops holding: the service is stopping, and a request it accepted
// is applied (or answered) rather than dropped.
func (q *sequencer) flush() {
	q.outMu.Lock()
	defer q.outMu.Unlock()
	q.timer.Stop()
	q.mu.Lock()
	q.flushed = true
	var items []*item
	for len(q.pending) > 0 {
		items = append(items, heap.Pop(&q.pending).(timedItem).it)
	}
	q.mu.Unlock()
	for _, it := range items {
		q.out(it)
	}
}

// release hands every due request to the writer, in stamp order.
func (q *sequencer) release() {
	q.outMu.Lock()
	defer q.outMu.Unlock()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 || q.flushed {
			q.mu.Unlock()
			return
		}
		next := q.pending[0]
		if wait := time.Until(next.release); wait > 0 {
			q.mu.Unlock()
			q.timer.Reset(wait)
			return
		}
		if until := time.Unix(0, q.holdUntil.Load()); time.Now().Before(until) {
			// A hold made longer after these were queued (a reload of
			// the world after its broker came back) holds them too:
			// everything held goes in one batch, in stamp order.
			// Reset under mu: endHold's Reset, also under it, is
			// not overwritten by this one.
			q.timer.Reset(time.Until(until))
			q.mu.Unlock()
			return
		}
		if q.readsPending(time.Now()) {
			q.timer.Reset(5 * time.Millisecond)
			q.mu.Unlock()
			return
		}
		// Every request due now goes to the writer as one batch, in
		// stamp order: after a hold, the landing of an operation begun
		// in it may fall among them, and the writer puts it in its
		// place (see runGroup), which it cannot do for requests it has
		// not been handed yet.
		var batch []*item
		for len(q.pending) > 0 && !time.Now().Before(q.pending[0].release) {
			batch = append(batch, heap.Pop(&q.pending).(timedItem).it)
		}
		var after func()
		if until := q.holdUntil.Load(); until > q.ended {
			// The end of a hold. The operations begun in it may land
			// before requests that come while the writer applies it:
			// those wait, and so go in their place among the landings
			// the writer schedules, rather than straight on ahead of
			// them (a broker kill in the chaos test landed hacks begun
			// in the hold after the weakens stamped after them).
			q.ended = q.hold(maxApplyWait)
			after = q.endHold
		}
		q.mu.Unlock()
		if len(batch) == 1 && after == nil {
			q.out(batch[0])
		} else {
			q.out(&item{batch: batch, after: after})
		}
	}
}

// hold holds every request for d from now, at once, and returns when
// until (see holdFor); q.mu is held.
func (q *sequencer) hold(d time.Duration) int64 {
	until := max(time.Now().Add(d).UnixNano(), q.asked.Load())
	q.holdUntil.Store(until)
	return until
}

// endHold ends the hold that followed the end of a hold, once the writer
// has applied what it held: what came meanwhile goes on in stamp order.
func (q *sequencer) endHold() {
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.holdUntil.Load() != q.ended {
		return // held longer meanwhile
	}
	// A hold asked for while the batch was applied (a reload of the
	// world) goes on: its end is then the end of a hold, as any.
	until := time.Unix(0, max(now.UnixNano(), q.asked.Load()))
	q.holdUntil.Store(until.UnixNano())
	q.ended = now.UnixNano()
	for i := range q.pending {
		p := &q.pending[i]
		// Released at the hold's end, or at its holdback if later.
		p.release = until
		if r := time.UnixMicro(int64(p.stamp * 1000)).Add(q.holdback); r.After(until) {
			p.release = r
		}
	}
	q.timer.Reset(0)
}

type timedItem struct {
	release    time.Time
	stamp, due float64
	seq        uint64
	it         *item
}

// timedItems is a min-heap by stamp, then due, then arrival.
type timedItems []timedItem

func (h timedItems) Len() int { return len(h) }
func (h timedItems) Less(i, j int) bool {
	if h[i].stamp != h[j].stamp {
		return h[i].stamp < h[j].stamp
	}
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}
func (h timedItems) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timedItems) Push(x any)   { *h = append(*h, x.(timedItem)) }
func (h *timedItems) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
