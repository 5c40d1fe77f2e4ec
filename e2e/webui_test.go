package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hvmind/hvmind/job"
)

// A page of the timeline as the test reads it: what the last frame drew.
type drawnJob struct {
	ID     string  `json:"id"`
	Batch  string  `json:"batch"`
	Task   string  `json:"task"`
	Worker string  `json:"worker"`
	Status string  `json:"status"`
	X0     float64 `json:"x0"`
	X1     float64 `json:"x1"`
	Red    bool    `json:"red"`
	Desync bool    `json:"desync"`
	AX0    *float64
	AX1    *float64
}

type drawnMark struct {
	Kind  string  `json:"kind"`
	Batch string  `json:"batch"`
	Level string  `json:"level"`
	X     float64 `json:"x"`
}

type pageJob struct {
	ID          string  `json:"id"`
	Worker      string  `json:"worker"`
	Task        string  `json:"task"`
	Status      string  `json:"status"`
	ActualStart float64 `json:"actualStart"`
	ActualEnd   float64 `json:"actualEnd"`
}

// hvmind-pool --http serves the jobs' timeline: in headless Chromium, with
// the batcher on n00dles, the page draws the jobs the records tell of, in
// their order, on their workers; a batch the batcher marks desynced (a
// rogue hack makes one) is drawn red; the screenshot shows the timeline;
// a page whose pool dies says so, and comes back with the pool.
func TestWebUITimeline(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	httpAddr := freeAddr(t)
	c := startPool(t, "--speed", "60", "--scenario", "newgame", "--http", httpAddr, "--idle-stop", "1m")
	mgr := start(t, "hvmind-manager", "--nats", c.url, "n00dles", "--json", "--for", "25s", "--gap", "20ms", "--lead", "300ms")

	ctx := browserContext(t, browser)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+httpAddr+"/")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	waitJS(t, ctx, 20*time.Second, `hvmind.connected && hvmind.drawn.filter(d => d.status === 'done').length >= 20`,
		"the page to draw 20 done jobs")

	// A rogue hack between the batcher's landings leaves a batch's hack
	// short of maximum money: the batcher marks that batch desynced.
	deadline := time.Now().Add(15 * time.Second)
	for !evalBool(t, ctx, `hvmind.state.marks.some(m => m.kind === 'desync')`) {
		if time.Now().After(deadline) {
			t.Fatal("no desync mark reached the page")
		}
		_, errOut, code := c.manager("dispatch", `{"task":"hack","args":["n00dles"],"threads":1,"duration":1}`)
		if code != 0 {
			t.Logf("rogue hack: %s", errOut)
		}
		time.Sleep(700 * time.Millisecond)
	}
	mgr.wait(t, 60*time.Second)
	// Every job landed (the batcher waits for its batches): the page has
	// every record.
	recs := c.records()
	waitJS(t, ctx, 10*time.Second, fmt.Sprintf(`[...hvmind.state.jobs.values()].filter(j => j.status).length >= %d`, len(recs)),
		fmt.Sprintf("the page to hold the %d records", len(recs)))
	page := eval[[]pageJob](t, ctx, `[...hvmind.state.jobs.values()].filter(j => j.status)`)
	if len(page) != len(recs) {
		t.Errorf("the page holds %d jobs with a record; the stream %d", len(page), len(recs))
	}
	for _, p := range page {
		r, ok := recs[p.ID]
		switch {
		case !ok:
			t.Errorf("job %s on the page has no record", p.ID)
		case p.Status != string(r.Status) || p.Worker != r.Worker || p.Task != r.Task ||
			p.ActualStart != r.ActualStartTime || p.ActualEnd != r.ActualEndTime:
			t.Errorf("job %s: page %+v, record %s %s %s %.3f %.3f", p.ID, p, r.Status, r.Worker, r.Task, r.ActualStartTime, r.ActualEndTime)
		}
	}

	// Freeze the view on the whole run and read what is drawn.
	eval[chromedp.Void](t, ctx, `(() => { setPaused(false); state.windowMs = 60000; setPaused(true); state.viewEnd = now() + 2000; draw(); })()`)
	drawn := eval[[]drawnJob](t, ctx, `hvmind.drawn.map(d => ({...d, AX0: d.actualStartX, AX1: d.actualEndX}))`)
	marks := eval[[]drawnMark](t, ctx, `hvmind.marksDrawn`)
	checkDrawn(t, drawn, recs)
	var desynced string
	for _, m := range marks {
		if m.Kind == "desync" && m.Level == "error" && m.Batch != "" {
			desynced = m.Batch
		}
	}
	if desynced == "" {
		t.Errorf("no desync drawn among %d marks", len(marks))
	}
	red := 0
	for _, d := range drawn {
		if d.Desync != (d.Batch != "" && d.Batch == desynced) && d.Batch == desynced {
			t.Errorf("job %s of the desynced batch %s is not outlined", d.ID, desynced)
		}
		if d.Desync {
			red++
		}
		if missed := d.Status == string(job.StatusMissed) || d.Status == string(job.StatusFailed); missed != d.Red {
			t.Errorf("job %s (%s) drawn red=%v", d.ID, d.Status, d.Red)
		}
	}
	if red == 0 {
		t.Error("no job of a desynced batch is drawn red")
	}

	shot := screenshot(t, ctx)
	checkScreenshot(t, shot)

	// The pool dies: the page says so, and comes back with it.
	c.pool.kill()
	waitJS(t, ctx, 10*time.Second, `!hvmind.connected && !document.getElementById('banner').hidden && document.getElementById('conn').textContent === 'disconnected'`,
		"the page to say it lost its connection")
	before := eval[int](t, ctx, `hvmind.snapshots`)
	c.restartPool()
	waitJS(t, ctx, 20*time.Second, fmt.Sprintf(`hvmind.connected && hvmind.snapshots > %d && document.getElementById('banner').hidden`, before),
		"the page to reconnect")
	waitJS(t, ctx, 10*time.Second, fmt.Sprintf(`[...hvmind.state.jobs.values()].filter(j => j.status).length >= %d`, len(recs)),
		"the reconnected page to read the records again")
}

