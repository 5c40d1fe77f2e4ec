package planner

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The fleet's metrics are its managers' stats, a series per target, read
// when scraped.
func TestFleetMetrics(t *testing.T) {
	t.Parallel()
	a := &HackManager{}
	a.stats = Stats{Target: "n00dles", Phase: "batch", Stolen: 1.5e6, Batches: 40, InFlight: 3, Jobs: 172, Desyncs: 1,
		Missed: 2, Money: 7e5, MoneyMax: 1.75e6, Security: 1.2, MinSec: 1}
	b := &HackManager{}
	b.stats = Stats{Target: "foodnstuff", Phase: "prep"}
	f := &Fleet{managers: []*HackManager{a, b}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.Metrics())
	want := `
# HELP hvmind_manager_desyncs_total Batches whose landings did not leave the target as planned.
# TYPE hvmind_manager_desyncs_total counter
hvmind_manager_desyncs_total{target="foodnstuff"} 0
hvmind_manager_desyncs_total{target="n00dles"} 1
# HELP hvmind_manager_phase The phase the target's manager is in (prep, batch, …): 1 for it.
# TYPE hvmind_manager_phase gauge
hvmind_manager_phase{phase="batch",target="n00dles"} 1
hvmind_manager_phase{phase="prep",target="foodnstuff"} 1
# HELP hvmind_manager_stolen_dollars_total Money the target's done hacks stole.
# TYPE hvmind_manager_stolen_dollars_total counter
hvmind_manager_stolen_dollars_total{target="foodnstuff"} 0
hvmind_manager_stolen_dollars_total{target="n00dles"} 1.5e+06
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"hvmind_manager_desyncs_total", "hvmind_manager_phase", "hvmind_manager_stolen_dollars_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(f.Metrics()); n != 2*len(fleetMetrics)+2 {
		t.Errorf("%d series, want %d for each of two targets and a phase each", n, len(fleetMetrics))
	}
}
