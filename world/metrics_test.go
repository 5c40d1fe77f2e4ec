package world_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hvmind/hvmind/world"
)

// The world's metrics are its state when scraped: the player, the
// servers' money and security, the hosts' RAM as reservations change it.
func TestWorldMetrics(t *testing.T) {
	t.Parallel()
	_, svc, c := newWorld(t, world.Options{Scenario: "newgame"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(svc.Metrics())
	if _, err := c.ReserveRAM(ctxT(t), world.RAMRequest{Host: "home", Owner: "w1", Threads: 2}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP hvmind_world_player_hacking_level The player's hacking level.
# TYPE hvmind_world_player_hacking_level gauge
hvmind_world_player_hacking_level 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "hvmind_world_player_hacking_level"); err != nil {
		t.Error(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["hvmind_world_server_money_max_dollars,server=n00dles"] != 1.75e6 {
		t.Errorf("n00dles' maximum money: %v, want 1.75e6", got["hvmind_world_server_money_max_dollars,server=n00dles"])
	}
	if got["hvmind_world_server_min_security,server=n00dles"] != 1 {
		t.Errorf("n00dles' minimum security: %v, want 1", got["hvmind_world_server_min_security,server=n00dles"])
	}
	if used := got["hvmind_world_ram_gigabytes,host=home,state=used"]; used < 3.5 {
		t.Errorf("home's RAM used: %v GB, want the 2 threads reserved (3.5 GB) at least", used)
	}
	if got["hvmind_world_changes_total"] < 1 {
		t.Errorf("changes: %v, want the reservation counted", got["hvmind_world_changes_total"])
	}
	if _, ok := got["hvmind_world_player_money_dollars"]; !ok {
		t.Error("the player's money: missing")
	}
}
