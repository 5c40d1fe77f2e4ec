package timeline

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
)

var inf = math.Inf(1)

type res3 = Reservation

func mustReserve(t *testing.T, tl *Timeline, rs ...res3) {
	t.Helper()
	for _, r := range rs {
		if err := tl.Reserve(r.ID, r.Start, r.End, r.Threads); err != nil {
			t.Fatalf("Reserve(%+v): %v", r, err)
		}
	}
}

func TestReserve(t *testing.T) {
	t.Parallel()
	base := []res3{
		{"a", 0, 10, 4},
		{"b", 5, 15, 3},
		{"c", 20, 30, 8},
	}
	tests := []struct {
		name    string
		id      string
		s, e    float64
		threads int
		want    error
	}{
		{"fits in gap", "x", 15, 20, 8, nil},
		{"fits beside overlap", "x", 5, 10, 1, nil},
		{"overlap too big", "x", 5, 10, 2, ErrNoCapacity},
		{"partial overlap too big", "x", 9.5, 12, 2, ErrNoCapacity},
		{"touching before", "x", -5, 0, 8, nil},
		{"touching after", "x", 30, 31, 8, nil},
		{"touching both", "x", 15, 20, 8, nil},
		{"over the gap into c", "x", 15, 20.001, 1, ErrNoCapacity},
		{"fraction before end", "x", 29.999, 31, 1, ErrNoCapacity},
		{"larger than capacity", "x", 100, 200, 9, ErrNoCapacity},
		{"whole capacity far away", "x", 100, 200, 8, nil},
		{"open ended", "x", 30, inf, 8, nil},
		{"open ended blocked", "x", 25, inf, 1, ErrNoCapacity},
		{"zero length", "x", 5, 5, 1, ErrInvalidWindow},
		{"negative length", "x", 5, 4, 1, ErrInvalidWindow},
		{"zero threads", "x", 40, 50, 0, ErrInvalidWindow},
		{"negative threads", "x", 40, 50, -1, ErrInvalidWindow},
		{"nan start", "x", math.NaN(), 50, 1, ErrInvalidWindow},
		{"nan end", "x", 40, math.NaN(), 1, ErrInvalidWindow},
		{"infinite start", "x", math.Inf(-1), 50, 1, ErrInvalidWindow},
		{"duplicate", "a", 40, 50, 1, ErrDuplicate},
		{"duplicate and no capacity", "a", 0, 10, 8, ErrDuplicate},
		{"invalid before duplicate", "a", 10, 0, 1, ErrInvalidWindow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tl := New(8)
			mustReserve(t, tl, base...)
			before := tl.Reservations()
			err := tl.Reserve(tc.id, tc.s, tc.e, tc.threads)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Reserve = %v, want %v", err, tc.want)
			}
			if err != nil {
				if got := tl.Reservations(); !slices.Equal(got, before) {
					t.Fatalf("failed Reserve changed the timeline: %v -> %v", before, got)
				}
			} else if got, ok := tl.Get(tc.id); !ok || got != (res3{tc.id, tc.s, tc.e, tc.threads}) {
				t.Fatalf("Get = %+v %v", got, ok)
			}
			if err := tl.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestQueries(t *testing.T) {
	t.Parallel()
	tl := New(10)
	mustReserve(t, tl,
		res3{"a", 0, 10, 4},
		res3{"b", 5, 15, 3},
		res3{"c", 10, 12, 2},
		res3{"d", 12, 20, 1},
	)
	// Load: [0,5)=4 [5,10)=7 [10,12)=5 [12,15)=4 [15,20)=1.
	used := []struct {
		at   float64
		want int
	}{
		{-1, 0}, {0, 4}, {4.99, 4}, {5, 7}, {9.999, 7}, {10, 5}, {12, 4}, {15, 1}, {19.5, 1}, {20, 0}, {inf, 0},
	}
	for _, c := range used {
		if got := tl.UsedAt(c.at); got != c.want {
			t.Errorf("UsedAt(%v) = %d, want %d", c.at, got, c.want)
		}
	}
	maxes := []struct {
		s, e float64
		want int
	}{
		{-10, 0, 0}, {-10, 0.5, 4}, {0, 5, 4}, {0, 5.0001, 7}, {10, 20, 5}, {10.5, 11, 5},
		{12, 20, 4}, {15, 30, 1}, {20, 30, 0}, {-inf, inf, 7}, {5, 5, 0}, {6, 5, 0},
	}
	for _, c := range maxes {
		if got := tl.MaxUsed(c.s, c.e); got != c.want {
			t.Errorf("MaxUsed(%v,%v) = %d, want %d", c.s, c.e, got, c.want)
		}
		if got := tl.Free(c.s, c.e); got != 10-c.want {
			t.Errorf("Free(%v,%v) = %d, want %d", c.s, c.e, got, 10-c.want)
		}
	}
	if tl.Len() != 4 {
		t.Errorf("Len = %d", tl.Len())
	}
	want := []res3{{"a", 0, 10, 4}, {"b", 5, 15, 3}, {"c", 10, 12, 2}, {"d", 12, 20, 1}}
	if got := tl.Reservations(); !slices.Equal(got, want) {
		t.Errorf("Reservations = %v", got)
	}
}

func TestSharedChangePoints(t *testing.T) {
	t.Parallel()
	tl := New(10)
	// b starts where a ends with the same threads: the change point at 10
	// has delta 0 but must survive while referenced.
	mustReserve(t, tl, res3{"a", 0, 10, 5}, res3{"b", 10, 20, 5}, res3{"c", 10, 20, 5})
	if err := tl.check(); err != nil {
		t.Fatal(err)
	}
	steps := []func(){
		func() { tl.Release("c") },
		func() { tl.Release("a") },
		func() { mustReserve(t, tl, res3{"a2", 5, 10, 5}) },
		func() { tl.Truncate("b", 15) },
		func() { tl.Release("b") },
		func() { tl.Release("a2") },
	}
	for i, step := range steps {
		step()
		if err := tl.check(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if tl.root != nil || tl.Len() != 0 {
		t.Fatalf("timeline not empty: len %d", tl.Len())
	}
}

func TestReleaseTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		op    func(tl *Timeline) bool
		okRes bool
		want  []res3
	}{
		{"release", func(tl *Timeline) bool { return tl.Release("b") }, true,
			[]res3{{"a", 0, 10, 4}, {"c", 20, 30, 8}}},
		{"release unknown", func(tl *Timeline) bool { return tl.Release("zz") }, false,
			[]res3{{"a", 0, 10, 4}, {"b", 5, 15, 3}, {"c", 20, 30, 8}}},
		{"release twice", func(tl *Timeline) bool { tl.Release("a"); return tl.Release("a") }, false,
			[]res3{{"b", 5, 15, 3}, {"c", 20, 30, 8}}},
		{"truncate", func(tl *Timeline) bool { return tl.Truncate("b", 7.5) }, true,
			[]res3{{"a", 0, 10, 4}, {"b", 5, 7.5, 3}, {"c", 20, 30, 8}}},
		{"truncate onto shared point", func(tl *Timeline) bool { return tl.Truncate("b", 10) }, true,
			[]res3{{"a", 0, 10, 4}, {"b", 5, 10, 3}, {"c", 20, 30, 8}}},
		{"truncate later is no-op", func(tl *Timeline) bool { return tl.Truncate("b", 99) }, true,
			[]res3{{"a", 0, 10, 4}, {"b", 5, 15, 3}, {"c", 20, 30, 8}}},
		{"truncate to start removes", func(tl *Timeline) bool { return tl.Truncate("b", 5) }, true,
			[]res3{{"a", 0, 10, 4}, {"c", 20, 30, 8}}},
		{"truncate before start removes", func(tl *Timeline) bool { return tl.Truncate("b", -1) }, true,
			[]res3{{"a", 0, 10, 4}, {"c", 20, 30, 8}}},
		{"truncate unknown", func(tl *Timeline) bool { return tl.Truncate("zz", 1) }, false,
			[]res3{{"a", 0, 10, 4}, {"b", 5, 15, 3}, {"c", 20, 30, 8}}},
		{"truncate nan", func(tl *Timeline) bool { return tl.Truncate("a", math.NaN()) }, false,
			[]res3{{"a", 0, 10, 4}, {"b", 5, 15, 3}, {"c", 20, 30, 8}}},
		{"release then reserve same id", func(tl *Timeline) bool {
			tl.Release("c")
			return tl.Reserve("c", 0, 1, 1) == nil
		}, true, []res3{{"c", 0, 1, 1}, {"a", 0, 10, 4}, {"b", 5, 15, 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tl := New(8)
			mustReserve(t, tl, res3{"a", 0, 10, 4}, res3{"b", 5, 15, 3}, res3{"c", 20, 30, 8})
			if got := tc.op(tl); got != tc.okRes {
				t.Fatalf("op = %v, want %v", got, tc.okRes)
			}
			if got := tl.Reservations(); !slices.Equal(got, tc.want) {
				t.Fatalf("Reservations = %v, want %v", got, tc.want)
			}
			if err := tl.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExtend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		id      string
		end     float64
		force   bool
		wantErr error
		wantEnd float64
	}{
		{"into free space", "a", 20, false, nil, 20},
		{"up to next job", "b", 20, false, nil, 20},
		{"into next job", "b", 20.5, false, ErrNoCapacity, 15},
		{"forced into next job", "b", 25, true, nil, 25},
		{"a fits beside c", "a", 25, false, nil, 25},
		{"shorter is no-op", "a", 5, false, nil, 10},
		{"same is no-op", "a", 10, false, nil, 10},
		{"open ended blocked", "b", inf, false, ErrNoCapacity, 15},
		{"open ended forced", "a", inf, true, nil, inf},
		{"unknown", "zz", 50, false, ErrNotFound, 0},
		{"unknown forced", "zz", 50, true, ErrNotFound, 0},
		{"nan", "a", math.NaN(), false, ErrInvalidWindow, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tl := New(8)
			// Load: [0,10)=4 [5,15)=+3 [20,30)=6.
			mustReserve(t, tl, res3{"a", 0, 10, 2}, res3{"b", 5, 15, 3}, res3{"c", 20, 30, 6})
			before := tl.Reservations()
			var err error
			if tc.force {
				err = tl.ForceExtend(tc.id, tc.end)
			} else {
				err = tl.Extend(tc.id, tc.end)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Extend = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if got := tl.Reservations(); !slices.Equal(got, before) {
					t.Fatalf("failed Extend changed the timeline")
				}
			}
			if r, ok := tl.Get(tc.id); ok && r.End != tc.wantEnd {
				t.Fatalf("End = %v, want %v", r.End, tc.wantEnd)
			}
			if err := tl.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	tests := []struct {
		before float64
		want   int
		left   []string
	}{
		{-1, 0, []string{"a", "b", "c", "d", "e"}},
		{9.99, 0, []string{"a", "b", "c", "d", "e"}},
		{10, 2, []string{"c", "d", "e"}},
		{15, 3, []string{"d", "e"}},
		{1e9, 4, []string{"e"}},
		{inf, 5, nil},
		{math.NaN(), 0, []string{"a", "b", "c", "d", "e"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.before), func(t *testing.T) {
			t.Parallel()
			tl := New(100)
			mustReserve(t, tl,
				res3{"a", 0, 10, 1}, res3{"b", 5, 10, 1}, res3{"c", 0, 15, 1},
				res3{"d", 10, 20, 1}, res3{"e", 12, inf, 1})
			if got := tl.Prune(tc.before); got != tc.want {
				t.Fatalf("Prune = %d, want %d", got, tc.want)
			}
			var ids []string
			for _, r := range tl.Reservations() {
				ids = append(ids, r.ID)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, tc.left) || tl.Len() != len(tc.left) {
				t.Fatalf("left %v (Len %d), want %v", ids, tl.Len(), tc.left)
			}
			if err := tl.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSetCapacity(t *testing.T) {
	t.Parallel()
	tl := New(10)
	mustReserve(t, tl, res3{"a", 0, 10, 6}, res3{"b", 0, 10, 4})
	if got := tl.Free(0, 10); got != 0 {
		t.Fatalf("Free = %d", got)
	}
	tl.SetCapacity(5)
	if tl.Capacity() != 5 {
		t.Fatalf("Capacity = %d", tl.Capacity())
	}
	if got := tl.Free(0, 10); got != -5 {
		t.Fatalf("Free after shrink = %d, want -5", got)
	}
	if got := tl.Free(10, 20); got != 5 {
		t.Fatalf("Free after window = %d, want 5", got)
	}
	if err := tl.Reserve("c", 5, 15, 1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Reserve over shrunk capacity = %v", err)
	}
	if err := tl.Extend("a", 11); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Extend over shrunk capacity = %v", err)
	}
	if err := tl.ForceExtend("a", 11); err != nil {
		t.Fatalf("ForceExtend = %v", err)
	}
	if err := tl.Reserve("c", 11, 15, 5); err != nil {
		t.Fatalf("Reserve after window = %v", err)
	}
	if got := tl.NextFree(1, 0, 1); got != 15 {
		t.Fatalf("NextFree = %v, want 15", got)
	}
	tl.SetCapacity(-3)
	if tl.Capacity() != 0 {
		t.Fatalf("negative capacity = %d, want 0", tl.Capacity())
	}
	tl.SetCapacity(20)
	if err := tl.Reserve("d", 5, 15, 4); err != nil {
		t.Fatalf("Reserve after growth = %v", err)
	}
	if New(-1).Capacity() != 0 {
		t.Fatal("New(-1) capacity")
	}
}

func TestNextFree(t *testing.T) {
	t.Parallel()
	tl := New(10)
	// Load: [0,10)=6 [10,12)=10 [12,20)=3 [20,21)=9 [21,30)=0 [30,inf)=8 after "z".
	mustReserve(t, tl,
		res3{"a", 0, 10, 6},
		res3{"b", 10, 12, 10},
		res3{"c", 12, 20, 3},
		res3{"d", 20, 21, 9},
		res3{"z", 30, inf, 8},
	)
	tests := []struct {
		name    string
		threads int
		after   float64
		length  float64
		want    float64
	}{
		{"free now", 4, 0, 10, 0},
		{"before anything", 10, -5, 5, -5},
		{"overlapping first", 10, -5, 6, 21},
		{"after a job", 5, 0, 5, 12},
		{"needs lighter load", 7, 0, 5, 12},
		{"needs gap", 8, 0, 5, 21},
		{"gap too short", 7, 0, 10, inf},
		{"gap exact", 10, 21, 9, 21},
		{"mid gap", 2, 25, 100, 25},
		{"inside blocked", 1, 10.5, 1, 12},
		{"probe instant", 4, 10.5, 0, 12},
		{"probe negative length", 1, 20.5, -3, 20.5},
		{"fraction", 2, 11.999, 0.001, 12},
		{"too many threads", 11, 0, 1, inf},
		{"open ended", 3, 25, 1000, inf},
		{"open ended fits", 2, 25, 1000, 25},
		{"nan", 1, math.NaN(), 1, math.NaN()},
		{"nan length", 1, 0, math.NaN(), math.NaN()},
		{"infinite after", 1, inf, 1, inf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := tl.NextFree(tc.threads, tc.after, tc.length)
			if !(got == tc.want || math.IsNaN(got) && math.IsNaN(tc.want)) {
				t.Fatalf("NextFree(%d,%v,%v) = %v, want %v", tc.threads, tc.after, tc.length, got, tc.want)
			}
			ref := newRef(10)
			for _, r := range tl.Reservations() {
				ref.rs[r.ID] = r
			}
			if rg := ref.NextFree(tc.threads, tc.after, tc.length); !(rg == got || math.IsNaN(rg) && math.IsNaN(got)) {
				t.Fatalf("reference NextFree = %v, timeline %v", rg, got)
			}
		})
	}
}

// ---- randomized comparison against the reference ----

// opSource supplies the random choices of a run.
type opSource interface {
	// intn returns a value in [0, n); ok is false when the source is exhausted.
	intn(n int) (int, bool)
}

type randSource struct{ r *rand.Rand }

func (s randSource) intn(n int) (int, bool) { return s.r.IntN(n), true }

type byteSource struct{ b []byte }

func (s *byteSource) intn(n int) (int, bool) {
	if len(s.b) == 0 {
		return 0, false
	}
	v := int(s.b[0])
	if n > 256 && len(s.b) > 1 {
		v = v<<8 | int(s.b[1])
		s.b = s.b[1:]
	}
	s.b = s.b[1:]
	return v % n, true
}

// opsConfig shapes a random run.
type opsConfig struct {
	ops        int // operations to apply
	checkEvery int // full comparison and invariant check period
	ids        int // size of the id space
	span       int // start times are drawn from [0, span)
	maxCap     int // capacity is drawn from [0, maxCap)
	maxThreads int // threads are drawn from [1, maxThreads]
}

var (
	smallRun = opsConfig{ops: 5000, checkEvery: 7, ids: 50, span: 60, maxCap: 40, maxThreads: 12}
	largeRun = opsConfig{ops: 4000, checkEvery: 97, ids: 600, span: 400, maxCap: 1000, maxThreads: 25}
	fuzzRun  = opsConfig{ops: 200, checkEvery: 16, ids: 50, span: 60, maxCap: 40, maxThreads: 12}
)

// runOps applies random operations to a Timeline and the reference, failing
// on the first divergence.
func runOps(t testing.TB, src opSource, cfg opsConfig) {
	t.Helper()
	maxOps, checkEvery := cfg.ops, cfg.checkEvery
	capacity, _ := src.intn(cfg.maxCap)
	tl, ref := New(capacity), newRef(capacity)
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		tail := log[max(0, len(log)-15):]
		t.Fatalf("after %d ops (last: %v): %s", len(log), tail, fmt.Sprintf(format, args...))
	}
	draw := func(n int) int {
		v, ok := src.intn(n)
		if !ok {
			panic(errExhausted)
		}
		return v
	}
	// Times on a coarse grid so change points are shared, with fractions.
	tm := func() float64 {
		v := float64(draw(cfg.span))
		switch draw(8) {
		case 0:
			v += float64(draw(4)) / 4
		case 1:
			v += 0.1 // not exactly representable
		}
		return v
	}
	dur := func() float64 {
		switch draw(16) {
		case 0:
			return inf
		case 1:
			return 0
		case 2:
			return -1
		}
		return float64(1+draw(cfg.span/3)) + float64(draw(2))*0.5
	}
	id := func() string { return "j" + strconv.Itoa(draw(cfg.ids)) }
	same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
	reserved, peak := 0, 0
	defer func() { t.Logf("%d mutations, %d reservations made, peak %d held", len(log), reserved, peak) }()

	defer func() {
		if r := recover(); r != nil && r != errExhausted {
			panic(r)
		}
	}()
	for op := 0; op < maxOps; op++ {
		switch k := draw(20); {
		case k < 6:
			i, s := id(), tm()
			e, th, force := s+dur(), 1+draw(cfg.maxThreads), draw(8) == 0
			if draw(30) == 0 {
				th = -draw(2)
			}
			var got error
			if force {
				got = tl.ForceReserve(i, s, e, th)
			} else {
				got = tl.Reserve(i, s, e, th)
			}
			want := ref.Reserve(i, s, e, th, force)
			if got == nil {
				reserved++
			}
			log = append(log, fmt.Sprintf("Reserve(%s,%v,%v,%d,force=%v)=%v", i, s, e, th, force, got))
			if got != want {
				fail("Reserve = %v, want %v", got, want)
			}
		case k < 8:
			i := id()
			got, want := tl.Release(i), ref.Release(i)
			log = append(log, fmt.Sprintf("Release(%s)", i))
			if got != want {
				fail("Release = %v, want %v", got, want)
			}
		case k < 10:
			i, e := id(), tm()
			got, want := tl.Truncate(i, e), ref.Truncate(i, e)
			log = append(log, fmt.Sprintf("Truncate(%s,%v)", i, e))
			if got != want {
				fail("Truncate = %v, want %v", got, want)
			}
		case k < 12:
			i, e, force := id(), tm()+float64(draw(cfg.span/2)), draw(3) == 0
			if draw(20) == 0 {
				e = inf
			}
			var got error
			if force {
				got = tl.ForceExtend(i, e)
			} else {
				got = tl.Extend(i, e)
			}
			want := ref.Extend(i, e, force)
			log = append(log, fmt.Sprintf("Extend(%s,%v,force=%v)=%v", i, e, force, got))
			if got != want {
				fail("Extend = %v, want %v", got, want)
			}
		case k == 12:
			if draw(4) == 0 {
				b := tm()
				got, want := tl.Prune(b), ref.Prune(b)
				log = append(log, fmt.Sprintf("Prune(%v)=%d", b, got))
				if got != want {
					fail("Prune = %d, want %d", got, want)
				}
			} else {
				c := draw(cfg.maxCap+5) - 2
				tl.SetCapacity(c)
				ref.capacity = max(c, 0)
				log = append(log, fmt.Sprintf("SetCapacity(%d)", c))
			}
		case k < 15:
			s := tm()
			e := s + dur()
			if draw(10) == 0 {
				s, e = -inf, inf
			}
			if got, want := tl.MaxUsed(s, e), ref.MaxUsed(s, e); got != want {
				fail("MaxUsed(%v,%v) = %d, want %d", s, e, got, want)
			}
			if got, want := tl.Free(s, e), ref.capacity-ref.MaxUsed(s, e); got != want {
				fail("Free(%v,%v) = %d, want %d", s, e, got, want)
			}
		case k < 16:
			at := tm()
			if got, want := tl.UsedAt(at), ref.UsedAt(at); got != want {
				fail("UsedAt(%v) = %d, want %d", at, got, want)
			}
		case k < 18:
			th, after, length := draw(cfg.maxCap+5)-2, tm()-5, dur()
			if got, want := tl.NextFree(th, after, length), ref.NextFree(th, after, length); !same(got, want) {
				fail("NextFree(%d,%v,%v) = %v, want %v", th, after, length, got, want)
			}
		default:
			i := id()
			got, ok := tl.Get(i)
			want, wok := ref.rs[i]
			if ok != wok || got != want {
				fail("Get(%s) = %v %v, want %v %v", i, got, ok, want, wok)
			}
		}
		peak = max(peak, tl.Len())
		if tl.Len() != len(ref.rs) {
			fail("Len = %d, want %d", tl.Len(), len(ref.rs))
		}
		if tl.Capacity() != ref.capacity {
			fail("Capacity = %d, want %d", tl.Capacity(), ref.capacity)
		}
		if checkEvery > 0 && op%checkEvery == 0 {
			if got, want := tl.Reservations(), ref.Reservations(); !slices.Equal(got, want) {
				fail("Reservations = %v, want %v", got, want)
			}
			if err := tl.check(); err != nil {
				fail("invariant: %v", err)
			}
		}
	}
	if err := tl.check(); err != nil {
		fail("invariant: %v", err)
	}
	if got, want := tl.Reservations(), ref.Reservations(); !slices.Equal(got, want) {
		fail("Reservations = %v, want %v", got, want)
	}
}

var errExhausted = errors.New("source exhausted")

func TestRandomAgainstReference(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   opsConfig
		seeds uint64
	}{
		{"small", smallRun, 12},
		{"large", largeRun, 3},
	} {
		if testing.Short() {
			tc.cfg.ops /= 5
		}
		for seed := uint64(1); seed <= tc.seeds; seed++ {
			t.Run(fmt.Sprint(tc.name, "/seed", seed), func(t *testing.T) {
				t.Parallel()
				runOps(t, randSource{rand.New(rand.NewPCG(seed, 0x5eed))}, tc.cfg)
			})
		}
	}
}

func FuzzTimeline(f *testing.F) {
	for seed := uint64(1); seed <= 4; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		b := make([]byte, 160)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		f.Add(b)
	}
	f.Add([]byte{10, 0, 5, 0, 0, 3, 2, 7, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Keep executions cheap: the fuzzer minimizes every interesting
		// input by re-running it many times.
		runOps(t, &byteSource{data}, fuzzRun)
	})
}

func TestSteps(t *testing.T) {
	t.Parallel()
	tl := New(10)
	for _, r := range []struct {
		id         string
		start, end float64
		threads    int
	}{
		{"a", 10, 20, 3}, {"b", 15, 30, 2}, {"c", 20, 25, 4}, {"d", 40, 50, 1},
	} {
		if err := tl.Reserve(r.id, r.start, r.end, r.threads); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		start, end float64
		want       []Step
	}{
		{0, 100, []Step{{0, 0}, {10, 3}, {15, 5}, {20, 6}, {25, 2}, {30, 0}, {40, 1}, {50, 0}}},
		{12, 22, []Step{{12, 3}, {15, 5}, {20, 6}}},
		{20, 25, []Step{{20, 6}}},
		{31, 39, []Step{{31, 0}}},
		{5, 5, nil},
	} {
		got := tl.Steps(tc.start, tc.end)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Steps(%v, %v) = %v, want %v", tc.start, tc.end, got, tc.want)
		}
		// Each step agrees with the point queries.
		for _, s := range got {
			if u := tl.UsedAt(s.At); u != s.Used {
				t.Errorf("step at %v says %d used, UsedAt says %d", s.At, s.Used, u)
			}
		}
	}
}
