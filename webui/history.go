package webui

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/pool"
)

// jobView is a job as the timeline draws it.
type jobView struct {
	ID      string `json:"id"`
	Batch   string `json:"batch,omitempty"`
	Task    string `json:"task"`
	Worker  string `json:"worker,omitempty"`
	Threads int    `json:"threads"`
	// Start and End are the scheduled window (epoch ms). A job with no
	// startTime (as soon as possible) starts where it was placed; ASAP
	// says so.
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	ASAP  bool    `json:"asap,omitempty"`
	// ActualStart, ActualEnd, Status and Reason come from its record.
	ActualStart float64 `json:"actualStart,omitempty"`
	ActualEnd   float64 `json:"actualEnd,omitempty"`
	Status      string  `json:"status,omitempty"`
	Reason      string  `json:"reason,omitempty"`

	seq uint64 // arrival order, for trimming by count
}

// last is the latest time the job is drawn at.
func (v *jobView) last() float64 { return max(v.End, v.ActualEnd, v.Start) }

// history is what the UI keeps: recent jobs, chart points and marks, and
// what changed since the pages were last told.
type history struct {
	keep    time.Duration
	maxJobs int

	mu     sync.Mutex
	jobs   map[string]*jobView
	seq    uint64
	points []Point
	marks  []pool.Mark
	status *statusView

	changed   map[string]*jobView
	newPoints []Point
	newMarks  []pool.Mark
}

func newHistory(keep time.Duration, maxJobs int) *history {
	return &history{keep: keep, maxJobs: maxJobs, jobs: map[string]*jobView{}, changed: map[string]*jobView{}}
}

// viewLocked is the job's view, made if it is new.
func (h *history) viewLocked(id string) *jobView {
	v := h.jobs[id]
	if v == nil {
		h.seq++
		v = &jobView{ID: id, seq: h.seq}
		h.jobs[id] = v
	}
	h.changed[id] = v
	return v
}

// placed notes jobs placed at (epoch ms).
func (h *history) placed(jobs []job.Job, at float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range jobs {
		j := &jobs[i]
		if j.ID == "" {
			continue
		}
		v := h.viewLocked(j.ID)
		v.Batch, v.Task, v.Worker, v.Threads = j.Batch, j.Task, j.Worker, j.Threads
		v.ASAP = j.StartTime == 0
		if v.ASAP {
			if v.Start == 0 {
				v.Start = at
			}
		} else {
			v.Start = j.StartTime
		}
		v.End = j.ScheduledEnd(v.Start)
	}
}

// recorded notes completion records and the points they make.
func (h *history) recorded(recs []job.Job, points []Point) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range recs {
		r := &recs[i]
		if r.ID == "" || !r.Ended() {
			continue
		}
		v := h.viewLocked(r.ID)
		if v.Task == "" { // placed before the UI watched
			v.Batch, v.Task, v.Threads = r.Batch, r.Task, r.Threads
			v.ASAP = r.StartTime == 0
			v.Start = r.StartTime
			if v.ASAP {
				v.Start = r.ActualStartTime
			}
			if v.Start == 0 {
				v.Start = r.ActualEndTime
			}
			v.End = r.ScheduledEnd(v.Start)
		}
		if r.Worker != "" {
			v.Worker = r.Worker
		}
		v.ActualStart, v.ActualEnd = r.ActualStartTime, r.ActualEndTime
		v.Status, v.Reason = string(r.Status), r.Reason
		if r.Error != "" {
			v.Reason = joinReason(v.Reason, r.Error)
		}
	}
	for _, pt := range points {
		// A value JSON cannot carry would break every page's snapshot.
		if math.IsNaN(pt.Value) || math.IsInf(pt.Value, 0) || math.IsNaN(pt.Time) || math.IsInf(pt.Time, 0) {
			continue
		}
		h.points = append(h.points, pt)
		h.newPoints = append(h.newPoints, pt)
	}
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + ": " + b
}

// marked notes a mark.
func (h *history) marked(m pool.Mark) {
	if math.IsNaN(m.Time) || math.IsInf(m.Time, 0) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.marks = append(h.marks, m)
	h.newMarks = append(h.newMarks, m)
}

// setStatus keeps the latest status for new pages.
func (h *history) setStatus(s *statusView) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = s
}

// trim forgets what ended more than keep before now, and the oldest jobs
// beyond maxJobs.
func (h *history) trim(now float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cut := now - h.keep.Seconds()*1000
	for id, v := range h.jobs {
		if v.last() < cut {
			delete(h.jobs, id)
		}
	}
	if over := len(h.jobs) - h.maxJobs; over > 0 {
		// The oldest by arrival: the smallest seqs.
		seqs := make([]uint64, 0, len(h.jobs))
		for _, v := range h.jobs {
			seqs = append(seqs, v.seq)
		}
		cutSeq := nthSmallest(seqs, over)
		for id, v := range h.jobs {
			if v.seq <= cutSeq {
				delete(h.jobs, id)
			}
		}
	}
	// Anyone may publish a mark, and a chart's points come from the
	// records: keep those of the window, and at most so many, the latest.
	h.points = keepLatest(slices.DeleteFunc(h.points, func(p Point) bool { return p.Time < cut }), h.maxPoints())
	h.marks = keepLatest(slices.DeleteFunc(h.marks, func(m pool.Mark) bool { return m.Time < cut }), maxMarks)
}

// maxMarks bounds the marks kept.
const maxMarks = 10_000

// maxPoints bounds the chart points kept: a few a job.
func (h *history) maxPoints() int { return 4 * h.maxJobs }

// keepLatest keeps the last n elements of s (those that came last).
func keepLatest[T any](s []T, n int) []T {
	if len(s) <= n {
		return s
	}
	return append(s[:0:0], s[len(s)-n:]...)
}

// nthSmallest is the n-th smallest (1-based) of distinct values.
func nthSmallest(vs []uint64, n int) uint64 {
	// Trimming is rare and bounded by maxJobs: a sort is plenty.
	slices.Sort(vs)
	return vs[n-1]
}

// snapshotView is all a new page needs.
type snapshotView struct {
	Now    float64     `json:"now"`
	KeepMs float64     `json:"keepMs"`
	Jobs   []*jobView  `json:"jobs"`
	Points []Point     `json:"points"`
	Marks  []pool.Mark `json:"marks"`
	Status *statusView `json:"status,omitempty"`
}

// deltaView is what changed since the last one.
type deltaView struct {
	Now    float64     `json:"now"`
	Jobs   []*jobView  `json:"jobs,omitempty"`
	Points []Point     `json:"points,omitempty"`
	Marks  []pool.Mark `json:"marks,omitempty"`
}

// snapshotLocked copies the history; h.mu is held.
func (h *history) snapshotLocked(now float64) snapshotView {
	s := snapshotView{Now: now, KeepMs: h.keep.Seconds() * 1000, Status: h.status,
		Jobs: make([]*jobView, 0, len(h.jobs)), Points: append([]Point(nil), h.points...), Marks: append([]pool.Mark(nil), h.marks...)}
	for _, v := range h.jobs {
		c := *v
		s.Jobs = append(s.Jobs, &c)
	}
	return s
}

// takeDelta returns what changed since the last call, and whether anything
// did.
func (h *history) takeDelta(now float64) (deltaView, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := deltaView{Now: now, Points: h.newPoints, Marks: h.newMarks}
	for _, v := range h.changed {
		c := *v
		d.Jobs = append(d.Jobs, &c)
	}
	clear(h.changed)
	h.newPoints, h.newMarks = nil, nil
	return d, len(d.Jobs)+len(d.Points)+len(d.Marks) > 0
}