// checkDrawn checks the drawn jobs against their records: on the record's
// worker, in the order of their scheduled starts, their actual start and
// end marked where the records put them.
func checkDrawn(t *testing.T, drawn []drawnJob, recs map[string]job.Job) {
	t.Helper()
	if len(drawn) < 20 {
		t.Fatalf("%d jobs drawn", len(drawn))
	}
	byWorker := map[string][]drawnJob{}
	for _, d := range drawn {
		r, ok := recs[d.ID]
		if !ok {
			continue // placed, no record yet
		}
		if d.Worker != r.Worker {
			t.Errorf("job %s drawn on %s, its record says %s", d.ID, d.Worker, r.Worker)
		}
		byWorker[d.Worker] = append(byWorker[d.Worker], d)
		if r.Status == job.StatusDone && (d.AX0 == nil || d.AX1 == nil) {
			t.Errorf("done job %s: actual start or end not marked", d.ID)
		}
		if d.AX0 != nil && d.AX1 != nil && *d.AX1 < *d.AX0 {
			t.Errorf("job %s: actual end drawn before its start", d.ID)
		}
	}
	for w, ds := range byWorker {
		start := func(d drawnJob) float64 {
			r := recs[d.ID]
			if r.StartTime > 0 {
				return r.StartTime
			}
			return r.ActualStartTime
		}
		sort.SliceStable(ds, func(i, j int) bool { return start(ds[i]) < start(ds[j]) })
		for i := 1; i < len(ds); i++ {
			if ds[i].X0 < ds[i-1].X0-0.5 {
				t.Errorf("worker %s: job %s starts after %s but is drawn before it", w, ds[i].ID, ds[i-1].ID)
			}
		}
	}
}

// checkScreenshot checks the picture shows a timeline: bars of the three
// tasks' colours, and a desynced batch's red.
func checkScreenshot(t *testing.T, data []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// Kept with go test -artifacts (and in HVMIND_E2E_LOGS when set).
	dirs := []string{t.ArtifactDir()}
	if dir := os.Getenv("HVMIND_E2E_LOGS"); dir != "" {
		dirs = append(dirs, dir)
	}
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, "timeline.png"), data, 0o644); err != nil {
			t.Errorf("keep the screenshot: %v", err)
		}
	}
	want := map[string]color.RGBA{"hack": {0xe8, 0xa3, 0x3d, 0}, "grow": {0x3a, 0xa3, 0x5b, 0}, "weaken": {0x3f, 0x7f, 0xd9, 0}, "red": {0xd6, 0x27, 0x28, 0}}
	seen := map[string]int{}
	b := img.Bounds()
	colours := map[color.RGBA]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			px := color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 0}
			colours[px] = true
			for name, c := range want {
				// Bars are drawn a little transparent over the page.
				if near(px, c, 60) && hueClose(px, c) {
					seen[name]++
				}
			}
		}
	}
	if len(colours) < 20 {
		t.Errorf("the screenshot (%dx%d) has %d colours: nothing drawn", b.Dx(), b.Dy(), len(colours))
	}
	for name := range want {
		if seen[name] < 20 {
			t.Errorf("the screenshot shows almost no %s (%d samples)", name, seen[name])
		}
	}
}

func near(a, b color.RGBA, d int) bool {
	abs := func(x int) int { return max(x, -x) }
	return abs(int(a.R)-int(b.R))+abs(int(a.G)-int(b.G))+abs(int(a.B)-int(b.B)) <= d
}

// hueClose keeps greys out of the colour match.
func hueClose(a, b color.RGBA) bool {
	ha, hb := hue(a), hue(b)
	d := math.Abs(ha - hb)
	return math.Min(d, 360-d) < 20
}

func hue(c color.RGBA) float64 {
	r, g, b := float64(c.R)/255, float64(c.G)/255, float64(c.B)/255
	mx, mn := math.Max(r, math.Max(g, b)), math.Min(r, math.Min(g, b))
	if mx-mn < 0.1 {
		return -1000 // grey
	}
	var h float64
	switch mx {
	case r:
		h = math.Mod((g-b)/(mx-mn), 6)
	case g:
		h = (b-r)/(mx-mn) + 2
	default:
		h = (r-g)/(mx-mn) + 4
	}
	h *= 60
	if h < 0 {
		h += 360
	}
	return h
}

// chromium is the path of a Chromium to drive: Debian's package, which
// make tools installs.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium: install Debian's chromium package (make tools does, as root)")
	return ""
}

// browserContext starts a headless Chromium for the test.
func browserContext(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// eval is the value of a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(cctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func evalBool(t *testing.T, ctx context.Context, expr string) bool {
	t.Helper()
	return eval[bool](t, ctx, "!!("+expr+")")
}

// waitJS waits until expr is true in the page.
func waitJS(t *testing.T, ctx context.Context, timeout time.Duration, expr, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !evalBool(t, ctx, expr) {
		if time.Now().After(deadline) {
			state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({connected: hvmind.connected, jobs: hvmind.state.jobs.size, drawn: hvmind.drawn.length, marks: hvmind.state.marks.length, snapshots: hvmind.snapshots, banner: document.getElementById('banner').textContent})`))
			t.Fatalf("waited %s for %s; the page: %s", timeout, what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot is a PNG of the whole page.
func screenshot(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	buf, err := chromedp.Run(cctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return buf
}
