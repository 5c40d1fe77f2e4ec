package game_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/hvmind/hvmind/world/game"
)

// FuzzParseScenario: any bytes are a scenario or a clear error, never a
// panic; a scenario that is accepted gives every server finite, sane
// formulas (times positive, chance and percent within [0, 1]).
func FuzzParseScenario(f *testing.F) {
	for _, name := range game.ScenarioNames() {
		sc, err := game.LoadScenario(name)
		if err != nil {
			f.Fatal(err)
		}
		data, err := json.Marshal(sc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		`{"name":"x","player":{"hacking":1},"servers":[]}`,
		`{"name":"x","servers":[{"hostname":"a","maxRam":-1}]}`,
		`{"name":"x","servers":[{"hostname":"a","moneyMax":1e308,"moneyAvailable":1e308,"hackDifficulty":1e308,"minDifficulty":1,"serverGrowth":1e308}]}`,
		`{"name":"x","player":{"mults":{"hackingMoney":-1}}}`, `{}`, `[]`, `{"name":"x"} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := game.ParseScenario(data)
		if err != nil {
			return
		}
		h := sc.Player.Hacker()
		for i := range sc.Servers {
			s := &sc.Servers[i]
			for what, v := range map[string]float64{
				"hack time": game.HackTimeMs(s, h), "grow time": game.GrowTimeMs(s, h), "weaken time": game.WeakenTimeMs(s, h),
			} {
				if math.IsNaN(v) || v < 0 {
					t.Fatalf("%s of %s: %v from an accepted scenario %s", what, s.Hostname, v, data)
				}
			}
			for what, v := range map[string]float64{"hack chance": game.HackChance(s, h), "hack percent": game.HackPercent(s, h)} {
				if math.IsNaN(v) || v < 0 || v > 1 {
					t.Fatalf("%s of %s: %v from an accepted scenario %s", what, s.Hostname, v, data)
				}
			}
		}
	})
}
