package timeline

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// Realistic windows: starts spread over 10 minutes, durations 1–60 s,
// 1–50 threads. Times are Unix epoch milliseconds.
const (
	benchEpoch  = 1.7e12
	benchSpread = 10 * 60 * 1000
)

type window struct {
	start, end float64
	threads    int
}

func benchWindows(r *rand.Rand, n int) []window {
	ws := make([]window, n)
	for i := range ws {
		s := benchEpoch + r.Float64()*benchSpread
		ws[i] = window{s, s + 1000 + r.Float64()*59000, 1 + r.IntN(50)}
	}
	return ws
}

// benchTimeline returns a timeline holding n reservations whose capacity is
// exactly its peak load.
func benchTimeline(b *testing.B, n int) *Timeline {
	r := rand.New(rand.NewPCG(uint64(n), 42))
	tl := New(math.MaxInt32)
	for i, w := range benchWindows(r, n) {
		if err := tl.Reserve("fill-"+strconv.Itoa(i), w.start, w.end, w.threads); err != nil {
			b.Fatal(err)
		}
	}
	tl.SetCapacity(tl.MaxUsed(math.Inf(-1), math.Inf(1)))
	return tl
}

var benchSizes = []int{100, 10_000}

// BenchmarkReserve measures one successful Reserve followed by the Release
// that keeps the timeline at its size (two O(log n) updates and one range
// query per op).
func BenchmarkReserve(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			tl := benchTimeline(b, n)
			tl.SetCapacity(math.MaxInt32) // always fits: measure the update path
			ws := benchWindows(rand.New(rand.NewPCG(7, 7)), 4096)
			ids := make([]string, len(ws))
			for i := range ids {
				ids[i] = "job-" + strconv.Itoa(i)
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				w := ws[i&4095]
				if err := tl.Reserve(ids[i&4095], w.start, w.end, w.threads); err != nil {
					b.Fatal(err)
				}
				tl.Release(ids[i&4095])
				i++
			}
		})
	}
}

// BenchmarkReserveReject measures a Reserve refused for lack of capacity
// (the common case when trying candidate workers).
func BenchmarkReserveReject(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			tl := benchTimeline(b, n)
			tl.SetCapacity(tl.MaxUsed(math.Inf(-1), math.Inf(1)) / 2)
			ws := benchWindows(rand.New(rand.NewPCG(7, 7)), 4096)
			rejected := 0
			for _, w := range ws {
				if !tl.fits(w.start, w.end, w.threads) {
					rejected++
				}
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				w := ws[i&4095]
				if tl.Reserve("job", w.start, w.end, w.threads) == nil {
					tl.Release("job")
				}
				i++
			}
			b.ReportMetric(float64(rejected)/float64(len(ws)), "rejected-frac")
		})
	}
}

func BenchmarkMaxUsed(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			tl := benchTimeline(b, n)
			ws := benchWindows(rand.New(rand.NewPCG(9, 9)), 4096)
			i, sink := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				w := ws[i&4095]
				sink += tl.MaxUsed(w.start, w.end)
				i++
			}
			_ = sink
		})
	}
}

func BenchmarkNextFree(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			tl := benchTimeline(b, n)
			ws := benchWindows(rand.New(rand.NewPCG(11, 11)), 4096)
			i, sink := 0, 0.0
			b.ReportAllocs()
			for b.Loop() {
				w := ws[i&4095]
				sink += tl.NextFree(w.threads, w.start, w.end-w.start)
				i++
			}
			_ = sink
		})
	}
}

// BenchmarkPrune measures pruning the oldest reservation and adding a new
// one at the end, as a sliding window of work.
func BenchmarkPrune(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			tl := New(math.MaxInt32)
			ids := make([]string, n)
			for i := range ids {
				ids[i] = "job-" + strconv.Itoa(i)
				tl.Reserve(ids[i], float64(i), float64(i)+1000, 1)
			}
			i := n
			b.ReportAllocs()
			for b.Loop() {
				if tl.Prune(float64(i-n+1000)) != 1 {
					b.Fatal("prune")
				}
				tl.Reserve(ids[i%n], float64(i), float64(i)+1000, 1)
				i++
			}
		})
	}
}
