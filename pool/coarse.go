package pool

import "math"

// coarse is a second-by-second summary of a worker's reservations: for each
// second, the threads of every reservation that overlaps it. Their sum is at
// least the most threads in use at any instant of that second, so
// capacity minus the largest sum over a window is a lower bound of the free
// threads there. Placement reads it first: a worker whose bound already
// fits the job needs no exact query, and the scan over many workers stays a
// few array reads each. The timeline stays the truth.
type coarse struct {
	base int64   // the second sums[0] stands for
	sums []int32 // threads overlapping each second
}

func seconds(start, end float64) (int64, int64) {
	return int64(math.Floor(start / 1000)), int64(math.Ceil(end/1000)) - 1
}

// add adds threads (negative to remove) to the seconds [start, end) overlaps.
func (c *coarse) add(start, end float64, threads int) {
	if end <= start || math.IsInf(end, 0) || math.IsNaN(start) {
		return
	}
	a, b := seconds(start, end)
	if len(c.sums) == 0 {
		c.base = a
	}
	if a < c.base { // grow to the left
		grown := make([]int32, int(c.base-a)+len(c.sums))
		copy(grown[c.base-a:], c.sums)
		c.sums, c.base = grown, a
	}
	if need := int(b-c.base) + 1; need > len(c.sums) {
		c.sums = append(c.sums, make([]int32, need-len(c.sums))...)
	}
	for i := a - c.base; i <= b-c.base; i++ {
		c.sums[i] += int32(threads)
	}
}

// prune forgets the seconds before the one holding before.
func (c *coarse) prune(before float64) {
	cut := int64(math.Floor(before/1000)) - c.base
	if cut <= 0 || len(c.sums) == 0 {
		return
	}
	if cut >= int64(len(c.sums)) {
		c.sums, c.base = c.sums[:0], c.base+cut
		return
	}
	n := copy(c.sums, c.sums[cut:])
	c.sums, c.base = c.sums[:n], c.base+cut
}

// reserve reserves on the timeline and keeps the summary in step.
func (ws *workerState) reserve(id string, start, end float64, threads int) error {
	if err := ws.tl.Reserve(id, start, end, threads); err != nil {
		return err
	}
	ws.sum.add(start, end, threads)
	_ = ws.all.ForceReserve(ws.allID(id), start, end, threads)
	return nil
}

// release removes a reservation from the timeline and the summary.
func (ws *workerState) release(id string) {
	if r, ok := ws.tl.Get(id); ok {
		ws.tl.Release(id)
		ws.sum.add(r.Start, r.End, -r.Threads)
		ws.all.Release(ws.allID(id))
	}
}

// allID is a reservation's id in the pool's timeline of every worker's
// reservations (job ids are unique across workers, parts included; the
// worker's id makes sure).
func (ws *workerState) allID(id string) string { return ws.entry.ID + "\x00" + id }

// prune drops reservations that ended before a time.
func (ws *workerState) prune(before float64) {
	for _, r := range ws.tl.Reservations() {
		if r.End <= before {
			ws.release(r.ID)
		}
	}
	ws.sum.prune(before)
}

// surelyFits reports whether the summary alone shows threads free over the
// window. It stops at the first second that is too full.
func (ws *workerState) surelyFits(start, end float64, threads int) bool {
	limit := int32(ws.tl.Capacity() - threads)
	if limit < 0 {
		return false
	}
	c := &ws.sum
	a, b := seconds(start, end)
	a, b = max(a-c.base, 0), min(b-c.base, int64(len(c.sums))-1)
	for i := a; i <= b; i++ {
		if c.sums[i] > limit {
			return false
		}
	}
	return true
}
