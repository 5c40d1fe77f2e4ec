package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// hvmind-manager TARGET on a new game at 1000x: it preps n00dles, then runs
// its pipeline of HWGW batches that steal money, and counts what it did. (At
// 1000x a stall of this machine can desync a batch; the manager then
// re-preps, so at the stop it may be in either phase.)
func TestManagerPrepsAndBatches(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--speed", "1000", "--scenario", "newgame", "--idle-stop", "1m")
	out, errOut, code := c.manager("n00dles", "--json", "--for", "15s", "--gap", "5ms", "--lead", "300ms")
	if code != 0 {
		t.Fatalf("manager: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last struct {
		Kind  string `json:"kind"`
		Stats struct {
			Phase    string  `json:"phase"`
			Batches  int     `json:"batches"`
			Stolen   float64 `json:"stolen"`
			Security float64 `json:"security"`
			MinSec   float64 `json:"minSecurity"`
			Jobs     int     `json:"jobs"`
			Failed   int     `json:"failed"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last event %q: %v", lines[len(lines)-1], err)
	}
	s := last.Stats
	if last.Kind != "stopped" || s.Batches == 0 || s.Stolen <= 0 || s.Failed != 0 {
		t.Errorf("after 15 s: %+v (kind %s)", s, last.Kind)
		for _, l := range lines {
			var ev struct{ Kind, Note string }
			if json.Unmarshal([]byte(l), &ev) == nil && strings.Contains(ev.Note, "fail") {
				t.Logf("%s: %.500s", ev.Kind, ev.Note)
			}
		}
	}
	if !strings.Contains(out, `"kind":"prep"`) {
		t.Error("no prep step")
	}
	if !strings.Contains(out, `"kind":"pipeline"`) {
		t.Error("the manager never started its pipeline of batches")
	}
}

// hvmind-manager bench on reference-880, where home holds 91.5% of the
// threads: the pipeline pins its grows and hacks to home and plans 99.5%
// of the threads, and the weakens fill the small hosts. Seven game minutes
// at 60x run the pipeline full for two: the pool places every batch. (With
// hacks placed anywhere, the same run had 60 refused.)
func TestManagerBenchPlacesEveryBatch(t *testing.T) {
	t.Parallel()
	// A short spin: the test is about placement, and the default spin
	// keeps a third of a core busy beside the other packages' tests.
	out, errOut, code := run(t, "", "hvmind-manager", "--log-level", "error", "bench", "--game-minutes", "7", "--spin", "200us")
	if code != 0 {
		t.Fatalf("bench: exit %d: %s", code, errOut)
	}
	var res struct {
		Batches  int     `json:"batches"`
		Refused  int     `json:"refused"`
		Skipped  int     `json:"skipped"`
		Desyncs  int     `json:"desyncs"`
		Money    float64 `json:"money_per_game_minute"`
		Pct      float64 `json:"pct_of_limit"`
		Plan     string  `json:"plan"`
		PeriodMs float64 `json:"period_ms"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench printed %q: %v", out, err)
	}
	t.Logf("%d batches, %d refused, %d skipped, %d desyncs, %.1f%% of the limit, plan %s every %.2f ms",
		res.Batches, res.Refused, res.Skipped, res.Desyncs, res.Pct, res.Plan, res.PeriodMs)
	if res.Refused != 0 {
		t.Errorf("the pool refused %d batches", res.Refused)
	}
	if res.Batches < 100 || !(res.Money > 0) {
		t.Errorf("%d batches came back, earning $%.0f a game minute", res.Batches, res.Money)
	}
}

// The scale bench on its smallest size: one line that a reader can trust,
// every job of its runs recorded done, and the costs it reports measured.
func TestBenchScaleMeasuresASize(t *testing.T) {
	t.Parallel()
	out, errOut, code := run(t, "", "hvmind-manager", "--log-level", "error", "bench", "scale",
		"--workers", "10", "--jobs", "500", "--paced", "20", "--in-flight", "200")
	if code != 0 {
		t.Fatalf("bench scale: exit %d: %s", code, errOut)
	}
	var res struct {
		Workers     int                `json:"workers"`
		ASAP        float64            `json:"asap_jobs_per_s"`
		MsgsPerJob  float64            `json:"asap_job_messages_per_job"`
		CPU         map[string]float64 `json:"asap_cpu_us_per_job"`
		Restart     float64            `json:"restart_s"`
		InFlight    int                `json:"restart_in_flight"`
		Stop        float64            `json:"stop_s"`
		Lost        int                `json:"lost"`
		NotDone     int                `json:"not_done"`
		Error       string             `json:"error"`
		PacedMissed int                `json:"paced_missed"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench scale printed %q: %v", out, err)
	}
	t.Logf("%s", out)
	if res.Error != "" || res.Workers != 10 || res.Lost != 0 || res.NotDone != 0 {
		t.Errorf("workers %d, lost %d, not done %d, error %q", res.Workers, res.Lost, res.NotDone, res.Error)
	}
	if !(res.ASAP > 0) || !(res.Restart > 0) || res.InFlight != 200 || !(res.Stop > 0) {
		t.Errorf("ASAP %v jobs/s, restart %v s with %d in flight, stop %v s", res.ASAP, res.Restart, res.InFlight, res.Stop)
	}
	// 500 jobs over 10 workers in batches of 250: a message per worker a
	// dispatch, at most.
	if !(res.MsgsPerJob > 0) || res.MsgsPerJob > 0.05 {
		t.Errorf("%v job messages a job, want (0, 0.05]", res.MsgsPerJob)
	}
	for _, part := range []string{"bench_and_broker", "pool", "worker_processes"} {
		if !(res.CPU[part] > 0) {
			t.Errorf("CPU a job of %s: %v µs", part, res.CPU[part])
		}
	}
}
