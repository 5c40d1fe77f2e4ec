package timeline

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// refTimeline is a naive O(n) reference implementation of Timeline.
type refTimeline struct {
	capacity int
	rs       map[string]Reservation
}

func newRef(capacity int) *refTimeline {
	return &refTimeline{capacity: max(capacity, 0), rs: map[string]Reservation{}}
}

func (r *refTimeline) UsedAt(at float64) int {
	u := 0
	for _, x := range r.rs {
		if x.Start <= at && at < x.End {
			u += x.Threads
		}
	}
	return u
}

func (r *refTimeline) MaxUsed(s, e float64) int {
	if !(s < e) {
		return 0
	}
	// Sweep the starts inside the window in time order; only starts
	// raise the load.
	m := r.UsedAt(s)
	type ev struct {
		at float64
		d  int
	}
	var evs []ev
	for _, x := range r.rs {
		if x.Start < e && x.End > s {
			if x.Start > s {
				evs = append(evs, ev{x.Start, x.Threads})
			}
			if x.End < e {
				evs = append(evs, ev{x.End, -x.Threads})
			}
		}
	}
	slices.SortFunc(evs, func(a, b ev) int { return cmp.Compare(a.at, b.at) })
	cur := m
	for i := 0; i < len(evs); {
		at := evs[i].at
		for ; i < len(evs) && evs[i].at == at; i++ {
			cur += evs[i].d
		}
		m = max(m, cur)
	}
	return m
}

func (r *refTimeline) fits(s, e float64, th int) bool { return r.MaxUsed(s, e)+th <= r.capacity }

func (r *refTimeline) Reserve(id string, s, e float64, th int, force bool) error {
	if math.IsNaN(s) || math.IsInf(s, 0) || math.IsNaN(e) || !(e > s) || th <= 0 {
		return ErrInvalidWindow
	}
	if _, ok := r.rs[id]; ok {
		return ErrDuplicate
	}
	if !force && !r.fits(s, e, th) {
		return ErrNoCapacity
	}
	r.rs[id] = Reservation{id, s, e, th}
	return nil
}

func (r *refTimeline) Release(id string) bool {
	_, ok := r.rs[id]
	delete(r.rs, id)
	return ok
}

func (r *refTimeline) Truncate(id string, end float64) bool {
	x, ok := r.rs[id]
	if !ok || math.IsNaN(end) {
		return false
	}
	x.End = max(x.Start, min(x.End, end))
	if x.End == x.Start {
		delete(r.rs, id)
	} else {
		r.rs[id] = x
	}
	return true
}

func (r *refTimeline) Extend(id string, end float64, force bool) error {
	x, ok := r.rs[id]
	if !ok {
		return ErrNotFound
	}
	if math.IsNaN(end) {
		return ErrInvalidWindow
	}
	if end <= x.End {
		return nil
	}
	if !force && !r.fits(x.End, end, x.Threads) {
		return ErrNoCapacity
	}
	x.End = end
	r.rs[id] = x
	return nil
}

func (r *refTimeline) Prune(before float64) int {
	n := 0
	for id, x := range r.rs {
		if x.End <= before {
			delete(r.rs, id)
			n++
		}
	}
	return n
}

func (r *refTimeline) Reservations() []Reservation {
	out := make([]Reservation, 0, len(r.rs))
	for _, x := range r.rs {
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b Reservation) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.End, b.End), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func (r *refTimeline) NextFree(th int, after, length float64) float64 {
	if math.IsNaN(after) || math.IsNaN(length) || math.IsInf(after, -1) {
		return math.NaN()
	}
	th = max(th, 0)
	if th > r.capacity {
		return math.Inf(1)
	}
	length = max(length, 0)
	ok := func(c float64) bool {
		if r.UsedAt(c)+th > r.capacity {
			return false
		}
		return length == 0 || r.MaxUsed(c, c+length)+th <= r.capacity
	}
	cands := []float64{after}
	for _, x := range r.rs {
		for _, p := range []float64{x.Start, x.End} {
			if p > after {
				cands = append(cands, p)
			}
		}
	}
	slices.Sort(cands)
	for _, c := range cands {
		if ok(c) {
			return c
		}
	}
	return math.Inf(1)
}

// check verifies the treap invariants and the agreement of the internal
// bookkeeping with the reservations.
func (t *Timeline) check() error {
	wantDelta := map[float64]int{}
	wantRefs := map[float64]int{}
	wantEnds := map[float64]map[*res]bool{}
	for id, r := range t.byID {
		if r.ID != id {
			return fmt.Errorf("map key %q holds id %q", id, r.ID)
		}
		wantDelta[r.Start] += r.Threads
		wantDelta[r.End] -= r.Threads
		wantRefs[r.Start]++
		wantRefs[r.End]++
		if wantEnds[r.End] == nil {
			wantEnds[r.End] = map[*res]bool{}
		}
		wantEnds[r.End][r] = true
	}
	count := 0
	type agg struct{ sum, mx, mn, ends int }
	var walk func(n *node, lo, hi *float64) (agg, error)
	walk = func(n *node, lo, hi *float64) (agg, error) {
		if n == nil {
			return agg{}, nil
		}
		count++
		if (lo != nil && !(n.key > *lo)) || (hi != nil && !(n.key < *hi)) {
			return agg{}, fmt.Errorf("key %v out of order", n.key)
		}
		for _, c := range []*node{n.left, n.right} {
			if c != nil && c.prio > n.prio {
				return agg{}, fmt.Errorf("heap order broken at %v", n.key)
			}
		}
		la, err := walk(n.left, lo, &n.key)
		if err != nil {
			return agg{}, err
		}
		ra, err := walk(n.right, &n.key, hi)
		if err != nil {
			return agg{}, err
		}
		if n.delta != wantDelta[n.key] || n.refs != wantRefs[n.key] || n.refs <= 0 {
			return agg{}, fmt.Errorf("node %v: delta %d refs %d, want %d %d", n.key, n.delta, n.refs, wantDelta[n.key], wantRefs[n.key])
		}
		got := map[*res]bool{}
		var prev *res
		for r := n.ends; r != nil; r = r.nextE {
			if r.prevE != prev || r.End != n.key || r.endNode != n || got[r] || !wantEnds[n.key][r] {
				return agg{}, fmt.Errorf("bad end list at %v", n.key)
			}
			got[r] = true
			prev = r
		}
		if len(got) != len(wantEnds[n.key]) || n.nEnds != len(got) {
			return agg{}, fmt.Errorf("end list at %v has %d, want %d", n.key, len(got), len(wantEnds[n.key]))
		}
		s := n.delta
		a := agg{ends: n.nEnds + la.ends + ra.ends}
		if n.left != nil {
			s += la.sum
			a.mx, a.mn = max(la.mx, s), min(la.mn, s)
		} else {
			a.mx, a.mn = s, s
		}
		if n.right != nil {
			a.mx, a.mn = max(a.mx, s+ra.mx), min(a.mn, s+ra.mn)
			s += ra.sum
		}
		a.sum = s
		if n.sum != a.sum || n.mx != a.mx || n.mn != a.mn || n.subEnds != a.ends {
			return agg{}, fmt.Errorf("node %v aggregates %d/%d/%d, want %d/%d/%d", n.key, n.sum, n.mx, n.mn, a.sum, a.mx, a.mn)
		}
		return a, nil
	}
	if _, err := walk(t.root, nil, nil); err != nil {
		return err
	}
	if count != len(wantRefs) {
		return fmt.Errorf("%d nodes, want %d", count, len(wantRefs))
	}
	return nil
}
