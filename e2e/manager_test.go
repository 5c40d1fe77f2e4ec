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
	}
	if !strings.Contains(out, `"kind":"prep"`) {
		t.Error("no prep step")
	}
	if !strings.Contains(out, `"kind":"pipeline"`) {
		t.Error("the manager never started its pipeline of batches")
	}
}
