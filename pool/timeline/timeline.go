// Package timeline tracks the threads reserved on one worker over time.
//
// A Timeline is a step function: each reservation adds Threads over the
// half-open window [Start, End). Times are float64 Unix epoch milliseconds;
// two times are the same point exactly when the float64 values are equal.
//
// Internally the change points (+threads at a start, -threads at an end) are
// kept in a treap ordered by time. Every node is augmented with the sum of
// the deltas in its subtree and the maximum and minimum prefix sums, so the
// reserved load at an instant, the maximum load over a window, and the next
// instant where a load threshold is crossed are all answered in O(log n).
// Reserve, Release, Truncate and Extend are O(log n) as well.
//
// A Timeline is not safe for concurrent use; callers must synchronise.
package timeline

import (
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
)

// Sentinel errors, to be tested with errors.Is.
var (
	// ErrNoCapacity reports that the reservation does not fit: at some
	// instant of the window the reserved threads plus the requested ones
	// would exceed the capacity.
	ErrNoCapacity = errors.New("timeline: not enough free threads")
	// ErrInvalidWindow reports a malformed request: a non-finite start, a
	// NaN end, end <= start, or threads <= 0.
	ErrInvalidWindow = errors.New("timeline: invalid window")
	// ErrDuplicate reports that the id is already reserved.
	ErrDuplicate = errors.New("timeline: duplicate reservation id")
	// ErrNotFound reports that no reservation has the id.
	ErrNotFound = errors.New("timeline: reservation not found")
)

// Reservation is one job's claim of Threads over [Start, End).
type Reservation struct {
	ID         string
	Start, End float64
	Threads    int
}

// node is a change point of the step function.
type node struct {
	key         float64
	prio        uint64
	left, right *node

	delta int // net change of reserved threads at key
	refs  int // reservation endpoints (starts and ends) at key

	ends  *res // reservations ending at key (intrusive list)
	nEnds int  // length of ends

	// Aggregates over the subtree, in key order.
	sum     int // sum of deltas
	mx      int // maximum of the non-empty prefix sums
	mn      int // minimum of the non-empty prefix sums
	subEnds int // sum of nEnds
}

// res is the internal record of a reservation.
type res struct {
	Reservation
	endNode      *node // change point at End; stable while referenced
	prevE, nextE *res  // neighbours in endNode's list
}

// maxFree bounds the recycled nodes and records kept per timeline.
const maxFree = 1024

// Timeline is the step function of threads reserved over time on one worker.
// The zero value is not usable; call New.
type Timeline struct {
	capacity int
	root     *node
	byID     map[string]*res
	rng      uint64

	freeNodes *node // linked via right
	nFreeNode int
	freeRes   *res // linked via nextE
	nFreeRes  int

	path    []*node // reused by update
	scratch []*res  // reused by Prune
}

// New returns an empty timeline with the given capacity in threads. A
// negative capacity is treated as 0.
func New(capacity int) *Timeline {
	return &Timeline{
		capacity: max(capacity, 0),
		byID:     make(map[string]*res),
		rng:      rand.Uint64(),
	}
}

// Capacity returns the number of threads of the worker.
func (t *Timeline) Capacity() int { return t.capacity }

// SetCapacity changes the capacity. It may go below the current use, in
// which case Free reports <= 0 and no new reservation fits until enough is
// released. A negative value is treated as 0.
func (t *Timeline) SetCapacity(n int) { t.capacity = max(n, 0) }

// Len returns the number of reservations held.
func (t *Timeline) Len() int { return len(t.byID) }

// Get returns the reservation with the given id.
func (t *Timeline) Get(id string) (Reservation, bool) {
	r, ok := t.byID[id]
	if !ok {
		return Reservation{}, false
	}
	return r.Reservation, true
}

// Reservations returns a copy of all reservations sorted by Start (then End,
// then ID).
func (t *Timeline) Reservations() []Reservation {
	out := make([]Reservation, 0, len(t.byID))
	for _, r := range t.byID {
		out = append(out, r.Reservation)
	}
	slices.SortFunc(out, func(a, b Reservation) int {
		if c := cmp.Compare(a.Start, b.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.End, b.End); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// UsedAt returns the threads reserved at instant at.
func (t *Timeline) UsedAt(at float64) int {
	used := 0
	for n := t.root; n != nil; {
		if n.key <= at {
			used += sumOf(n.left) + n.delta
			n = n.right
		} else {
			n = n.left
		}
	}
	return used
}

// MaxUsed returns the maximum threads reserved at any instant of
// [start, end). An empty window (end <= start, or a NaN bound) yields 0.
func (t *Timeline) MaxUsed(start, end float64) int {
	if !(start < end) {
		return 0
	}
	return maxUsed(t.root, start, end)
}

// Free returns Capacity - MaxUsed(start, end): how many more threads could
// be reserved over the whole window. It may be negative after SetCapacity.
func (t *Timeline) Free(start, end float64) int {
	return t.capacity - t.MaxUsed(start, end)
}

// fits reports whether threads more fit over [start, end).
func (t *Timeline) fits(start, end float64, threads int) bool {
	return t.MaxUsed(start, end) <= t.capacity-threads
}

func validWindow(start, end float64, threads int) bool {
	return !math.IsNaN(start) && !math.IsInf(start, 0) && !math.IsNaN(end) &&
		end > start && threads > 0
}

// Reserve records that job id holds threads over [start, end). End may be
// +Inf for an open-ended reservation. It returns ErrInvalidWindow,
// ErrDuplicate or ErrNoCapacity (checked in that order); on error the
// timeline is unchanged.
func (t *Timeline) Reserve(id string, start, end float64, threads int) error {
	return t.reserve(id, start, end, threads, false)
}

// ForceReserve is Reserve without the capacity check, for recording what
// actually runs on the worker. It still returns ErrInvalidWindow and
// ErrDuplicate.
func (t *Timeline) ForceReserve(id string, start, end float64, threads int) error {
	return t.reserve(id, start, end, threads, true)
}

func (t *Timeline) reserve(id string, start, end float64, threads int, force bool) error {
	if !validWindow(start, end, threads) {
		return ErrInvalidWindow
	}
	if _, dup := t.byID[id]; dup {
		return ErrDuplicate
	}
	if !force && !t.fits(start, end, threads) {
		return ErrNoCapacity
	}
	r := t.newRes()
	r.Reservation = Reservation{ID: id, Start: start, End: end, Threads: threads}
	t.update(start, threads, 1, 0)
	linkEnd(t.update(end, -threads, 1, 1), r)
	t.byID[id] = r
	return nil
}

// Release removes the reservation entirely and reports whether it existed.
func (t *Timeline) Release(id string) bool {
	r, ok := t.byID[id]
	if !ok {
		return false
	}
	t.release(r)
	return true
}

func (t *Timeline) release(r *res) {
	unlinkEnd(r)
	t.update(r.Start, -r.Threads, -1, 0)
	t.update(r.End, r.Threads, -1, -1)
	delete(t.byID, r.ID)
	t.freeResv(r)
}

// Truncate shortens a reservation, typically because its job finished
// early: the new end is max(Start, min(End, end)). A zero-length result
// removes the reservation. It reports whether the reservation exists (and
// false, changing nothing, when end is NaN).
func (t *Timeline) Truncate(id string, end float64) bool {
	r, ok := t.byID[id]
	if !ok || math.IsNaN(end) {
		return false
	}
	newEnd := max(r.Start, min(r.End, end))
	switch newEnd {
	case r.End:
	case r.Start:
		t.release(r)
	default:
		t.moveEnd(r, newEnd)
	}
	return true
}

// Extend lengthens a reservation to end, typically because its job overran.
// It returns ErrNotFound for an unknown id, ErrInvalidWindow for a NaN end
// and ErrNoCapacity if the threads are not free over [End, end), in which
// case nothing changes. An end at or before the current End is a no-op (use
// Truncate to shorten).
func (t *Timeline) Extend(id string, end float64) error {
	return t.extend(id, end, false)
}

// ForceExtend is Extend without the capacity check, for recording reality:
// the job is running whether or not the threads were free.
func (t *Timeline) ForceExtend(id string, end float64) error {
	return t.extend(id, end, true)
}

func (t *Timeline) extend(id string, end float64, force bool) error {
	r, ok := t.byID[id]
	if !ok {
		return ErrNotFound
	}
	if math.IsNaN(end) {
		return ErrInvalidWindow
	}
	if end <= r.End {
		return nil
	}
	if !force && !t.fits(r.End, end, r.Threads) {
		return ErrNoCapacity
	}
	t.moveEnd(r, end)
	return nil
}

func (t *Timeline) moveEnd(r *res, end float64) {
	unlinkEnd(r)
	t.update(r.End, r.Threads, -1, -1)
	r.End = end
	linkEnd(t.update(end, -r.Threads, 1, 1), r)
}

// Prune drops the reservations ending at or before before and returns how
// many were dropped. It costs O(k log n) where k is the number dropped.
func (t *Timeline) Prune(before float64) int {
	if math.IsNaN(before) {
		return 0
	}
	t.scratch = collectEnds(t.root, before, t.scratch[:0])
	for _, r := range t.scratch {
		t.release(r)
	}
	n := len(t.scratch)
	clear(t.scratch)
	return n
}

// collectEnds appends the reservations ending at or before before, visiting
// only the subtrees that hold ends.
func collectEnds(n *node, before float64, out []*res) []*res {
	for n != nil && n.subEnds > 0 {
		out = collectEnds(n.left, before, out)
		if n.key > before {
			return out
		}
		for r := n.ends; r != nil; r = r.nextE {
			out = append(out, r)
		}
		n = n.right
	}
	return out
}

// NextFree returns the earliest start >= after such that threads more fit
// over [start, start+length). A length <= 0 probes the single instant
// start. It returns +Inf if threads > Capacity or if the load never drops
// low enough (open-ended reservations), and NaN if after or length is NaN
// or after is -Inf. A threads < 0 counts as 0 (where is the load within
// capacity). Each blocked stretch skipped costs O(log n).
func (t *Timeline) NextFree(threads int, after float64, length float64) float64 {
	if math.IsNaN(after) || math.IsNaN(length) || math.IsInf(after, -1) {
		return math.NaN()
	}
	threads = max(threads, 0)
	if threads > t.capacity {
		return math.Inf(1)
	}
	limit := t.capacity - threads
	length = max(length, 0)
	c := after
	for {
		if math.IsInf(c, 1) {
			return c
		}
		// Find the first blocked instant b in [c, c+length), if any.
		var b float64
		if t.UsedAt(c) > limit {
			b = c
		} else {
			k, ok := firstAbove(t.root, c, 0, limit)
			if !ok || !(k < c+length) {
				return c
			}
			b = k
		}
		// No start in [c, next) works, where next is the first change
		// point after b where the load is back within limit.
		next, ok := firstAtMost(t.root, b, 0, limit)
		if !ok {
			return math.Inf(1)
		}
		c = next
	}
}

// ---- treap ----

func sumOf(n *node) int {
	if n == nil {
		return 0
	}
	return n.sum
}

func pull(n *node) {
	s, ends := n.delta, n.nEnds
	mx, mn := 0, 0
	if l := n.left; l != nil {
		s += l.sum
		mx, mn = max(l.mx, s), min(l.mn, s)
		ends += l.subEnds
	} else {
		mx, mn = s, s
	}
	if r := n.right; r != nil {
		mx = max(mx, s+r.mx)
		mn = min(mn, s+r.mn)
		s += r.sum
		ends += r.subEnds
	}
	n.sum, n.mx, n.mn, n.subEnds = s, mx, mn, ends
}

func merge(a, b *node) *node {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	if a.prio > b.prio {
		a.right = merge(a.right, b)
		pull(a)
		return a
	}
	b.left = merge(a, b.left)
	pull(b)
	return b
}

// update applies delta d, endpoint count change ref (+1 or -1) and end
// count change endRef (0, +1 or -1) to the change point at key, creating it
// if needed and deleting it when no endpoint references it any more. It
// returns the node at key, or nil if it was deleted. The caller maintains
// the ends list itself.
func (t *Timeline) update(key float64, d, ref, endRef int) *node {
	path := t.path[:0]
	link := &t.root
	for n := *link; n != nil && n.key != key; n = *link {
		path = append(path, n)
		if key < n.key {
			link = &n.left
		} else {
			link = &n.right
		}
	}
	i := len(path) - 1
	n := *link
	switch {
	case n == nil:
		n = t.newNode(key)
		n.delta, n.refs, n.nEnds = d, ref, endRef
		*link = n
		// Rotate the new node up while it outranks its parent.
		for ; i >= 0 && path[i].prio < n.prio; i-- {
			p := path[i]
			if p.left == n {
				p.left, n.right = n.right, p
			} else {
				p.right, n.left = n.left, p
			}
			pull(p)
			switch {
			case i == 0:
				t.root = n
			case path[i-1].left == p:
				path[i-1].left = n
			default:
				path[i-1].right = n
			}
		}
		pull(n)
	case n.refs+ref == 0:
		*link = merge(n.left, n.right)
		t.freeNode(n)
		n = nil
	default:
		n.delta += d
		n.refs += ref
		n.nEnds += endRef
		pull(n)
	}
	for ; i >= 0; i-- {
		pull(path[i])
	}
	t.path = path // stale pointers left here are harmless
	return n
}

// maxUsed returns max(UsedAt(lo), max prefix sum at keys in (lo, hi)) for
// lo < hi, walking the paths to lo and hi once.
func maxUsed(n *node, lo, hi float64) int {
	base := 0
	// Descend to the split node, the highest node with key in (lo, hi).
	for n != nil {
		if n.key <= lo {
			base += sumOf(n.left) + n.delta
			n = n.right
		} else if n.key >= hi {
			n = n.left
		} else {
			break
		}
	}
	if n == nil {
		return base // no change point in (lo, hi): base is UsedAt(lo)
	}
	at := base + sumOf(n.left) + n.delta
	best := at
	// Left boundary: keys in (lo, split) and the prefix sum at lo.
	for x := n.left; x != nil; {
		if x.key <= lo {
			base += sumOf(x.left) + x.delta
			x = x.right
			continue
		}
		v := base + sumOf(x.left) + x.delta // x and x.right are in range
		best = max(best, v)
		if x.right != nil {
			best = max(best, v+x.right.mx)
		}
		x = x.left
	}
	best = max(best, base) // base is now UsedAt(lo)
	// Right boundary: keys in (split, hi).
	for x := n.right; x != nil; {
		if x.key >= hi {
			x = x.left
			continue
		}
		if x.left != nil { // x.left is in range
			best = max(best, at+x.left.mx)
		}
		at += sumOf(x.left) + x.delta
		best = max(best, at)
		x = x.right
	}
	return best
}

// firstAbove returns the smallest key > x in subtree n whose absolute prefix
// sum exceeds limit; base is the sum of all deltas before the subtree.
func firstAbove(n *node, x float64, base, limit int) (float64, bool) {
	for n != nil {
		if n.key <= x {
			base += sumOf(n.left) + n.delta
			n = n.right
			continue
		}
		if k, ok := firstAbove(n.left, x, base, limit); ok {
			return k, true
		}
		at := base + sumOf(n.left) + n.delta
		if at > limit {
			return n.key, true
		}
		if r := n.right; r != nil && at+r.mx > limit {
			return firstAboveAll(r, at, limit), true
		}
		return 0, false
	}
	return 0, false
}

// firstAboveAll is firstAbove without the lower bound; the caller has
// checked that base+n.mx > limit, so a key exists.
func firstAboveAll(n *node, base, limit int) float64 {
	for {
		if l := n.left; l != nil && base+l.mx > limit {
			n = l
			continue
		}
		base += sumOf(n.left) + n.delta
		if base > limit {
			return n.key
		}
		n = n.right
	}
}

// firstAtMost returns the smallest key > x in subtree n whose absolute
// prefix sum is <= limit; base is the sum of all deltas before the subtree.
func firstAtMost(n *node, x float64, base, limit int) (float64, bool) {
	for n != nil {
		if n.key <= x {
			base += sumOf(n.left) + n.delta
			n = n.right
			continue
		}
		if k, ok := firstAtMost(n.left, x, base, limit); ok {
			return k, true
		}
		at := base + sumOf(n.left) + n.delta
		if at <= limit {
			return n.key, true
		}
		if r := n.right; r != nil && at+r.mn <= limit {
			return firstAtMostAll(r, at, limit), true
		}
		return 0, false
	}
	return 0, false
}

func firstAtMostAll(n *node, base, limit int) float64 {
	for {
		if l := n.left; l != nil && base+l.mn <= limit {
			n = l
			continue
		}
		base += sumOf(n.left) + n.delta
		if base <= limit {
			return n.key
		}
		n = n.right
	}
}

// ---- end lists and recycling ----

func linkEnd(n *node, r *res) {
	r.endNode = n
	r.prevE = nil
	r.nextE = n.ends
	if n.ends != nil {
		n.ends.prevE = r
	}
	n.ends = r
}

// unlinkEnd removes r from its end node's list.
func unlinkEnd(r *res) {
	if r.prevE != nil {
		r.prevE.nextE = r.nextE
	} else {
		r.endNode.ends = r.nextE
	}
	if r.nextE != nil {
		r.nextE.prevE = r.prevE
	}
	r.endNode, r.prevE, r.nextE = nil, nil, nil
}

func (t *Timeline) newNode(key float64) *node {
	n := t.freeNodes
	if n != nil {
		t.freeNodes = n.right
		t.nFreeNode--
		*n = node{}
	} else {
		n = new(node)
	}
	// splitmix64
	t.rng += 0x9e3779b97f4a7c15
	z := t.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	n.key, n.prio = key, z^(z>>31)
	return n
}

func (t *Timeline) freeNode(n *node) {
	if t.nFreeNode >= maxFree {
		return
	}
	*n = node{right: t.freeNodes}
	t.freeNodes = n
	t.nFreeNode++
}

func (t *Timeline) newRes() *res {
	r := t.freeRes
	if r == nil {
		return new(res)
	}
	t.freeRes = r.nextE
	t.nFreeRes--
	r.nextE = nil
	return r
}

func (t *Timeline) freeResv(r *res) {
	if t.nFreeRes >= maxFree {
		return
	}
	*r = res{nextE: t.freeRes}
	t.freeRes = r
	t.nFreeRes++
}

// Step is the threads reserved from At until the next step.
type Step struct {
	At   float64 `json:"at"`
	Used int     `json:"used"`
}

// Steps returns the reserved threads over [start, end) as a step function:
// the load at start, then each change point inside the window where the
// load changes. It walks only the change points in the window: O(log n +
// k) for k of them.
func (t *Timeline) Steps(start, end float64) []Step {
	if !(start < end) {
		return nil
	}
	used := t.UsedAt(start)
	out := []Step{{At: start, Used: used}}
	var walk func(n *node)
	walk = func(n *node) {
		if n == nil {
			return
		}
		if n.key > start {
			walk(n.left)
		}
		if n.key > start && n.key < end {
			used += n.delta
			if used != out[len(out)-1].Used {
				out = append(out, Step{At: n.key, Used: used})
			}
		}
		if n.key < end {
			walk(n.right)
		}
	}
	walk(t.root)
	return out
}
